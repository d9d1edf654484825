"""Card-login throughput and latency at a SITE server, next to a bare FastAPI app on the same stack.

Like primary_login.py, but the login is answered by `siteserver site run` from its mirror. It starts
a primary, seeds it through the admin API (a printer at the site, a device there and --users users
with cards C000001…), creates and enrolls a site (`siteserver site enroll`), starts it and waits
until its mirror holds every card and the device. It also starts bench/bare_app.py (served exactly
as in primary_login.py). Each server gets --warmup seconds of load and then
`wrk -t2 -c32 -d<duration>s --latency -s bench/login.lua` (POST /api/device/v1/login with the
device's bearer token, random seeded cards), then --sequential one-at-a-time requests on a
keep-alive httpx client. Every non-2xx answer or socket error is a failure. The wrk, bare-app and
sequential pieces are primary_login.py's own, imported. Everything it starts is stopped at the end.

    python bench/site_login.py [--duration 10] [--users 1000] [--threads 2] [--connections 32]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx
import primary_login  # type: ignore[import-not-found]
from _common import (  # type: ignore[import-not-found]  # first: puts this checkout on sys.path
    SITE_ID,
    PrimaryHandle,
    SiteHandle,
    log_errors,
    make_site,
    ok,
    start_primary,
    wait_bootstrapped,
)
from primary_login import (  # type: ignore[import-not-found]
    LOGIN_PATH,
    MAX_SESSIONS,
    SESSION_CAP_WARN,
    BareProcess,
    WrkResult,
    card,
    run_wrk,
    sequential,
)

from siteserver.launch import free_port

TARGET_RATIO_RPS = 0.5  # at least half the bare app's throughput
TARGET_RATIO_P99 = 2.0  # p99 at most twice the bare app's
TARGET_UNLOADED_P99_MS = 5.0


def seed(primary: PrimaryHandle, users: int) -> str:
    """A printer at the site, a device at it and `users` users with one card each; the device token."""
    return str(primary_login.seed(primary.url, primary.admin_token, users, site_id=SITE_ID))


def wait_mirrored(site: SiteHandle, users: int, timeout: float = 120) -> None:
    """Until the site's mirror holds all the cards and the device (bootstrap plus feed pages)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = sqlite3.connect(f"file:{site.db_path}?mode=ro", uri=True, timeout=5)
            try:
                cards = conn.execute("SELECT count(*) FROM user_cards").fetchone()[0]
                devices = conn.execute(
                    "SELECT count(*) FROM devices WHERE device_id = 'bench-mfd'"
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10, help="seconds of wrk load per server")
    ap.add_argument("--warmup", type=float, default=2, help="seconds of wrk load before each measurement")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--users", type=int, default=1000, help="seeded users, one card each")
    ap.add_argument("--sequential", type=int, default=500, help="requests for the unloaded latency")
    ap.add_argument("--show-wrk", action="store_true", help="print wrk's own report too")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, databases)")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    if args.users < 1 or args.users > 999_999:
        ap.error("--users must be between 1 and 999999")

    root = Path(tempfile.mkdtemp(prefix="bench-site-login-"))
    print(f"site_login: files in {root}", flush=True)
    primary = site = None
    bare = BareProcess(0, root / "bare.log")
    failures: list[str] = []
    results: dict[str, WrkResult] = {}
    logins = 0
    try:
        primary = start_primary(root)
        t = time.perf_counter()
        token = seed(primary, args.users)
        print(
            f"  seeded {args.users:,} users with cards, a printer and a device "
            f"in {time.perf_counter() - t:.1f} s"
        )
        site = make_site(primary, root)
        site.process.start()
        bare.port = free_port()
        bare.start()
        site.process.wait_listening(timeout=60)
        wait_bootstrapped(site, 120)
        wait_mirrored(site, args.users)
        bare.wait_listening()
        check = ok(
            httpx.post(
                site.url + LOGIN_PATH,
                json={"card_number": card(1)},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
        )
        if check.get("username") != "bench000001":
            raise RuntimeError(f"card login at the site answered {check}")

        assert site.process.proc is not None and bare.proc is not None
        for name, srv, pid in (
            ("bare FastAPI", bare.url, bare.proc.pid),
            ("site login", site.url, site.process.proc.pid),
        ):
            kw = {"threads": args.threads, "connections": args.connections, "server_pid": pid}
            if args.warmup > 0:
                w = run_wrk(srv, token, args.users, duration=args.warmup, **kw)
                if name == "site login":
                    logins += w.requests
            print(
                f"  wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s against {name} …",
                flush=True,
            )
            r = run_wrk(srv, token, args.users, duration=args.duration, **kw)
            results[name] = r
            if name == "site login":
                logins += r.requests
            if args.show_wrk:
                print(r.raw)
            if r.non2xx or r.socket_errors:
                failures.append(f"{name}: {r.non2xx} non-2xx answers, {r.socket_errors} socket errors")

        seq = {
            name: sequential(srv, token, args.users, args.sequential)
            for name, srv in (("bare FastAPI", bare.url), ("site login", site.url))
        }
        for name, s in seq.items():
            if s.failures:
                failures.append(f"{name} (sequential): {s.failures} non-200 answers")
        for name, proc in (("site", site.process.proc), ("bare app", bare.proc)):
            if proc.poll() is not None:
                failures.append(f"{name} exited during the run with {proc.returncode}")
    finally:
        bare.stop()
        if site is not None:
            site.process.stop()
            log_errors(site.process, "site")
        if primary is not None:
            primary.process.stop()
            log_errors(primary.process, "primary")
        if args.keep:
            print(f"kept {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)

    bare_r, login_r = results["bare FastAPI"], results["site login"]
    if logins > SESSION_CAP_WARN:
        print(
            f"\nWARNING: about {logins:,} device sessions opened; the site's SessionRegistry holds at most "
            f"{MAX_SESSIONS:,} (see bench/README.md, primary_login.py). Use a shorter --duration."
        )
    print()
    print(
        f"wrk -t{args.threads} -c{args.connections}, {args.duration:g} s, {args.users:,} cards; "
        f"latency in ms; CPU = server process CPU per request / share of one core"
    )
    print(
        f"{'':<16}{'req/s':>9}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'non-2xx':>9}{'sock err':>9}"
        f"{'CPU us/req':>11}{'CPU %':>7}"
    )
    for name, r in results.items():
        print(
            f"{name:<16}{r.rps:>9,.0f}{r.p50_ms:>8.2f}{r.p90_ms:>8.2f}{r.p99_ms:>8.2f}{r.max_ms:>8.1f}"
            f"{r.non2xx:>9}{r.socket_errors:>9}{r.cpu_per_req_us:>11,.0f}{r.server_cpu_pct:>7.0f}"
        )
    rps_ratio = login_r.rps / bare_r.rps
    p99_ratio = login_r.p99_ms / bare_r.p99_ms
    print(
        f"{'site / bare':<16}{rps_ratio:>9.0%}{login_r.p50_ms / bare_r.p50_ms:>7.1f}x"
        f"{'':>8}{p99_ratio:>7.1f}x{'':>8}{'':>9}{'':>9}"
        f"{login_r.cpu_per_req_us / bare_r.cpu_per_req_us:>10.1f}x"
    )
    print()
    print(f"unloaded, {args.sequential} sequential requests on one keep-alive httpx client (ms):")
    print(f"{'':<16}{'p50':>8}{'p99':>8}{'mean':>8}")
    for name, s in seq.items():
        print(f"{name:<16}{s.p50_ms:>8.2f}{s.p99_ms:>8.2f}{s.mean_ms:>8.2f}")
    print()
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
    if failures:
        print("FAILURES:")
        for f in failures:
            print("  " + f)
        return 1
    print("no errors: every answer was 2xx")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # everything started was stopped in the finally blocks
        print("interrupted", file=sys.stderr)
        sys.exit(130)
