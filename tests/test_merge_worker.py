"""The primary's merge worker (sync.worker): the process of its own that parses and applies the
sites' uploads. SIGKILLed in the middle of a merge it is started again, its upload is answered
503 and sent again, and every entry is applied exactly once; it does not outlive its primary."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from siteserver.domain import NotActive, Unavailable
from siteserver.launch import wait_until
from siteserver.store import Database, lease, ledger
from siteserver.store.db import BUSY_TIMEOUT_MS
from siteserver.timeutil import now_iso
from sync import wire
from sync.worker import BEAT_SECS, MergeWorker, WorkerNotStarted, merge_uploads
from tests.kit.journal import JOURNAL, add_payers, balances, entry
from tests.kit.locks import write_lock, write_lock_for
from tests.kit.primary import Primary, start_primary
from tests.kit.procs import alive, cpu_ticks, processes
from tests.kit.site import EnrolledSite, enrolled_site


def merge_worker(p: Primary) -> int:
    """The pid of the primary's merge worker (beside it, multiprocessing's resource tracker)."""
    assert p.process.proc is not None
    pid = p.process.proc.pid

    def workers() -> list[int]:
        return [c for c, (ppid, cmd) in processes().items() if ppid == pid and "spawn_main" in cmd]

    wait_until(lambda: len(workers()) == 1, 30, "the primary's merge worker")
    (worker,) = workers()
    return worker


def upload(site: EnrolledSite, body: dict[str, Any]) -> httpx.Response:
    with site.client() as c:
        return c.request("POST", JOURNAL, json_body=body)


def full_upload() -> dict[str, Any]:
    return {"entries": [entry("user:alice", 1) for _ in range(wire.MAX_JOURNAL_ENTRIES)]}


def test_a_merge_worker_killed_mid_merge_is_started_again_and_every_entry_lands_once(
    primary: Primary,
) -> None:
    add_payers(primary)
    site = enrolled_site(primary)
    first = merge_worker(primary)
    r = upload(site, full_upload())
    assert r.status_code == 200 and r.json()["receipt"]["applied"] == wire.MAX_JOURNAL_ENTRIES, r.text

    # An upload of 5000 entries in flight (parsed, applied and answered by the worker) when the
    # worker is SIGKILLed, and one sent once it is dead.
    in_flight, after = full_upload(), full_upload()
    answers: dict[str, httpx.Response] = {}
    sending = threading.Thread(target=lambda: answers.setdefault("in_flight", upload(site, in_flight)))
    busy_before = cpu_ticks(first)
    sending.start()
    # Killed once it is at work on the upload (its CPU time moves), or after 5 s at the latest.
    deadline = time.monotonic() + 5
    while cpu_ticks(first) < busy_before + 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(first, signal.SIGKILL)
    sending.join(timeout=60)
    assert not sending.is_alive(), "the upload in flight was never answered"
    answers["after"] = upload(site, after)

    # Whichever reached the dead worker first was not answered by it.
    assert 503 in {a.status_code for a in answers.values()}, {k: a.text for k, a in answers.items()}
    statuses: dict[str, set[str]] = {}
    for name, body in (("in_flight", in_flight), ("after", after)):
        r = answers[name]
        while r.status_code == 503:  # the worker's uploads when it died: as a site, send again
            assert r.json()["error"] == "unavailable", r.text
            assert "merge worker" in r.json()["detail"], r.text
            r = upload(site, body)
        assert r.status_code == 200, r.text
        statuses[name] = {res["status"] for res in r.json()["results"]}
    # Applied by the killed worker before it died (then answered duplicate) or by the new one.
    assert statuses["in_flight"] in ({"applied"}, {"duplicate"}), statuses
    assert statuses["after"] == {"applied"}, statuses
    assert balances(primary)["alice"] == 1000 + 3 * wire.MAX_JOURNAL_ENTRIES

    second = merge_worker(primary)
    assert second != first and not alive(first)
    assert "the merge worker stopped" in primary.process.log_tail(200_000)
    # The primary goes on answering its own writes meanwhile and after.
    r = upload(site, {"entries": [entry("user:bob", 2)]})
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "applied", r.text


def test_the_merge_worker_does_not_outlive_its_primary(tmp_path: Path) -> None:
    p = start_primary(tmp_path)
    worker = merge_worker(p)
    p.process.kill()  # SIGKILL: no stop() closes the worker's pipe; the kernel does
    wait_until(lambda: not alive(worker), 10, "the orphaned merge worker gone")

    # A politely stopped primary stops its worker too.
    q = start_primary(tmp_path / "again")
    worker = merge_worker(q)
    q.process.stop()
    wait_until(lambda: not alive(worker), 10, "the stopped primary's merge worker gone")


def test_the_worker_applies_only_at_the_epoch_the_primary_holds(fresh_db: Database) -> None:
    """The worker runs in its own process with its own connection: it fences every transaction on
    the lease itself. Once another member took the lease, the old epoch's uploads are refused
    whole and none of their entries reach the ledger; a body that is not a MergeIn is said so."""
    epoch = fresh_db.write_sync(lambda c: lease.take_lease(c, "member-a", now_iso()), fenced=False)
    good, late = entry("user:alice", 5), entry("user:alice", 7)

    def body(*entries: dict[str, Any]) -> bytes:
        return json.dumps({"entries": list(entries)}).encode()

    outcomes = merge_uploads(fresh_db, "member-a", epoch, [("s1", body(good)), ("s1", b'{"entries": 1}')])
    (kind, answer), (bad_kind, errors) = outcomes
    # No user alice in this database: billed to the fallback account, said as a conflict.
    merged = wire.MergeOut.model_validate_json(answer).results[0]
    assert kind == "merged" and merged.status == "applied_with_conflict", merged
    assert bad_kind == "invalid" and errors[0]["loc"] == ("entries",), errors

    fresh_db.write_sync(lambda c: lease.take_lease(c, "member-b", now_iso()), fenced=False)
    ((kind, detail),) = merge_uploads(fresh_db, "member-a", epoch, [("s1", body(late))])
    assert kind == "fenced" and "replaced" in detail
    applied = fresh_db.read_sync(lambda c: ledger.applications(c, [good["txn_id"], late["txn_id"]]))
    assert [a.txn_id for a in applied] == [good["txn_id"]]


def test_a_frozen_worker_is_killed_after_its_answer_time_and_the_upload_lands_once(
    fresh_db: Database,
) -> None:
    """A worker that does not answer (SIGSTOP here; a lock that never comes in the field) must not
    hold the primary's writer thread for ever: past its answer time it is killed and started
    again, the upload is answered Unavailable, and sent again it is applied once."""
    epoch = fresh_db.write_sync(lambda c: lease.take_lease(c, "member-a", now_iso()), fenced=False)
    worker = MergeWorker(fresh_db, "member-a", lambda: epoch, answer_secs=1.0)
    worker.start()
    try:
        # More than a pipe holds: the send itself blocks on the frozen worker.
        charges = [entry("user:alice", 1) for _ in range(wire.MAX_JOURNAL_ENTRIES)]
        body = json.dumps({"entries": charges}).encode()
        frozen = worker.pid
        assert frozen is not None
        os.kill(frozen, signal.SIGSTOP)
        with pytest.raises(Unavailable, match="merge worker"):
            asyncio.run(worker.merge("s1", body))
        assert worker.pid != frozen and not alive(frozen)
        worker.answer_secs = 30  # the new worker is not frozen: time enough on a loaded machine
        # The writer thread is free again: the primary's own writes go on.
        assert fresh_db.write_sync(lambda c: 1, fenced=False) == 1

        for expected in ("applied_with_conflict", "duplicate"):
            out = wire.MergeOut.model_validate_json(asyncio.run(worker.merge("s1", body)))
            assert {r.status for r in out.results} == {expected}
    finally:
        worker.stop()
    applied = fresh_db.read_sync(lambda c: ledger.applications(c, [e["txn_id"] for e in charges]))
    assert len(applied) == len({a.txn_id for a in applied}) == wire.MAX_JOURNAL_ENTRIES


def test_a_slow_worker_that_says_it_is_at_work_is_not_killed(fresh_db: Database) -> None:
    """Slow is not stuck: a worker waiting its turn for SQLite's write lock (here held by another
    connection for longer than the answer time, shorter than the busy timeout; in the field a busy
    machine) beats, keeps its pid, and its upload is merged, not answered 503."""
    epoch = fresh_db.write_sync(lambda c: lease.take_lease(c, "member-a", now_iso()), fenced=False)
    worker = MergeWorker(fresh_db, "member-a", lambda: epoch, answer_secs=2.5)
    assert BUSY_TIMEOUT_MS / 1000 > 4.0 and worker.answer_secs > 2 * BEAT_SECS
    worker.start()
    try:
        with write_lock_for(fresh_db.path, 4.0):
            pid = worker.pid
            charge = entry("user:alice", 5)
            started = time.monotonic()
            answer = asyncio.run(worker.merge("s1", json.dumps({"entries": [charge]}).encode()))
            assert time.monotonic() - started > worker.answer_secs  # it did wait past its answer time
        assert wire.MergeOut.model_validate_json(answer).results[0].status == "applied_with_conflict"
        assert worker.pid == pid
    finally:
        worker.stop()


def test_a_handoff_past_its_time_in_all_is_killed_even_while_the_worker_beats(
    fresh_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that beats but never finishes (a commit that never ends) must not hold the
    primary's writer thread, and the guard's lease renewals behind it, for ever: past
    `handoff_secs` in all it is killed and started again, and the upload sent again lands once."""
    epoch = fresh_db.write_sync(lambda c: lease.take_lease(c, "member-a", now_iso()), fenced=False)
    worker = MergeWorker(fresh_db, "member-a", lambda: epoch, answer_secs=2.5, handoff_secs=3.0)
    assert BUSY_TIMEOUT_MS / 1000 > 4.5  # without the cap, the lock comes and the upload merges
    worker.start()
    charge = entry("user:alice", 5)
    body = json.dumps({"entries": [charge]}).encode()
    try:
        with write_lock_for(fresh_db.path, 4.5):
            beating = worker.pid
            with pytest.raises(Unavailable, match="merge worker"):
                asyncio.run(worker.merge("s1", body))
        assert "not done within 3 s" in caplog.text
        assert worker.pid != beating and beating is not None and not alive(beating)
        for expected in ("applied_with_conflict", "duplicate"):
            out = wire.MergeOut.model_validate_json(asyncio.run(worker.merge("s1", body)))
            assert [r.status for r in out.results] == [expected]
    finally:
        worker.stop()


def test_an_upload_that_waits_out_the_busy_timeout_is_answered_unavailable(fresh_db: Database) -> None:
    """Another process holding SQLite's write lock past the busy timeout (a member frozen in a
    transaction) is a moment to send again, not a bug: outcome "locked", the route's 503."""
    epoch = fresh_db.write_sync(lambda c: lease.take_lease(c, "member-a", now_iso()), fenced=False)
    body = json.dumps({"entries": [entry("user:alice", 5)]}).encode()
    with write_lock(fresh_db.path):
        ((kind, detail),) = merge_uploads(fresh_db, "member-a", epoch, [("s1", body)])
        assert kind == "locked" and "send again" in detail
    ((kind, _),) = merge_uploads(fresh_db, "member-a", epoch, [("s1", body)])
    assert kind == "merged"


def test_a_member_that_stepped_down_hands_no_upload_to_the_worker(fresh_db: Database) -> None:
    """The primary's own fence (the guard: passive, or replaced) runs before anything is handed
    over, so queued uploads of a member that stepped down are refused, not applied."""
    epoch = fresh_db.write_sync(lambda c: lease.take_lease(c, "member-a", now_iso()), fenced=False)
    worker = MergeWorker(fresh_db, "member-a", lambda: epoch)
    worker.start()
    charge = entry("user:alice", 5)

    def passive(_conn: object) -> None:
        raise NotActive("this application server is passive and does not write")

    try:
        fresh_db.set_fence(passive)
        with pytest.raises(NotActive, match="passive"):
            asyncio.run(worker.merge("s1", json.dumps({"entries": [charge]}).encode()))
    finally:
        fresh_db.set_fence(None)
        worker.stop()
    assert fresh_db.read_sync(lambda c: ledger.applications(c, [charge["txn_id"]])) == []
    with pytest.raises(Unavailable, match="stopping"):  # and once stopped, nothing is taken
        asyncio.run(worker.merge("s1", json.dumps({"entries": [charge]}).encode()))


def test_a_worker_that_cannot_open_the_database_fails_the_start(tmp_path: Path) -> None:
    """Not a primary that starts and then answers 503 to every merge: it says so at once."""
    worker = MergeWorker(Database(tmp_path), "member-a", lambda: 1)  # a directory, not a database
    with pytest.raises(WorkerNotStarted, match="did not start"):
        worker.start()
    assert worker.pid is None
