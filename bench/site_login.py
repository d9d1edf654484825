"""Card-login throughput and latency at a SITE server, next to a bare FastAPI app on the same stack.

Like primary_login.py, but the login is answered by `siteserver site run` from its mirror. It starts
a primary, seeds it through the admin API (siteserver.sample's world at the site, and --users
users with cards C000001…), enrolls its site (`siteserver site enroll`), starts it and waits
until its mirror holds every card and the device. It also starts bench/bare_app.py (served exactly
as in primary_login.py). Each server gets --warmup seconds of load and then
`wrk -t2 -c32 -d<duration>s --latency -s bench/login.lua` (POST /api/device/v1/login with the
device's bearer token, random seeded cards), then --sequential one-at-a-time requests on a
keep-alive httpx client. Every non-2xx answer or socket error is a failure. The wrk, bare-app and
sequential pieces and the tables are primary_login.py's own, imported. Everything it starts is
stopped at the end.

    python bench/site_login.py [--duration 10] [--users 1000] [--threads 2] [--connections 32]
"""

from __future__ import annotations

import dataclasses
import sqlite3
import tempfile
import time
from pathlib import Path

import primary_login
from _common import (  # first: puts this checkout on sys.path
    SITE_ID,
    PrimaryHandle,
    SiteHandle,
    exited,
    keep_or_remove,
    make_site,
    report_failures,
    run_main,
    start_primary,
    stop_server,
    wait_bootstrapped,
    wrk_missing,
)
from primary_login import (
    BARE,
    BareProcess,
    check_login,
    login_args,
    measure_logins,
    print_login_tables,
)

from siteserver import sample
from siteserver.launch import free_port

TARGET_RATIO_RPS = 0.5  # at least half the bare app's throughput
TARGET_RATIO_P99 = 2.0  # p99 at most twice the bare app's
TARGET_UNLOADED_P99_MS = 5.0


def seed(primary: PrimaryHandle, users: int) -> sample.World:
    """The sample world at site SITE_ID with `users` users with one card each (primary_login.py's)."""
    names = dataclasses.replace(primary_login.BENCH_NAMES, site_id=SITE_ID, site="Bench site")
    world: sample.World = primary_login.seed(primary.url, primary.admin_token, users, names)
    return world


def wait_mirrored(site: SiteHandle, users: int, device: str, timeout: float = 120) -> None:
    """Until the site's mirror holds all the cards and the device (bootstrap plus feed pages)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = sqlite3.connect(f"file:{site.db_path}?mode=ro", uri=True, timeout=5)
            try:
                cards = conn.execute("SELECT count(*) FROM user_cards").fetchone()[0]
                devices = conn.execute(
                    "SELECT count(*) FROM devices WHERE device_id = ?", (device,)
                ).fetchone()[0]
            finally:
                conn.close()
            if cards >= users and devices == 1:
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.1)
    raise TimeoutError(
        f"the site's mirror did not get all {users} cards and the device: {site.process.log_tail()}"
    )


def main(argv: list[str] | None = None) -> int:
    args = login_args(argv, __doc__.split("\n\n")[0], "keep the temp dir (configs, logs, databases)")
    if wrk_missing():
        return 1

    root = Path(tempfile.mkdtemp(prefix="bench-site-login-"))
    print(f"site_login: files in {root}", flush=True)
    primary = site = None
    bare = BareProcess(0, root / "bare.log")
    failures: list[str] = []
    try:
        primary = start_primary(root)
        t = time.perf_counter()
        world = seed(primary, args.users)
        token = world.mono_device
        print(
            f"  seeded the sample world with {args.users:,} users with cards "
            f"in {time.perf_counter() - t:.1f} s"
        )
        site = make_site(primary, root, world=world)
        site.process.start()
        bare.port = free_port()
        bare.start()
        site.process.wait_listening(timeout=60)
        wait_bootstrapped(site, 120)
        wait_mirrored(site, args.users, world.names.mono_device)
        bare.wait_listening()
        check_login(site.url, token, "card login at the site")

        assert site.process.proc is not None and bare.proc is not None
        results, seq = measure_logins(
            [(BARE, bare.url, bare.proc.pid), ("site login", site.url, site.process.proc.pid)],
            token,
            args,
            failures,
        )
        failures += exited(("site", site.process.proc), ("bare app", bare.proc))
    finally:
        bare.stop()
        stop_server(site, "site")
        stop_server(primary, "primary")
        keep_or_remove(root, args.keep)

    print_login_tables(args, results, seq, "site login", "site / bare")
    bare_r, login_r = results[BARE], results["site login"]
    rps_ratio = login_r.rps / bare_r.rps
    p99_ratio = login_r.p99_ms / bare_r.p99_ms
    unloaded = seq["site login"].p99_ms
    for label, good in (
        (
            f"throughput {rps_ratio:.0%} of bare (target >= {TARGET_RATIO_RPS:.0%})",
            rps_ratio >= TARGET_RATIO_RPS,
        ),
        (f"p99 {p99_ratio:.1f}x bare (target <= {TARGET_RATIO_P99:g}x)", p99_ratio <= TARGET_RATIO_P99),
        (
            f"unloaded p99 {unloaded:.2f} ms (target < {TARGET_UNLOADED_P99_MS:g} ms)",
            unloaded < TARGET_UNLOADED_P99_MS,
        ),
    ):
        print(f"{label}: {'ok' if good else 'MISSED'}")
    return report_failures(failures, "no errors: every answer was 2xx")


if __name__ == "__main__":
    run_main(main)
