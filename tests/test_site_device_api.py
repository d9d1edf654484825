"""The Device API and the Print provider API at a site, with a real primary and a real
`siteserver site run`: logins from the mirror, Find-Me release at the branch, every charge through
the outbox journal and into the primary's ledger exactly once, the primary's verdict as the
answer, and the effective balance."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siteserver.site.identity import Identity
from sync import wire
from sync.client import SyncClient
from tests.kit.primary import Primary, expect_error
from tests.kit.site import (
    COLOR,
    DIRECT,
    MONO,
    SITE,
    Branch,
    add_user,
    eventually,
    login,
    start_branch,
    submit,
)

MIRROR_SECS = 5.0


@pytest.fixture
def branch(primary: Primary, tmp_path: Path) -> Iterator[Branch]:
    b = start_branch(primary, tmp_path)
    yield b
    b.process.stop()


def ledger_rows(primary: Primary) -> list[dict[str, Any]]:
    with primary.admin() as c:
        r = c.get("/api/admin/v1/transactions", params={"origin_site": SITE, "limit": 1000})
    assert r.status_code == 200, r.text
    return list(r.json()["transactions"])


def balance_at_primary(primary: Primary, username: str) -> int:
    with primary.admin() as c:
        return int(c.get(f"/api/admin/v1/users/{username}").json()["balance_cents"])


def journal(b: Branch, txn_id: str) -> tuple[Any, ...]:
    (row,) = b.query(
        "SELECT status, amount_cents, account, primary_seq, primary_balance_cents, reason"
        " FROM journal WHERE txn_id = ?",
        (txn_id,),
    )
    return row


def test_logins_at_the_site_follow_the_primary(primary: Primary, branch: Branch) -> None:
    with primary.admin() as c:
        r = c.post(
            "/api/admin/v1/users",
            json={
                "username": "alice",
                "full_name": "Alice A",
                "password": "alice-password",
                "pin": "1234",
                "card_numbers": ["CARD-ALICE"],
                "balance_cents": 1000,
            },
        )
        assert r.status_code == 201, r.text
    eventually(
        lambda: login(branch, branch.mono_device, card_number="CARD-ALICE").status_code == 200,
        MIRROR_SECS,
        "alice logs in by card at the site",
    )
    body = login(branch, branch.mono_device, card_number="CARD-ALICE").json()
    assert body["username"] == "alice" and body["full_name"] == "Alice A"
    assert body["balance_cents"] == 1000 and body["restricted"] is True and body["mode"] == "online"
    assert login(branch, branch.mono_device, username="alice", pin="1234").status_code == 200
    assert login(branch, branch.color_device, username="alice", password="alice-password").status_code == 200
    expect_error(login(branch, branch.mono_device, username="alice", pin="0000"), 401)
    expect_error(login(branch, "dev_not-a-token", card_number="CARD-ALICE"), 401)

    # A PIN changed on the primary: the old one stops working at the site within 5 s.
    old_hash = branch.query("SELECT pin_hash FROM users WHERE username = 'alice'")[0][0]
    with primary.admin() as c:
        assert c.patch("/api/admin/v1/users/alice", json={"pin": "9876"}).status_code == 200
    eventually(
        lambda: branch.query("SELECT pin_hash FROM users WHERE username = 'alice'")[0][0] != old_hash,
        MIRROR_SECS,
        "the new PIN at the site",
    )
    expect_error(login(branch, branch.mono_device, username="alice", pin="1234"), 401)
    assert login(branch, branch.mono_device, username="alice", pin="9876").status_code == 200

    # A disabled user cannot log in at the site within 5 s.
    with primary.admin() as c:
        assert c.patch("/api/admin/v1/users/alice", json={"disabled": True}).status_code == 200
    eventually(
        lambda: branch.query("SELECT disabled FROM users WHERE username = 'alice'") == [(1,)],
        MIRROR_SECS,
        "disabled at the site",
    )
    expect_error(login(branch, branch.color_device, card_number="CARD-ALICE"), 401)


def test_findme_release_usage_and_the_journal(primary: Primary, branch: Branch) -> None:
    with primary.admin() as c:
        for name, balance, restricted in (("bob", 1000, True), ("carol", 0, True), ("dave", 50, True)):
            r = c.post(
                "/api/admin/v1/users",
                json={
                    "username": name,
                    "pin": "1111",
                    "card_numbers": [f"CARD-{name}"],
                    "balance_cents": balance,
                    "restricted": restricted,
                },
            )
            assert r.status_code == 201, r.text
    eventually(
        lambda: len(branch.query("SELECT 1 FROM user_cards")) == 3, MIRROR_SECS, "the users at the site"
    )

    # The print provider submits a Find-Me job AT THE SITE; it is held.
    job = submit(branch, "bob", pages=2, color=True)
    assert job["action"] == "hold"
    job_id = job["job_id"]

    # Bob sees it at a device of either member printer, priced at that printer.
    costs = {}
    for token in (branch.mono_device, branch.color_device):
        session = login(branch, token, card_number="CARD-bob").json()["session_id"]
        with branch.client(token) as c:
            listed = c.get(f"/api/device/v1/sessions/{session}/jobs").json()
        assert [j["job_id"] for j in listed["jobs"]] == [job_id]
        costs[token] = listed["jobs"][0]["cost_cents"]
    assert costs == {branch.mono_device: 20, branch.color_device: 80}  # mono-converted vs color

    # The provider long-polls the color printer's releases at the site.
    polled: list[Any] = []

    def poll() -> None:
        with branch.client(branch.provider) as c:
            polled.append(c.get("/api/provider/v1/releases", params={"printer": COLOR, "wait": 20}).json())

    poller = threading.Thread(target=poll)
    poller.start()
    session = login(branch, branch.color_device, card_number="CARD-bob").json()["session_id"]
    with branch.client(branch.color_device) as c:
        r = c.post(f"/api/device/v1/sessions/{session}/release", json={"job_ids": [job_id]})
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    assert result["status"] == "released" and result["cost_cents"] == 80
    assert result["balance_cents"] == 920
    poller.join(timeout=30)
    assert polled and polled[0]["releases"] == [{"job_id": job_id, "printer": COLOR, "grayscale": False}]

    # The charge is in the primary's ledger under the site's txn_id, and the journal says applied.
    (txn_id,) = branch.query("SELECT txn_id FROM jobs WHERE job_id = ?", (job_id,))[0]
    rows = [t for t in ledger_rows(primary) if t["txn_id"] == txn_id]
    assert len(rows) == 1
    assert rows[0]["amount_cents"] == -80 and rows[0]["account"] == "user:bob" and rows[0]["kind"] == "print"
    assert rows[0]["origin_site"] == SITE and rows[0]["ref"] == job_id
    assert journal(branch, txn_id)[:4] == ("applied", -80, "user:bob", rows[0]["seq"])
    assert balance_at_primary(primary, "bob") == 920
    with branch.client(branch.provider) as c:
        done = c.post(f"/api/provider/v1/jobs/{job_id}/printed", json={"pages_printed": 2})
        assert done.status_code == 200 and done.json() == {"job_id": job_id, "status": "printed"}

    # A copy at the MFD: a fact, charged, in the primary's ledger. Sent twice (a lost answer):
    # one charge, the same answer.
    session = login(branch, branch.mono_device, card_number="CARD-bob").json()["session_id"]
    copy_txn = str(uuid.uuid4())
    usage = {"txn_id": copy_txn, "kind": "copy", "pages": 3, "color": False, "duplex": False}
    with branch.client(branch.mono_device) as c:
        first = c.post(f"/api/device/v1/sessions/{session}/usage", json=usage)
        second = c.post(f"/api/device/v1/sessions/{session}/usage", json=usage)
        assert first.status_code == 200, first.text
        assert first.json() == second.json()
        assert first.json()["cost_cents"] == 30 and first.json()["balance_cents"] == 890
        expect_error(
            c.post(f"/api/device/v1/sessions/{session}/usage", json={**usage, "pages": 4}), 409, "conflict"
        )
    assert [t["amount_cents"] for t in ledger_rows(primary) if t["txn_id"] == copy_txn] == [-30]
    assert journal(branch, copy_txn)[0] == "applied"
    assert balance_at_primary(primary, "bob") == 890

    # The same journal entry uploaded directly, twice: the primary changes once (duplicates).
    entry = {
        "txn_id": copy_txn,
        "account": "user:bob",
        "amount_cents": -30,
        "kind": "copy",
        "enforcement": "fact",
        "occurred_at": "2026-01-01T00:00:00.000Z",
    }
    with SyncClient(primary.url, SITE, Identity(branch.data_dir).load_key()) as client:
        for _ in range(2):
            merged = client.merge([wire.JournalEntry.model_validate(entry)])
            assert merged.results[0].status == "duplicate"
    assert balance_at_primary(primary, "bob") == 890

    # Carol (restricted, no funds) is denied at the site, and the job stays held.
    carol_job = submit(branch, "carol", pages=1, color=False)["job_id"]
    session = login(branch, branch.mono_device, card_number="CARD-carol").json()["session_id"]
    with branch.client(branch.mono_device) as c:
        r = c.post(f"/api/device/v1/sessions/{session}/release", json={"job_ids": [carol_job]})
        (denied,) = r.json()["results"]
        assert denied["status"] == "denied" and denied["reason"] == "insufficient balance"
        held = c.get(f"/api/device/v1/sessions/{session}/jobs").json()["jobs"]
        assert [j["job_id"] for j in held] == [carol_job]

    # Dave's mirror is stale on purpose (the site believes he has 5000): the site allows the
    # release, the primary refuses it, and its verdict is the answer - the job stays held and the
    # provider never sees it.
    dave_job = submit(branch, "dave", pages=1, color=True)["job_id"]  # 40 at COLOR
    with primary.admin() as c:
        c.post(
            "/api/admin/v1/users/dave/adjustments",
            json={"txn_id": str(uuid.uuid4()), "amount_cents": -30, "comment": "spent elsewhere"},
        ).raise_for_status()
    eventually(
        lambda: (
            branch.query(
                "SELECT a.balance_cents FROM accounts a JOIN users u ON u.account_id = a.id"
                " WHERE u.username = 'dave'"
            )
            == [(20,)]
        ),
        MIRROR_SECS,
        "dave's balance mirrored",
    )
    branch.execute(
        "UPDATE accounts SET balance_cents = 5000"
        " WHERE id = (SELECT account_id FROM users WHERE username = 'dave')"
    )
    session = login(branch, branch.color_device, card_number="CARD-dave").json()
    assert session["balance_cents"] == 5000
    with branch.client(branch.color_device) as c:
        r = c.post(f"/api/device/v1/sessions/{session['session_id']}/release", json={"job_ids": [dave_job]})
        (result,) = r.json()["results"]
        assert result["status"] == "denied" and result["reason"] == "insufficient balance", result
        held = c.get(f"/api/device/v1/sessions/{session['session_id']}/jobs").json()["jobs"]
        assert [j["job_id"] for j in held] == [dave_job]
    (dave_txn,) = branch.query("SELECT txn_id FROM jobs WHERE job_id = ?", (dave_job,))[0]
    assert journal(branch, dave_txn)[0] == "rejected"
    assert branch.query("SELECT status FROM jobs WHERE job_id = ?", (dave_job,)) == [("held",)]
    with branch.client(branch.provider) as c:
        assert c.get("/api/provider/v1/releases", params={"printer": COLOR}).json() == {"releases": []}
    assert balance_at_primary(primary, "dave") == 20

    # A direct print (no hold) at the site: charged now, through the journal.
    direct = submit(branch, "bob", queue=DIRECT, pages=1, color=True)
    assert direct["action"] == "print" and direct["cost_cents"] == 20
    eventually(lambda: balance_at_primary(primary, "bob") == 870, MIRROR_SECS, "the direct print merged")

    # After the merge the effective balance answered at the site is the primary's, and stays so
    # once the mirror has caught up (never subtracted twice).
    assert login(branch, branch.mono_device, card_number="CARD-bob").json()["balance_cents"] == 870
    eventually(
        lambda: (
            branch.query(
                "SELECT a.balance_cents FROM accounts a JOIN users u ON u.account_id = a.id"
                " WHERE u.username = 'bob'"
            )
            == [(870,)]
        ),
        MIRROR_SECS,
        "bob's balance mirrored",
    )
    assert login(branch, branch.mono_device, card_number="CARD-bob").json()["balance_cents"] == 870

    with branch.admin() as c:
        st = c.get("/api/admin/v1/status").json()
    assert st["journal"] == {
        "pending": 0,
        "merged": 3,
        "rejected": 1,
        "applied": 3,
        "applied_with_conflict": 0,
        "duplicate": 0,
        "oldest_pending_at": None,
    }
    assert st["merge"]["running"] is False
    assert MONO  # the mono printer served the copy above


def test_pending_entries_are_merged_in_the_background(primary: Primary, branch: Branch) -> None:
    """An entry left pending (its merge lost) is drained by the background merge; a merge now
    answers counts."""
    add_user(primary, branch, "erin", MIRROR_SECS, card_numbers=["CARD-erin"], balance_cents=500)
    txn = str(uuid.uuid4())
    branch.execute(
        "INSERT INTO journal (txn_id, seq, account, amount_cents, kind, enforcement, occurred_at, status)"
        " VALUES (?, 1000000, 'user:erin', -25, 'copy', 'fact', '2026-01-01T00:00:00.000Z', 'pending')",
        (txn,),
    )
    # Pending and unseen by the mirror: the effective balance already counts it.
    assert login(branch, branch.mono_device, card_number="CARD-erin").json()["balance_cents"] == 475
    eventually(lambda: journal(branch, txn)[0] == "applied", 10.0, "the background merge sent the entry")
    assert balance_at_primary(primary, "erin") == 475
    assert login(branch, branch.mono_device, card_number="CARD-erin").json()["balance_cents"] == 475
    with branch.admin() as c:
        r = c.post("/api/admin/v1/merge")
        assert r.status_code == 200, r.text
        assert r.json()["merged"] == 0 and r.json()["journal"]["pending"] == 0


def test_without_the_primary_the_local_decision_stands(primary: Primary, tmp_path: Path) -> None:
    """The primary gone (SIGKILL): the site answers within the budget from its own store, the
    entries stay pending, and once the primary is back the background merge sends them exactly once."""
    branch = start_branch(primary, tmp_path, budget_ms=500)
    try:
        add_user(primary, branch, "fay", MIRROR_SECS, card_numbers=["CARD-fay"], balance_cents=1000)
        job_id = submit(branch, "fay", pages=1, color=False)["job_id"]
        primary.process.kill()

        session = login(branch, branch.mono_device, card_number="CARD-fay").json()["session_id"]
        copy_txn = str(uuid.uuid4())
        with branch.client(branch.mono_device) as c:
            r = c.post(
                f"/api/device/v1/sessions/{session}/usage",
                json={"txn_id": copy_txn, "kind": "scan", "pages": 5, "color": False, "duplex": False},
            )
            assert r.status_code == 200, r.text
            assert r.json()["balance_cents"] == 990 and r.elapsed.total_seconds() < 2.0
            r = c.post(f"/api/device/v1/sessions/{session}/release", json={"job_ids": [job_id]})
            (result,) = r.json()["results"]
            assert result["status"] == "released" and result["balance_cents"] == 980, result
            assert r.elapsed.total_seconds() < 2.0
        with branch.client(branch.provider) as c:
            releases = c.get("/api/provider/v1/releases", params={"printer": MONO}).json()["releases"]
            assert [x["job_id"] for x in releases] == [job_id]
        assert journal(branch, copy_txn)[0] == "pending"
        assert login(branch, branch.mono_device, card_number="CARD-fay").json()["balance_cents"] == 980

        # The primary is back: the background merge drains the journal, each entry applied once.
        primary.restart(tmp_path / "primary-2.log")
        eventually(
            lambda: branch.query("SELECT count(*) FROM journal WHERE status = 'pending'") == [(0,)],
            20.0,
            "the pending entries merged",
        )
        assert balance_at_primary(primary, "fay") == 980
        assert sorted(t["amount_cents"] for t in ledger_rows(primary)) == [-10, -10]
        assert login(branch, branch.mono_device, card_number="CARD-fay").json()["balance_cents"] == 980
    finally:
        branch.process.stop()


def test_concurrent_releases_get_their_own_verdicts(primary: Primary, branch: Branch) -> None:
    """Releases made at the same moment are uploaded together (one upload for all the requests
    waiting); each request still gets its own verdict: the funded ones print, the ones the
    primary refuses (the site's mirror was stale on purpose) stay held, and the primary's ledger
    holds exactly the funded charges, once each."""
    funded = [f"fund{i}" for i in range(6)]
    broke = [f"broke{i}" for i in range(6)]
    with primary.admin() as c:
        for name in funded + broke:
            r = c.post(
                "/api/admin/v1/users",
                json={
                    "username": name,
                    "card_numbers": [f"CARD-{name}"],
                    "balance_cents": 500 if name in funded else 0,
                    "restricted": True,
                },
            )
            assert r.status_code == 201, r.text
    eventually(lambda: len(branch.query("SELECT 1 FROM user_cards")) == 12, MIRROR_SECS, "users mirrored")
    for name in broke:  # the site believes they can pay; the primary knows better
        branch.execute(
            "UPDATE accounts SET balance_cents = 5000"
            " WHERE id = (SELECT account_id FROM users WHERE username = ?)",
            (name,),
        )
    jobs = {name: submit(branch, name, pages=1, color=False)["job_id"] for name in funded + broke}
    sessions = {
        name: login(branch, branch.mono_device, card_number=f"CARD-{name}").json()["session_id"]
        for name in funded + broke
    }
    start = threading.Barrier(len(jobs))
    answers: dict[str, Any] = {}

    def release(name: str) -> None:
        with branch.client(branch.mono_device) as c:
            start.wait()
            r = c.post(f"/api/device/v1/sessions/{sessions[name]}/release", json={"job_ids": [jobs[name]]})
        answers[name] = r.json()["results"][0] if r.status_code == 200 else r.text

    threads = [threading.Thread(target=release, args=(n,)) for n in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for name in funded:
        assert answers[name]["status"] == "released" and answers[name]["balance_cents"] == 490, answers[name]
    for name in broke:
        assert answers[name]["status"] == "denied" and answers[name]["reason"] == "insufficient balance"
    status = dict(branch.query("SELECT username, status FROM jobs"))
    assert status == {**dict.fromkeys(funded, "released"), **dict.fromkeys(broke, "held")}
    txns = dict(branch.query("SELECT job_id, txn_id FROM jobs"))
    charged = [t["txn_id"] for t in ledger_rows(primary)]
    assert sorted(charged) == sorted(txns[jobs[n]] for n in funded)
    # Merged once each; the answer recorded is whichever upload's came first (a request's
    # `applied`, or the background merge's `duplicate` when it carried the same entry meanwhile).
    assert all(journal(branch, txns[jobs[n]])[0] in ("applied", "duplicate") for n in funded)
    assert [journal(branch, txns[jobs[n]])[0] for n in broke] == ["rejected"] * 6


def test_a_lost_answer_is_never_counted_twice(primary: Primary, branch: Branch) -> None:
    """Invariant 3 with a lost answer: the site merged a charge and the primary applied it, but the
    answer never came back (the entry is pending, marked sent). The feed then brings the account
    with the charge inside its balance. The mirror must settle the entry (re-send: `duplicate`)
    before it applies that row, so at no moment does the site hold the charge both in the mirrored
    balance and as pending. The site's database is sampled every few ms to catch such a moment."""
    add_user(primary, branch, "fay", MIRROR_SECS, card_numbers=["CARD-fay"], balance_cents=500)
    txn = str(uuid.uuid4())
    occurred = "2026-01-01T00:00:00.000Z"
    # The site's side of the lost answer: pending, sent.
    branch.execute(
        "INSERT INTO journal (txn_id, seq, account, amount_cents, kind, enforcement, occurred_at, status,"
        " sent) VALUES (?, 2000000, 'user:fay', -40, 'copy', 'fact', ?, 'pending', 1)",
        (txn, occurred),
    )
    seen: list[tuple[Any, ...]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.extend(
                branch.query(
                    "SELECT a.balance_cents, j.status FROM accounts a JOIN users u ON u.account_id = a.id"
                    " JOIN journal j ON j.txn_id = ? WHERE u.username = 'fay'",
                    (txn,),
                )
            )
            stop.wait(0.003)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        # The primary's side: the same entry, applied (as if the site's upload had got through).
        entry = {
            "txn_id": txn,
            "account": "user:fay",
            "amount_cents": -40,
            "kind": "copy",
            "enforcement": "fact",
            "occurred_at": occurred,
        }
        with SyncClient(primary.url, SITE, Identity(branch.data_dir).load_key()) as client:
            merged = client.merge([wire.JournalEntry.model_validate(entry)])
            assert merged.results[0].status == "applied", merged
        eventually(lambda: (460, "duplicate") in seen or (460, "applied") in seen, 10.0, "fay's row mirrored")
    finally:
        stop.set()
        sampler.join()
    assert (460, "pending") not in seen, "the charge was in the mirrored balance and pending at once"
    assert login(branch, branch.mono_device, card_number="CARD-fay").json()["balance_cents"] == 460
    assert balance_at_primary(primary, "fay") == 460


def test_a_site_serves_only_its_own_devices_and_providers(primary: Primary, branch: Branch) -> None:
    """Every site mirrors every device, but a head-office MFD's token is refused at the branch
    (403, saying why), and a provider serving printers of both is served there for the branch's
    printers only."""
    from siteserver import sample

    with primary.admin() as c:
        head_office = sample.build(c, sample.Names())  # site s1, its devices and provider
        mixed = c.post(
            "/api/admin/v1/providers", json={"provider_id": "ps-both", "printers": ["mono-1", MONO]}
        )
        assert mixed.status_code == 201, mixed.text
        mixed_token = mixed.json()["token"]
    add_user(primary, branch, "hugo", card_numbers=["CARD-hugo"], balance_cents=500)
    eventually(
        lambda: bool(branch.query("SELECT 1 FROM providers WHERE provider_id = 'ps-both'")),
        MIRROR_SECS,
        "the head office's devices and the mixed provider mirrored",
    )
    for token in (head_office.mono_device, head_office.provider):
        with branch.client(token) as c:
            r = c.post("/api/device/v1/login", json={"card_number": "CARD-hugo"})
            error = expect_error(r, 403, "forbidden")
            assert "branch-01" in error["detail"] and "own site" in error["detail"]
    # At the primary the head-office device works as ever.
    with primary.client(head_office.mono_device) as c:
        assert c.post("/api/device/v1/login", json={"card_number": "CARD-hugo"}).status_code == 200
    # The mixed provider submits to the branch's printer at the branch, not to the head office's.
    job = {
        "username": "hugo",
        "document_name": "a.pdf",
        "pages": 1,
        "copies": 1,
        "color": False,
        "duplex": False,
    }
    with branch.client(mixed_token) as c:
        r = c.post("/api/provider/v1/jobs", json={**job, "job_id": str(uuid.uuid4()), "queue": MONO})
        assert r.status_code == 200, r.text
        r = c.post("/api/provider/v1/jobs", json={**job, "job_id": str(uuid.uuid4()), "queue": "mono-1"})
        assert r.status_code in (403, 404), r.text
    # The branch's own device is served.
    assert login(branch, branch.mono_device, card_number="CARD-hugo").status_code == 200
