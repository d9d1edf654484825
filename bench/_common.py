"""Pieces shared by the benchmarks: a primary and an enrolled site, started the way an admin does
(`siteserver primary run`, `siteserver site enroll`, `siteserver site run`, through
siteserver.launch), small readers of /proc and of the site's database, and the scripts' common
ending (stopping what they started, printing failures, the exit code).

Importing it puts this checkout first on sys.path, so every script imports it before anything of
the project. Not a benchmark itself; the login pieces (wrk, the bare app, the sequential client, the
login tables) are `bench/primary_login.py`'s, and the other scripts import those from there.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx

ROOT = Path(__file__).resolve().parent.parent
# This checkout's code, also when another copy of the project is installed (an editable install of
# a different checkout would otherwise win, in this process and in the servers it starts).
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))
CHILD_ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}

from siteserver import sample  # noqa: E402
from siteserver.launch import RoleProcess, free_port, health_url, primary_config, site_config  # noqa: E402
from siteserver.sample import ok as ok  # noqa: E402  # re-exported: the scripts check admin API answers with it

SITE_ID = "bench-site"


def proc_status(pid: int, key: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmHWM, VmRSS, …) in bytes; -1 when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class PrimaryHandle:
    process: RoleProcess
    admin_token: str
    health_key: str
    database: Path

    @property
    def url(self) -> str:
        return self.process.url

    def admin(self, **kw: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=60, **kw
        )


def start_primary(root: Path, database: Path | None = None) -> PrimaryHandle:
    """`siteserver primary run` on `database` (made and migrated by the primary when absent), quiet
    logs, guard off; returns once it is active. Stop it with `.process.stop()`."""
    admin_token, health_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    port = free_port()
    cfg = primary_config(
        root,
        name="primary",
        database=database or root / "primary.db",
        port=port,
        admin_token=admin_token,
        health_key=health_key,
        extra={"access_log": False, "log_level": "warning"},
    )
    proc = RoleProcess("primary", cfg, port, root / "primary.log", env=CHILD_ENV)
    handle = PrimaryHandle(proc, admin_token, health_key, database or root / "primary.db")
    proc.start()
    try:
        proc.wait_listening(timeout=120)
        deadline = time.monotonic() + 60
        while httpx.get(health_url(proc.url, health_key), timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("primary did not become active: " + proc.log_tail())
            time.sleep(0.1)
    except BaseException:
        proc.stop()
        raise
    return handle


@dataclass
class SiteHandle:
    process: RoleProcess
    config: Path
    port: int
    admin_token: str
    data_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def db_path(self) -> Path:
        return self.data_dir / "site.db"


def make_site(
    primary: PrimaryHandle,
    root: Path,
    *,
    world: sample.World | None = None,
    sync: dict[str, Any] | None = None,
    wan: dict[str, Any] | None = None,
    primary_urls: list[str] | None = None,
    site_id: str = SITE_ID,
) -> SiteHandle:
    """The site of the sample `world` (seeded already), or else a bare site SITE_ID created here
    (or `site_id`) through the primary's admin API; its config written and enrolled with the CLI (`siteserver
    site enroll`). The site process is not started: `site.process.start()`. `primary_urls`
    (default: the primary's own URL) is the site's `primary` list, e.g. a fault proxy in front of
    it; `wan` becomes the `[wan]` section."""
    if world is None:
        with primary.admin() as c:
            site = sample.ok(c.post("/api/admin/v1/sites", json={"site_id": site_id, "name": "Bench site"}))
        token = str(site["enrollment_token"])
    else:
        token, site_id = world.enrollment_token, world.site_id
    port = free_port()
    admin_token = secrets.token_urlsafe(24)
    extra: dict[str, Any] = {"access_log": False, "log_level": "warning"}
    if sync:
        extra["sync"] = sync
    if wan:
        extra["wan"] = wan
    cfg = site_config(
        root,
        site_id=site_id,
        port=port,
        primary_urls=primary_urls or [primary.url],
        admin_token=admin_token,
        extra=extra,
    )
    done = subprocess.run(
        [sys.executable, "-m", "siteserver", "site", "enroll", "--config", str(cfg), "--token", token],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **CHILD_ENV},
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"site enroll failed ({done.returncode}): {done.stderr or done.stdout}")
    return SiteHandle(
        RoleProcess("site", cfg, port, root / "site.log", env=CHILD_ENV),
        cfg,
        port,
        admin_token,
        root / "site",
    )


def site_ro(db_path: Path) -> sqlite3.Connection | None:
    """A read-only connection to the site's database, or None while it does not exist yet."""
    if not db_path.exists():
        return None
    return sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5, isolation_level=None)


def bootstrapped_cursor(conn: sqlite3.Connection) -> int | None:
    """The site's stored cursor once a bootstrap has finished (both keys present), else None."""
    try:
        state = dict(
            conn.execute("SELECT key, value FROM sync_state WHERE key IN ('cursor', 'bootstrapped_at')")
        )
    except sqlite3.OperationalError:  # not migrated yet, or a writer holds a lock for a moment
        return None
    if "cursor" in state and "bootstrapped_at" in state:
        return int(state["cursor"])
    return None


def wait_bootstrapped(site: SiteHandle, timeout: float, poll: float = 0.02) -> float:
    """Poll site.db (read-only) until the mirror has bootstrapped; returns time.perf_counter() then."""
    deadline = time.monotonic() + timeout
    conn: sqlite3.Connection | None = None
    try:
        while time.monotonic() < deadline:
            proc = site.process.proc
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"site exited with {proc.returncode}: {site.process.log_tail()}")
            if conn is None:
                conn = site_ro(site.db_path)
            if conn is not None and bootstrapped_cursor(conn) is not None:
                return time.perf_counter()
            time.sleep(poll)
    finally:
        if conn is not None:
            conn.close()
    raise TimeoutError(f"site did not bootstrap within {timeout:g} s: {site.process.log_tail()}")


def log_errors(process: RoleProcess, name: str) -> None:
    lines = [ln for ln in process.log_tail(20_000).splitlines() if " ERROR " in ln or "Traceback" in ln]
    if lines:
        print(f"{name} log has errors:\n  " + "\n  ".join(lines[-10:]), file=sys.stderr)


# -- the scripts' common ending -------------------------------------------------------------------


def wrk_missing() -> bool:
    """True, after saying so on stderr, when wrk is not installed."""
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return True
    return False


def exited(*named: tuple[str, subprocess.Popen[bytes] | None]) -> list[str]:
    """A failure line for each (name, process) started that is no longer running."""
    return [
        f"{name} exited during the run with {p.returncode}"
        for name, p in named
        if p is not None and p.poll() is not None
    ]


def stop_server(handle: PrimaryHandle | SiteHandle | None, name: str) -> None:
    """Stop a primary or site (None: it was never made), then print its log's errors, if any."""
    if handle is not None:
        handle.process.stop()
        log_errors(handle.process, name)


def keep_or_remove(root: Path, keep: bool, indent: str = "") -> None:
    """--keep: say where the files are; else delete the temp dir."""
    if keep:
        print(f"{indent}kept {root}", flush=True)
    else:
        shutil.rmtree(root, ignore_errors=True)


def report_failures(failures: list[str], ok_line: str | None = None, heading: str = "FAILURES:") -> int:
    """Print `heading` and the failures, one a line, and return 1; or print `ok_line` (if any), return 0."""
    if failures:
        print(heading)
        for f in failures:
            print("  " + f)
        return 1
    if ok_line is not None:
        print(ok_line)
    return 0


def run_main(main: Callable[[], int]) -> NoReturn:
    """A script's entry point: exit with main()'s code, or 130 on Ctrl-C (everything started was
    stopped in the finally blocks)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
