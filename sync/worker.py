"""The primary's merge worker: a process of its own that parses, applies and answers the sites'
uploads (`sync.apply.apply_entries`), so that a storm of merges does not hold the interpreter
lock the devices' logins need (one GIL per process).

The primary hands it the uploads waiting at that moment (MAX_HANDOFF at most) from its writer
thread (`Database.handoff`), once its guard's fence holds: the primary's own writes wait their
turn meanwhile instead of racing the worker for SQLite's lock. The worker applies them on its
own connection, one write transaction for the lot with a savepoint each (the group commit of
`store.db`), fenced by the lease at the epoch the primary holds, and answers only after COMMIT.
A worker that dies, shows no sign of life for ANSWER_SECS (it says it is at work every
BEAT_SECS), or takes longer than HANDOFF_SECS in all, is (killed and) started again; the
uploads it had are answered 503 and the sites send them again (a txn_id is applied once).

Bodies and answers cross the pipe as raw bytes, never pickled: pickling a handoff's megabytes is
one C call that holds the primary's interpreter lock for milliseconds, and the devices' logins
wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal

import sqlite_utils
from pydantic import ValidationError

from siteserver.domain import NotActive, Unavailable
from siteserver.store import Database, lease
from siteserver.store.db import is_locked

from . import wire
from .apply import apply_entries
from .errors import UnreadableUpload

log = logging.getLogger("siteserver.primary.merge")

#: what the worker says once its database is open
READY = "ready"
Kind = Literal["merged", "invalid", "fenced", "stopped", "locked", "failed"]
#: what became of one upload: its encoded MergeOut, its validation errors, or why not
Outcome = tuple[Kind, Any]
#: how long the worker may show no sign of life before it is taken for stuck (frozen, or a send
#: that never ends), killed and started again; a slow handoff (a busy machine, a lock waited
#: for up to SQLite's busy timeout) is not stuck: it says so every BEAT_SECS
ANSWER_SECS = 10.0
#: how often a worker at work says so
BEAT_SECS = 1.0
#: the longest a handoff may take in all, signs of life or not (a commit that never ends): the
#: guard's lease renewals wait behind it, and the default fail-over interval is 30 s
HANDOFF_SECS = 20.0
#: what it says
BEAT = "working"
#: uploads handed over at once at most (the rest go with the next handoff)
MAX_HANDOFF = 10
#: how long a new worker may take to open the database and say it is ready
READY_SECS = 30.0
#: validation errors sent back per upload (a body of 5000 bad entries is not 5000 errors);
#: the 422 names the first ten
MAX_ERRORS = 20
STOPPED = "the primary's merge worker stopped before it answered: send again"


@dataclass
class _Upload:
    site_id: str
    body: bytes
    outcome: Future[Outcome] = field(default_factory=Future)


class WorkerNotStarted(RuntimeError):
    """The merge worker did not say it was ready (it could not open the database)."""


class MergeWorker:
    """The primary's side: starts the worker, hands it uploads, turns outcomes into answers."""

    def __init__(
        self,
        db: Database,
        server_uuid: str,
        epoch_of: Callable[[], int],
        *,
        answer_secs: float = ANSWER_SECS,
        handoff_secs: float = HANDOFF_SECS,
    ) -> None:
        self.db = db
        self.server_uuid = server_uuid
        self.epoch_of = epoch_of
        self.answer_secs = answer_secs
        self.handoff_secs = handoff_secs
        self._pending: list[_Upload] = []
        self._lock = threading.Lock()
        self._closed = False
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the worker and wait until it has the database open (WorkerNotStarted if not)."""
        ctx = multiprocessing.get_context("spawn")  # never fork a process with threads
        ours, theirs = ctx.Pipe()
        process = ctx.Process(
            target=serve,
            args=(theirs, str(self.db.path), self.server_uuid),
            name="siteserver-merge-worker",
            daemon=True,
        )
        process.start()
        theirs.close()
        self._process, self._conn = process, ours
        try:
            ready = ours.poll(READY_SECS) and ours.recv() == READY
        except (EOFError, OSError):
            ready = False
        if not ready:
            self._discard(wait=0)
            raise WorkerNotStarted(f"the merge worker did not start within {READY_SECS:g} s (see its log)")

    def stop(self) -> None:
        """Once the writer thread is stopped: the worker sees its pipe close and exits. A
        handoff still running answers its uploads and does not start another worker."""
        with self._lock:
            self._closed = True
        self._discard(wait=10)

    def _discard(self, *, wait: float) -> None:
        """Close the pipe; the worker exits, or is killed after `wait` s."""
        conn, process, self._conn, self._process = self._conn, self._process, None, None
        if conn is not None:
            conn.close()
        if process is not None:
            process.join(timeout=wait)
            if process.is_alive():
                process.kill()
                process.join()

    async def merge(self, site_id: str, body: bytes) -> bytes:
        """The JSON of the upload's MergeOut once it is committed; UnreadableUpload for a body
        that is not a MergeIn, NotActive when fenced, Unavailable when the worker died."""
        upload = _Upload(site_id, body)
        with self._lock:
            if self._closed:
                raise Unavailable("the primary is stopping: send again")
            self._pending.append(upload)
        # Sent by this handoff or an earlier one: either has run once this one returns.
        await self.db.handoff(self._flush)
        kind, value = await asyncio.wrap_future(upload.outcome)
        if kind == "merged":
            assert isinstance(value, bytes)
            return value
        if kind == "invalid":
            raise UnreadableUpload(value)
        if kind == "fenced":
            raise NotActive(value)
        if kind in ("stopped", "locked"):
            raise Unavailable(value)
        raise RuntimeError(f"the merge worker could not apply an upload: {value}")

    def _flush(self, conn: sqlite_utils.Database) -> None:
        """On the writer thread: hand the uploads waiting to the worker; every one of them has
        its outcome when this returns, whatever happens."""
        with self._lock:
            uploads, self._pending = self._pending[:MAX_HANDOFF], self._pending[MAX_HANDOFF:]
        if not uploads:
            return
        outcomes: list[Outcome] = []
        try:
            self.db.fence(conn)  # a member that stepped down hands nothing over
            outcomes = self._hand_over(uploads)
        except NotActive as e:
            outcomes = [("fenced", e.detail)] * len(uploads)
        except Exception:
            log.exception("could not hand %d upload(s) to the merge worker", len(uploads))
        finally:
            if len(outcomes) != len(uploads):  # nothing is claimed: the sites send them again
                outcomes = [("stopped", STOPPED)] * len(uploads)
            for u, outcome in zip(uploads, outcomes, strict=True):
                u.outcome.set_result(outcome)

    def _hand_over(self, uploads: list[_Upload]) -> list[Outcome]:
        if self._conn is None:  # a restart failed: try again now
            self._restart("it was not running")
        if self._conn is None:
            return [("stopped", STOPPED)] * len(uploads)
        conn, epoch = self._conn, self.epoch_of()
        # A stuck worker blocks the send (a full pipe) or the answer: killed, it unblocks both.
        watchdog = _Watchdog(self._process, self.answer_secs, self.handoff_secs)
        try:
            return _exchange(conn, epoch, uploads, watchdog.pet)
        except Exception as e:  # whatever it was, the pipe is out of step: a new worker, a new pipe
            failure = e
        finally:
            watchdog.stop()
        why = watchdog.why or f"{type(failure).__name__}: {failure}"
        log.error("the merge worker stopped (%s) before it answered %d upload(s)", why, len(uploads))
        self._restart(why)
        return [("stopped", STOPPED)] * len(uploads)

    def _restart(self, why: str) -> None:
        """A new worker for the next handoff (what the old one did is committed or not: a txn_id
        sent again lands once); not once the primary is stopping."""
        self._discard(wait=0)
        if self._closed:
            return
        log.error("starting the merge worker again (%s)", why)
        try:
            self.start()
        except WorkerNotStarted:
            log.exception("the merge worker could not start; the next upload tries again")


def _exchange(
    conn: Connection, epoch: int, uploads: Sequence[_Upload], alive: Callable[[], None]
) -> list[Outcome]:
    """One handoff over the pipe: the epoch and site ids, each body; then the worker's beats, the
    kinds, and each merged upload's answer (`serve`'s side). `alive` is told of every step."""
    conn.send((epoch, [u.site_id for u in uploads]))
    for u in uploads:
        conn.send_bytes(u.body)
        alive()
    while (said := conn.recv()) == BEAT:
        alive()
    kinds: list[Outcome] = said
    if len(kinds) != len(uploads):
        raise RuntimeError(f"{len(kinds)} outcomes for {len(uploads)} uploads")
    outcomes: list[Outcome] = []
    for kind, value in kinds:
        outcomes.append((kind, conn.recv_bytes()) if kind == "merged" else (kind, value))
        alive()
    return outcomes


class _Watchdog:
    """Kills the worker once it has shown no sign of life for `secs` (`pet` is a sign), or once
    `limit` s have passed in all; `why` says which."""

    def __init__(self, process: BaseProcess | None, secs: float, limit: float) -> None:
        self.process, self.secs, self.limit = process, secs, limit
        self.why: str | None = None
        now = time.monotonic()
        self._end = now + limit
        self._deadline = min(now + secs, self._end)
        self._lock = threading.Lock()  # stop() and the kill: one or the other
        self._done = threading.Event()
        threading.Thread(target=self._watch, name="merge-watchdog", daemon=True).start()

    def pet(self) -> None:
        self._deadline = min(time.monotonic() + self.secs, self._end)

    def stop(self) -> None:
        with self._lock:
            self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(max(self._deadline - time.monotonic(), 0.0)):
            with self._lock:
                now = time.monotonic()
                if self._done.is_set() or now < self._deadline:
                    continue
                quiet = f"no sign of life for {self.secs:g} s"
                self.why = f"not done within {self.limit:g} s" if now >= self._end else quiet
                if self.process is not None:
                    self.process.kill()
                return


# -- the worker process ----------------------------------------------------------------------


def serve(conn: Connection, database: str, server_uuid: str) -> None:
    """The worker's life: batches of uploads in, their outcomes out, until the pipe closes (the
    primary stopped or died). Signals to stop go to the primary, which closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    db = Database(database)
    db.open()
    try:
        conn.send(READY)
        while True:
            try:
                epoch, sites = conn.recv()
                uploads = [(site_id, conn.recv_bytes()) for site_id in sites]
            except EOFError:
                return
            try:
                outcomes = merge_uploads(db, server_uuid, epoch, uploads, beat=partial(conn.send, BEAT))
            except OSError:  # a beat found the pipe closed: the primary is gone
                return
            except Exception as e:  # a bug: said for each upload, the worker goes on
                log.exception("the merge worker could not merge %d upload(s)", len(uploads))
                outcomes = [("failed", f"{type(e).__name__}: {e}")] * len(uploads)
            try:  # the kinds, then each merged upload's answer as it is
                conn.send([(k, None) if k == "merged" else (k, v) for k, v in outcomes])
                for kind, answer in outcomes:
                    if kind == "merged":
                        conn.send_bytes(answer)
            except OSError:
                return
    finally:
        db.close()


def merge_uploads(
    db: Database,
    server_uuid: str,
    epoch: int,
    uploads: Sequence[tuple[str, bytes]],
    *,
    beat: Callable[[], object] = lambda: None,
) -> list[Outcome]:
    """Parse each upload, apply them together, answer each once all are committed; `beat` is
    called at least every BEAT_SECS meanwhile."""

    def fence(conn: Any) -> None:
        if not lease.read_lease(conn).held_by(server_uuid, epoch):
            raise NotActive(lease.REPLACED)

    db.set_fence(fence)
    parsed = []
    for _, body in uploads:
        parsed.append(_parse(body))
        beat()
    applying = [
        db.submit(partial(apply_entries, site_id=site_id, entries=m.entries, epoch=epoch))
        if isinstance(m, wire.MergeIn)
        else None
        for (site_id, _), m in zip(uploads, parsed, strict=True)
    ]
    outcomes: list[Outcome] = []
    for m, future in zip(parsed, applying, strict=True):
        if future is None:
            outcomes.append(("invalid", m))
            continue
        try:
            outcomes.append(("merged", _result(future, beat).model_dump_json().encode()))
        except NotActive as e:
            outcomes.append(("fenced", e.detail))
        except Exception as e:
            if is_locked(e):  # another process held the write lock past the busy timeout
                outcomes.append(("locked", "the ledger is locked by another writer: send again"))
            else:  # the primary logs it as the bug it is
                outcomes.append(("failed", f"{type(e).__name__}: {e}"))
    return outcomes


def _result(future: Future[wire.MergeOut], beat: Callable[[], object]) -> wire.MergeOut:
    """The future's result, beating while it is not there yet."""
    while not wait([future], BEAT_SECS).done:
        beat()
    return future.result()


def _parse(body: bytes) -> wire.MergeIn | list[dict[str, Any]]:
    """The upload in one pass of pydantic's JSON parser, or its errors (without the input,
    which may be the whole body)."""
    try:
        return wire.MergeIn.model_validate_json(body)
    except ValidationError as e:
        return [
            {"type": err["type"], "loc": err["loc"], "msg": err["msg"]}
            for err in e.errors(include_url=False)[:MAX_ERRORS]
        ]
