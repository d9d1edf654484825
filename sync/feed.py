"""The primary's side of pulling: the snapshot stream and the long-polling change feed.

A snapshot is every mirrored row at one cursor, streamed as NDJSON (`wire.SnapshotBegin`, one
`wire.SnapshotRow` per row, parents first, `wire.SnapshotEnd`); a page of the feed is
`wire.ChangesOut` (store.feed reads both from the change log the triggers fill).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from migrations.mirrored import MIRRORED_TABLES
from siteserver import serving
from siteserver.store import Database, feed, read_transaction

from . import wire

log = logging.getLogger("siteserver.sync")

SNAPSHOT_CHUNK_ROWS = 1000
SNAPSHOT_QUEUE_CHUNKS = 4
POLL_SECS = 0.2
_DONE = object()


@dataclass
class Feed:
    db: Database

    def snapshot(self, home: str | None = None) -> AsyncIterator[bytes]:
        """The NDJSON snapshot as chunks of bytes (see `stream_snapshot`); `home`: the site id
        of a home-scope site (store.feed)."""
        return stream_snapshot(self.db.path, home)

    async def changes(self, after: int, wait: float, limit: int, home: str | None = None) -> wire.ChangesOut:
        """A page of changes after `after`; with none and `wait` > 0, long-poll for them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        page = await self._page(after, limit, home)
        while page.cursor == after and not page.reset:
            remaining = deadline - loop.time()
            if remaining <= 0 or serving.stopping.is_set():
                break
            await asyncio.sleep(min(POLL_SECS, remaining))
            # The poll is one cheap statement on the shared reader; a page gets its own connection.
            if await self.db.read(feed.max_seq, snapshot=False) > after:
                page = await self._page(after, limit, home)
        return page

    async def _page(self, after: int, limit: int, home: str | None) -> wire.ChangesOut:
        return await asyncio.to_thread(_read_page, self.db.path, after, limit, home)


def _read_page(path: Path, after: int, limit: int, home: str | None) -> wire.ChangesOut:
    """One page in one snapshot, on a connection of its own (not the shared reader thread)."""
    with read_transaction(path) as conn:
        return wire.ChangesOut.model_validate(feed.changes_page(conn, after, limit, home))


async def stream_snapshot(path: Path, home: str | None = None) -> AsyncGenerator[bytes, None]:
    """Every mirrored row at one cursor, as NDJSON chunks of about SNAPSHOT_CHUNK_ROWS lines.

    One read transaction on a dedicated read-only connection in a thread of its own; chunks reach
    the event loop through a queue of at most SNAPSHOT_QUEUE_CHUNKS, so memory stays flat however
    many rows there are. When the client goes away the generator is closed: the thread notices
    within half a second, ends its transaction and closes the connection. A failure part-way
    aborts the response (no `end` line: the site knows the snapshot is incomplete)."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[object] = asyncio.Queue()
    room = threading.Semaphore(SNAPSHOT_QUEUE_CHUNKS)
    stop = threading.Event()

    def hand(item: object) -> bool:
        while not room.acquire(timeout=0.5):
            if stop.is_set():
                return False
        if stop.is_set():
            return False
        try:
            loop.call_soon_threadsafe(chunks.put_nowait, item)
        except RuntimeError:  # the event loop is closed
            return False
        return True

    def produce() -> None:
        try:
            with read_transaction(path) as conn:
                cursor = feed.max_seq(conn)
                begin = wire.SnapshotBegin(type="begin", cursor=cursor, tables=list(MIRRORED_TABLES))
                buf = [wire.snapshot_line(begin)]
                rows = 0
                for table in MIRRORED_TABLES:
                    for row in feed.table_rows(conn, table, home):
                        # Rows come from the database as they are: built, not validated again.
                        line = wire.SnapshotRow.model_construct(type="row", table=table, row=row)
                        buf.append(wire.snapshot_line(line))
                        rows += 1
                        if len(buf) >= SNAPSHOT_CHUNK_ROWS:
                            if not hand(b"".join(buf)):
                                return
                            buf = []
                buf.append(wire.snapshot_line(wire.SnapshotEnd(type="end", cursor=cursor, rows=rows)))
                if hand(b"".join(buf)):
                    hand(_DONE)
        except BaseException as e:
            log.exception("snapshot failed")
            hand(e)

    threading.Thread(target=produce, name="sync-snapshot", daemon=True).start()
    try:
        while True:
            item = await chunks.get()
            room.release()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise RuntimeError("the snapshot failed part-way") from item
            assert isinstance(item, bytes)
            yield item
    finally:
        stop.set()
