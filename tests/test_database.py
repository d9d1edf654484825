"""The database facade: one writer thread with group commit, snapshot reads, the fence,
the pragmas, and durability of every acknowledged write across a SIGKILL."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from migrations.primary import migrations
from siteserver.domain import NotActive
from siteserver.store import Database


class Boom(Exception):
    pass


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = Database(tmp_path / "facade.db")
    d.open()
    d.write_sync(
        lambda c: c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"), fenced=False
    )
    yield d
    d.close()


def insert(v: str) -> Any:
    def work(c: sqlite_utils.Database) -> int:
        cur = c.execute("INSERT INTO t (v) VALUES (?)", [v])
        assert cur.lastrowid is not None
        return cur.lastrowid

    return work


def values(db: Database) -> list[str]:
    return db.read_sync(lambda c: [r[0] for r in c.execute("SELECT v FROM t ORDER BY id")])


def row_exists(conn: sqlite_utils.Database, rowid: int) -> bool:
    return conn.execute("SELECT 1 FROM t WHERE id = ?", [rowid]).fetchone() is not None


def count(db: Database) -> int:
    return int(db.read_sync(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0]))


class GroupSpy:
    """Holds the writer inside a first job while the test queues more, and records group sizes."""

    def __init__(self, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        original = db._run_group

        def spy(group: list[Any]) -> None:
            self.sizes.append(len(group))
            original(group)

        monkeypatch.setattr(db, "_run_group", spy)
        self.db = db

    def block(self, *, fenced: bool = True) -> Future[None]:
        def hold(c: sqlite_utils.Database) -> None:
            self.started.set()
            assert self.release.wait(30)

        fut: Future[None] = self.db.submit(hold, fenced=fenced)
        assert self.started.wait(30)
        return fut


def submit_from_threads(db: Database, works: list[tuple[Any, bool]]) -> list[Future[Any]]:
    """Submit every job at (nearly) the same moment from its own thread; keep the order."""
    futures: list[Future[Any] | None] = [None] * len(works)
    barrier = threading.Barrier(len(works))

    def go(i: int) -> None:
        fn, fenced = works[i]
        barrier.wait()
        futures[i] = db.submit(fn, fenced=fenced)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(works))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(f is not None for f in futures)
    return futures  # type: ignore[return-value]


# -- basics ---------------------------------------------------------------------------------


def test_write_is_visible_to_a_later_read(db: Database) -> None:
    rowid = db.write_sync(insert("a"))
    assert rowid == 1
    assert values(db) == ["a"]
    db.write_sync(lambda c: c.execute("UPDATE t SET v = 'b' WHERE id = 1"))
    assert values(db) == ["b"]


def test_async_write_and_read(db: Database) -> None:
    async def main() -> tuple[list[int], int]:
        ids = await asyncio.gather(*(db.write(insert(f"v{i}")) for i in range(30)))
        n = await db.read(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0])
        return list(ids), n

    ids, n = asyncio.run(main())
    assert sorted(ids) == list(range(1, 31))
    assert n == 30


def test_read_now_runs_on_the_callers_thread_and_sees_what_was_committed(db: Database) -> None:
    """`read_now` answers on the calling thread (no hop to the reader), on a read-only connection
    of that thread's own, and sees every committed write; once the database is closed it refuses."""
    count = lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0]  # noqa: E731
    db.write_sync(insert("a"))
    seen: dict[str, tuple[str, int]] = {}

    def on(name: str) -> None:
        seen[name] = (threading.current_thread().name, db.read_now(count))

    threads = [threading.Thread(target=on, args=(f"device-{i}",), name=f"device-{i}") for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert seen == {"device-0": ("device-0", 1), "device-1": ("device-1", 1)}
    db.write_sync(insert("b"))
    assert db.read_now(count) == 2  # the thread's connection is kept, and not a stale snapshot
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.read_now(insert("c"))
    db.close()
    with pytest.raises(RuntimeError, match="not open"):
        db.read_now(count)


def test_failing_write_raises_and_leaves_nothing(db: Database) -> None:
    def fails(c: sqlite_utils.Database) -> None:
        c.execute("INSERT INTO t (v) VALUES ('ghost')")
        raise Boom("no")

    with pytest.raises(Boom):
        db.write_sync(fails)
    assert values(db) == []
    db.write_sync(insert("after"))  # the writer carries on
    assert values(db) == ["after"]


def test_sql_error_in_a_job_is_reported(db: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        db.write_sync(lambda c: c.execute("INSERT INTO t (v) VALUES (NULL)"))
    with pytest.raises(sqlite3.OperationalError):
        db.write_sync(lambda c: c.execute("INSERT INTO nowhere VALUES (1)"))
    assert count(db) == 0


def test_a_job_raising_base_exception_does_not_kill_the_writer(db: Database) -> None:
    def exits(c: sqlite_utils.Database) -> None:
        c.execute("INSERT INTO t (v) VALUES ('ghost')")
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        db.write_sync(exits, timeout=10)
    assert db.write_sync(insert("alive"), timeout=10) == 1
    assert values(db) == ["alive"]


def test_submit_requires_an_open_database(tmp_path: Path) -> None:
    d = Database(tmp_path / "closed.db")
    with pytest.raises(RuntimeError):
        d.submit(lambda c: None)
    d.open()
    d.close()
    with pytest.raises(RuntimeError):
        d.write_sync(lambda c: None)


# -- group commit ---------------------------------------------------------------------------


def test_failing_job_in_a_group_rolls_back_only_itself(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = GroupSpy(db, monkeypatch)
    blocker = spy.block()

    def failing(i: int) -> Any:
        def work(c: sqlite_utils.Database) -> None:
            c.execute("INSERT INTO t (v) VALUES (?)", [f"bad{i}"])
            c.execute("UPDATE t SET v = 'clobbered'")  # touches the others' rows too
            raise Boom(f"job {i}")

        return work

    works: list[tuple[Any, bool]] = [
        (failing(i) if i % 4 == 3 else insert(f"ok{i}"), True) for i in range(40)
    ]
    futures = submit_from_threads(db, works)
    spy.release.set()
    blocker.result(timeout=30)

    good: list[str] = []
    for i, fut in enumerate(futures):
        if i % 4 == 3:
            with pytest.raises(Boom, match=f"job {i}"):
                fut.result(timeout=30)
        else:
            assert isinstance(fut.result(timeout=30), int)
            good.append(f"ok{i}")
    assert sorted(values(db)) == sorted(good)
    # the 40 jobs queued while the writer was busy really shared a transaction
    assert spy.sizes[0] == 1
    assert sum(spy.sizes[1:]) == 40
    assert max(spy.sizes[1:]) > 1


def test_results_are_answered_only_after_commit(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a future resolves, a fresh reader already sees the write (it is committed)."""
    spy = GroupSpy(db, monkeypatch)
    blocker = spy.block()
    futures = submit_from_threads(db, [(insert(f"v{i}"), True) for i in range(20)])
    spy.release.set()
    blocker.result(timeout=30)
    for fut in futures:
        rowid = fut.result(timeout=30)
        assert db.read_sync(functools.partial(row_exists, rowid=rowid))


def test_concurrent_writers_all_land(db: Database) -> None:
    threads_n, per_thread = 8, 50
    results: list[list[int]] = [[] for _ in range(threads_n)]
    barrier = threading.Barrier(threads_n)

    def worker(w: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            results[w].append(db.write_sync(insert(f"w{w}-{i}"), timeout=60))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    ids = [i for r in results for i in r]
    assert len(ids) == len(set(ids)) == threads_n * per_thread
    assert count(db) == threads_n * per_thread
    assert set(values(db)) == {f"w{w}-{i}" for w in range(threads_n) for i in range(per_thread)}


# -- the fence --------------------------------------------------------------------------------


def test_fence_refuses_fenced_writes_only(db: Database) -> None:
    calls: list[bool] = []

    def fence(c: sqlite_utils.Database) -> None:
        calls.append(c.conn.in_transaction)  # runs inside the write transaction
        # whatever the fence touched before refusing is undone as well
        c.execute("INSERT INTO t (v) VALUES ('from-fence')")
        raise NotActive("fenced: a newer epoch exists")

    db.write_sync(insert("before"))
    db.set_fence(fence)
    with pytest.raises(NotActive):
        db.write_sync(insert("refused"))
    assert calls == [True]
    assert db.write_sync(insert("unfenced"), fenced=False) == 2  # the fence is not consulted
    assert calls == [True]
    assert values(db) == ["before", "unfenced"]
    db.set_fence(None)
    db.write_sync(insert("after"))
    assert values(db) == ["before", "unfenced", "after"]


def test_fence_reads_the_epoch_in_the_database(fresh_db: Database) -> None:
    """A realistic fence: compare the lease's epoch with the one this member holds."""
    mine = 1
    fresh_db.write_sync(lambda c: c.execute("UPDATE ha_lease SET epoch = 1"), fenced=False)

    def fence(c: sqlite_utils.Database) -> None:
        epoch = c.execute("SELECT epoch FROM ha_lease WHERE id = 1").fetchone()[0]
        if epoch != mine:
            raise NotActive(f"epoch {mine} was superseded by {epoch}")

    fresh_db.set_fence(fence)
    fresh_db.write_sync(lambda c: c.execute("INSERT INTO settings VALUES ('a', '1')"))
    # a successor takes the lease (another process would do this through its own connection)
    fresh_db.write_sync(lambda c: c.execute("UPDATE ha_lease SET epoch = 2"), fenced=False)
    with pytest.raises(NotActive, match="superseded"):
        fresh_db.write_sync(lambda c: c.execute("INSERT INTO settings VALUES ('b', '2')"))
    keys = fresh_db.read_sync(lambda c: [r[0] for r in c.execute("SELECT key FROM settings")])
    assert keys == ["a"]


def test_refusing_fence_fails_a_whole_group_but_not_unfenced_neighbours(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = GroupSpy(db, monkeypatch)
    blocker = spy.block(fenced=False)

    def fence(c: sqlite_utils.Database) -> None:
        raise NotActive("passive")

    db.set_fence(fence)
    works: list[tuple[Any, bool]] = [(insert(f"j{i}"), i % 3 == 0) for i in range(30)]
    futures = submit_from_threads(db, works)
    spy.release.set()
    blocker.result(timeout=30)
    landed = []
    for i, fut in enumerate(futures):
        if works[i][1]:
            with pytest.raises(NotActive):
                fut.result(timeout=30)
        else:
            fut.result(timeout=30)
            landed.append(f"j{i}")
    assert sorted(values(db)) == sorted(landed)
    assert len(landed) == 20


# -- reads ----------------------------------------------------------------------------------


def test_read_sees_one_snapshot(db: Database) -> None:
    db.write_sync(insert("first"))
    first_read = threading.Event()
    written = threading.Event()
    seen: list[Any] = []

    def reader(c: sqlite_utils.Database) -> tuple[int, int, list[str]]:
        n1 = c.execute("SELECT COUNT(*) FROM t").fetchone()[0]
        first_read.set()
        assert written.wait(30)
        n2 = c.execute("SELECT COUNT(*) FROM t").fetchone()[0]
        vs = [r[0] for r in c.execute("SELECT v FROM t")]
        return n1, n2, vs

    th = threading.Thread(target=lambda: seen.append(db.read_sync(reader)))
    th.start()
    assert first_read.wait(30)
    db.write_sync(insert("second"), timeout=30)  # a reader never blocks the writer (WAL)
    db.write_sync(lambda c: c.execute("UPDATE t SET v = 'changed' WHERE v = 'first'"), timeout=30)
    written.set()
    th.join(30)
    assert seen == [(1, 1, ["first"])]
    assert values(db) == ["changed", "second"]  # a new read sees the new state


def test_reads_cannot_write(db: Database) -> None:
    with pytest.raises(sqlite3.OperationalError):
        db.read_sync(lambda c: c.execute("INSERT INTO t (v) VALUES ('x')"))
    assert count(db) == 0


def test_read_error_does_not_poison_the_reader(db: Database) -> None:
    def broken(c: sqlite_utils.Database) -> None:
        c.execute("SELECT 1")
        raise Boom("reader")

    for _ in range(10):  # more attempts than reader threads
        with pytest.raises(Boom):
            db.read_sync(broken)
    db.write_sync(insert("x"))
    assert values(db) == ["x"]


# -- pragmas --------------------------------------------------------------------------------

PRAGMAS = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")


def _pragmas(c: sqlite_utils.Database) -> dict[str, Any]:
    return {p: c.execute(f"PRAGMA {p}").fetchone()[0] for p in (*PRAGMAS, "query_only")}


def test_writer_pragmas(db: Database) -> None:
    p = db.write_sync(_pragmas)
    assert p["journal_mode"] == "wal"
    assert p["synchronous"] == 2  # FULL
    assert p["foreign_keys"] == 1
    assert p["busy_timeout"] > 0
    assert p["query_only"] == 0


def test_reader_pragmas(db: Database) -> None:
    p = db.read_sync(_pragmas)
    assert p["journal_mode"] == "wal"
    assert p["foreign_keys"] == 1
    assert p["busy_timeout"] > 0
    assert p["query_only"] == 1


def test_foreign_keys_are_enforced(fresh_db: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        fresh_db.write_sync(
            lambda c: c.execute(
                "INSERT INTO users (username, account_id, created_at, updated_at)"
                " VALUES ('nobody', 424242, 't', 't')"
            )
        )


def test_migrations_apply_once(fresh_db: Database) -> None:
    again = Database(fresh_db.path)
    again.open(migrations)  # a second server starting on the same file
    try:
        n = again.read_sync(
            lambda c: c.execute("SELECT COUNT(*) FROM accounts WHERE name = 'Offline Account'").fetchone()[0]
        )
        assert n == 1
    finally:
        again.close()


# -- durability -----------------------------------------------------------------------------

CHILD = r"""
import sys, threading
from siteserver.store.db import Database

db = Database(sys.argv[1])
db.open()
db.write_sync(lambda c: c.execute(
    "CREATE TABLE IF NOT EXISTS acked (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)"))
out = threading.Lock()

def worker(w):
    i = 0
    while True:
        i += 1
        key = w * 1_000_000 + i
        db.write_sync(lambda c: c.execute("INSERT INTO acked VALUES (?, ?)", [key, "x" * 500]))
        with out:  # acknowledged: only printed after write_sync returned
            sys.stdout.write(f"{key}\n")
            sys.stdout.flush()

for w in range(4):
    threading.Thread(target=worker, args=(w,), daemon=True).start()
threading.Event().wait()
"""


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    want = 300
    acked: set[int] = set()
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        deadline = time.monotonic() + 120
        try:
            while len(acked) < want and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                acked.add(int(line))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        # lines printed before the kill landed were acknowledged too
        acked.update(int(x) for x in proc.stdout.read().split())
        err = proc.stderr.read()
    assert len(acked) >= want, err
    assert proc.returncode == -signal.SIGKILL

    d = Database(path)
    d.open()
    try:
        stored = set(d.read_sync(lambda c: [r[0] for r in c.execute("SELECT id FROM acked")]))
        ok = d.read_sync(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        d.close()
    assert ok == "ok"
    missing = acked - stored
    assert not missing, f"{len(missing)} acknowledged writes lost"
