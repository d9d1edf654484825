"""Merge speed: how fast a site's journal of offline charges drains into the primary once the link
is back (issue 9, item 5).

It starts a primary, the project's fault proxy in front of it and an enrolled site whose only
`primary` URL is the proxy (`[wan]` probe_interval_secs 0.5, offline_after_failures 3,
online_after_successes 3), with --accounts users. Per size in --entries: the proxy refuses, the
site says offline, and that many pending offline copies (facts, 1-50 cents, spread over the
users) are written into the site's journal (one transaction, straight into site.db, as if charged
at its MFDs); then the proxy passes and the clock starts (link-up). The site's admin status is
polled every 100 ms until no entry is pending: that is the drain time. Merging may start before
the site hands authority back (`reconciling`). At the end every user's balance on the primary is
checked against the sum of the copies charged to them: a fast run that loses money cannot pass.

After each drain, a reconciliation report of everything merged so far is made
(`POST /api/admin/v1/reports/reconciliation`: every entry checked against the primary's ledger
over the signed look-up call) and fetched as JSON (streamed); it prints the seconds of each and
the site's RSS before and after (VmRSS, and its peak VmHWM), and checks the report's books agree
and that it lists every entry.

Baseline, same run, same disk: the same rows inserted into a bare SQLite table of the primary's
ledger schema with `executemany`, one transaction per 500 rows (WAL, synchronous=FULL).

    python bench/merge.py [--entries 20000 100000] [--accounts 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from _common import (  # first: puts this checkout on sys.path
    SiteHandle,
    keep_or_remove,
    make_site,
    proc_status,
    report_failures,
    run_main,
    start_primary,
    stop_server,
    wait_bootstrapped,
)

from siteserver import sample
from siteserver.faultproxy import FaultProxyProcess
from siteserver.launch import wait_until
from siteserver.store.db import connect

WAN = {"probe_interval_secs": 0.5, "offline_after_failures": 3, "online_after_successes": 3}
AT = "2026-12-01T10:00:00.000Z"
BATCH = 500


def status(site: SiteHandle) -> dict[str, object]:
    r = httpx.get(
        site.url + "/api/admin/v1/status", headers={"Authorization": f"Bearer {site.admin_token}"}, timeout=10
    )
    r.raise_for_status()
    body: dict[str, object] = r.json()
    return body


def charges(n: int, users: list[str], rng: random.Random) -> list[tuple[str, str, int]]:
    return [
        (str(uuid.UUID(int=rng.getrandbits(128), version=4)), rng.choice(users), -rng.randint(1, 50))
        for _ in range(n)
    ]


def write_journal(db: Path, rows: list[tuple[str, str, int]]) -> None:
    """Pending offline copies, as the site's charging writes them (the triggers keep its totals)."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchone()[0]
        conn.executemany(
            "INSERT INTO journal (txn_id, seq, account, amount_cents, kind, enforcement, occurred_at, flags,"
            " ref, printer, pages, status) VALUES (?, ?, ?, ?, 'copy', 'fact', ?, ?, 'bench-mfd', NULL, 1,"
            " 'pending')",
            [
                (t, seq + i, f"user:{u}", amount, AT, f'["offline", "by:{u}"]')
                for i, (t, u, amount) in enumerate(rows, 1)
            ],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def bare_insert(path: Path, rows: list[tuple[str, str, int]]) -> float:
    """Rows/s of a bare executemany into the ledger's shape, one transaction per BATCH rows."""
    conn = connect(path)
    conn.execute(
        "CREATE TABLE ledger (seq INTEGER PRIMARY KEY, txn_id TEXT NOT NULL UNIQUE,"
        " account_id INTEGER NOT NULL, amount_cents INTEGER NOT NULL,"
        " balance_after_cents INTEGER NOT NULL, kind TEXT NOT NULL,"
        " origin_site TEXT, occurred_at TEXT NOT NULL, applied_at TEXT NOT NULL, flags TEXT NOT NULL,"
        " ref TEXT, comment TEXT, epoch INTEGER NOT NULL)"
    )
    ids = {u: i for i, u in enumerate(sorted({u for _, u, _ in rows}), 1)}
    started = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN IMMEDIATE")
        conn.conn.executemany(
            "INSERT INTO ledger VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (i + j + 1, t, ids[u], a, 0, "copy", "bench-site", AT, AT, "[]", "bench-mfd", None, 1)
                for j, (t, u, a) in enumerate(rows[i : i + BATCH])
            ],
        )
        conn.execute("COMMIT")
    secs = time.perf_counter() - started
    conn.close()
    return len(rows) / secs


def report(site: SiteHandle, entries: int, failures: list[str]) -> tuple[int, float, float, int, int, int]:
    """(entries, seconds to make, seconds to fetch as JSON, RSS before, RSS after, peak RSS)."""
    assert site.process.proc is not None
    pid = site.process.proc.pid
    headers = {"Authorization": f"Bearer {site.admin_token}"}
    before = proc_status(pid, "VmRSS")
    with httpx.Client(base_url=site.url, headers=headers, timeout=600) as c:
        started = time.monotonic()
        made = c.post("/api/admin/v1/reports/reconciliation", json={}).json()
        made_secs = time.monotonic() - started
        started = time.monotonic()
        body = c.get(f"/api/admin/v1/reports/reconciliation/{made['report_id']}").content
        fetch_secs = time.monotonic() - started
    after, peak = proc_status(pid, "VmRSS"), proc_status(pid, "VmHWM")
    shown = json.loads(body)
    if shown["check"]["books_agree"] is not True or len(shown["entries"]) != entries:
        failures.append(f"report of {entries}: {len(shown['entries'])} entries, {shown['check']['summary']}")
    return entries, made_secs, fetch_secs, before, after, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, nargs="+", default=[20_000, 100_000])
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--keep", action="store_true", help="keep the run's files")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-merge-"))
    rng = random.Random(9)
    failures: list[str] = []
    primary = site = None
    proxy: FaultProxyProcess | None = None
    results: list[tuple[int, float, float, float, float]] = []
    reports: list[tuple[int, float, float, int, int, int]] = []
    try:
        primary = start_primary(root)
        users = [f"u{i:05d}" for i in range(args.accounts)]
        with primary.admin() as c:
            world = sample.build(
                c, users=[sample.User(u, balance_cents=10**9, restricted=False) for u in users], workers=8
            )
        proxy = FaultProxyProcess.in_front_of(primary.url).start()
        site = make_site(primary, root, world=world, wan=WAN, primary_urls=[proxy.url])
        site.process.start()
        site.process.wait_listening(timeout=60)
        wait_bootstrapped(site, 120)
        wait_until(lambda: status(site)["mode"] == "online", 30, "online")
        expected: dict[str, int] = {}
        merged_so_far = 0
        for n in args.entries:
            proxy.set("refuse")
            wait_until(lambda: status(site)["mode"] == "offline", 30, "offline")
            rows = charges(n, users, rng)
            for _, u, a in rows:
                expected[u] = expected.get(u, 0) + a
            write_journal(site.db_path, rows)
            proxy.set("pass")
            secs = wait_until(lambda: status(site)["journal"]["pending"] == 0, 600, "drained", poll=0.1)  # type: ignore[index]
            online = secs + wait_until(lambda: status(site)["mode"] == "online", 60, "online")
            bare = bare_insert(root / f"bare-{n}.db", rows)
            results.append((n, secs, online, n / secs, bare))
            merged_so_far += n
            reports.append(report(site, merged_so_far, failures))
        with primary.admin() as c:
            for u in users:
                got = c.get(f"/api/admin/v1/users/{u}").json()["balance_cents"]
                if got != 10**9 + expected.get(u, 0):
                    failures.append(f"{u}: balance {got}, expected {10**9 + expected.get(u, 0)}")
    finally:
        stop_server(site, "site")
        if proxy is not None:
            proxy.stop()
        stop_server(primary, "primary")
        keep_or_remove(root, args.keep)
    print(
        f"{'entries':>8} {'drained s':>10} {'online s':>9} {'merged/s':>9} {'bare rows/s':>12} {'ratio':>6}"
    )
    for n, secs, online, rate, bare in results:
        print(f"{n:>8} {secs:>10.2f} {online:>9.2f} {rate:>9.0f} {bare:>12.0f} {rate / bare:>6.2f}")
    print()
    print(
        f"{'report of':>10} {'made s':>7} {'JSON s':>7} {'RSS before MB':>14} {'after MB':>9} {'peak MB':>8}"
    )
    for n, made, fetched, before, after, peak in reports:
        mb = 1024 * 1024
        print(
            f"{n:>10} {made:>7.2f} {fetched:>7.2f} {before / mb:>14.1f} {after / mb:>9.1f} {peak / mb:>8.1f}"
        )
    return report_failures(
        failures, "every balance on the primary equals its users' merged copies; every report agrees"
    )


if __name__ == "__main__":
    run_main(main)
