"""The one database facade: a single writer thread with group commit, per-thread readers.

HTTP views never touch SQLite; they hand a function to `read()` or `write()`. Every write runs
inside `BEGIN IMMEDIATE … COMMIT` on the writer thread, in its own savepoint, and its future
resolves only after COMMIT returned with `synchronous=FULL`: an answered write is on disk.
Writes that arrive together share one transaction (one fsync), which is what makes durable
charging fast on SQLite. Writes another process makes for this one (the primary's merge worker)
are handed to it from the writer thread (`handoff`), so they queue with this process's writes.

Reads run on one reader thread that drains everything queued before it sleeps again and hands the
batch of answers to the event loop in one wake-up. A thread hop per read costs more than the read
itself under load (futures, wake-ups and the GIL passed back and forth); batching pays it once.
The hottest one-statement reads (a card login, the feed's poll) skip the hop altogether:
`read_now` runs them on the caller's thread, on a read-only connection of that thread's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[sqlite_utils.Database], T]
Fence = Callable[[sqlite_utils.Database], None]

BUSY_TIMEOUT_MS = 5_000
#: page cache per connection (KiB): a merge touches journal and ledger rows all over their
#: txn_id indexes, and SQLite's default 2 MiB turned a long outage's merge into disk reads
CACHE_KIB = 65_536
MAX_GROUP = 256


def connect(path: Path | str, *, readonly: bool = False) -> sqlite_utils.Database:
    """A connection with the project's pragmas; autocommit so every transaction is explicit."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return sqlite_utils.Database(conn, execute_plugins=False)


def is_locked(e: BaseException) -> bool:
    """A write that waited `BUSY_TIMEOUT_MS` for another connection's write lock and gave up."""
    return isinstance(e, sqlite3.OperationalError) and "locked" in str(e)


@contextlib.contextmanager
def read_transaction(path: Path | str) -> Iterator[sqlite_utils.Database]:
    """A read-only connection of its own, in one read transaction (one consistent view however
    long the reading takes: a snapshot stream, a page of the feed), closed at the end."""
    conn = connect(path, readonly=True)
    try:
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


@dataclass(slots=True)
class _Read:
    fn: Callable[[sqlite_utils.Database], Any]
    snapshot: bool
    future: asyncio.Future[Any] | Future[Any]
    loop: asyncio.AbstractEventLoop | None  # None: a caller on a plain thread (read_sync)


_Answer = tuple[asyncio.Future[Any], Any, BaseException | None]


def _settle(done: list[_Answer]) -> None:
    """On the event loop: resolve a batch of read answers."""
    for fut, result, err in done:
        if fut.cancelled():
            continue
        if err is None:
            fut.set_result(result)
        else:
            fut.set_exception(err)


@dataclass
class _Job:
    fn: Callable[[sqlite_utils.Database], Any]
    future: Future[Any]
    fenced: bool
    handoff: bool = False  # no transaction of ours: another process writes meanwhile (`handoff`)


def private_dir(path: Path) -> None:
    """A data directory only its owner may list or enter (0700), whatever the umask, kept so at
    every start: it holds the database, the keys and the pepper."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _private_database(path: Path) -> None:
    """The database created readable by its owner only (0600) before SQLite opens it: it holds
    every user's hashes and balances."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    _private_files(path)


def _private_files(path: Path) -> None:
    """The database, its WAL and its SHM kept 0600 (SQLite makes the WAL and SHM with the
    database file's mode). Only chmod once connected: closing any descriptor of the file would
    drop every POSIX lock this process holds on it, its connections' locks included."""
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(p, 0o600)


class Database:
    """Owns every connection to one SQLite file for this process."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fence: Fence | None = None
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer_conn: sqlite_utils.Database | None = None
        self._writer: threading.Thread | None = None
        self._reads: queue.SimpleQueue[_Read | None] = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        self._own = threading.local()  # each thread's connection for `read_now`
        self._owned: list[sqlite_utils.Database] = []
        self._owned_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, migrations: Any = None) -> None:
        """Create the file if needed, apply pending migrations atomically, start the writer.

        `BEGIN IMMEDIATE` around the whole migration set serialises two servers starting at once.
        """
        _private_database(self.path)
        self._writer_conn = connect(self.path)
        _private_files(self.path)  # the WAL and SHM that connecting made
        if migrations is not None:
            conn = self._writer_conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                migrations.apply(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._writer = threading.Thread(target=self._write_loop, name="db-writer", daemon=True)
        self._writer.start()
        self._reader = threading.Thread(target=self._read_loop, name="db-reader", daemon=True)
        self._reader.start()

    def set_fence(self, fence: Fence | None) -> None:
        """A check run first in every fenced write transaction (the HA epoch); it raises to refuse."""
        self._fence = fence

    def fence(self, conn: sqlite_utils.Database) -> None:
        """The fence, for work that writes through another connection (a `handoff`)."""
        if self._fence is not None:
            self._fence(conn)

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=10)
            self._writer = None
        if self._reader is not None:
            self._reads.put(None)
            self._reader.join(timeout=10)
            self._reader = None
        with self._owned_lock:
            owned, self._owned = self._owned, []
            self._own = threading.local()
        for conn in owned:
            conn.close()
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None

    # -- reads -----------------------------------------------------------------------------

    async def read(self, fn: Work[T], *, snapshot: bool = True) -> T:
        """Run `fn` on the reader thread. `snapshot=False` is for a function that runs one SQL
        statement (itself a snapshot): it saves the BEGIN/ROLLBACK round trips on hot paths."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._reads.put(_Read(fn, snapshot, fut, loop))
        return await fut

    def read_sync(self, fn: Work[T], *, snapshot: bool = True) -> T:
        """The same from a plain thread (the guard, the scheduler, the CLI, tests)."""
        fut: Future[T] = Future()
        self._reads.put(_Read(fn, snapshot, fut, None))
        return fut.result()

    def read_now(self, fn: Work[T]) -> T:
        """Run `fn`, one short SQL statement (itself a snapshot), here and now on this thread's own
        read-only connection: for the event loop's hottest reads (a card login). Passing a read to
        the reader thread and its answer back costs two GIL handoffs, each up to a switch interval
        (5 ms) while other threads are busy, as they are when sites merge; the statement itself
        takes well under a millisecond, and a WAL reader never waits for a writer."""
        conn: sqlite_utils.Database | None = getattr(self._own, "conn", None)
        if conn is None:
            if self._reader is None:
                raise RuntimeError("database is not open")
            conn = connect(self.path, readonly=True)
            with self._owned_lock:
                self._owned.append(conn)
            self._own.conn = conn
        return fn(conn)

    def _read_loop(self) -> None:
        conn = connect(self.path, readonly=True)
        try:
            while True:
                item = self._reads.get()
                batch: list[_Read] = []
                while item is not None:
                    batch.append(item)
                    try:
                        item = self._reads.get_nowait()
                    except queue.Empty:
                        break
                answers: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
                for r in batch:
                    try:
                        result, err = self._run_read(conn, r), None
                    except BaseException as e:  # the caller gets it; the reader carries on
                        result, err = None, e
                    if r.loop is None:
                        assert isinstance(r.future, Future)
                        if err is None:
                            r.future.set_result(result)
                        else:
                            r.future.set_exception(err)
                    else:
                        assert isinstance(r.future, asyncio.Future)
                        answers.setdefault(r.loop, []).append((r.future, result, err))
                for loop, done in answers.items():
                    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                        loop.call_soon_threadsafe(_settle, done)
                if item is None:
                    return
        finally:
            conn.close()

    @staticmethod
    def _run_read(conn: sqlite_utils.Database, r: _Read) -> Any:
        if not r.snapshot:
            return r.fn(conn)
        # One snapshot for the whole function: a read sees one consistent state.
        conn.execute("BEGIN")
        try:
            return r.fn(conn)
        finally:
            conn.execute("ROLLBACK")

    # -- writes ----------------------------------------------------------------------------

    def submit(self, fn: Work[T], *, fenced: bool = True) -> Future[T]:
        if self._writer is None:
            raise RuntimeError("database is not open")
        fut: Future[T] = Future()
        self._queue.put(_Job(fn, fut, fenced))
        return fut

    async def write(self, fn: Work[T], *, fenced: bool = True) -> T:
        """Run `fn` in a write transaction; returns once its effect is committed to disk."""
        return await asyncio.wrap_future(self.submit(fn, fenced=fenced))

    def write_sync(self, fn: Work[T], *, fenced: bool = True, timeout: float | None = None) -> T:
        return self.submit(fn, fenced=fenced).result(timeout=timeout)

    async def handoff(self, fn: Work[T]) -> T:
        """Run `fn` on the writer thread between two of its transactions, outside any: for writes
        another process makes (the primary's merge worker). They take their turn with this
        process's writes instead of racing them for SQLite's lock, where a busy wait can starve."""
        if self._writer is None:
            raise RuntimeError("database is not open")
        fut: Future[T] = Future()
        self._queue.put(_Job(fn, fut, fenced=False, handoff=True))
        return await asyncio.wrap_future(fut)

    def _write_loop(self) -> None:
        carry: _Job | None = None
        while True:
            job = carry if carry is not None else self._queue.get()
            carry = None
            if job is None:
                return
            group = [job]
            stop = False
            while len(group) < MAX_GROUP:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                # Fenced and unfenced work never share a transaction; a handoff has none.
                if (nxt.fenced, nxt.handoff) != (job.fenced, job.handoff):
                    carry = nxt
                    break
                group.append(nxt)
            self._run_group(group)
            if stop:
                return

    def _run_group(self, group: list[_Job]) -> None:
        conn = self._writer_conn
        assert conn is not None
        group = [j for j in group if j.future.set_running_or_notify_cancel()]
        if not group:
            return
        if group[0].handoff:
            for j in group:
                try:
                    j.future.set_result(j.fn(conn))
                except BaseException as e:  # the caller gets it; the writer carries on
                    j.future.set_exception(e)
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except Exception as e:
            for j in group:
                j.future.set_exception(e)
            return
        done: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            if group[0].fenced and self._fence is not None:
                self._fence(conn)
            for j in group:
                conn.execute("SAVEPOINT job")
                try:
                    done.append((j, j.fn(conn), None))
                except BaseException as e:  # one job's failure undoes only that job
                    if not conn.conn.in_transaction:
                        raise
                    conn.execute("ROLLBACK TO job")
                    done.append((j, None, e))
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.conn.in_transaction:
                conn.execute("ROLLBACK")
            for j in group:
                if not j.future.done():
                    j.future.set_exception(e)
            # Never let the writer thread die (SystemExit, CancelledError from a job): every
            # later write would wait forever. The error went to the futures of this group.
            return
        for j, result, err in done:  # only now, after COMMIT: durable before answered
            if err is None:
                j.future.set_result(result)
            else:
                j.future.set_exception(err)
