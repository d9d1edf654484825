"""Primary-change-to-site latency: how long a change made on the primary takes to reach a site.

It starts a primary (`siteserver primary run`), seeds --users users through the admin API, creates
and enrolls a site (`siteserver site enroll`) and starts it (`siteserver site run`) with the
default `[sync] changes_wait_secs` (the site long-polls the change feed). Once the site has
bootstrapped, it makes --changes changes one after another: PATCH /api/admin/v1/users/<u>
{"full_name": <unique value>} on the primary, cycling through the seeded users. For each, the clock
starts just before the PATCH is sent and stops when a read-only connection to the site's site.db,
polled every --poll-ms, sees the new value. It prints p50/p95/max of that latency (and of the PATCH
round trip alone, for scale). Everything it starts is stopped at the end.

    python bench/change_latency.py [--changes 200] [--users 20] [--poll-ms 5] [--keep]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import (  # first: puts this checkout on sys.path
    exited,
    keep_or_remove,
    make_site,
    ok,
    report_failures,
    run_main,
    site_ro,
    start_primary,
    stop_server,
    wait_bootstrapped,
)

TARGET_P95_MS = 1000.0


def pct(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_ms[min(len(sorted_ms) - 1, max(0, round(q * len(sorted_ms) + 0.5) - 1))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--users", type=int, default=20, help="users seeded on the primary, patched in turn")
    ap.add_argument("--poll-ms", type=float, default=5.0, help="how often site.db is read")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one change")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, databases)")
    args = ap.parse_args(argv)
    if args.changes < 1 or args.users < 1:
        ap.error("--changes and --users must be positive")

    root = Path(tempfile.mkdtemp(prefix="bench-change-"))
    print(f"change_latency: {args.changes} changes; files in {root}", flush=True)
    primary = site = None
    latency: list[float] = []  # ms, PATCH sent -> visible in site.db
    patch_rt: list[float] = []  # ms, PATCH round trip
    failures: list[str] = []
    try:
        primary = start_primary(root)
        names = [f"user{i:04d}" for i in range(1, args.users + 1)]
        with primary.admin() as c, ThreadPoolExecutor(max_workers=4) as pool:
            list(
                pool.map(
                    lambda n: ok(
                        c.post("/api/admin/v1/users", json={"username": n, "card_numbers": [n.upper()]})
                    ),
                    names,
                )
            )
        site = make_site(primary, root)  # default [sync]: changes_wait_secs = 25
        t0 = time.perf_counter()
        site.process.start()
        site.process.wait_listening(timeout=60)
        boot = wait_bootstrapped(site, 60) - t0
        print(f"  site bootstrapped {args.users} users in {boot:.2f} s; making changes …", flush=True)
        time.sleep(1.0)  # let the follower settle into its first long poll

        conn = site_ro(site.db_path)
        assert conn is not None
        poll = args.poll_ms / 1000
        try:
            with primary.admin() as c:
                for k in range(args.changes):
                    name = names[k % len(names)]
                    value = f"bench change {k} {time.time_ns()}"
                    t = time.perf_counter()
                    ok(c.patch(f"/api/admin/v1/users/{name}", json={"full_name": value}))
                    t_patch = time.perf_counter()
                    deadline = t + args.timeout
                    while True:
                        row = conn.execute(
                            "SELECT full_name FROM users WHERE username = ?", (name,)
                        ).fetchone()
                        now = time.perf_counter()
                        if row is not None and row[0] == value:
                            break
                        if now > deadline:
                            raise TimeoutError(f"change {k} not at the site after {args.timeout:g} s")
                        time.sleep(poll)
                    latency.append(1000 * (now - t))
                    patch_rt.append(1000 * (t_patch - t))
        finally:
            conn.close()
        failures += exited(("primary", primary.process.proc), ("site", site.process.proc))
    finally:
        stop_server(site, "site")
        stop_server(primary, "primary")
        keep_or_remove(root, args.keep, indent="  ")

    lat, rt = sorted(latency), sorted(patch_rt)
    print()
    print(
        f"{args.changes} changes, one after another (PATCH full_name on the primary -> seen in site.db, "
        f"polled every {args.poll_ms:g} ms); ms"
    )
    print(f"{'':<28}{'p50':>8}{'p95':>8}{'max':>8}{'mean':>8}")
    for label, xs in (("change -> visible at site", lat), ("PATCH round trip alone", rt)):
        print(
            f"{label:<28}{pct(xs, 0.50):>8.1f}{pct(xs, 0.95):>8.1f}{xs[-1]:>8.1f}{statistics.fmean(xs):>8.1f}"
        )
    fast = sum(1 for x in lat if x < 50)
    tick = sum(1 for x in lat if 150 <= x < 300)
    print(
        f"{fast} of {len(lat)} under 50 ms, {tick} between 150 and 300 ms "
        "(the primary's long poll checks for new changes every 200 ms)"
    )
    p95 = pct(lat, 0.95)
    print()
    print(f"p95 {p95:.0f} ms vs target < {TARGET_P95_MS:g} ms: {'ok' if p95 < TARGET_P95_MS else 'MISSED'}")
    return report_failures(failures)


if __name__ == "__main__":
    run_main(main)
