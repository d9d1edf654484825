"""The sample print world: printers, a site with a Find-Me queue, devices, a print provider, users
with cards, PINs and ID numbers, and shared accounts, created through the primary's admin API the
way an administrator creates them. Built once, here, for the tests, the demo and the benchmarks.

    world = sample.build(admin)            # admin: an httpx.Client with the admin's bearer token
    world.mono_device, world.provider      # the tokens it was given

Three printers at the site, all with their own cost model:

    mono    mono, duplex, held:      10 c a page (colour 50 c), duplex -20 %, scans 2 c, faxes 15 c
    color   colour, simplex, held:   10 c mono, 40 c colour
    direct  colour, duplex, not held (prints at once): 5 c mono, 20 c colour

a Find-Me queue over `mono` and `color`, a device at each of those two and a provider serving all
three. What the things are called is a `Names` (the defaults are the primary tests' own names).

Imports nothing of the project: it speaks only the admin API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

MONO_COST: Mapping[str, int] = {
    "mono_page_cents": 10,
    "color_page_cents": 50,
    "duplex_discount_pct": 20,
    "scan_page_cents": 2,
    "fax_page_cents": 15,
}
COLOR_COST: Mapping[str, int] = {"mono_page_cents": 10, "color_page_cents": 40}
DIRECT_COST: Mapping[str, int] = {"mono_page_cents": 5, "color_page_cents": 20}


@dataclass(frozen=True)
class Names:
    """What the sample world's things are called."""

    site_id: str = "s1"
    site: str = "Site one"  # the site's display name
    mono: str = "mono-1"  # printers
    color: str = "color-1"
    direct: str = "direct-1"
    findme: str = "findme"  # the Find-Me queue over mono and color
    mono_device: str = "mfd-1"  # devices at mono and at color
    color_device: str = "mfd-2"
    provider: str = "ps-1"  # the print provider serving all three printers


@dataclass(frozen=True)
class User:
    """A user to create; None and empty fields are left out of the request."""

    username: str
    full_name: str | None = None
    card_numbers: tuple[str, ...] = ()
    pin: str | None = None
    password: str | None = None
    id_number: str | None = None
    balance_cents: int = 0
    overdraft_cents: int | None = None
    restricted: bool | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"username": self.username, "balance_cents": self.balance_cents}
        if self.card_numbers:
            body["card_numbers"] = list(self.card_numbers)
        optional = {
            "full_name": self.full_name,
            "pin": self.pin,
            "password": self.password,
            "id_number": self.id_number,
            "overdraft_cents": self.overdraft_cents,
            "restricted": self.restricted,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return body


@dataclass(frozen=True)
class SharedAccount:
    name: str
    balance_cents: int = 0
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class World:
    """What `build` made: the names it used and the tokens the primary gave."""

    names: Names
    enrollment_token: str  # the site's one-time enrollment token
    mono_device: str  # the device token at names.mono
    color_device: str  # the device token at names.color
    provider: str  # the provider token
    users: tuple[str, ...] = ()  # usernames created
    shared_accounts: tuple[str, ...] = ()

    @property
    def site_id(self) -> str:
        return self.names.site_id


#: The demo's people: alice (card, PIN, password, ID number), bob (card, PIN, an overdraft) and
#: carol (card, ID number, unrestricted), and alice's and bob's shared account.
PEOPLE = (
    User(
        "alice",
        full_name="Alice Archer",
        card_numbers=("1001",),
        pin="1234",
        password="alice-pass",
        id_number="E-1001",
        balance_cents=1000,
    ),
    User(
        "bob",
        full_name="Bob Baker",
        card_numbers=("1002",),
        pin="2345",
        balance_cents=150,
        overdraft_cents=100,
    ),
    User(
        "carol",
        full_name="Carol Chen",
        card_numbers=("1003",),
        id_number="E-3003",
        balance_cents=0,
        restricted=False,
    ),
)
MARKETING = SharedAccount("Marketing", balance_cents=5000, members=("alice", "bob"))


def card_number(i: int) -> str:
    """The card of numbered user `i` (C000001, …)."""
    return f"C{i:06d}"


def numbered_users(n: int, *, prefix: str = "user", balance_cents: int = 1000) -> list[User]:
    """`n` users `<prefix>000001`… with one card each (`card_number(i)`)."""
    return [
        User(
            f"{prefix}{i:06d}",
            full_name=f"{prefix.title()} User {i}",
            card_numbers=(card_number(i),),
            balance_cents=balance_cents,
        )
        for i in range(1, n + 1)
    ]


def ok(r: httpx.Response) -> Any:
    """The answer's JSON body (None when empty); a RuntimeError naming the call for any 4xx/5xx."""
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}")
    return r.json() if r.content else None


def admin_client(
    base_url: str, admin_token: str, *, timeout: float = 30, connections: int = 8
) -> httpx.Client:
    """An httpx client for the primary's admin API."""
    return httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {admin_token}"},
        timeout=timeout,
        limits=httpx.Limits(max_connections=connections),
    )


def printers(names: Names, *, hold: bool = True) -> list[dict[str, Any]]:
    """The three printers' admin API bodies; `hold`: whether mono and color hold their jobs."""
    return [
        {
            "name": names.mono,
            "site_id": names.site_id,
            "color": False,
            "duplex": True,
            "hold": hold,
            "cost": dict(MONO_COST),
        },
        {
            "name": names.color,
            "site_id": names.site_id,
            "color": True,
            "duplex": False,
            "hold": hold,
            "cost": dict(COLOR_COST),
        },
        {
            "name": names.direct,
            "site_id": names.site_id,
            "color": True,
            "duplex": True,
            "hold": False,
            "cost": dict(DIRECT_COST),
        },
    ]


def add_users(admin: httpx.Client, users: Sequence[User], *, workers: int = 1) -> tuple[str, ...]:
    """Create `users`, `workers` requests at a time (the primary's writer commits concurrent
    creates together); their usernames."""
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda u: ok(admin.post("/api/admin/v1/users", json=u.body())), users))
    else:
        for u in users:
            ok(admin.post("/api/admin/v1/users", json=u.body()))
    return tuple(u.username for u in users)


def add_shared_accounts(admin: httpx.Client, accounts: Sequence[SharedAccount]) -> tuple[str, ...]:
    """Create these shared accounts (their members must exist); their names."""
    for account in accounts:
        body = {
            "name": account.name,
            "balance_cents": account.balance_cents,
            "members": list(account.members),
        }
        ok(admin.post("/api/admin/v1/shared-accounts", json=body))
    return tuple(a.name for a in accounts)


def build(
    admin: httpx.Client,
    names: Names | None = None,
    *,
    hold: bool = True,
    users: Sequence[User] = (),
    shared_accounts: Sequence[SharedAccount] = (),
    workers: int = 1,
) -> World:
    """The sample world, created with `admin` (a client with the admin's token): the printers, the
    site with its Find-Me queue, the devices, the provider, then `users` (`workers` at a time) and
    `shared_accounts`. `hold=False`: the mono and color printers print at once too."""
    names = names or Names()
    for body in printers(names, hold=hold):
        ok(admin.post("/api/admin/v1/printers", json=body))
    site = ok(
        admin.post(
            "/api/admin/v1/sites",
            json={
                "site_id": names.site_id,
                "name": names.site,
                "findme_queues": [{"name": names.findme, "printers": [names.mono, names.color]}],
            },
        )
    )
    mono = ok(
        admin.post("/api/admin/v1/devices", json={"device_id": names.mono_device, "printer": names.mono})
    )
    color = ok(
        admin.post("/api/admin/v1/devices", json={"device_id": names.color_device, "printer": names.color})
    )
    provider = ok(
        admin.post(
            "/api/admin/v1/providers",
            json={"provider_id": names.provider, "printers": [names.mono, names.color, names.direct]},
        )
    )
    return World(
        names,
        str(site["enrollment_token"]),
        str(mono["token"]),
        str(color["token"]),
        str(provider["token"]),
        add_users(admin, users, workers=workers),
        add_shared_accounts(admin, shared_accounts),
    )
