"""Fixtures: real primaries started with the CLI on loopback, and fresh databases."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from migrations.primary import migrations
from siteserver.launch import RoleProcess, free_port, health_url, primary_config
from siteserver.store import Database


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
) -> Primary:
    """`port`: reuse a port, e.g. to restart a killed primary where its sites expect it."""
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


@pytest.fixture
def fresh_db(tmp_path: Path) -> Iterator[Database]:
    """A fresh primary database file with every migration applied (no server)."""
    db = Database(tmp_path / "fresh.db")
    db.open(migrations)
    yield db
    db.close()


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
