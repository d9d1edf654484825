"""The one database facade: a single writer thread with group commit, per-thread readers.

HTTP views never touch SQLite; they hand a function to `read()` or `write()`. Every write runs
inside `BEGIN IMMEDIATE … COMMIT` on the writer thread, in its own savepoint, and its future
resolves only after COMMIT returned with `synchronous=FULL`: an answered write is on disk.
Writes that arrive together share one transaction (one fsync), which is what makes durable
charging fast on SQLite.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[sqlite_utils.Database], T]
Fence = Callable[[sqlite_utils.Database], None]

BUSY_TIMEOUT_MS = 5_000
MAX_GROUP = 256


def connect(path: Path | str, *, readonly: bool = False) -> sqlite_utils.Database:
    """A connection with the project's pragmas; autocommit so every transaction is explicit."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return sqlite_utils.Database(conn, execute_plugins=False)


@dataclass
class _Job:
    fn: Callable[[sqlite_utils.Database], Any]
    future: Future[Any]
    fenced: bool


class Database:
    """Owns every connection to one SQLite file for this process."""

    def __init__(self, path: Path | str, *, readers: int = 4) -> None:
        self.path = Path(path)
        self._fence: Fence | None = None
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer_db: sqlite_utils.Database | None = None
        self._writer: threading.Thread | None = None
        self._local = threading.local()
        self._reader_dbs: list[sqlite_utils.Database] = []
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="db-reader")
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, migrations: Any = None) -> None:
        """Create the file if needed, apply pending migrations atomically, start the writer.

        `BEGIN IMMEDIATE` around the whole migration set serialises two servers starting at once.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_db = connect(self.path)
        if migrations is not None:
            db = self._writer_db
            db.execute("BEGIN IMMEDIATE")
            try:
                migrations.apply(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        self._writer = threading.Thread(target=self._write_loop, name="db-writer", daemon=True)
        self._writer.start()

    def set_fence(self, fence: Fence | None) -> None:
        """A check run first in every fenced write transaction (the HA epoch); it raises to refuse."""
        self._fence = fence

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=10)
            self._writer = None
        self._readers.shutdown(wait=True)
        with self._lock:
            for rdb in self._reader_dbs:
                rdb.close()
            self._reader_dbs.clear()
        if self._writer_db is not None:
            self._writer_db.close()
            self._writer_db = None

    # -- reads -----------------------------------------------------------------------------

    def _reader(self) -> sqlite_utils.Database:
        rdb = getattr(self._local, "db", None)
        if rdb is None:
            rdb = connect(self.path, readonly=True)
            self._local.db = rdb
            with self._lock:
                self._reader_dbs.append(rdb)
        return rdb

    def _run_read(self, fn: Work[T]) -> T:
        rdb = self._reader()
        # One snapshot for the whole function: a read sees one consistent state.
        rdb.execute("BEGIN")
        try:
            return fn(rdb)
        finally:
            rdb.execute("ROLLBACK")

    async def read(self, fn: Work[T]) -> T:
        return await asyncio.wrap_future(self._readers.submit(self._run_read, fn))

    def read_sync(self, fn: Work[T]) -> T:
        return self._readers.submit(self._run_read, fn).result()

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
                if nxt.fenced != job.fenced:  # fenced and unfenced work never share a transaction
                    carry = nxt
                    break
                group.append(nxt)
            self._run_group(group)
            if stop:
                return

    def _run_group(self, group: list[_Job]) -> None:
        db = self._writer_db
        assert db is not None
        group = [j for j in group if j.future.set_running_or_notify_cancel()]
        if not group:
            return
        try:
            db.execute("BEGIN IMMEDIATE")
        except Exception as e:
            for j in group:
                j.future.set_exception(e)
            return
        done: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            if group[0].fenced and self._fence is not None:
                self._fence(db)
            for j in group:
                db.execute("SAVEPOINT job")
                try:
                    done.append((j, j.fn(db), None))
                except BaseException as e:  # one job's failure undoes only that job
                    if not db.conn.in_transaction:
                        raise
                    db.execute("ROLLBACK TO job")
                    done.append((j, None, e))
                db.execute("RELEASE job")
            db.execute("COMMIT")
        except BaseException as e:
            if db.conn.in_transaction:
                db.execute("ROLLBACK")
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
