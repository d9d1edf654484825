"""The primary's end of the sync API: enrollment, signed-request checks, heartbeats, the snapshot,
the change feed, the journal upload, and the admin calls that manage a site's identity (disable,
re-issue an enrollment token).

Signatures are checked by `sync.signing`; this class adds what needs the database: the site's
key and state, one-time enrollment tokens, and the nonces seen within the window (replays).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from siteserver import serving
from siteserver.api import models as m
from siteserver.api.auth import invalid_enrollment
from siteserver.domain import (
    Enforcement,
    Forbidden,
    Invalid,
    NotFound,
    Unauthorized,
    new_token,
    token_digest,
)
from siteserver.store import Database, catalog, connect, feed, ledger
from siteserver.store import accounts as acc
from siteserver.timeutil import now_iso
from sync import models as sm
from sync import signing
from sync.mirrored import MIRRORED_TABLES

log = logging.getLogger("siteserver.sync")

SNAPSHOT_CHUNK_ROWS = 1000
SNAPSHOT_QUEUE_CHUNKS = 4
POLL_SECS = 0.2
_DONE = object()


def _line(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


@dataclass
class SyncService:
    db: Database
    pepper: bytes
    server_uuid: str
    epoch_of: Callable[[], int]
    window_secs: int = signing.DEFAULT_WINDOW_SECS
    clock: Callable[[], float] = time.time
    # Handed to a site at enrollment: its WAN monitor probes the health URL with it.
    health_key: str | None = None

    # -- enrollment (the one-time token is the credential) ----------------------------------------

    async def enrollment_token_valid(self, site_id: str, token: str) -> bool:
        digest = token_digest(token)
        return await self.db.read(lambda db: catalog.enrollment_token_matches(db, site_id, digest))

    async def enroll(self, body: m.EnrollIn) -> dict[str, Any]:
        try:
            signing.parse_public_key(body.public_key)
        except ValueError as e:
            raise Invalid(f"public_key: {e}") from e
        digest = token_digest(body.enrollment_token)

        def work(db: sqlite_utils.Database) -> None:
            # Check and consume in one write transaction: the token works exactly once.
            if not catalog.enroll_site(db, body.site_id, digest, body.public_key, now=now_iso()):
                raise invalid_enrollment()  # one answer: unknown site, wrong or used token

        await self.db.write(work)
        answer: dict[str, Any] = {"site_id": body.site_id, "pepper": self.pepper.hex()}
        if self.health_key is not None:
            answer["health_key"] = self.health_key
        return answer

    # -- signed requests ------------------------------------------------------------------------

    async def authenticate(
        self, method: str, path: str, query: str, body: bytes, headers: Mapping[str, str]
    ) -> str:
        """The site id of a correctly signed, fresh, first-seen request; else a DomainError."""
        try:
            site_id = signing.signed_site_id(headers)
        except signing.SignatureError as e:
            raise Unauthorized(str(e), code=e.code) from e
        site = await self.db.read(lambda db: catalog.site_key(db, site_id))
        if site is None or site.public_key is None:
            raise Unauthorized(f"no enrolled site {site_id!r}", code="unknown_site")
        now = self.clock()
        try:
            key = signing.parse_public_key(site.public_key)
            signing.verify(key, method, path, query, body, headers, now, self.window_secs)
        except ValueError as e:  # a stored key that does not parse: treat as not enrolled
            raise Unauthorized(f"no enrolled site {site_id!r}", code="unknown_site") from e
        except signing.SignatureError as e:
            raise Unauthorized(str(e), code=e.code) from e
        if site.disabled:
            raise Forbidden(f"site {site_id!r} is disabled on the primary", code="site_disabled")
        nonce = signing.header_value(headers, signing.NONCE) or ""
        fresh = await self.db.write(
            lambda db: catalog.remember_nonce(
                db, site_id, nonce, now=int(now), keep_secs=2 * int(self.window_secs)
            )
        )
        if not fresh:
            raise Unauthorized("this signed request was already received", code="replayed_request")
        return site_id

    async def heartbeat(self, site_id: str, body: m.HeartbeatIn) -> dict[str, Any]:
        now = now_iso()
        await self.db.write(
            lambda db: catalog.record_heartbeat(
                db, site_id, mode=body.mode, journal_backlog=body.journal_backlog, now=now
            )
        )
        return {"primary_time": now, "server_uuid": self.server_uuid, "epoch": self.epoch_of()}

    # -- snapshot -------------------------------------------------------------------------------

    def snapshot(self) -> AsyncIterator[bytes]:
        """The NDJSON snapshot as chunks of bytes (see `stream_snapshot`)."""
        return stream_snapshot(self.db.path)

    # -- change feed ----------------------------------------------------------------------------

    async def changes(self, after: int, wait: float, limit: int) -> dict[str, Any]:
        """A page of changes after `after`; with none and `wait` > 0, long-poll for them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        page = await self._page(after, limit)
        while page["cursor"] == after and not page["reset"]:
            remaining = deadline - loop.time()
            if remaining <= 0 or serving.stopping.is_set():
                break
            await asyncio.sleep(min(POLL_SECS, remaining))
            # The poll is one cheap statement on the shared reader; a page gets its own connection.
            if await self.db.read(feed.max_seq, snapshot=False) > after:
                page = await self._page(after, limit)
        return page

    async def _page(self, after: int, limit: int) -> dict[str, Any]:
        return await asyncio.to_thread(_read_page, self.db, after, limit)

    # -- journal upload -------------------------------------------------------------------------

    async def upload_journal(self, site_id: str, body: sm.JournalIn) -> dict[str, Any]:
        """Apply a site's journal entries in one write transaction; one result per entry, in order."""
        entries = body.entries

        def work(db: sqlite_utils.Database) -> dict[str, Any]:
            now = now_iso()
            accounts = {label: acc.account_by_label(db, label) for label in {e.account for e in entries}}
            batch: list[ledger.Entry] = []
            where: list[int] = []
            for i, e in enumerate(entries):
                account_id = accounts[e.account]
                if account_id is None:
                    continue
                batch.append(
                    ledger.Entry(
                        str(e.txn_id),
                        account_id,
                        e.amount_cents,
                        e.kind,
                        Enforcement(e.enforcement),
                        e.occurred_at,
                        origin_site=site_id,
                        flags=tuple(e.flags),
                        ref=e.ref,
                    )
                )
                where.append(i)
            outcomes = dict(
                zip(where, ledger.apply(db, batch, epoch=self.epoch_of(), applied_at=now), strict=True)
            )
            results: list[dict[str, Any]] = []
            for i, e in enumerate(entries):
                out = outcomes.get(i)
                results.append(_result(e, out) if out is not None else _unknown_account(db, e))
            applied = [
                e.amount_cents for e, r in zip(entries, results, strict=True) if r["status"] == "applied"
            ]
            receipt = {
                "entries": len(entries),
                "applied": len(applied),
                "duplicate": sum(r["status"] == "duplicate" for r in results),
                "rejected": sum(r["status"] == "rejected" for r in results),
                "applied_cents": sum(applied),
            }
            return {"results": results, "receipt": receipt}

        return await self.db.write(work)

    # -- administration (admin token) -----------------------------------------------------------

    async def patch_site(self, site_id: str, body: m.SitePatch) -> dict[str, Any]:
        def work(db: sqlite_utils.Database) -> dict[str, Any]:
            catalog.update_site(db, site_id, name=body.name, disabled=body.disabled)
            site = catalog.get_site(db, site_id)
            if site is None:
                raise NotFound(f"no site {site_id!r}")
            return site

        return await self.db.write(work)

    async def new_enrollment_token(self, site_id: str) -> dict[str, Any]:
        token = new_token("enr")
        digest = token_digest(token)
        await self.db.write(lambda db: catalog.reissue_enrollment_token(db, site_id, digest))
        return {"site_id": site_id, "enrollment_token": token}


# -- helpers -------------------------------------------------------------------------------------


def _read_page(database: Database, after: int, limit: int) -> dict[str, Any]:
    """One page in one snapshot, on a connection of its own (not the shared reader thread)."""
    db = connect(database.path, readonly=True)
    try:
        db.execute("BEGIN")
        try:
            return feed.changes_page(db, after, limit)
        finally:
            db.execute("ROLLBACK")
    finally:
        db.close()


def _answer(
    e: sm.JournalEntry, status: str, seq: int | None, balance: int | None, reason: str | None
) -> dict[str, Any]:
    return {"txn_id": e.txn_id, "status": status, "seq": seq, "balance_cents": balance, "reason": reason}


def _result(e: sm.JournalEntry, out: ledger.Outcome) -> dict[str, Any]:
    if out.status in ("applied", "duplicate"):
        return _answer(e, out.status, out.seq, out.balance_after_cents, None)
    return _answer(e, "rejected", None, None, out.reason or out.status)


def _unknown_account(db: sqlite_utils.Database, e: sm.JournalEntry) -> dict[str, Any]:
    """An entry whose account is gone (or never was). If its txn_id was applied before (the user
    deleted since), the answer is still that first application's: uploading twice has one effect."""
    row = db.execute(
        "SELECT a.kind, a.name, l.amount_cents, l.balance_after_cents, l.seq"
        " FROM ledger l JOIN accounts a ON a.id = l.account_id WHERE l.txn_id = ?",
        [str(e.txn_id)],
    ).fetchone()
    if row is None:
        return _answer(e, "rejected", None, None, "unknown account")
    if ledger.account_label(row[0], row[1]) == e.account and row[2] == e.amount_cents:
        return _answer(e, "duplicate", row[4], row[3], None)
    return _answer(e, "rejected", None, None, "txn_id already used for a different account or amount")


async def stream_snapshot(path: Any) -> AsyncGenerator[bytes, None]:
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
            db = connect(path, readonly=True)
        except BaseException as e:
            hand(e)
            return
        try:
            db.execute("BEGIN")
            try:
                cursor = feed.max_seq(db)
                buf = [_line({"type": "begin", "cursor": cursor, "tables": list(MIRRORED_TABLES)})]
                rows = 0
                for table in MIRRORED_TABLES:
                    for row in feed.table_rows(db, table):
                        buf.append(_line({"type": "row", "table": table, "row": row}))
                        rows += 1
                        if len(buf) >= SNAPSHOT_CHUNK_ROWS:
                            if not hand(b"".join(buf)):
                                return
                            buf = []
                buf.append(_line({"type": "end", "cursor": cursor, "rows": rows}))
                if hand(b"".join(buf)):
                    hand(_DONE)
            finally:
                db.execute("ROLLBACK")
        except BaseException as e:
            log.exception("snapshot failed")
            hand(e)
        finally:
            db.close()

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
