"""The site's side of pulling: bootstrap the mirror from a snapshot, then follow the change feed.

A bootstrap streams the snapshot (`wire.SnapshotBegin`, rows parents first, `wire.SnapshotEnd`)
and writes it in batches; the cursor is stored only with the last batch, after the end line
arrived: a bootstrap cut short leaves the site marked as not bootstrapped (store.sync_state).

Every page of changes is applied in one write transaction together with its new cursor, and only
if the stored cursor still equals the one the page was asked after: two pulls racing (the follower
and an admin's `POST /api/admin/v1/sync`) can never apply an older page over a newer one.

Before a page (or a snapshot) brings account rows, the journal entries of those accounts that are
*in doubt* — sent, no answer recorded — are settled (`Merger.settle_in_doubt`): sent again, so the
primary answers `duplicate` with the seq it applied them at, or applies them now. Only then is the
page applied: a charge the page's balance already holds can no longer also be pending at the site
(subtracted twice, DESIGN.md invariant 3). No answer → the page is not applied.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import httpx
import sqlite_utils

from migrations.mirrored import MIRRORED_TABLES
from siteserver.store import Database, mirror, sync_state
from siteserver.timeutil import now_iso

from . import wire
from .client import SyncClient
from .endpoints import Endpoint, Endpoints
from .errors import MergeUnsettled, SyncFailed

log = logging.getLogger("siteserver.sync.pull")

BATCH_ROWS = 5_000
PAGE_LIMIT = 1_000
MAX_WAIT_SECS = 60.0
BACKOFF_MIN_SECS = 0.5
BACKOFF_MAX_SECS = 5.0

#: gets the primary's answer for the journal entries in doubt of these accounts (None: all),
#: raising MergeUnsettled when it does not answer: `Merger.settle_in_doubt`
Settle = Callable[[set[str] | None], int]


def apply_page(db: Database, after: int, page: wire.ChangesOut, scope: wire.MirrorScope = "all") -> bool:
    """Apply one page of the change feed and store its cursor, in one write transaction. False
    (nothing done) when the stored cursor is no longer `after`: another pull got there first."""

    def apply_changes(conn: sqlite_utils.Database) -> bool:
        if sync_state.bootstrapped_cursor(conn, scope) != after:
            return False
        mirror.defer_foreign_keys(conn)
        for change in page.changes:
            if change.table not in MIRRORED_TABLES:
                log.warning("change feed names table %r, which this site does not mirror", change.table)
                continue
            if change.row is None:
                mirror.delete(conn, change.table, list(change.pk))
            else:
                mirror.upsert(conn, change.table, [change.row])
        sync_state.pulled(conn, page.cursor, now_iso())
        return True

    return db.write_sync(apply_changes, fenced=False)


def page_accounts(db: Database, page: wire.ChangesOut) -> set[str]:
    """The labels of the accounts a page touches, as it names them and as the mirror knows them."""
    rows = [(c.pk, c.row) for c in page.changes if c.table == "accounts"]
    if not rows:
        return set()
    return db.read_sync(lambda conn: mirror.account_labels(conn, rows))


class _Batches:
    """A bootstrap's rows, written in batches of `size`; the first batch clears the mirror."""

    def __init__(self, db: Database, size: int, scope: wire.MirrorScope) -> None:
        self.db = db
        self.size = size
        self.scope = scope
        self.rows: list[tuple[str, dict[str, Any]]] = []
        self.cleared = False

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.rows.append((table, row))
        if len(self.rows) >= self.size:
            self.write(None)

    def write(self, end: wire.SnapshotEnd | None) -> None:
        rows, clear = list(self.rows), not self.cleared

        def write_batch(conn: sqlite_utils.Database) -> None:
            mirror.defer_foreign_keys(conn)
            if clear:
                sync_state.begin_bootstrap(conn)
                mirror.clear(conn)
            by_table: dict[str, list[dict[str, Any]]] = {}
            for table, row in rows:
                by_table.setdefault(table, []).append(row)
            for table in MIRRORED_TABLES:  # parents first
                mirror.upsert(conn, table, by_table.get(table, []))
            if end is not None:
                sync_state.pulled(conn, end.cursor, now_iso(), bootstrapped_scope=self.scope)

        self.db.write_sync(write_batch, fenced=False)
        self.cleared = True
        self.rows.clear()


def bootstrap(
    client: SyncClient,
    db: Database,
    *,
    batch_rows: int = BATCH_ROWS,
    settle: Settle | None = None,
    scope: wire.MirrorScope = "all",
) -> int:
    """Replace the mirror's contents with a snapshot of this scope, streamed and written in
    batches; returns the cursor. Every entry in doubt is settled after the whole stream is in and
    before the cursor is stored (the stream is not held open meanwhile)."""
    with client.snapshot(scope) as lines:
        begin = next(lines, None)
        if not isinstance(begin, wire.SnapshotBegin):
            raise SyncFailed("snapshot did not start with a begin line")
        batches = _Batches(db, batch_rows, scope)
        received = 0
        for line in lines:
            if isinstance(line, wire.SnapshotRow):
                if line.table not in MIRRORED_TABLES:
                    log.warning("snapshot names table %r, which this site does not mirror", line.table)
                    continue
                batches.add(line.table, line.row)
                received += 1
            elif isinstance(line, wire.SnapshotEnd):
                if line.rows != received:
                    raise SyncFailed(f"snapshot ended after {received} rows, announced {line.rows}")
                if settle is not None:  # the snapshot's read began before its begin line was sent
                    settle(None)
                batches.write(line)
                log.info("mirror bootstrapped: %d rows at cursor %s", received, line.cursor)
                return line.cursor
        raise SyncFailed(f"snapshot stream ended without its end line (after {received} rows)")


class Mirror:
    """Bootstrap if needed, then follow the feed; `pull_now` for an admin's immediate pull."""

    def __init__(
        self,
        db: Database,
        endpoints: Endpoints,
        *,
        wait_secs: float,
        stop: threading.Event,
        settle: Settle | None = None,
        sleep: Callable[[float], object] | None = None,
        scope: wire.MirrorScope = "all",
    ) -> None:
        self.db = db
        #: "home": only the site's own people (a change bootstraps the mirror again)
        self.scope: wire.MirrorScope = scope
        self.endpoints = endpoints
        self.wait_secs = min(wait_secs, MAX_WAIT_SECS)
        self.stop = stop
        #: settles journal entries in doubt before account rows are applied (None: a mirror with
        #: no journal to settle)
        self.settle = settle
        self._bootstrap_lock = threading.Lock()
        self._sleep = sleep or stop.wait

    def cursor(self) -> int | None:
        return self.db.read_sync(lambda conn: sync_state.bootstrapped_cursor(conn, self.scope))

    def _bootstrap(self, client: SyncClient) -> int:
        with self._bootstrap_lock:
            cursor = self.cursor()  # another thread may have just done it
            if cursor is not None:
                return cursor
            return bootstrap(client, self.db, settle=self.settle, scope=self.scope)

    def _start_over(self) -> None:
        self.db.write_sync(sync_state.forget_bootstrap, fenced=False)

    def pull(self, ep: Endpoint, wait: float) -> int:
        """One step: bootstrap if needed, else one page of changes. Returns the stored cursor."""
        after = self.cursor()
        if after is None:
            return self._bootstrap(ep.feed)
        page = ep.feed.changes(after, wait, PAGE_LIMIT, self.scope)
        if page.reset:
            log.info("the primary's feed no longer reaches cursor %d: bootstrapping again", after)
            self._start_over()
            return self._bootstrap(ep.feed)
        if self.settle is not None and page_accounts(self.db, page):
            # All of them, not only those naming these accounts: the primary may have booked an
            # entry in doubt to another account (a conflict), and only its answer says which.
            self.settle(None)
        try:
            apply_page(self.db, after, page, self.scope)
        except Exception as e:
            # A page that does not fit the mirror (it should not happen): start over cleanly.
            log.exception("could not apply a page of changes; bootstrapping again")
            self._start_over()
            if isinstance(e, mirror.MirrorMismatch):
                raise SyncFailed(f"a page of changes does not fit the mirror: {e}") from e
            raise
        return self.cursor() or 0

    def pull_now(self) -> int:
        """An admin's pull: at once, no long poll, on the active endpoint (the next on failure)."""
        ep = self.endpoints.current()
        try:
            cursor = self.pull(ep, 0)
        except (httpx.HTTPError, SyncFailed) as e:
            if not isinstance(e, MergeUnsettled):
                self.endpoints.failed(ep, getattr(e, "status", None))
            raise
        self.endpoints.ok(ep)
        return cursor

    def run(self) -> None:
        """The follower thread: never dies; backs off 0.5 s → 5 s while the primary is away."""
        backoff = BACKOFF_MIN_SECS
        while not self.stop.is_set():
            ep = self.endpoints.current()
            try:
                self.pull(ep, self.wait_secs)
            except Exception as e:
                if self.stop.is_set():
                    return
                if not isinstance(e, MergeUnsettled):  # the merge already judged its own endpoint
                    self.endpoints.failed(ep, getattr(e, "status", None))
                if isinstance(e, (httpx.HTTPError, SyncFailed)):
                    log.warning("sync with %s failed: %s", ep.url, e or type(e).__name__)
                else:
                    log.exception("sync with %s failed", ep.url)
                self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECS)
                continue
            self.endpoints.ok(ep)
            backoff = BACKOFF_MIN_SECS
