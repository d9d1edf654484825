"""The site journal's running totals and the effective balance (DESIGN.md invariant 3).

A stateful hypothesis test drives a real site database (migrations applied, the store's and the
mirror's own functions) against a model of the primary's ledger (the primary itself is exercised
over HTTP elsewhere; here it is a model so that every interleaving can be reached): charges are
journaled, pushed, applied or rejected by the primary, answers get lost, the primary's admins
adjust balances, and the change feed brings account rows read at arbitrary moments (the race
between a merge and a feed update). After every step:

- the trigger-kept totals (`journal_unmerged`, `offline_exposure`) equal a brute-force sum over
  the journal;
- nothing reaches the primary unless it was marked sent first, and an upload carries the entry as
  it is now (uploads go through the site's real `Merger.merge`; the model primary answers at the
  HTTP client's boundary, behind httpx.MockTransport: tests/kit/model.py);
- the effective balance of every account is exact: the mirrored balance plus every site charge
  the mirror does not contain, never one twice — also when an upload's answer was lost and the
  feed then shows the charge, because the mirror settles the entries in doubt before it applies
  an account row (`Merger.settle_in_doubt`).
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlite_utils
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from migrations.site import migrations
from siteserver.domain.merge import MergeVerdict
from siteserver.store import Database
from siteserver.store import journal as journal_store
from sync import wire
from sync.errors import MergeUnsettled
from sync.pull import page_accounts
from tests.kit.model import answered, merger
from tests.kit.primary import open_database

ACCOUNTS = {1: ("personal", "alice"), 2: ("personal", "bob"), 3: ("shared", "Offline Account")}
LABELS = {1: "user:alice", 2: "user:bob", 3: "shared:Offline Account"}
FLAG_SETS = [
    (),
    ("offline",),
    ("offline", "by:alice"),
    ("offline", "by:bob"),
    ("offline", "account:shared_fallback", "by:carol"),
    ("policy:cached_balance",),
]


@dataclass
class PrimaryModel:
    """The primary's ledger, as far as these accounts go."""

    rows: list[tuple[int, int, int]] = field(default_factory=list)  # (seq, account id, amount)
    applied: dict[str, int] = field(default_factory=dict)  # txn_id -> seq
    seq: int = 0

    def add(self, account: int, amount: int) -> int:
        self.seq += 1
        self.rows.append((self.seq, account, amount))
        return self.seq

    def balance_at(self, account: int, upto: int) -> tuple[int, int]:
        """(balance, last_seq) of the account as the feed shows it at seq `upto`."""
        mine = [(s, a) for s, acc, a in self.rows if acc == account and s <= upto]
        return sum(a for _, a in mine), max((s for s, _ in mine), default=0)


def oracle_unmerged(d: sqlite_utils.Database) -> dict[str, tuple[int, int]]:
    q = "SELECT account, SUM(amount_cents), count(*) FROM journal WHERE status = 'pending' GROUP BY account"
    return {a: (int(s), int(n)) for a, s, n in d.execute(q).fetchall()}


def oracle_exposure(d: sqlite_utils.Database) -> dict[str, int]:
    """Pending offline charges: the site ('') and each spender (by: flag, else personal account)."""
    out: dict[str, int] = {}
    for account, amount, flags in d.execute(
        "SELECT account, amount_cents, flags FROM journal WHERE status = 'pending' AND amount_cents < 0"
    ).fetchall():
        decoded = json.loads(flags)
        if "offline" not in decoded:
            continue
        out[""] = out.get("", 0) - amount
        by = next((f[3:] for f in decoded if f.startswith("by:")), None)
        spender = by if by is not None else (account[5:] if account.startswith("user:") else None)
        if spender is not None:
            out[spender] = out.get(spender, 0) - amount
    return {k: v for k, v in out.items() if v != 0}


class JournalMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="journal-totals-"))
        self.db = Database(self.dir / "site.db")
        self.db.open(migrations)
        self.primary = PrimaryModel()
        self.mirror_upto = {a: 0 for a in ACCOUNTS}  # the seq each mirrored account row reflects
        self.entries: dict[str, tuple[int, int]] = {}  # txn_id -> (account id, amount), as journaled
        self.counter = 0
        self._data: st.DataObject | None = None
        self.merger, self.endpoints, self.stop = merger(self.db, self._primary_answers)

        def seed(d: sqlite_utils.Database) -> None:
            for i, (kind, name) in ACCOUNTS.items():
                d.execute(
                    "INSERT INTO accounts (id, kind, name, balance_cents, restricted, overdraft_cents,"
                    " created_at, last_seq) VALUES (?, ?, ?, 0, 0, 0, '2026-01-01T00:00:00Z', 0)",
                    [i, kind, name],
                )

        self.db.write_sync(seed, fenced=False)

    def teardown(self) -> None:
        self.stop.set()
        self.endpoints.current().quick.close()
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def local(self) -> dict[str, journal_store.JournalRow]:
        return {r.txn_id: r for r in self.db.read_sync(lambda d: journal_store.rows(d, list(self.entries)))}

    def _append(self, txn_id: str, account: int, amount: int, flags: tuple[str, ...], sent: bool) -> None:
        self.db.write_sync(
            lambda d: journal_store.append(
                d,
                txn_id=txn_id,
                account=LABELS[account],
                amount_cents=amount,
                kind="copy",
                enforcement="authorize",
                occurred_at="2026-01-01T00:00:00Z",
                flags=flags,
                sent=sent,
            ),
            fenced=False,
        )
        self.entries[txn_id] = (account, amount)

    def _primary_answers(self, entries: list[dict[str, Any]], timeout: float) -> httpx.Response:
        """The model primary takes an upload: applied (new seq), duplicate, or rejected, per
        entry; then the answer may be lost on the way back."""
        data = self._data
        assert data is not None
        local = {
            r.txn_id: r
            for r in self.db.read_sync(lambda d: journal_store.rows(d, [e["txn_id"] for e in entries]))
        }
        verdicts: dict[str, MergeVerdict] = {}
        for e in entries:
            txn_id = e["txn_id"]
            assert local[txn_id].sent, f"{txn_id} reached the primary without being marked sent"
            account, amount = self.entries[txn_id]
            assert (e["account"], e["amount_cents"]) == (LABELS[account], amount)
            if txn_id in self.primary.applied:
                verdicts[txn_id] = MergeVerdict("duplicate", self.primary.applied[txn_id], 0)
            elif data.draw(st.integers(0, 4), label="primary refuses") != 0:
                seq = self.primary.add(account, amount)
                self.primary.applied[txn_id] = seq
                verdicts[txn_id] = MergeVerdict("applied", seq, 0)
            else:
                verdicts[txn_id] = MergeVerdict("rejected", reason="insufficient balance")
        if not data.draw(st.booleans(), label="answer arrives"):
            raise httpx.ReadTimeout("the answer was lost")
        return answered(verdicts)

    def _upload(self, data: st.DataObject, txn_ids: list[str]) -> dict[str, MergeVerdict] | None:
        """The site's real `Merger.merge` (mark sent, upload, record) against the model primary."""
        entries = self.db.read_sync(lambda d: journal_store.rows(d, txn_ids))
        self._data = data
        try:
            return self.merger.merge(entries, 1.0)
        finally:
            self._data = None

    # -- what happens at a site ---------------------------------------------------------------

    @rule(
        account=st.sampled_from(list(ACCOUNTS)),
        amount=st.integers(-500, 200),
        flags=st.sampled_from(FLAG_SETS),
        sent=st.booleans(),
    )
    def charge(self, account: int, amount: int, flags: tuple[str, ...], sent: bool) -> None:
        """A charge; `sent`: online, its request pushes it right after the commit."""
        self.counter += 1
        self._append(str(uuid.UUID(int=self.counter)), account, amount, flags, sent)

    @precondition(lambda self: any(r.status == "rejected" for r in self.local().values()))
    @rule(data=st.data(), account=st.sampled_from(list(ACCOUNTS)), flags=st.sampled_from(FLAG_SETS))
    def charge_again_after_rejection(self, data: st.DataObject, account: int, flags: tuple[str, ...]) -> None:
        """A held job released again after the primary refused it: same txn_id, maybe new account."""
        rejected = sorted(t for t, r in self.local().items() if r.status == "rejected")
        txn_id = data.draw(st.sampled_from(rejected))
        self._append(txn_id, account, -data.draw(st.integers(1, 300)), flags, data.draw(st.booleans()))

    @precondition(lambda self: bool(self.entries))
    @rule(data=st.data())
    def push_misses_budget(self, data: st.DataObject) -> None:
        """The budget ran out: the entries are facts now, marked offline (a late refusal undone)."""
        chosen = data.draw(st.lists(st.sampled_from(sorted(self.entries)), max_size=4))
        self.db.write_sync(
            lambda d: journal_store.settle_answered(d, chosen, ("offline", "budget:missed")), fenced=False
        )

    @precondition(lambda self: any(r.status == "pending" for r in self.local().values()))
    @rule(data=st.data())
    def push(self, data: st.DataObject) -> None:
        """A merge (a request's or the background one's): the primary applies, de-duplicates or rejects
        each entry; the answer to the whole upload may be lost."""
        pending = sorted(t for t, r in self.local().items() if r.status == "pending")
        self._upload(data, data.draw(st.lists(st.sampled_from(pending), min_size=1, max_size=6, unique=True)))

    # -- what happens at the primary and on the feed ------------------------------------------

    @rule(account=st.sampled_from(list(ACCOUNTS)), amount=st.integers(-1000, 1000))
    def primary_adjustment(self, account: int, amount: int) -> None:
        self.primary.add(account, amount)

    @rule(data=st.data(), account=st.sampled_from(list(ACCOUNTS)))
    def feed_brings_account(self, data: st.DataObject, account: int) -> None:
        """The feed's page holds the account row as it was when the page was read (some moment
        between the mirror's last view and now); the mirror settles the entries in doubt, then
        applies the row — or, when the primary does not answer for them, applies nothing."""
        upto = data.draw(st.integers(self.mirror_upto[account], self.primary.seq))
        balance, last_seq = self.primary.balance_at(account, upto)
        kind, name = ACCOUNTS[account]
        row = {"id": account, "kind": kind, "name": name, "balance_cents": balance, "last_seq": last_seq}
        change = wire.Change(seq=1, table="accounts", pk=[account], row=row)
        labels = page_accounts(self.db, wire.ChangesOut(cursor=1, reset=False, changes=[change]))
        assert labels == {LABELS[account]}
        self._data = data
        try:
            self.merger.settle_in_doubt(labels)
        except MergeUnsettled:
            return  # the page waits: the next pull reads it again
        finally:
            self._data = None
        self.mirror_upto[account] = upto
        self.db.write_sync(
            lambda d: d.execute(
                "UPDATE accounts SET balance_cents = ?, last_seq = ? WHERE id = ?",
                [balance, last_seq, account],
            ),
            fenced=False,
        )

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def totals_match_the_journal(self) -> None:
        def read(d: sqlite_utils.Database) -> tuple[Any, ...]:
            unmerged = {
                a: (int(c), int(n))
                for a, c, n in d.execute(
                    "SELECT account, pending_cents, entries FROM journal_unmerged"
                ).fetchall()
            }
            exposure = dict(d.execute("SELECT spender, cents FROM offline_exposure").fetchall())
            spend = journal_store.offline_spend(d)
            by = {u: journal_store.offline_spent_by(d, u) for u in ("alice", "bob", "carol", "dave")}
            return unmerged, exposure, oracle_unmerged(d), oracle_exposure(d), spend, by

        unmerged, exposure, want_unmerged, want_exposure, spend, by = self.db.read_sync(read)
        assert unmerged == want_unmerged
        assert exposure == want_exposure
        assert spend.site_cents == want_exposure.get("", 0)
        users = {k: v for k, v in want_exposure.items() if k}
        if users:
            top = max(users.values())
            assert spend.top_user_cents == top and users[spend.top_user or ""] == top
        else:
            assert spend.top_user is None
        assert by == {u: want_exposure.get(u, 0) for u in by}

    @invariant()
    def effective_balance_counts_every_charge_once(self) -> None:
        local = self.local()
        for account in ACCOUNTS:
            upto = self.mirror_upto[account]
            exact, _ = self.primary.balance_at(account, upto)
            for txn_id in self.entries:
                r = local[txn_id]
                if r.account != LABELS[account] or r.status == "rejected":
                    continue
                seen_by_mirror = txn_id in self.primary.applied and self.primary.applied[txn_id] <= upto
                if not seen_by_mirror:
                    exact += r.amount_cents
            got = self.db.read_sync(functools.partial(journal_store.effective_balance, account_id=account))
            assert got == exact, (account, got, exact)


TestJournalTotals = JournalMachine.TestCase
TestJournalTotals.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_migration_fills_totals_for_an_existing_journal(tmp_path: Path) -> None:
    """A site upgraded in the middle of an outage: m003 computes the totals of the entries
    already journaled, then the triggers keep them; m004 counts their pending entries in doubt."""
    from sqlite_utils import Database as Raw

    raw = Raw(tmp_path / "site.db")
    migrations.apply(raw, stop_before="m003_journal_totals")
    flags = [
        ("a1", "user:alice", -100, '["offline", "by:alice"]', "pending"),
        ("a2", "shared:Offline Account", -40, '["offline", "by:bob"]', "pending"),
        ("a3", "user:bob", -7, "[]", "pending"),
        ("a4", "user:bob", -500, '["offline", "by:bob"]', "applied"),
    ]
    for i, (txn, account, amount, fl, status) in enumerate(flags, 1):
        raw.execute(
            "INSERT INTO journal (txn_id, seq, account, amount_cents, kind, enforcement, occurred_at, flags,"
            " status) VALUES (?, ?, ?, ?, 'copy', 'fact', '2026-01-01T00:00:00Z', ?, ?)",
            [txn, i, account, amount, fl, status],
        )
    raw.conn.commit()
    raw.close()
    with open_database(tmp_path / "site.db", migrations) as db:
        got = db.read_sync(lambda d: (oracle_unmerged(d), oracle_exposure(d), journal_store.offline_spend(d)))
        unmerged = db.read_sync(
            lambda d: {a: (c, n) for a, c, n in d.execute("SELECT * FROM journal_unmerged").fetchall()}
        )
        assert (
            unmerged
            == got[0]
            == {"user:alice": (-100, 1), "shared:Offline Account": (-40, 1), "user:bob": (-7, 1)}
        )
        assert got[1] == {"": 140, "alice": 100, "bob": 40}
        assert got[2] == journal_store.OfflineSpend(140, "alice", 100)
        # m004: the pending entries of the old journal may have left the site: in doubt.
        doubt = db.read_sync(lambda d: [r.txn_id for r in journal_store.in_doubt(d)])
        assert doubt == ["a1", "a2", "a3"]
        assert db.read_sync(lambda d: [r.txn_id for r in journal_store.in_doubt(d, {"user:bob"})]) == ["a3"]
