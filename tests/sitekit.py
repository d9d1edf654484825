"""A real branch for the site tests: printers, a Find-Me queue, devices and a print provider
created on a real primary, then `siteserver site enroll` and `siteserver site run` (the CLI); and
what the site tests do at it: read its database, add a mirrored user, log in, submit a job."""

from __future__ import annotations

import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from siteserver.launch import RoleProcess, enroll_site, free_port, site_config
from tests.conftest import Primary

SITE = "branch-01"
MONO = "br-mono"  # mono, duplex, held: 10 c a page, scans 2 c
COLOR = "br-color"  # color, simplex, held: 10 c mono / 40 c color
DIRECT = "br-direct"  # color, not held: printed at once
FINDME = "br-findme"  # Find-Me queue over MONO and COLOR


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
    process: RoleProcess
    data_dir: Path
    admin_token: str
    mono_device: str  # device token at MONO
    color_device: str  # device token at COLOR
    provider: str  # provider token serving MONO, COLOR, DIRECT
    config: Path | None = None  # the site's TOML file (to start it again after a kill)

    @property
    def url(self) -> str:
        return self.process.url

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

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


def start_branch(
    primary: Primary,
    tmp: Path,
    *,
    budget_ms: int = 3000,
    wan: dict[str, Any] | None = None,
    primary_urls: list[str] | None = None,
) -> Branch:
    """The branch's catalogue on the primary, then an enrolled, running site (the caller stops
    `branch.process`). `wan`: more [wan] keys; `primary_urls`: the site's configured endpoints
    (default: the primary's URL alone)."""
    printers = [
        {
            "name": MONO,
            "site_id": SITE,
            "color": False,
            "duplex": True,
            "hold": True,
            "cost": {"mono_page_cents": 10, "color_page_cents": 50, "scan_page_cents": 2},
        },
        {
            "name": COLOR,
            "site_id": SITE,
            "color": True,
            "duplex": False,
            "hold": True,
            "cost": {"mono_page_cents": 10, "color_page_cents": 40},
        },
        {
            "name": DIRECT,
            "site_id": SITE,
            "color": True,
            "duplex": True,
            "hold": False,
            "cost": {"mono_page_cents": 5, "color_page_cents": 20},
        },
    ]
    with primary.admin() as c:
        for p in printers:
            c.post("/api/admin/v1/printers", json=p).raise_for_status()
        r = c.post(
            "/api/admin/v1/sites",
            json={
                "site_id": SITE,
                "name": "Branch one",
                "findme_queues": [{"name": FINDME, "printers": [MONO, COLOR]}],
            },
        )
        r.raise_for_status()
        enrollment = r.json()["enrollment_token"]
        mono = c.post("/api/admin/v1/devices", json={"device_id": "br-mfd-1", "printer": MONO}).json()
        color = c.post("/api/admin/v1/devices", json={"device_id": "br-mfd-2", "printer": COLOR}).json()
        prov = c.post(
            "/api/admin/v1/providers", json={"provider_id": "br-ps", "printers": [MONO, COLOR, DIRECT]}
        ).json()
    port = free_port()
    admin_token = secrets.token_urlsafe(24)
    cfg = site_config(
        tmp,
        site_id=SITE,
        port=port,
        primary_urls=primary_urls or [primary.url],
        admin_token=admin_token,
        extra={"wan": {"request_budget_ms": budget_ms, **(wan or {})}, "sync": {"changes_wait_secs": 2}},
    )
    enroll_site(cfg, enrollment)
    proc = RoleProcess("site", cfg, port, tmp / "site.log").start()
    branch = Branch(proc, tmp / "site", admin_token, mono["token"], color["token"], prov["token"], cfg)
    try:
        proc.wait_listening()
        # The mirror has the branch's devices once a device token is known at the site.
        eventually(
            lambda: bool(branch.query("SELECT 1 FROM devices WHERE device_id = 'br-mfd-2'")),
            timeout=30,
            what="the mirror bootstrapped",
        )
    except BaseException:
        proc.stop()
        raise
    return branch


def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "") -> float:
    """Poll until `check()`; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


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
