"""Fixtures: real primaries started with the CLI on loopback, and fresh databases."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from migrations.primary import migrations
from siteserver.launch import RoleProcess, free_port, health_url, primary_config
from siteserver.store import Database
from sync import signing
from sync.client import enroll


@dataclass
class Primary:
    """A running `siteserver primary run` process and the credentials to talk to it."""

    process: RoleProcess
    admin_token: str
    health_key: str
    data_dir: Path
    database: Path

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def health(self) -> str:
        return health_url(self.url, self.health_key)

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=30
        )

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def wait_active(self, timeout: float = 30.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.health, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError("primary did not become active:\n" + self.process.log_tail())

    def restart(self, log: Path) -> None:
        """Start it again (after a kill) on its configuration and port, logging to `log`, and
        wait until it is active."""
        self.process = RoleProcess("primary", self.process.config, self.process.port, log).start()
        self.process.wait_listening()
        self.wait_active()


def start_primary(
    tmp: Path,
    *,
    name: str = "primary",
    database: Path | None = None,
    guard: bool = False,
    fail_over_interval_secs: float = 30,
    admin_token: str | None = None,
    health_key: str | None = None,
    wait_active: bool = True,
    port: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Primary:
    """`port`: reuse a port, e.g. to restart a killed primary where its sites expect it;
    `extra`: more top-level configuration keys."""
    port = port or free_port()
    database = database or tmp / "primary.db"
    admin_token = admin_token or secrets.token_urlsafe(24)
    health_key = health_key or secrets.token_urlsafe(24)
    cfg = primary_config(
        tmp,
        name=name,
        database=database,
        port=port,
        admin_token=admin_token,
        health_key=health_key,
        guard=guard,
        fail_over_interval_secs=fail_over_interval_secs,
        extra=extra,
    )
    proc = RoleProcess("primary", cfg, port, tmp / f"{name}.log").start()
    p = Primary(proc, admin_token, health_key, tmp / name, database)
    try:
        proc.wait_listening()
        if wait_active:
            p.wait_active()
    except BaseException:
        proc.stop()
        raise
    return p


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[Primary]:
    """A single primary (guard disabled: simply active) on a fresh database."""
    p = start_primary(tmp_path)
    yield p
    p.process.stop()


@dataclass
class World:
    """A small print world created through the admin API."""

    device_token: str  # device at printer "mono-1" (site s1)
    color_device_token: str  # device at printer "color-1" (site s1)
    provider_token: str  # provider serving mono-1, color-1, direct-1


@pytest.fixture
def world(primary: Primary) -> World:
    with primary.admin() as c:
        for p in [
            {
                "name": "mono-1",
                "site_id": "s1",
                "color": False,
                "duplex": True,
                "hold": True,
                "cost": {
                    "mono_page_cents": 10,
                    "color_page_cents": 50,
                    "duplex_discount_pct": 20,
                    "scan_page_cents": 2,
                    "fax_page_cents": 15,
                },
            },
            {
                "name": "color-1",
                "site_id": "s1",
                "color": True,
                "duplex": False,
                "hold": True,
                "cost": {"mono_page_cents": 10, "color_page_cents": 40},
            },
            {
                "name": "direct-1",
                "site_id": "s1",
                "color": True,
                "duplex": True,
                "hold": False,
                "cost": {"mono_page_cents": 5, "color_page_cents": 20},
            },
        ]:
            c.post("/api/admin/v1/printers", json=p).raise_for_status()
        c.post(
            "/api/admin/v1/sites",
            json={
                "site_id": "s1",
                "name": "Site one",
                "findme_queues": [{"name": "findme", "printers": ["mono-1", "color-1"]}],
            },
        ).raise_for_status()
        dev = c.post("/api/admin/v1/devices", json={"device_id": "mfd-1", "printer": "mono-1"}).json()
        cdev = c.post("/api/admin/v1/devices", json={"device_id": "mfd-2", "printer": "color-1"}).json()
        prov = c.post(
            "/api/admin/v1/providers",
            json={"provider_id": "ps-1", "printers": ["mono-1", "color-1", "direct-1"]},
        ).json()
    return World(dev["token"], cdev["token"], prov["token"])


def add_one_printer(admin: httpx.Client, *, hold: bool) -> tuple[str, str]:
    """Printer mono-1 at site s1 (10 c mono, 50 c color), device mfd-1 at it and provider ps-1
    serving it, created with the admin client: (the device's token, the provider's token)."""
    admin.post(
        "/api/admin/v1/printers",
        json={
            "name": "mono-1",
            "site_id": "s1",
            "color": False,
            "duplex": True,
            "hold": hold,
            "cost": {"mono_page_cents": 10, "color_page_cents": 50},
        },
    ).raise_for_status()
    dev = admin.post("/api/admin/v1/devices", json={"device_id": "mfd-1", "printer": "mono-1"})
    dev.raise_for_status()
    prov = admin.post("/api/admin/v1/providers", json={"provider_id": "ps-1", "printers": ["mono-1"]})
    prov.raise_for_status()
    return dev.json()["token"], prov.json()["token"]


def new_site(primary: Primary, site_id: str = "branch-01") -> str:
    """A site created through the admin API (201); its one-time enrollment token."""
    with primary.admin() as c:
        r = c.post("/api/admin/v1/sites", json={"site_id": site_id, "name": "Branch one"})
        assert r.status_code == 201, r.text
        return str(r.json()["enrollment_token"])


def enroll_new_site(primary: Primary, site_id: str = "branch-01") -> tuple[Ed25519PrivateKey, dict[str, Any]]:
    """A new site enrolled over the sync API (200) with a fresh key: (the key, the answer's body)."""
    token = new_site(primary, site_id)
    key = signing.generate_key()
    r = enroll(primary.url, site_id, token, signing.public_key_text(key))
    assert r.status_code == 200, r.text
    return key, r.json()


def site_row(primary: Primary, site_id: str) -> dict[str, Any]:
    """The site's row in the admin API's list of sites."""
    with primary.admin() as c:
        rows = c.get("/api/admin/v1/sites").json()["sites"]
    return dict(next(s for s in rows if s["site_id"] == site_id))


@contextmanager
def open_database(path: Path, migrations: Any = None) -> Iterator[Database]:
    """A `Database` on `path`, opened with these migrations, closed on the way out."""
    db = Database(path)
    db.open(migrations)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def fresh_db(tmp_path: Path) -> Iterator[Database]:
    """A fresh primary database file with every migration applied (no server)."""
    with open_database(tmp_path / "fresh.db", migrations) as db:
        yield db


class FakeClock:
    """A clock that stands still until a test advances it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, secs: float) -> None:
        self.t += secs


def new_id() -> str:
    return str(uuid.uuid4())


def expect_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The contract's error shape: exactly {"error": code, "detail": sentence}, with this status."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["error"] == code, body
    return body
