"""The site's side of a merge: its journal entries sent to the primary, the verdicts recorded.

A request's new entries are merged at once, within its budget, grouped with every other
request's waiting at the same moment (one signed upload, one primary transaction for all of them:
`submit` and the uploader threads). Whatever stays pending is merged in the background, oldest
first (`run`). An entry is marked `sent` before its bytes leave: from then on it may be in doubt
(sent, no answer), and `settle_in_doubt` gets the primary's answer for such entries before the
pull applies rows of their accounts (DESIGN.md invariant 3).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from siteserver import contract
from siteserver.domain.merge import MergeVerdict
from siteserver.store import Database
from siteserver.store import journal as journal_store
from siteserver.timeutil import now_iso

from . import wire
from .endpoints import Endpoints
from .errors import MergeUnsettled, SyncFailed

log = logging.getLogger("siteserver.sync.merge")

MERGE_INTERVAL_SECS = 2.0
#: entries per background upload: large, so that a drain is few requests and the accounts it
#: touches change (and reach the site's mirror) once per batch rather than once per few entries
MERGE_BATCH = 5000
#: entries per upload of requests' merges (grouped while they wait)
REQUEST_GROUP = 500
#: background uploads in flight at once: one is applied while the next is read, sent and parsed
PIPELINE = 2
#: the first upload of a background drain, sent alone: a primary busy with other sites' merges
#: sheds it (429), and a shed site has then built and sent this much, not two full batches
FIRST_BATCH = 250
#: an upload of up to MERGE_BATCH entries, the second of the pipeline waiting for the first
BACKGROUND_TIMEOUT_SECS = 30.0
#: threads merging requests' entries; each takes every request waiting when it starts (one upload)
UPLOADERS = 3
#: the shortest upload timeout, for a group whose budget is (almost) spent: still one real try
MIN_UPLOAD_SECS = 0.05
SETTLE_BATCH = 500

Verdicts = dict[str, MergeVerdict]


@dataclass(slots=True)
class _Waiting:
    """A request's entries waiting for an uploader, and where its verdicts go."""

    entries: Sequence[journal_store.JournalRow]
    deadline: float  # time.monotonic() by which the request stops waiting
    future: Future[Verdicts | None]


def entry_of(row: journal_store.JournalRow) -> wire.JournalEntry:
    """A journal row as the merge sends it."""
    return wire.JournalEntry.model_validate(
        {
            "txn_id": row.txn_id,
            "account": row.account,
            "amount_cents": row.amount_cents,
            "kind": row.kind,
            "enforcement": row.enforcement,
            "occurred_at": row.occurred_at,
            "flags": list(row.flags),
            "ref": row.ref,
        }
    )


class Progress:
    """How far the background merge is in draining the journal (for the site's status)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = False
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self._started = 0.0
        self.done = 0
        self.total = 0

    def begin(self, pending: Callable[[], int]) -> None:
        with self._lock:
            if self.running:
                return
        total = pending()
        with self._lock:
            self.running, self.started_at, self.finished_at = True, now_iso(), None
            self._started, self.done, self.total = time.monotonic(), 0, total

    def advance(self, answered: int, pending: int) -> None:
        with self._lock:
            self.done += answered
            self.total = max(self.total, self.done + pending)

    def finish(self) -> None:
        with self._lock:
            if self.running:
                self.running, self.finished_at = False, now_iso()

    def view(self) -> contract.MergeProgressOut:
        with self._lock:
            secs = time.monotonic() - self._started
            rate = round(self.done / secs, 1) if self.started_at is not None and secs > 0 else None
            return contract.MergeProgressOut(
                running=self.running,
                started_at=self.started_at,
                finished_at=self.finished_at,
                done=self.done,
                total=self.total,
                rate_per_sec=rate if self.running else None,
            )


def _log_answers(url: str, verdicts: Verdicts, background: bool) -> None:
    """A background batch once at info (a device's own push at debug: one a charge), each
    conflict and rejection once at warning (a later answer for the entry is a duplicate)."""
    by_status: dict[str, int] = {}
    for txn_id, v in verdicts.items():
        by_status[v.status] = by_status.get(v.status, 0) + 1
        if v.conflict is not None:
            log.warning("entry %s applied with conflict %s: %s", txn_id, v.conflict.kind, v.conflict.action)
        elif v.status == "rejected":
            log.warning("entry %s rejected by the primary: %s", txn_id, v.reason)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
    log.log(logging.INFO if background else logging.DEBUG, "merge batch into %s: %s", url, counts)


def verdict_of(r: wire.MergeResult) -> MergeVerdict:
    conflict = None if r.conflict is None else r.conflict.domain()
    return MergeVerdict(r.status, r.seq, r.balance_cents, r.reason, conflict, r.account, r.amount_cents)


class Merger:
    """Merges journal entries into the primary and records the per-entry verdicts."""

    def __init__(
        self,
        db: Database,
        endpoints: Endpoints,
        stop: threading.Event,
        *,
        on_answered: Callable[[], None] | None = None,
        on_verdicts: Callable[[Verdicts], None] | None = None,
    ) -> None:
        self.db = db
        #: called with the primary's verdicts of each answered upload (the site's metrics)
        self.on_verdicts = on_verdicts
        self.endpoints = endpoints
        self.stop = stop
        self.wake = threading.Event()
        #: called (on the merging thread) after each upload the primary answered
        self.on_answered = on_answered
        self._waiting: queue.SimpleQueue[_Waiting] = queue.SimpleQueue()
        #: time.monotonic() before which the background merge does not try (a Retry-After)
        self._resume_at = 0.0
        self.progress = Progress()
        self._draining = threading.Lock()
        self._pipeline = ThreadPoolExecutor(max_workers=PIPELINE, thread_name_prefix="merge")

    def merge(
        self, entries: Sequence[journal_store.JournalRow], timeout: float, *, background: bool = False
    ) -> Verdicts | None:
        """One upload (on a plain thread); None when the primary gave no answer. Verdicts are
        recorded before returning; entries without one stay pending. `background`: the drain's,
        which the primary may shed."""
        if not entries:
            return {}
        unsent = [e.txn_id for e in entries if not e.sent]
        if unsent:  # committed before anything leaves: from now on the entries may be in doubt
            try:
                self.db.write_sync(lambda conn: journal_store.mark_sent(conn, unsent), fenced=False)
            except RuntimeError:  # the database is closed: the site is stopping
                return None
        ep = self.endpoints.current()
        verdicts: Verdicts | None = None
        try:
            answer = ep.quick.merge([entry_of(e) for e in entries], timeout=timeout, background=background)
            verdicts = {str(r.txn_id): verdict_of(r) for r in answer.results}
            self.endpoints.ok(ep)
            if self.on_answered is not None:
                self.on_answered()
        except ValidationError as e:  # an entry the protocol does not take: the primary would refuse it too
            log.error("journal entries do not fit the merge and stay pending: %s", e)
        except SyncFailed as e:
            log.warning("merge into %s failed: %s", ep.url, e)
            if e.retry_after is not None:  # the primary sheds load: the background merge waits
                self._resume_at = time.monotonic() + e.retry_after
            if e.status is not None and (e.status >= 500 or e.status == 401):
                self.endpoints.failed(ep, e.status)
        except httpx.HTTPError as e:
            if not self.stop.is_set():
                log.info("merge into %s failed: %s", ep.url, e or type(e).__name__)
                self.endpoints.failed(ep, None)
        found = verdicts or {}
        try:
            self.db.write_sync(
                lambda conn: journal_store.record(conn, entries, found, now=now_iso()), fenced=False
            )
        except RuntimeError:  # the database is closed: the site is stopping
            return None
        if verdicts is None:
            self.wake.set()
            return None
        _log_answers(ep.url, verdicts, background)
        if self.on_verdicts is not None:
            self.on_verdicts(verdicts)
        return verdicts

    def submit(self, entries: Sequence[journal_store.JournalRow], timeout: float) -> Future[Verdicts | None]:
        """A request's entries, merged together with every other request's waiting at the same
        moment, within `timeout` seconds from now (the time spent waiting for an uploader included)."""
        fut: Future[Verdicts | None] = Future()
        self._waiting.put(_Waiting(entries, time.monotonic() + timeout, fut))
        return fut

    def _next_group(self) -> list[_Waiting]:
        try:
            first = self._waiting.get(timeout=0.5)
        except queue.Empty:
            return []
        group = [first]
        size = len(first.entries)
        while size < REQUEST_GROUP:
            try:
                more = self._waiting.get_nowait()
            except queue.Empty:
                break
            group.append(more)
            size += len(more.entries)
        # A request that gave up (its budget ran out) is not waited for; its entries stay
        # pending for the background merge.
        return [w for w in group if w.future.set_running_or_notify_cancel()]

    def run_uploader(self) -> None:
        """An uploader thread (UPLOADERS of them): never dies."""
        while not self.stop.is_set():
            group = self._next_group()
            if not group:
                continue
            entries = list({e.txn_id: e for w in group for e in w.entries}.values())
            left = min(w.deadline for w in group) - time.monotonic()
            try:
                verdicts = self.merge(entries, max(left, MIN_UPLOAD_SECS))
            except Exception:
                log.exception("merge failed")
                verdicts = None
            for w in group:
                found = (
                    None
                    if verdicts is None
                    else {e.txn_id: verdicts[e.txn_id] for e in w.entries if e.txn_id in verdicts}
                )
                w.future.set_result(found)

    def merge_pending_once(self, timeout: float = BACKGROUND_TIMEOUT_SECS, *, background: bool = True) -> int:
        """Merge the pending journal, oldest first, in batches of MERGE_BATCH with up to PIPELINE
        uploads in flight (the next batch is read and sent while the primary applies the last),
        a background drain's first upload of FIRST_BATCH alone, to learn whether it is shed;
        returns how many entries were sent, negative when the primary did not answer. One drain
        at a time (the background thread's, an admin's merge now). `background=False`: an admin
        waits for it, so the primary does not shed it."""
        with self._draining:
            return self._drain(timeout, background)

    def _drain(self, timeout: float, background: bool) -> int:
        after = 0
        sent = 0
        in_flight: deque[tuple[int, Future[Verdicts | None]]] = deque()
        failed = False
        while not self.stop.is_set() and not failed:
            first = background and sent == 0
            rows = self._pending_after(after, FIRST_BATCH if first else MERGE_BATCH)
            if not rows:
                break
            self.progress.begin(lambda: self.db.read_sync(journal_store.pending_count))
            after = rows[-1].seq
            upload = self._pipeline.submit(self.merge, rows, timeout, background=background)
            in_flight.append((len(rows), upload))
            if first or len(in_flight) >= PIPELINE:
                failed = not self._landed(*in_flight.popleft())
            sent += len(rows)
        while in_flight:
            failed = not self._landed(*in_flight.popleft()) or failed
        if failed:
            return -max(sent, 1)
        if sent == 0:
            self.progress.finish()
        return sent

    def _pending_after(self, seq: int, limit: int) -> list[journal_store.JournalRow]:
        return self.db.read_sync(lambda conn: journal_store.pending(conn, limit, after_seq=seq))

    def _landed(self, size: int, upload: Future[Verdicts | None]) -> bool:
        """Wait for one upload of the pipeline; whether the primary answered it."""
        verdicts = upload.result()
        if verdicts is None:
            return False
        self.progress.advance(len(verdicts), self.db.read_sync(journal_store.pending_count))
        return True

    def run(self) -> None:
        """The background merge thread: never dies."""
        while not self.stop.is_set():
            sent = 0
            try:
                sent = self.merge_pending_once()
            except Exception:
                if self.stop.is_set():
                    return
                log.exception("merge failed")
            if sent < 0:  # the primary did not answer: wait before the next try
                self.wake.clear()
                # ... or until a primary endpoint is seen active again; never before a Retry-After
                self.wake.wait(self.backoff_secs())
                self.stop.wait(max(0.0, self._resume_at - time.monotonic()))
                continue
            self.wake.wait(MERGE_INTERVAL_SECS)  # or at once, after a request's merge failed
            self.wake.clear()

    def close(self) -> None:
        """Uploads not started are dropped (their entries stay pending); one in flight ends with
        its timeout or the closed endpoints."""
        self._pipeline.shutdown(wait=False, cancel_futures=True)

    def backoff_secs(self) -> float:
        """After a failed merge: about one interval, jittered so that sites cut off together do not
        come back in step; at least what the primary's Retry-After asked for."""
        jittered = MERGE_INTERVAL_SECS * random.uniform(0.5, 1.5)
        return max(jittered, self._resume_at - time.monotonic())

    def settle_in_doubt(self, accounts: set[str] | None) -> int:
        """Get the primary's answer for every entry in doubt of these accounts (None: all) before
        their rows from the primary are applied; raises MergeUnsettled when it does not answer
        for all. Returns how many entries were settled."""
        rows = self.db.read_sync(lambda conn: journal_store.in_doubt(conn, accounts))
        for i in range(0, len(rows), SETTLE_BATCH):
            chunk = rows[i : i + SETTLE_BATCH]
            verdicts = self.merge(chunk, BACKGROUND_TIMEOUT_SECS)
            if verdicts is None or any(r.txn_id not in verdicts for r in chunk):
                raise MergeUnsettled(
                    f"the primary did not answer for {len(rows)} journal entries in doubt: "
                    "the feed waits until they are settled"
                )
        if rows:  # routine under load (merges in flight), so not worth an INFO line each time
            log.debug("settled %d journal entries in doubt before applying the feed", len(rows))
        return len(rows)
