"""SQLite's write lock held from the test, as another process frozen mid-write would hold it."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def write_lock(database: Path, wait: float = 1.0) -> Iterator[sqlite3.Connection]:
    """Hold the database's write lock while the block runs; waits up to `wait` for the servers'
    own short transactions."""
    conn = sqlite3.connect(database, timeout=wait, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@contextlib.contextmanager
def write_lock_for(database: Path, secs: float) -> Iterator[None]:
    """The write lock, taken before the block runs and held `secs` from then (or until the block
    leaves, if sooner), by a thread of its own: the block's own waits for it end on their own."""
    held, released = threading.Event(), threading.Event()

    def hold() -> None:
        with write_lock(database):
            held.set()
            released.wait(secs)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10), "the write lock was not taken"
        yield
    finally:
        released.set()
        thread.join()
