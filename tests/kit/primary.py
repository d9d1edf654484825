"""Real primaries started with the CLI on loopback (one, or an active/passive pair), a bare site on
one, databases opened directly, and the contract's error shape."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

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
        return self.client(self.admin_token)

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def wait_active(self, timeout: float = 30.0) -> None:
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


PAIR_INTERVAL = 3.0  # fail-over-interval-secs of a Pair's members, unless told


class Pair:
    """Members started on one database with the same credentials; every process is ended at the
    end of the test, frozen ones included."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.database = tmp / "pair.db"
        self.admin_token = secrets.token_urlsafe(24)
        self.health_key = secrets.token_urlsafe(24)
        self.processes: list[RoleProcess] = []

    def start(self, name: str, *, wait_active: bool = False, interval: float = PAIR_INTERVAL) -> Primary:
        p = start_primary(
            self.tmp,
            name=name,
            database=self.database,
            guard=True,
            fail_over_interval_secs=interval,
            admin_token=self.admin_token,
            health_key=self.health_key,
            wait_active=wait_active,
        )
        self.processes.append(p.process)
        return p

    def start_raw(self, name: str, *, interval: float = PAIR_INTERVAL) -> RoleProcess:
        """A member started without waiting for it to listen (it may never do so)."""
        port = free_port()
        cfg = primary_config(
            self.tmp,
            name=name,
            database=self.database,
            port=port,
            admin_token=self.admin_token,
            health_key=self.health_key,
            guard=True,
            fail_over_interval_secs=interval,
        )
        proc = RoleProcess("primary", cfg, port, self.tmp / f"{name}.log")
        self.processes.append(proc)
        return proc.start()

    def close(self) -> None:
        for proc in self.processes:
            proc.signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
        for proc in self.processes:
            with contextlib.suppress(Exception):
                proc.stop(timeout=5)
        self._reap_strays()

    def _reap_strays(self) -> None:
        """Processes whose start_primary() call raised before it returned them to us."""
        marker = str(self.tmp).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"siteserver" in cmdline and marker in cmdline:
                with contextlib.suppress(OSError):
                    os.kill(int(entry.name), signal.SIGKILL)


def new_site(primary: Primary, site_id: str = "branch-01") -> str:
    """A bare site (no printers) created through the admin API (201); its one-time enrollment token."""
    with primary.admin() as c:
        r = c.post("/api/admin/v1/sites", json={"site_id": site_id, "name": "Branch one"})
        assert r.status_code == 201, r.text
        return str(r.json()["enrollment_token"])


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
    body: dict[str, Any] = r.json()
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["error"] == code, body
    return body
