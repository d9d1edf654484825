"""A site losing its WAN: how fast it notices, and how fast it charges while cut off.

It starts a primary, the project's fault proxy in front of it (siteserver.faultproxy) and an
enrolled site whose only `primary` URL is the proxy, with `[wan]` probe_interval_secs 1.0,
offline_after_failures 3 (the contract's defaults) and request_budget_ms 800. Three parts, all in
one run (pick with --parts):

  detect  After a random pause of 0..probe_interval (so the fault lands at a random point of the
          probe cycle), the proxy is switched to blackhole, then the site's health
          (`GET /api/health/site-server/status`) is polled every 20 ms until it says offline; the
          proxy goes back to pass and the script waits until the site is online again. --rounds
          times, then the same with refuse. Median and max against the bound
          probe_interval x offline_after_failures + 1 s.
  charge  wrk -t2 -c32 for --duration s against the SITE: card login (bench/login.lua) and copy
          charging (bench/usage.lua: POST /api/device/v1/sessions/{session}/usage, a fresh
          txn_id per request, one session), first online (proxy pass), then offline (proxy
          blackholed, the site says offline), next to bench/bare_app.py on the same stack; the
          offline copy run twice, the second with the first's entries still pending.
  sqlite  Bare SQLite single-row commits (INSERT + COMMIT, WAL, synchronous=FULL) on a fresh file
          in the same directory as site.db for --sqlite-secs, and the ratio of offline copy
          charges/s to it (needs `charge` in the same run for the ratio).

Everything it starts is stopped at the end, also on errors and Ctrl-C.

    python bench/wan_outage.py [--parts detect charge sqlite] [--rounds 10] [--duration 10]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from _common import (  # first: puts this checkout on sys.path
    SiteHandle,
    exited,
    keep_or_remove,
    make_site,
    ok,
    report_failures,
    run_main,
    start_primary,
    stop_server,
    wait_bootstrapped,
    wrk_missing,
)
from primary_login import LOGIN_PATH, BareProcess, WrkResult, run_wrk
from site_login import seed, wait_mirrored

from siteserver.faultproxy import FaultProxyProcess
from siteserver.launch import free_port

BENCH = Path(__file__).resolve().parent
PROBE_INTERVAL = 1.0
OFFLINE_AFTER = 3
BUDGET_MS = 800
BOUND_S = PROBE_INTERVAL * OFFLINE_AFTER + 1.0
HEALTH = "/api/health/site-server/status"
USERS = 1000


def site_mode(client: httpx.Client, url: str) -> str | None:
    try:
        return str(client.get(url + HEALTH, timeout=2).json()["mode"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def wait_mode(client: httpx.Client, site: SiteHandle, want: str, timeout: float, poll: float = 0.02) -> float:
    """Poll the site's health every `poll` s until it says `want`; time.monotonic() then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if site_mode(client, site.url) == want:
            return time.monotonic()
        proc = site.process.proc
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"site exited with {proc.returncode}: {site.process.log_tail()}")
        time.sleep(poll)
    raise TimeoutError(f"the site did not say {want!r} within {timeout:g} s")


def detect(
    site: SiteHandle, proxy: FaultProxyProcess, rounds: int
) -> dict[str, tuple[list[float], list[float]]]:
    """{fault: (seconds to offline, seconds from pass back to online)} over `rounds` rounds each."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    rng = random.Random(1)
    with httpx.Client() as c:
        wait_mode(c, site, "online", 60)
        for fault in ("blackhole", "refuse"):
            down: list[float] = []
            up: list[float] = []
            for i in range(rounds):
                # A random phase against the probe rounds: right after "online" was seen, a round
                # has just ended, and faulting at once would always hit the same point of the cycle.
                time.sleep(rng.uniform(0, PROBE_INTERVAL))
                proxy.set(fault)
                t0 = time.monotonic()
                down.append(wait_mode(c, site, "offline", 30) - t0)
                proxy.set("pass")
                t1 = time.monotonic()
                up.append(wait_mode(c, site, "online", 60) - t1)
                print(
                    f"  {fault} round {i + 1}/{rounds}: offline after {down[-1]:.2f} s, "
                    f"online again {up[-1]:.2f} s after pass",
                    flush=True,
                )
            out[fault] = (down, up)
    return out


def bare_sqlite(directory: Path, seconds: float) -> tuple[float, int]:
    """Single-row INSERT + COMMIT in a loop, WAL, synchronous=FULL, fresh file; (commits/s, commits)."""
    path = directory / "bare-commits.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, txn_id TEXT NOT NULL, cents INTEGER NOT NULL)")
        n = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t (txn_id, cents) VALUES (?, ?)", (f"txn-{n:012d}", 5))
            conn.execute("COMMIT")
            n += 1
        secs = time.perf_counter() - t0
    finally:
        conn.close()
    return n / secs, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--parts", nargs="+", choices=("detect", "charge", "sqlite"), default=["detect", "charge", "sqlite"]
    )
    ap.add_argument("--rounds", type=int, default=10, help="outages per fault (detect)")
    ap.add_argument("--duration", type=int, default=10, help="seconds of wrk load per run (charge)")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of wrk load before each run (0: none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--sqlite-secs", type=float, default=5, help="seconds of bare SQLite commits")
    ap.add_argument("--show-wrk", action="store_true", help="print wrk's own report too")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, databases)")
    args = ap.parse_args(argv)
    parts = set(args.parts)
    if "charge" in parts and wrk_missing():
        return 1

    root = Path(tempfile.mkdtemp(prefix="bench-wan-outage-"))
    print(f"wan_outage: files in {root}", flush=True)
    primary = site = proxy = None
    bare = BareProcess(0, root / "bare.log")
    failures: list[str] = []
    detected: dict[str, tuple[list[float], list[float]]] = {}
    results: dict[str, WrkResult] = {}
    sqlite_rate: tuple[float, int] | None = None
    try:
        primary = start_primary(root)
        world = seed(primary, USERS)
        token = world.mono_device
        # A balance no run can use up (copies are 10 cents): nothing is refused for money.
        with primary.admin() as c:
            ok(
                c.post(
                    "/api/admin/v1/users",
                    json={"username": "copier", "card_numbers": ["C-COPIER"], "balance_cents": 10**9},
                )
            )
        proxy = FaultProxyProcess.in_front_of(primary.url).start()
        wan = {
            "probe_interval_secs": PROBE_INTERVAL,
            "offline_after_failures": OFFLINE_AFTER,
            "request_budget_ms": BUDGET_MS,
        }
        site = make_site(primary, root, world=world, wan=wan, primary_urls=[proxy.url])
        site.process.start()
        if "charge" in parts:
            bare.port = free_port()
            bare.start()
        site.process.wait_listening(timeout=60)
        wait_bootstrapped(site, 120)
        wait_mirrored(site, USERS + 1, world.names.mono_device)
        assert site.process.proc is not None
        site_pid = site.process.proc.pid

        if "detect" in parts:
            print(f"detection: {args.rounds} rounds each of blackhole and refuse", flush=True)
            detected = detect(site, proxy, args.rounds)

        if "charge" in parts:
            bare.wait_listening()
            assert bare.proc is not None
            auth = {"Authorization": f"Bearer {token}"}
            with httpx.Client() as c:
                wait_mode(c, site, "online", 60)
                session = ok(c.post(site.url + LOGIN_PATH, json={"card_number": "C-COPIER"}, headers=auth))[
                    "session_id"
                ]
            login_lua, usage_lua = BENCH / "login.lua", BENCH / "usage.lua"
            usage_path = f"/api/device/v1/sessions/{session}/usage"
            kw = {"threads": args.threads, "connections": args.connections}

            def measure(name: str, url: str, lua: Path, wrk_args: list[str], pid: int) -> None:
                if args.warmup > 0:
                    run_wrk(url, lua, wrk_args, duration=args.warmup, pid=pid, **kw)
                print(f"  wrk -t{args.threads} -c{args.connections} -d{args.duration}s: {name} …", flush=True)
                r = run_wrk(url, lua, wrk_args, duration=args.duration, pid=pid, **kw)
                results[name] = r
                if args.show_wrk:
                    print(r.raw)
                if r.non2xx or r.socket_errors:
                    failures.append(f"{name}: {r.non2xx} non-2xx answers, {r.socket_errors} socket errors")

            measure("bare login", bare.url + LOGIN_PATH, login_lua, [token, str(USERS)], bare.proc.pid)
            measure("bare usage", bare.url + usage_path, usage_lua, [token], bare.proc.pid)
            proxy.set("pass")
            measure("online login", site.url + LOGIN_PATH, login_lua, [token, str(USERS)], site_pid)
            measure("online copy", site.url + usage_path, usage_lua, [token], site_pid)
            proxy.set("blackhole")
            with httpx.Client() as c:
                wait_mode(c, site, "offline", 30)
            measure("offline login", site.url + LOGIN_PATH, login_lua, [token, str(USERS)], site_pid)
            measure("offline copy", site.url + usage_path, usage_lua, [token], site_pid)
            # Once more, with every copy of the first run still pending on the same account (the
            # shared "Offline Account" of a real outage): the rate must not fall as the journal grows.
            measure("offline again", site.url + usage_path, usage_lua, [token], site_pid)
            with httpx.Client() as c:
                if site_mode(c, site.url) != "offline":
                    failures.append("the site was not offline at the end of the offline runs")

        if "sqlite" in parts:
            print(f"bare SQLite single-row commits for {args.sqlite_secs:g} s …", flush=True)
            sqlite_rate = bare_sqlite(site.data_dir, args.sqlite_secs)

        failures += exited(("site", site.process.proc), ("bare app", bare.proc))
    finally:
        bare.stop()
        stop_server(site, "site")
        if proxy is not None:
            proxy.stop()
        stop_server(primary, "primary")
        keep_or_remove(root, args.keep)

    print()
    if detected:
        print(
            f"detection ([wan] probe_interval_secs {PROBE_INTERVAL:g}, offline_after_failures "
            f"{OFFLINE_AFTER}, request_budget_ms {BUDGET_MS}; health polled every 20 ms; seconds):"
        )
        print(
            f"{'fault':<11}{'rounds':>7}{'offline p50':>13}{'max':>7}{'bound':>7}{'online p50':>12}{'max':>7}"
        )
        for fault, (down, up) in detected.items():
            print(
                f"{fault:<11}{len(down):>7}{statistics.median(down):>13.2f}{max(down):>7.2f}{BOUND_S:>7.1f}"
                f"{statistics.median(up):>12.2f}{max(up):>7.2f}"
            )
            if max(down) > BOUND_S:
                failures.append(f"{fault}: offline after {max(down):.2f} s, over the {BOUND_S:g} s bound")
        print(f"bound = probe_interval x offline_after_failures + 1 s = {BOUND_S:g} s")
        print()
    if results:
        print(f"wrk -t{args.threads} -c{args.connections}, {args.duration} s each; latency in ms")
        print(
            f"{'':<15}{'req/s':>9}{'p50':>8}{'p99':>8}{'max':>8}{'non-2xx':>9}{'sock err':>9}"
            f"{'CPU us/req':>11}"
        )
        for name, r in results.items():
            print(
                f"{name:<15}{r.rps:>9,.0f}{r.p50_ms:>8.2f}{r.p99_ms:>8.2f}{r.max_ms:>8.1f}"
                f"{r.non2xx:>9}{r.socket_errors:>9}{r.cpu_per_req_us:>11,.0f}"
            )
        print(
            "(online copies are pushed to the primary within the budget: their rate includes the merge path)"
        )
        if "offline again" in results:
            print(
                f"(offline again: started with the {results['offline copy'].requests:,}+ copies of the"
                " first offline run pending, all on one account)"
            )
        print()
    if sqlite_rate is not None:
        rate, n = sqlite_rate
        print(f"bare SQLite INSERT+COMMIT (WAL, synchronous=FULL): {rate:,.0f} commits/s ({n:,} commits)")
        if "offline copy" in results:
            off = results["offline copy"].rps
            print(f"offline copy charges / bare commits: {off:,.0f} / {rate:,.0f} = {off / rate:.2f}x")
        print()
    return report_failures(failures, "no errors")


if __name__ == "__main__":
    run_main(main)
