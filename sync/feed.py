"""The primary's side of pulling: the snapshot stream and the long-polling change feed.

A snapshot is every mirrored row at one cursor, streamed as NDJSON (`wire.SnapshotBegin`, one
`wire.SnapshotRow` per row, parents first, `wire.SnapshotEnd`); a page of the feed is
`wire.ChangesOut` (store.feed reads both from the change log the triggers fill).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
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


#: feed pages kept for the sites that ask the same question: sites that follow the feed ask
#: for the same cursor when it moves, and each page is read and encoded once for all of them
SHARED_PAGES = 32


@dataclass(frozen=True, slots=True)
class Page:
    """A page of the feed as answered: its JSON (`wire.ChangesOut`) and what the long poll needs."""

    cursor: int
    reset: bool
    body: bytes


@dataclass
class Feed:
    db: Database
    #: (after, limit, home, the log's last seq when asked) -> the page being read or read
    _shared: OrderedDict[tuple[int, int, str | None, int], asyncio.Future[Page]] = field(
        default_factory=OrderedDict
    )

    def snapshot(self, home: str | None = None) -> AsyncIterator[bytes]:
        """The NDJSON snapshot as chunks of bytes (see `stream_snapshot`); `home`: the site id
        of a home-scope site (store.feed)."""
        return stream_snapshot(self.db.path, home)

    async def changes(self, after: int, wait: float, limit: int, home: str | None = None) -> Page:
        """A page of changes after `after`; with none and `wait` > 0, long-poll for them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        page = await self._page(after, limit, home)
        while page.cursor == after and not page.reset:
            remaining = deadline - loop.time()
            if remaining <= 0 or serving.stopping.is_set():
                break
            await asyncio.sleep(min(POLL_SECS, remaining))
            # The poll is one cheap statement, read here (`read_now`); a page gets its own connection.
            if self.db.read_now(feed.max_seq) > after:
                page = await self._page(after, limit, home)
        return page

    async def _page(self, after: int, limit: int, home: str | None) -> Page:
        """The page, read once for every site asking the same while the log has not moved (a
        page read a little later than asked is as good: it holds what was asked, or more)."""
        key = (after, limit, home, self.db.read_now(feed.max_seq))
        shared = self._shared.get(key)
        if shared is None or (shared.done() and shared.exception() is not None):
            shared = asyncio.ensure_future(asyncio.to_thread(_read_page, self.db.path, after, limit, home))
            self._shared[key] = shared
            while len(self._shared) > SHARED_PAGES:
                self._shared.popitem(last=False)
        return await asyncio.shield(shared)


def _read_page(path: Path, after: int, limit: int, home: str | None) -> Page:
    """One page in one snapshot, on a connection of its own (not the shared reader thread),
    encoded here, off the event loop."""
    with read_transaction(path) as conn:
        page = wire.ChangesOut.model_validate(feed.changes_page(conn, after, limit, home))
    return Page(page.cursor, page.reset, page.model_dump_json().encode())


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
