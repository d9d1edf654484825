"""The site's mirror of the primary: bootstrap from a snapshot, then follow the change feed.

Wire format (docs/sync.md): `GET /api/sync/v1/snapshot` streams NDJSON lines `begin` (with the
cursor), one `row` per mirrored row (parents first) and `end` (cursor, row count); a stream without
its end line is a failed bootstrap. `GET /api/sync/v1/changes?after=N&wait=S&limit=L` answers
`{cursor, reset, changes: [{seq, table, pk, row | null}]}`, long-polling up to S seconds.

What the site stores in `sync_state`: `cursor` and `bootstrapped_at` (both absent while a
bootstrap is under way or was cut short: the next start bootstraps again), `last_sync_at`.

Every page of changes is applied in one write transaction together with its new cursor, and only
if the stored cursor still equals the one the page was asked after: two pulls racing (the follower
and an admin's `POST /api/admin/v1/sync`) can never apply an older page over a newer one.

Before a page (or a snapshot) brings account rows, the journal entries of those accounts that are
*in doubt* — sent, no answer recorded — are settled: sent again, so the primary answers
`duplicate` with the seq it applied them at, or applies them now, after the page was read. Only
then is the page applied: a charge the page's balance already holds can no longer also be pending
at the site (subtracted twice, DESIGN.md invariant 3), e.g. after a failover that lost an
upload's answer. No answer → the page is not applied (the feed comes from the same primary).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from siteserver.store import Database
from siteserver.store import journal as jr
from siteserver.store.ledger import account_label
from siteserver.timeutil import now_iso
from sync.client import SyncClient
from sync.mirrored import MIRRORED_TABLES

log = logging.getLogger("siteserver.site.mirror")

SNAPSHOT_PATH = "/api/sync/v1/snapshot"
CHANGES_PATH = "/api/sync/v1/changes"
BATCH_ROWS = 5_000
PAGE_LIMIT = 1_000
MAX_WAIT_SECS = 60.0
BACKOFF_MIN_SECS = 0.5
BACKOFF_MAX_SECS = 5.0
SETTLE_BATCH = 500

#: uploads journal entries and records the primary's verdicts (None: no answer); the site's
#: `Pusher.push` with its background timeout
Settle = Callable[[list[jr.JournalRow]], "dict[str, jr.Verdict] | None"]


class SyncFailed(Exception):
    """A sync call that did not work; `status` is the HTTP status when the primary answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# -- sync_state ------------------------------------------------------------------------------


def read_state(db: sqlite_utils.Database) -> dict[str, str]:
    return {k: v for k, v in db.execute("SELECT key, value FROM sync_state").fetchall()}


def set_state(db: sqlite_utils.Database, **values: str | int) -> None:
    for k, v in values.items():
        db.execute(
            "INSERT INTO sync_state (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [k, str(v)],
        )


def stored_cursor(db: Database) -> int | None:
    """The cursor of a finished bootstrap and the pages after it; None: bootstrap needed."""
    state = db.read_sync(read_state)
    if "cursor" not in state or "bootstrapped_at" not in state:
        return None
    return int(state["cursor"])


# -- applying rows ---------------------------------------------------------------------------


def _columns(db: sqlite_utils.Database, table: str) -> list[str]:
    return [r[1] for r in db.execute(f"PRAGMA table_info({table})").fetchall()]


def _upsert(db: sqlite_utils.Database, table: str, rows: list[dict[str, Any]]) -> None:
    """INSERT … ON CONFLICT(pk) DO UPDATE: never REPLACE, whose delete would cascade to children."""
    if not rows:
        return
    known = _columns(db, table)
    pk = MIRRORED_TABLES[table]
    # Columns the primary has and this site does not (a newer primary) are left out.
    by_cols: dict[tuple[str, ...], list[list[Any]]] = {}
    for row in rows:
        cols = tuple(c for c in known if c in row)
        by_cols.setdefault(cols, []).append([row[c] for c in cols])
    for cols, values in by_cols.items():
        rest = [c for c in cols if c not in pk]
        action = "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in rest) if rest else "DO NOTHING"
        sql = (
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
            f"ON CONFLICT({', '.join(pk)}) {action}"
        )
        db.conn.executemany(sql, values)


def _delete(db: sqlite_utils.Database, table: str, key: list[Any]) -> None:
    pk = MIRRORED_TABLES[table]
    if len(key) != len(pk):
        raise SyncFailed(f"change for {table} has a primary key of {len(key)} values, not {len(pk)}")
    db.execute(f"DELETE FROM {table} WHERE " + " AND ".join(f"{c} = ?" for c in pk), key)


def page_accounts(db: sqlite_utils.Database, changes: list[dict[str, Any]]) -> set[str]:
    """The labels (`user:alice`, `shared:X`) of the accounts a page of changes touches, as the
    page names them and as the mirror knows them now."""
    labels: set[str] = set()
    for ch in changes:
        if ch.get("table") != "accounts":
            continue
        row = ch.get("row")
        if isinstance(row, dict) and isinstance(row.get("kind"), str) and isinstance(row.get("name"), str):
            labels.add(account_label(row["kind"], row["name"]))
        pk = ch.get("pk")
        if isinstance(pk, list) and len(pk) == 1 and isinstance(pk[0], int):
            known = db.execute("SELECT kind, name FROM accounts WHERE id = ?", [pk[0]]).fetchone()
            if known is not None:
                labels.add(account_label(known[0], known[1]))
    return labels


class SettleFailed(SyncFailed):
    """The primary did not answer for entries in doubt: the page waits. Not the feed endpoint's
    failure (the upload's own endpoint handling already counted it)."""


def settle_in_doubt(db: Database, accounts: set[str] | None, settle: Settle) -> int:
    """Get the primary's answer for every entry in doubt of these accounts (None: all) before
    their rows from the primary are applied; raises SettleFailed when it does not answer for
    all. Returns how many entries were settled."""
    rows = db.read_sync(lambda d: jr.in_doubt(d, accounts))
    for i in range(0, len(rows), SETTLE_BATCH):
        chunk = rows[i : i + SETTLE_BATCH]
        verdicts = settle(chunk)
        if verdicts is None or any(r.txn_id not in verdicts for r in chunk):
            raise SettleFailed(
                f"the primary did not answer for {len(rows)} journal entries in doubt: "
                "the feed waits until they are settled"
            )
    if rows:  # routine under load (pushes in flight), so not worth an INFO line each time
        log.debug("settled %d journal entries in doubt before applying the feed", len(rows))
    return len(rows)


def apply_page(db: Database, after: int, page: dict[str, Any]) -> bool:
    """Apply one page of the change feed and store its cursor, in one write transaction. False
    (nothing done) when the stored cursor is no longer `after`: another pull got there first."""
    cursor = int(page["cursor"])
    changes = page.get("changes") or []

    def work(d: sqlite_utils.Database) -> bool:
        state = read_state(d)
        if "bootstrapped_at" not in state or int(state.get("cursor", -1)) != after:
            return False
        d.execute("PRAGMA defer_foreign_keys = ON")  # parents and children in any order
        for ch in changes:
            table = ch["table"]
            if table not in MIRRORED_TABLES:
                log.warning("change feed names table %r, which this site does not mirror", table)
                continue
            if ch.get("row") is None:
                _delete(d, table, list(ch["pk"]))
            else:
                _upsert(d, table, [ch["row"]])
        set_state(d, cursor=cursor, last_sync_at=now_iso())
        return True

    return db.write_sync(work, fenced=False)


# -- bootstrap -------------------------------------------------------------------------------


def _lines(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.strip():
            item = json.loads(line)
            if not isinstance(item, dict):
                raise SyncFailed("snapshot line is not a JSON object")
            yield item


def bootstrap(
    client: SyncClient, db: Database, *, batch_rows: int = BATCH_ROWS, settle: Settle | None = None
) -> int:
    """Replace the mirror's contents with a snapshot, streamed and written in batches; returns the
    cursor. The cursor (and `bootstrapped_at`) are stored only with the last batch, after the end
    line arrived: a bootstrap cut short leaves the site marked as not bootstrapped. Every entry in
    doubt is settled after the whole stream is in and before the cursor is stored (the stream
    is not held open meanwhile)."""
    request = client.build("GET", SNAPSHOT_PATH)
    response = client.http.send(request, stream=True)
    try:
        if response.status_code != 200:
            response.read()
            raise SyncFailed(f"snapshot answered HTTP {response.status_code}", response.status_code)
        lines = _lines(response)
        begin = next(lines, None)
        if begin is None or begin.get("type") != "begin":
            raise SyncFailed("snapshot did not start with a begin line")
        batch: list[tuple[str, dict[str, Any]]] = []
        cleared = False
        received = 0

        def write(final: dict[str, Any] | None) -> None:
            nonlocal cleared
            rows = list(batch)
            clear = not cleared

            def work(d: sqlite_utils.Database) -> None:
                d.execute("PRAGMA defer_foreign_keys = ON")
                if clear:
                    d.execute("DELETE FROM sync_state WHERE key IN ('cursor', 'bootstrapped_at')")
                    for t in reversed(MIRRORED_TABLES):  # children first
                        d.execute(f"DELETE FROM {t}")
                by_table: dict[str, list[dict[str, Any]]] = {}
                for t, r in rows:
                    by_table.setdefault(t, []).append(r)
                for t in MIRRORED_TABLES:  # parents first
                    _upsert(d, t, by_table.get(t, []))
                if final is not None:
                    now = now_iso()
                    set_state(d, cursor=int(final["cursor"]), bootstrapped_at=now, last_sync_at=now)

            db.write_sync(work, fenced=False)
            cleared = True
            batch.clear()

        for item in lines:
            kind = item.get("type")
            if kind == "row":
                table = item.get("table")
                if table not in MIRRORED_TABLES:
                    log.warning("snapshot names table %r, which this site does not mirror", table)
                    continue
                batch.append((str(table), dict(item["row"])))
                received += 1
                if len(batch) >= batch_rows:
                    write(None)
            elif kind == "end":
                if int(item.get("rows", received)) != received:
                    raise SyncFailed(f"snapshot ended after {received} rows, announced {item.get('rows')}")
                if settle is not None:  # the snapshot's read began before its begin line was sent
                    settle_in_doubt(db, None, settle)
                write(item)
                log.info("mirror bootstrapped: %d rows at cursor %s", received, item["cursor"])
                return int(item["cursor"])
        raise SyncFailed(f"snapshot stream ended without its end line (after {received} rows)")
    finally:
        response.close()


# -- endpoints -------------------------------------------------------------------------------


@dataclass
class Endpoint:
    """One configured primary URL, with a client for long polls and one for quick calls."""

    url: str
    feed: SyncClient
    quick: SyncClient
    state: str = "down"
    last_ok_at: str | None = None


@dataclass
class Endpoints:
    """The configured primary URLs; the active one is used until it fails, then the next. The WAN
    monitor (siteserver.site.monitor) probes every one and moves `index` to the active member."""

    items: list[Endpoint]
    index: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(
        cls, urls: list[str], site_id: str, key: Ed25519PrivateKey, *, feed_timeout: float
    ) -> Endpoints:
        return cls(
            [
                Endpoint(u, SyncClient(u, site_id, key, timeout=feed_timeout), SyncClient(u, site_id, key))
                for u in urls
            ]
        )

    def current(self) -> Endpoint:
        with self.lock:
            return self.items[self.index]

    def ok(self, ep: Endpoint) -> None:
        with self.lock:
            ep.state = "active"
            ep.last_ok_at = now_iso()

    def failed(self, ep: Endpoint, status: int | None) -> None:
        with self.lock:
            ep.state = "passive" if status == 503 else "down"
            if self.items[self.index] is ep:
                self.index = (self.index + 1) % len(self.items)

    def probed(self, ep: Endpoint, state: str) -> None:
        """The WAN monitor's verdict on one endpoint: active, passive or down."""
        with self.lock:
            ep.state = state
            if state == "active":
                ep.last_ok_at = now_iso()

    def follow_active(self) -> Endpoint | None:
        """Point the mirror and the pusher at an active member when the current one is not;
        returns the endpoint switched to, or None when nothing changed."""
        with self.lock:
            if self.items[self.index].state == "active":
                return None
            for i, e in enumerate(self.items):
                if e.state == "active":
                    self.index = i
                    return e
            return None

    def view(self) -> dict[str, Any]:
        with self.lock:
            cur = self.items[self.index]
            return {
                "active": cur.url if cur.state == "active" else None,
                "endpoints": [
                    {"url": e.url, "state": e.state, "last_ok_at": e.last_ok_at} for e in self.items
                ],
            }

    def close(self) -> None:
        for e in self.items:
            e.feed.close()
            e.quick.close()


# -- the follower ----------------------------------------------------------------------------


class Mirror:
    """Bootstrap if needed, then follow the feed; `pull_now` for an admin's immediate pull."""

    def __init__(
        self,
        db: Database,
        endpoints: Endpoints,
        *,
        wait_secs: float,
        stop: threading.Event,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.db = db
        self.endpoints = endpoints
        self.wait_secs = min(wait_secs, MAX_WAIT_SECS)
        self.stop = stop
        self._bootstrap_lock = threading.Lock()
        self._sleep = sleep or stop.wait
        #: settles journal entries in doubt before account rows are applied (the site app wires
        #: its pusher here; None: a mirror with no journal to settle)
        self.settle: Settle | None = None

    def _bootstrap(self, client: SyncClient) -> int:
        with self._bootstrap_lock:
            cursor = stored_cursor(self.db)  # another thread may have just done it
            if cursor is not None:
                return cursor
            return bootstrap(client, self.db, settle=self.settle)

    def pull(self, ep: Endpoint, wait: float) -> int:
        """One step: bootstrap if needed, else one page of changes. Returns the stored cursor."""
        after = stored_cursor(self.db)
        if after is None:
            return self._bootstrap(ep.feed)
        r = ep.feed.request(
            "GET", CHANGES_PATH, params={"after": after, "wait": _num(wait), "limit": PAGE_LIMIT}
        )
        if r.status_code != 200:
            raise SyncFailed(f"changes answered HTTP {r.status_code}", r.status_code)
        page = r.json()
        if page.get("reset"):
            log.info("the primary's feed no longer reaches cursor %d: bootstrapping again", after)
            self.db.write_sync(
                lambda d: d.execute("DELETE FROM sync_state WHERE key = 'bootstrapped_at'"), fenced=False
            )
            return self._bootstrap(ep.feed)
        changes = page.get("changes") or []
        if self.settle is not None and isinstance(changes, list):
            labels = self.db.read_sync(lambda d: page_accounts(d, changes))
            if labels:
                settle_in_doubt(self.db, labels, self.settle)
        try:
            apply_page(self.db, after, page)
        except Exception:
            # A page that does not fit the mirror (it should not happen): start over cleanly.
            log.exception("could not apply a page of changes; bootstrapping again")
            self.db.write_sync(
                lambda d: d.execute("DELETE FROM sync_state WHERE key = 'bootstrapped_at'"), fenced=False
            )
            raise
        return stored_cursor(self.db) or 0

    def pull_now(self) -> int:
        """An admin's pull: at once, no long poll, on the active endpoint (the next on failure)."""
        ep = self.endpoints.current()
        try:
            cursor = self.pull(ep, 0)
        except (httpx.HTTPError, SyncFailed) as e:
            if not isinstance(e, SettleFailed):
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
                if not isinstance(e, SettleFailed):  # the upload already judged its own endpoint
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


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x
