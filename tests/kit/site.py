"""Sites for the tests: the one way to configure, enroll and start a site process
(`configure_site`, `start_branch`: the sample world named BRANCH on a real primary, then
`siteserver site enroll` and `siteserver site run`), the one way to enroll a site without a
process (`enrolled_site`), and what the site tests do at a branch: read its database, add a
mirrored user, log in, submit a job."""

from __future__ import annotations

import secrets
import sqlite3
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from siteserver import sample
from siteserver.launch import RoleProcess, enroll_site, free_port, site_config, wait_until
from sync import signing, wire
from sync.client import SyncClient, enroll
from tests.kit.primary import Primary, new_site

SITE = "branch-01"
#: The sample world as the site tests' branch has it.
BRANCH = sample.Names(
    site_id=SITE,
    site="Branch one",
    mono="br-mono",
    color="br-color",
    direct="br-direct",
    findme="br-findme",
    mono_device="br-mfd-1",
    color_device="br-mfd-2",
    provider="br-ps",
)
MONO = BRANCH.mono  # mono, duplex, held: 10 c a page (colour 50 c), scans 2 c
COLOR = BRANCH.color  # color, simplex, held: 10 c mono / 40 c color
DIRECT = BRANCH.direct  # color, not held: printed at once
FINDME = BRANCH.findme  # Find-Me queue over MONO and COLOR


def query_site_db(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the site database in `data_dir` (none before it is migrated)."""
    path = data_dir / "site.db"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    except sqlite3.OperationalError:  # not migrated yet
        return []
    finally:
        conn.close()


@dataclass
class Branch:
    """A site the kit configured and enrolled (`configure_site`), as `siteserver site run` runs
    it: `start()` starts it (again, after a stop or a kill)."""

    primary: Primary
    config: Path  # the site's TOML file
    port: int
    admin_token: str
    data_dir: Path
    process: RoleProcess
    world: sample.World | None = None  # the sample world at this site, if it has one

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def site_id(self) -> str:
        return self.world.site_id if self.world is not None else SITE

    @property
    def mono_device(self) -> str:
        """The device token at MONO."""
        return self._world().mono_device

    @property
    def color_device(self) -> str:
        """The device token at COLOR."""
        return self._world().color_device

    @property
    def provider(self) -> str:
        """The provider token serving MONO, COLOR and DIRECT."""
        return self._world().provider

    def _world(self) -> sample.World:
        assert self.world is not None, "this site has no sample world"
        return self.world

    def start(self) -> Branch:
        """`siteserver site run` on its configuration and port; returns once it listens and, if it
        has a sample world, once its mirror has the world's devices."""
        if self.process.proc is not None:  # it ran before: a new process, the same log
            self.process = RoleProcess("site", self.config, self.port, self.process.log_path)
        self.process.start()
        try:
            self.process.wait_listening()
            if self.world is not None:
                device = self.world.names.color_device
                eventually(
                    lambda: bool(self.query("SELECT 1 FROM devices WHERE device_id = ?", (device,))),
                    timeout=30,
                    what="the mirror bootstrapped",
                )
        except BaseException:
            self.process.stop()
            raise
        return self

    def client(self, token: str) -> httpx.Client:
        # A site serving its generated certificate is trusted by exactly that certificate.
        own = self.data_dir / "tls" / "cert.pem"
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(own)) if own.exists() else True
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30, verify=verify
        )

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return query_site_db(self.data_dir, sql, params)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """A test's own write into the site's database (to make the mirror stale on purpose)."""
        conn = sqlite3.connect(self.data_dir / "site.db", timeout=5, isolation_level=None)
        try:
            conn.execute(sql, params)
        finally:
            conn.close()


def configure_site(
    primary: Primary,
    tmp: Path,
    *,
    world: sample.World | None = None,
    enroll: bool = True,
    budget_ms: int | None = None,
    wan: dict[str, Any] | None = None,
    primary_urls: list[str] | None = None,
    sync: dict[str, Any] | None = None,
    tls: dict[str, Any] | None = None,
) -> Branch:
    """The one way to make a site process: its configuration (in `tmp`: site.toml, data in
    tmp/site, log tmp/site.log; `[sync] changes_wait_secs = 2`) and, unless `enroll=False`,
    `siteserver site enroll` with its token — the sample `world`'s site, or else a bare site
    SITE made here. Not started: `.start()`. `budget_ms` and `wan`: the [wan] section;
    `primary_urls`: the site's configured endpoints (default: the primary's URL alone)."""
    token = world.enrollment_token if world is not None else new_site(primary, SITE)
    port = free_port()
    admin_token = secrets.token_urlsafe(24)
    extra: dict[str, Any] = {"sync": {"changes_wait_secs": 2, **(sync or {})}}
    wan_keys = {**({"request_budget_ms": budget_ms} if budget_ms is not None else {}), **(wan or {})}
    if wan_keys:
        extra["wan"] = wan_keys
    if tls:
        extra["tls"] = {k: v if isinstance(v, bool) else str(v) for k, v in tls.items()}
    cfg = site_config(
        tmp,
        site_id=world.site_id if world is not None else SITE,
        port=port,
        primary_urls=primary_urls or [primary.url],
        admin_token=admin_token,
        extra=extra,
    )
    if enroll:
        enroll_site(cfg, token)
    process = RoleProcess("site", cfg, port, tmp / "site.log")
    return Branch(primary, cfg, port, admin_token, tmp / "site", process, world)


def start_branch(
    primary: Primary,
    tmp: Path,
    *,
    budget_ms: int = 3000,
    wan: dict[str, Any] | None = None,
    primary_urls: list[str] | None = None,
    sync: dict[str, Any] | None = None,
) -> Branch:
    """The sample world named BRANCH on the primary, then an enrolled, running site with its mirror
    bootstrapped (the caller stops `branch.process`). `wan`: more [wan] keys; `primary_urls`: the
    site's configured endpoints (default: the primary's URL alone)."""
    with primary.admin() as c:
        world = sample.build(c, BRANCH)
    branch = configure_site(
        primary, tmp, world=world, budget_ms=budget_ms, wan=wan, primary_urls=primary_urls, sync=sync
    )
    return branch.start()


@dataclass
class EnrolledSite:
    """A site enrolled over the sync API with a fresh key and no site process: the test signs its
    requests itself."""

    primary: Primary
    site_id: str
    key: Ed25519PrivateKey
    answer: dict[str, Any]  # the enrollment's answer: site_id, pepper, health_key

    @property
    def pepper(self) -> bytes:
        return bytes.fromhex(self.answer["pepper"])

    def client(self, clock: Callable[[], float] = time.time) -> SyncClient:
        return SyncClient(self.primary.url, self.site_id, self.key, timeout=30, clock=clock)


def enrolled_site(primary: Primary, site_id: str = SITE, token: str | None = None) -> EnrolledSite:
    """A site enrolled (200) with a fresh key: the site with this enrollment `token`, or else a
    bare site made here."""
    token = token or new_site(primary, site_id)
    key = signing.generate_key()
    r = enroll(
        primary.url,
        wire.EnrollIn(site_id=site_id, enrollment_token=token, public_key=signing.public_key_text(key)),
    )
    assert r.status_code == 200, r.text
    return EnrolledSite(primary, site_id, key, dict(r.json()))


def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "") -> float:
    """Poll until `check()`; returns the seconds it took (a failed assertion if never)."""
    try:
        return wait_until(check, timeout, what)
    except TimeoutError as e:
        raise AssertionError(str(e)) from None


def add_user(primary: Primary, branch: Branch, username: str, timeout: float = 5.0, **fields: Any) -> None:
    """A user created on the primary, once the branch's mirror has it."""
    with primary.admin() as c:
        c.post("/api/admin/v1/users", json={"username": username, **fields}).raise_for_status()
    eventually(
        lambda: bool(branch.query("SELECT 1 FROM users WHERE username = ?", (username,))),
        timeout,
        f"{username} mirrored",
    )


def login(b: Branch, token: str, **creds: Any) -> httpx.Response:
    """A login at the site's Device API, at the device with this token."""
    with b.client(token) as c:
        return c.post("/api/device/v1/login", json=creds)


def submit(
    b: Branch, username: str, *, pages: int, color: bool = False, queue: str = FINDME
) -> dict[str, Any]:
    """A one-copy simplex job submitted at the site by the branch's print provider (200): the answer."""
    with b.client(b.provider) as c:
        r = c.post(
            "/api/provider/v1/jobs",
            json={
                "job_id": str(uuid.uuid4()),
                "username": username,
                "queue": queue,
                "document_name": "doc.pdf",
                "pages": pages,
                "copies": 1,
                "color": color,
                "duplex": False,
            },
        )
    assert r.status_code == 200, r.text
    return dict(r.json())


def heartbeat(client: SyncClient, mode: str, journal_backlog: int, version: str) -> httpx.Response:
    """A signed heartbeat, its answer as it came (the tests look at refusals too)."""
    body = {"mode": mode, "journal_backlog": journal_backlog, "version": version}
    return client.request("POST", wire.url_path(wire.HEARTBEAT_PATH), json_body=body)
