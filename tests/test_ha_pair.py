"""The active/passive pair as an admin runs it: two `siteserver primary run` processes on one
database file with the high-availability guard on, killed with SIGKILL, frozen with SIGSTOP,
stopped with SIGTERM, and cloned (same server.uuid). DESIGN.md invariant 6.

Timings are printed (run with `-s` to see them); the bounds asserted are deliberately generous so
that a slow machine does not fail them, only a guard that waits for the wrong thing.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from siteserver.launch import health_url
from siteserver.primary.guard import LOCKED_WHY
from tests.kit.locks import write_lock
from tests.kit.primary import PAIR_INTERVAL, Pair, Primary, new_id

pytestmark = pytest.mark.timeout(120)  # a hang fails its own test, not the whole run

INTERVAL = PAIR_INTERVAL  # fail-over-interval-secs of these pairs
HEARTBEAT = INTERVAL / 6  # what the guard derives from it
SLACK = 2.5  # for a loaded CI machine: process scheduling, activation, the polling itself

PASSIVE_BODY = {"status": "PASSIVE", "role": "passive"}


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    try:
        yield p
    finally:
        p.close()


def health(p: Primary, key: str | None = None, timeout: float = 10.0) -> httpx.Response | None:
    """One fresh connection per probe, as a load balancer does; None when nothing answers."""
    try:
        return httpx.get(health_url(p.url, p.health_key if key is None else key), timeout=timeout)
    except httpx.HTTPError:
        return None


def status(p: Primary) -> int | None:
    r = health(p)
    return None if r is None else r.status_code


def wait_for_status(p: Primary, code: int, timeout: float) -> tuple[float, httpx.Response]:
    """Poll the health URL (no fixed sleeps) until it answers `code`; returns (seconds, answer)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    last: httpx.Response | None = None
    while time.monotonic() < deadline:
        r = health(p, timeout=2.0)
        if r is not None:
            last = r
            if r.status_code == code:
                return time.monotonic() - t0, r
        time.sleep(0.02)
    seen = "nothing" if last is None else f"{last.status_code} {last.text}"
    raise AssertionError(f"{p.url} did not answer {code} within {timeout}s (last: {seen})\n{notable_log(p)}")


def notable_log(p: Primary) -> str:
    """The member's log without the access lines (the health polling buries the guard's lines)."""
    lines = p.process.log_path.read_text(errors="replace").splitlines()
    return "\n".join([line for line in lines if "uvicorn.access" not in line][-30:])


def freeze_between_writes(p: Primary, database: Path) -> None:
    """SIGSTOP `p` at a moment it holds no write lock. Frozen inside a transaction it would keep
    the lock, and no member could take over: `test_a_write_lock_held_by_a_frozen_process_...`."""
    for _ in range(50):
        p.process.signal(signal.SIGSTOP)
        try:
            with write_lock(database):
                return
        except sqlite3.OperationalError:
            p.process.signal(signal.SIGCONT)
            time.sleep(0.05)
    raise AssertionError(f"{p.url} held the database's write lock at each of 50 freezes")


def assert_roles(active: Primary, passive: Primary, *, epoch: int | None = None) -> None:
    a, b = health(active), health(passive)
    assert a is not None and a.status_code == 200, (a and a.text, active.process.log_tail())
    assert b is not None and b.status_code == 503, (b and b.text, passive.process.log_tail())
    assert b.json() == PASSIVE_BODY
    body = a.json()
    assert body["status"] == "OK" and body["role"] == "active"
    assert body["server_uuid"] == server_uuid(active)
    if epoch is not None:
        assert body["epoch"] == epoch


def assert_roles_hold(active: Primary, passive: Primary, *, epoch: int, secs: float) -> None:
    """The roles stay put over several heartbeats (no flapping, no second takeover)."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        assert_roles(active, passive, epoch=epoch)
        time.sleep(HEARTBEAT / 2)


def server_uuid(p: Primary) -> str:
    return (p.data_dir / "server.uuid").read_text().strip()


def epoch_of(p: Primary) -> int:
    r = health(p)
    assert r is not None and r.status_code == 200, r and r.text
    return int(r.json()["epoch"])


def start_pair(pair: Pair) -> tuple[Primary, Primary]:
    """Member "a" first (it takes the free lease), then "b", which must come up passive."""
    a = pair.start("a", wait_active=True)
    b = pair.start("b")
    return a, b


def transaction_ids(p: Primary) -> set[str]:
    ids: set[str] = set()
    since = 0
    with p.admin() as c:
        while True:
            r = c.get("/api/admin/v1/transactions", params={"since_seq": since, "limit": 10_000})
            assert r.status_code == 200, r.text
            page = r.json()
            ids |= {t["txn_id"] for t in page["transactions"]}
            if not page["transactions"]:
                return ids
            since = page["next_seq"]


def balance(p: Primary, username: str) -> int:
    with p.admin() as c:
        r = c.get(f"/api/admin/v1/users/{username}")
    assert r.status_code == 200, r.text
    return int(r.json()["balance_cents"])


def create_user(p: Primary, username: str, balance_cents: int) -> None:
    with p.admin() as c:
        r = c.post("/api/admin/v1/users", json={"username": username, "balance_cents": balance_cents})
    assert r.status_code == 201, r.text


def adjust(p: Primary, username: str, txn_id: str, amount: int) -> httpx.Response:
    with p.admin() as c:
        return c.post(
            f"/api/admin/v1/users/{username}/adjustments",
            json={"txn_id": txn_id, "amount_cents": amount, "comment": "ha test"},
        )


# -- 1. one active, one passive ---------------------------------------------------------------


def test_exactly_one_member_is_active_and_the_passive_one_refuses_service(pair: Pair) -> None:
    a, b = start_pair(pair)
    codes = {"a": status(a), "b": status(b)}
    assert sorted(codes.values(), key=str) == [200, 503], codes
    active, passive = (a, b) if codes["a"] == 200 else (b, a)
    assert server_uuid(a) != server_uuid(b)
    assert_roles(active, passive, epoch=1)  # a fresh database: the first activation is epoch 1
    body = health(active)
    assert body is not None and isinstance(body.json()["disk_free_mb"], int)

    # The health key is checked on both members, active or not.
    for p in (active, passive):
        for key in ("wrong-key", ""):
            r = health(p, key)
            assert r is not None and r.status_code == 401, (key, r and r.text)
            assert r.json()["error"] == "unauthorized"

    # The passive member serves nothing but its health URL, reads and writes alike.
    with passive.admin() as c:
        r = c.get("/api/admin/v1/sites")
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "not_active" and r.json()["detail"]
        # ... and closes the connection: a client behind a TCP-check balancer reconnects, and the
        # balancer picks a member again instead of keeping it on the passive one.
        assert r.headers["connection"] == "close"
        r = c.post("/api/admin/v1/users", json={"username": "via-passive"})
        assert r.status_code == 503 and r.json()["error"] == "not_active", r.text
    with active.admin() as c:
        assert c.get("/api/admin/v1/sites").status_code == 200
        assert c.get("/api/admin/v1/users/via-passive").status_code == 404
    assert_roles_hold(active, passive, epoch=1, secs=2 * HEARTBEAT)


# -- 2. SIGKILL of the active member ------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_of_the_active_fails_over_within_the_interval_and_the_killed_one_returns_passive(
    pair: Pair,
) -> None:
    a, b = start_pair(pair)
    assert_roles(a, b, epoch=1)
    create_user(a, "before-kill", 700)
    epoch = epoch_of(a)

    t0 = time.monotonic()
    a.process.kill()
    _, r = wait_for_status(b, 200, timeout=INTERVAL + HEARTBEAT + SLACK + 20)
    since_kill = time.monotonic() - t0
    print(f"\nfailover after SIGKILL: {since_kill:.2f}s (bound {INTERVAL}s + {HEARTBEAT}s beat)")
    assert since_kill <= INTERVAL + HEARTBEAT + SLACK, (
        f"failover took {since_kill:.2f}s; at most {INTERVAL + HEARTBEAT + SLACK}s expected"
    )
    body = r.json()
    assert body["epoch"] == epoch + 1  # the takeover took a new fencing token
    assert body["server_uuid"] == server_uuid(b)
    assert balance(b, "before-kill") == 700  # the same database, nothing lost

    # The killed member comes back (same data_dir, same server.uuid) and stays passive.
    a2 = pair.start("a")
    assert server_uuid(a2) == server_uuid(a)
    _, r = wait_for_status(a2, 503, timeout=10)
    assert r.json() == PASSIVE_BODY
    assert_roles_hold(b, a2, epoch=epoch + 1, secs=4 * HEARTBEAT)
    with a2.admin() as c:
        r = c.get("/api/admin/v1/sites")
        assert r.status_code == 503 and r.json()["error"] == "not_active"


# -- 3. fencing a member that froze and woke up ------------------------------------------------


@pytest.mark.slow
def test_a_frozen_active_that_wakes_up_after_the_takeover_cannot_write(pair: Pair) -> None:
    a, b = start_pair(pair)
    create_user(a, "frozen-victim", 1_000)
    before = new_id()
    r = adjust(a, "frozen-victim", before, 100)
    assert r.status_code == 200, r.text
    assert r.json()["balance_cents"] == 1_100
    epoch = epoch_of(a)

    t0 = time.monotonic()
    freeze_between_writes(a, pair.database)
    try:
        wait_for_status(b, 200, timeout=INTERVAL + HEARTBEAT + SLACK + 20)
        print(f"\nfailover after SIGSTOP: {time.monotonic() - t0:.2f}s")
        assert epoch_of(b) == epoch + 1

        # A write that reached the frozen member's socket while it was frozen: the kernel queues it,
        # and the member handles it the moment it runs again, before its guard has had a beat.
        queued_txn, woken_txn = new_id(), new_id()
        with ThreadPoolExecutor(max_workers=1) as pool:
            queued = pool.submit(adjust, a, "frozen-victim", queued_txn, -300)
            time.sleep(0.3)  # let the request reach the frozen member's socket
            client = a.admin()
            try:
                a.process.signal(signal.SIGCONT)
                # ... and one sent the instant it runs again.
                woken = client.post(
                    "/api/admin/v1/users/frozen-victim/adjustments",
                    json={"txn_id": woken_txn, "amount_cents": -500, "comment": "after SIGCONT"},
                )
            finally:
                client.close()
            queued_answer = queued.result(timeout=60)
    finally:
        a.process.signal(signal.SIGCONT)

    for what, answer in (("queued while frozen", queued_answer), ("after SIGCONT", woken)):
        assert not 200 <= answer.status_code < 300, f"{what}: {answer.status_code} {answer.text}"
        assert answer.status_code == 503, f"{what}: {answer.status_code} {answer.text}"
        assert answer.json()["error"] == "not_active", f"{what}: {answer.text}"

    # No trace of either write: not in the balance, not in the ledger.
    assert balance(b, "frozen-victim") == 1_100
    ids = transaction_ids(b)
    assert before in ids
    assert queued_txn not in ids and woken_txn not in ids

    # The woken member is passive and stays so; the new active keeps its epoch.
    _, r = wait_for_status(a, 503, timeout=10)
    assert r.json() == PASSIVE_BODY
    assert_roles_hold(b, a, epoch=epoch + 1, secs=4 * HEARTBEAT)
    assert "stepping down to PASSIVE" in a.process.log_tail(20_000)

    # The caller's retry through the load balancer (same txn_id) is applied once, by the new active.
    r = adjust(b, "frozen-victim", woken_txn, -500)
    assert r.status_code == 200 and r.json()["status"] == "applied", r.text
    assert r.json()["balance_cents"] == 600


@pytest.mark.slow
def test_a_write_lock_held_by_a_frozen_process_stops_the_takeover_until_it_is_released(
    pair: Pair,
) -> None:
    """SQLite cannot take a lock from the process holding it: a member frozen in the middle of a
    write blocks every member until it runs again or is killed. The passive member must wait,
    say why at ERROR level, and take over the moment the lock is free."""
    a, b = start_pair(pair)
    epoch = epoch_of(a)
    a.process.kill()  # the active member is gone; this process plays its frozen transaction
    with write_lock(pair.database):
        deadline = time.monotonic() + 2 * (INTERVAL + 5.5)  # two failed beats of b, 5 s busy each
        while "ERROR siteserver.ha" not in notable_log(b):
            assert time.monotonic() < deadline, notable_log(b)
            assert status(b) == 503  # no takeover past a held lock
            time.sleep(HEARTBEAT)
        assert LOCKED_WHY in notable_log(b)
        assert status(b) == 503
    # b never saw a's beat before the lock, so it first watches the beat stay still an interval.
    waited, _ = wait_for_status(b, 200, timeout=INTERVAL + HEARTBEAT + 5 + SLACK)
    print(f"\ntakeover {waited:.2f}s after the lock was released")
    assert epoch_of(b) == epoch + 1


# -- 4. a clone with the same server.uuid --------------------------------------------------------


def test_a_second_member_with_the_same_server_uuid_exits_with_code_3(pair: Pair) -> None:
    a = pair.start("a", wait_active=True)
    epoch = epoch_of(a)
    clone_dir = pair.tmp / "clone"
    clone_dir.mkdir()
    shutil.copy(a.data_dir / "server.uuid", clone_dir / "server.uuid")

    t0 = time.monotonic()
    clone = pair.start_raw("clone")
    code = clone.wait(timeout=60)
    took = time.monotonic() - t0
    print(f"\nclone refused after {took:.2f}s (exit code {code})")
    log = clone.log_tail(20_000)
    assert "DUPLICATE SERVER UUID" in log, log
    assert took <= 20, f"the clone took {took:.1f}s to give up"

    # The original carries on, undisturbed: same lease, same epoch, still answering.
    deadline = time.monotonic() + 2 * HEARTBEAT
    while time.monotonic() < deadline:
        r = health(a)
        assert r is not None and r.status_code == 200, r and r.text
        assert r.json()["epoch"] == epoch
        time.sleep(HEARTBEAT / 2)
    with a.admin() as c:
        r = c.post("/api/admin/v1/users", json={"username": "after-clone"})
        assert r.status_code == 201, r.text

    assert code == 3, log


# -- 5. a polite stop hands over at once ---------------------------------------------------------


@pytest.mark.slow
def test_sigterm_of_the_active_releases_the_lease_for_a_quick_takeover(pair: Pair) -> None:
    # A longer interval here makes "released, not expired" plain: expiry would take >= 5 s.
    interval = 6.0
    a = pair.start("a", wait_active=True, interval=interval)
    b = pair.start("b", interval=interval)
    assert_roles(a, b)
    epoch = epoch_of(a)

    t0 = time.monotonic()
    a.process.signal(signal.SIGTERM)
    _, r = wait_for_status(b, 200, timeout=interval + 20)
    took = time.monotonic() - t0
    print(f"\ntakeover after SIGTERM: {took:.2f}s (interval {interval}s)")
    code = a.process.wait(timeout=30)
    assert r.json()["epoch"] == epoch + 1
    assert code == 0, a.process.log_tail()
    # The lease was given back (no holder) rather than left to expire.
    assert "previous holder none" in b.process.log_tail(20_000), b.process.log_tail()
    assert took < interval, f"takeover after a polite stop took {took:.2f}s"
