"""The primary's ledger: exactly-once application, limits, immutability, listing.

The stateful test drives `ledger.apply` through a real `Database` (writer thread, group commit)
against a simple model, and checks the money invariants after every step.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlite_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from migrations.primary import migrations
from siteserver.domain import AccountState, Enforcement, authorize
from siteserver.store import Database, ledger
from siteserver.store.ledger import Entry, Outcome, account_label

APPLIED_AT = "2024-05-01T10:00:00.000Z"
OCCURRED_AT = "2024-05-01T09:59:00.000Z"
AUTH = Enforcement.AUTHORIZE
FACT = Enforcement.FACT


def make_account(
    d: sqlite_utils.Database,
    name: str,
    *,
    kind: str = "personal",
    restricted: bool = True,
    overdraft_cents: int = 0,
) -> int:
    cur = d.execute(
        "INSERT INTO accounts (kind, name, balance_cents, restricted, overdraft_cents, created_at)"
        " VALUES (?, ?, 0, ?, ?, ?)",
        [kind, name, int(restricted), overdraft_cents, APPLIED_AT],
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def entry(
    account_id: int,
    amount_cents: int,
    enforcement: Enforcement = AUTH,
    *,
    txn_id: str | None = None,
    kind: str = "charge",
    origin_site: str | None = None,
    flags: tuple[str, ...] = (),
    ref: str | None = None,
    comment: str | None = None,
) -> Entry:
    return Entry(
        txn_id=txn_id or str(uuid.uuid4()),
        account_id=account_id,
        amount_cents=amount_cents,
        kind=kind,
        enforcement=enforcement,
        occurred_at=OCCURRED_AT,
        origin_site=origin_site,
        flags=flags,
        ref=ref,
        comment=comment,
    )


def apply(db: Database, entries: list[Entry], *, epoch: int = 1) -> list[Outcome]:
    return db.write_sync(lambda d: ledger.apply(d, entries, epoch=epoch, applied_at=APPLIED_AT))


def balance(db: Database, account_id: int) -> int:
    return int(
        db.read_sync(
            lambda d: d.execute("SELECT balance_cents FROM accounts WHERE id = ?", [account_id]).fetchone()[0]
        )
    )


def ledger_sum(db: Database, account_id: int) -> int:
    return int(
        db.read_sync(
            lambda d: d.execute(
                "SELECT COALESCE(SUM(amount_cents), 0) FROM ledger WHERE account_id = ?", [account_id]
            ).fetchone()[0]
        )
    )


def ledger_count(db: Database) -> int:
    return int(db.read_sync(lambda d: d.execute("SELECT COUNT(*) FROM ledger").fetchone()[0]))


# -- the pure rule -----------------------------------------------------------------------------


def test_authorize_rule() -> None:
    restricted = AccountState(balance_cents=100, restricted=True, overdraft_cents=50)
    assert restricted.spendable_cents == 150
    assert authorize(restricted, -150, AUTH).allowed  # exactly down to -overdraft
    denied = authorize(restricted, -151, AUTH)
    assert not denied.allowed and denied.reason == "insufficient balance"
    assert authorize(restricted, -(10**12), FACT).allowed  # facts always apply
    assert authorize(restricted, 10, AUTH).allowed
    assert authorize(AccountState(-500, True, 0), 5, AUTH).allowed  # credits always apply
    assert authorize(AccountState(-500, True, 0), 0, AUTH).allowed
    unrestricted = AccountState(balance_cents=-(10**9), restricted=False)
    assert unrestricted.spendable_cents is None
    assert authorize(unrestricted, -(10**12), AUTH).allowed


# -- stateful ----------------------------------------------------------------------------------


@dataclass
class ModelAccount:
    restricted: bool
    overdraft: int
    balance: int = 0


@dataclass(frozen=True)
class Applied:
    account_id: int
    amount: int
    balance_after: int
    seq: int
    authorized_charge: bool


ACCOUNT_SPECS = [
    # name, kind, restricted, overdraft
    ("alice", "personal", True, 0),
    ("bob", "personal", True, 500),
    ("carol", "personal", False, 0),
    ("Marketing", "shared", True, 0),
]
amounts = st.integers(1, 3_000)
enforcements = st.sampled_from([AUTH, FACT])


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ledger-sm-"))
        self.db = Database(self.tmp / "ledger.db")
        self.db.open(migrations)
        self.accounts: dict[int, ModelAccount] = {}
        self.applied: dict[str, Applied] = {}
        self.denied: dict[str, Entry] = {}
        self.n = 0

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------------

    def _txn(self) -> str:
        self.n += 1
        return f"txn-{self.n:05d}"

    def _expect(self, e: Entry) -> tuple[str, int | None, int | None]:
        """The model's answer for one entry: (status, balance_after, seq); updates the model."""
        prior = self.applied.get(e.txn_id)
        if prior is not None:
            if (prior.account_id, prior.amount) == (e.account_id, e.amount_cents):
                return "duplicate", prior.balance_after, prior.seq
            return "conflict", None, None
        acc = self.accounts.get(e.account_id)
        if acc is None:
            return "denied", None, None
        charge_checked = e.enforcement is AUTH and e.amount_cents < 0
        if charge_checked and acc.restricted and acc.balance + acc.overdraft + e.amount_cents < 0:
            self.denied[e.txn_id] = e
            return "denied", acc.balance, None
        acc.balance += e.amount_cents
        seq = len(self.applied) + 1
        self.applied[e.txn_id] = Applied(e.account_id, e.amount_cents, acc.balance, seq, charge_checked)
        self.denied.pop(e.txn_id, None)
        return "applied", acc.balance, seq

    def _run(self, entries: list[Entry]) -> list[Outcome]:
        before = {a: m.balance for a, m in self.accounts.items()}
        expected = [self._expect(e) for e in entries]
        outcomes = apply(self.db, entries)
        assert [o.txn_id for o in outcomes] == [e.txn_id for e in entries]
        for e, o, (status, bal, seq) in zip(entries, outcomes, expected, strict=True):
            assert o.status == status, (e, o, before)
            assert o.amount_cents == e.amount_cents
            if status in ("applied", "duplicate"):
                assert (o.balance_after_cents, o.seq) == (bal, seq), (e, o)
            elif status == "denied":
                assert o.balance_after_cents == bal
                assert o.reason
            else:
                assert o.reason
        return outcomes

    def _pick_account(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(sorted(self.accounts)))

    # -- rules ------------------------------------------------------------------------------

    @initialize()
    def create_accounts(self) -> None:
        def work(d: sqlite_utils.Database) -> list[int]:
            return [
                make_account(d, name, kind=kind, restricted=r, overdraft_cents=od)
                for name, kind, r, od in ACCOUNT_SPECS
            ]

        ids = self.db.write_sync(work)
        for acc_id, (_, _, restricted, overdraft) in zip(ids, ACCOUNT_SPECS, strict=True):
            self.accounts[acc_id] = ModelAccount(restricted, overdraft)
        # the migration's "Offline Account": shared, unrestricted, balance 0
        offline = self.db.read_sync(
            lambda d: d.execute("SELECT id FROM accounts WHERE name = 'Offline Account'").fetchone()[0]
        )
        self.accounts[offline] = ModelAccount(False, 0)

    @rule(data=st.data(), amount=amounts)
    def charge(self, data: st.DataObject, amount: int) -> None:
        """A device or provider charge: authorized against the limit."""
        acc = self._pick_account(data)
        self._run([entry(acc, -amount, AUTH, txn_id=self._txn(), kind="charge")])

    @rule(data=st.data(), amount=amounts)
    def usage_fact(self, data: st.DataObject, amount: int) -> None:
        """A copy that already happened (or merged offline usage): applies past the limit."""
        acc = self._pick_account(data)
        (o,) = self._run([entry(acc, -amount, FACT, txn_id=self._txn(), kind="usage")])
        assert o.status == "applied"

    @rule(data=st.data(), amount=amounts, credit=st.booleans(), enforcement=enforcements)
    def adjustment(self, data: st.DataObject, amount: int, credit: bool, enforcement: Enforcement) -> None:
        acc = self._pick_account(data)
        signed = amount if credit else -amount
        self._run([entry(acc, signed, enforcement, txn_id=self._txn(), kind="adjustment")])

    @rule(data=st.data(), amount=st.integers(10**6, 10**9))
    def big_charge_on_unrestricted(self, data: st.DataObject, amount: int) -> None:
        """Unrestricted accounts may go arbitrarily negative through authorized charges."""
        unrestricted = sorted(a for a, m in self.accounts.items() if not m.restricted)
        acc = data.draw(st.sampled_from(unrestricted))
        (o,) = self._run([entry(acc, -amount, AUTH, txn_id=self._txn())])
        assert o.status == "applied"

    @precondition(
        lambda self: any(m.restricted and m.balance + m.overdraft > 0 for m in self.accounts.values())
    )
    @rule(data=st.data(), extra=st.sampled_from([0, 1]))
    def charge_at_the_limit(self, data: st.DataObject, extra: int) -> None:
        """Exactly everything spendable applies; one cent more is denied."""
        choices = sorted(a for a, m in self.accounts.items() if m.restricted and m.balance + m.overdraft > 0)
        acc = data.draw(st.sampled_from(choices))
        m = self.accounts[acc]
        (o,) = self._run([entry(acc, -(m.balance + m.overdraft + extra), AUTH, txn_id=self._txn())])
        assert o.status == ("applied" if extra == 0 else "denied")

    @precondition(lambda self: bool(self.denied))
    @rule(data=st.data())
    def retry_denied(self, data: st.DataObject) -> None:
        """A denied txn_id left no trace, so the same charge may apply once funds exist."""
        e = self.denied[data.draw(st.sampled_from(sorted(self.denied)))]
        self._run([e])

    @precondition(lambda self: bool(self.applied))
    @rule(data=st.data())
    def repeat_same(self, data: st.DataObject) -> None:
        txn_id = data.draw(st.sampled_from(sorted(self.applied)))
        first = self.applied[txn_id]
        count = ledger_count(self.db)
        balances = {a: m.balance for a, m in self.accounts.items()}
        enforcement = data.draw(enforcements)
        (o,) = self._run([entry(first.account_id, first.amount, enforcement, txn_id=txn_id)])
        assert o.status == "duplicate"
        assert (o.balance_after_cents, o.seq) == (first.balance_after, first.seq)
        assert ledger_count(self.db) == count
        assert {a: m.balance for a, m in self.accounts.items()} == balances

    @precondition(lambda self: bool(self.applied))
    @rule(data=st.data(), change_account=st.booleans(), delta=st.integers(1, 500))
    def repeat_different(self, data: st.DataObject, change_account: bool, delta: int) -> None:
        txn_id = data.draw(st.sampled_from(sorted(self.applied)))
        first = self.applied[txn_id]
        if change_account:
            acc = data.draw(st.sampled_from(sorted(a for a in self.accounts if a != first.account_id)))
            amount = first.amount
        else:
            acc = first.account_id
            amount = first.amount + data.draw(st.sampled_from([delta, -delta]))
        count = ledger_count(self.db)
        (o,) = self._run([entry(acc, amount, AUTH, txn_id=txn_id)])
        assert o.status == "conflict"
        assert o.balance_after_cents is None and o.seq is None
        assert ledger_count(self.db) == count

    @rule(data=st.data(), size=st.integers(2, 8))
    def batch(self, data: st.DataObject, size: int) -> None:
        """Several entries in one apply call (a merge), including repeats inside the batch."""
        entries: list[Entry] = []
        for _ in range(size):
            known = sorted({e.txn_id for e in entries} | set(self.applied) | set(self.denied))
            choice = data.draw(st.sampled_from(["new", "new", "new", "same", "different"]))
            if choice == "new" or not known:
                acc = self._pick_account(data)
                amount = data.draw(st.integers(-3_000, 3_000).filter(bool))
                entries.append(entry(acc, amount, data.draw(enforcements), txn_id=self._txn()))
                continue
            txn_id = data.draw(st.sampled_from(known))
            base = next((e for e in reversed(entries) if e.txn_id == txn_id), None) or self.denied.get(txn_id)
            if base is None:
                first = self.applied[txn_id]
                base = entry(first.account_id, first.amount, AUTH, txn_id=txn_id)
            if choice == "different":
                base = entry(base.account_id, base.amount_cents + 1, base.enforcement, txn_id=txn_id)
            entries.append(base)
        self._run(entries)

    @rule(amount=amounts)
    def charge_unknown_account(self, amount: int) -> None:
        (o,) = self._run([entry(10**9, -amount, AUTH, txn_id=self._txn())])
        assert o.status == "denied" and o.reason == "unknown account"

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def balances_are_ledger_sums(self) -> None:
        rows = self.db.read_sync(
            lambda d: d.execute(
                "SELECT a.id, a.balance_cents, COALESCE(SUM(l.amount_cents), 0)"
                " FROM accounts a LEFT JOIN ledger l ON l.account_id = a.id GROUP BY a.id"
            ).fetchall()
        )
        assert len(rows) == len(self.accounts)
        for acc_id, bal, total in rows:
            assert bal == total == self.accounts[acc_id].balance, acc_id

    @invariant()
    def last_seq_is_the_accounts_newest_row(self) -> None:
        # A site decides whether the mirrored balance already includes one of its journal entries
        # by comparing the entry's seq with the account's last_seq (invariant 3).
        rows = self.db.read_sync(
            lambda d: d.execute(
                "SELECT a.id, a.last_seq, COALESCE(MAX(l.seq), 0)"
                " FROM accounts a LEFT JOIN ledger l ON l.account_id = a.id GROUP BY a.id"
            ).fetchall()
        )
        for acc_id, last_seq, newest in rows:
            assert last_seq == newest, acc_id

    @invariant()
    def each_txn_id_once(self) -> None:
        dupes, count, seqs = self.db.read_sync(
            lambda d: (
                d.execute("SELECT txn_id FROM ledger GROUP BY txn_id HAVING COUNT(*) > 1").fetchall(),
                d.execute("SELECT COUNT(*) FROM ledger").fetchone()[0],
                [r[0] for r in d.execute("SELECT seq FROM ledger ORDER BY seq")],
            )
        )
        assert dupes == []
        assert count == len(self.applied)
        assert seqs == list(range(1, count + 1))
        assert not set(self.denied) & set(self.applied)

    @invariant()
    def rows_match_model_and_chain(self) -> None:
        rows = self.db.read_sync(
            lambda d: d.execute(
                "SELECT txn_id, account_id, amount_cents, balance_after_cents, seq FROM ledger ORDER BY seq"
            ).fetchall()
        )
        running: dict[int, int] = {}
        for txn_id, acc, amount, after, seq in rows:
            running[acc] = running.get(acc, 0) + amount
            assert after == running[acc]
            a = self.applied[txn_id]
            assert (a.account_id, a.amount, a.balance_after, a.seq) == (acc, amount, after, seq)

    @invariant()
    def authorized_charges_respect_limits(self) -> None:
        for a in self.applied.values():
            acc = self.accounts[a.account_id]
            if a.authorized_charge and acc.restricted:
                assert a.balance_after >= -acc.overdraft


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# -- unit tests ----------------------------------------------------------------------------------


@pytest.fixture
def accounts(fresh_db: Database) -> dict[str, int]:
    def work(d: sqlite_utils.Database) -> dict[str, int]:
        return {
            "alice": make_account(d, "alice", restricted=True, overdraft_cents=100),
            "carol": make_account(d, "carol", restricted=False),
            "Marketing": make_account(d, "Marketing", kind="shared", restricted=True),
        }

    return fresh_db.write_sync(work)


def test_empty_batch(fresh_db: Database) -> None:
    assert apply(fresh_db, []) == []


def test_applied_row_content(fresh_db: Database, accounts: dict[str, int]) -> None:
    e = entry(
        accounts["carol"],
        -120,
        FACT,
        kind="copy",
        origin_site="s1",
        flags=("offline", "late"),
        ref="job-1",
        comment="three copies",
    )
    (o,) = apply(fresh_db, [e], epoch=7)
    assert (o.status, o.balance_after_cents, o.seq) == ("applied", -120, 1)
    row = fresh_db.read_sync(
        lambda d: d.execute(
            "SELECT txn_id, account_id, amount_cents, balance_after_cents, kind, origin_site,"
            " occurred_at, applied_at, flags, ref, comment, epoch FROM ledger"
        ).fetchone()
    )
    assert row == (
        e.txn_id,
        accounts["carol"],
        -120,
        -120,
        "copy",
        "s1",
        OCCURRED_AT,
        APPLIED_AT,
        '["offline", "late"]',
        "job-1",
        "three copies",
        7,
    )


def test_restricted_limit_and_later_retry(fresh_db: Database, accounts: dict[str, int]) -> None:
    alice = accounts["alice"]  # restricted, overdraft 100
    (o,) = apply(fresh_db, [entry(alice, -100)])
    assert (o.status, o.balance_after_cents) == ("applied", -100)  # exactly to the limit
    charge = entry(alice, -1)
    (o,) = apply(fresh_db, [charge])
    assert (o.status, o.reason, o.balance_after_cents) == ("denied", "insufficient balance", -100)
    assert ledger_count(fresh_db) == 1
    (o,) = apply(fresh_db, [entry(alice, -1000, FACT, kind="usage")])  # a fact goes past it
    assert (o.status, o.balance_after_cents) == ("applied", -1100)
    (o,) = apply(fresh_db, [charge])
    assert o.status == "denied"
    apply(fresh_db, [entry(alice, 1001, kind="adjustment")])
    (o,) = apply(fresh_db, [charge])  # the denied txn_id applies once funds exist
    assert (o.status, o.balance_after_cents) == ("applied", -100)
    assert balance(fresh_db, alice) == ledger_sum(fresh_db, alice) == -100


def test_unrestricted_goes_negative(fresh_db: Database, accounts: dict[str, int]) -> None:
    (o,) = apply(fresh_db, [entry(accounts["carol"], -(10**12))])
    assert (o.status, o.balance_after_cents) == ("applied", -(10**12))


def test_unknown_account_denied(fresh_db: Database) -> None:
    (o,) = apply(fresh_db, [entry(999, -5)])
    assert (o.status, o.reason, o.balance_after_cents) == ("denied", "unknown account", None)
    assert ledger_count(fresh_db) == 0


def test_repeats_inside_one_batch(fresh_db: Database, accounts: dict[str, int]) -> None:
    carol, alice = accounts["carol"], accounts["alice"]
    e = entry(carol, -50)
    out = apply(
        fresh_db,
        [
            e,
            entry(carol, -7),
            e,  # duplicate of the first, answered with its balance
            entry(carol, -51, txn_id=e.txn_id),  # conflict: other amount
            entry(alice, -50, txn_id=e.txn_id),  # conflict: other account
        ],
    )
    assert [o.status for o in out] == ["applied", "applied", "duplicate", "conflict", "conflict"]
    assert (out[2].balance_after_cents, out[2].seq) == (-50, 1)
    assert balance(fresh_db, carol) == -57
    assert balance(fresh_db, alice) == 0


def test_denied_then_applied_in_one_batch(fresh_db: Database, accounts: dict[str, int]) -> None:
    mk = accounts["Marketing"]  # restricted, no overdraft
    charge = entry(mk, -30)
    out = apply(fresh_db, [charge, entry(mk, 40, kind="adjustment"), charge, charge])
    assert [o.status for o in out] == ["denied", "applied", "applied", "duplicate"]
    assert balance(fresh_db, mk) == 10


def test_large_batch_crosses_chunks(fresh_db: Database, accounts: dict[str, int]) -> None:
    carol = accounts["carol"]
    entries = [entry(carol, -1, FACT, origin_site="s1") for _ in range(1_234)]
    out = apply(fresh_db, entries)
    assert {o.status for o in out} == {"applied"}
    again = apply(fresh_db, entries)
    assert {o.status for o in again} == {"duplicate"}
    assert [o.balance_after_cents for o in again] == [o.balance_after_cents for o in out]
    assert balance(fresh_db, carol) == ledger_sum(fresh_db, carol) == -1_234


def test_ledger_rows_are_immutable(fresh_db: Database, accounts: dict[str, int]) -> None:
    apply(fresh_db, [entry(accounts["carol"], -10)])
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        fresh_db.write_sync(lambda d: d.execute("UPDATE ledger SET amount_cents = 0"))
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        fresh_db.write_sync(lambda d: d.execute("UPDATE ledger SET comment = 'x' WHERE seq = 1"))
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        fresh_db.write_sync(lambda d: d.execute("DELETE FROM ledger"))
    assert fresh_db.read_sync(lambda d: d.execute("SELECT amount_cents, comment FROM ledger").fetchall()) == [
        (-10, None)
    ]


def test_ledger_rejects_a_second_row_for_a_txn_id(fresh_db: Database, accounts: dict[str, int]) -> None:
    e = entry(accounts["carol"], -10)
    apply(fresh_db, [e])

    def sneak(d: sqlite_utils.Database) -> None:
        d.execute(
            "INSERT INTO ledger (seq, txn_id, account_id, amount_cents, balance_after_cents, kind,"
            " occurred_at, applied_at, epoch) VALUES (99, ?, ?, -10, -20, 'charge', 't', 't', 1)",
            [e.txn_id, accounts["carol"]],
        )

    with pytest.raises(sqlite3.IntegrityError):
        fresh_db.write_sync(sneak)


def test_list_transactions_paging_and_origin_filter(fresh_db: Database, accounts: dict[str, int]) -> None:
    sites = ["s1", "s2", None]
    entries = [
        entry(
            accounts["carol"] if i % 2 else accounts["Marketing"],
            10 + i,
            kind="adjustment",
            origin_site=sites[i % 3],
            flags=("offline",) if i % 3 == 0 else (),
        )
        for i in range(10)
    ]
    apply(fresh_db, entries)

    def page(origin: str | None, since: int, limit: int) -> list[dict[str, object]]:
        return fresh_db.read_sync(
            lambda d: ledger.list_transactions(d, origin_site=origin, since_seq=since, limit=limit)
        )

    everything = page(None, 0, 100)
    assert [r["seq"] for r in everything] == list(range(1, 11))
    assert [r["txn_id"] for r in everything] == [e.txn_id for e in entries]
    first = everything[0]
    assert first["account"] == "shared:Marketing"
    assert everything[1]["account"] == "user:carol"
    assert first["amount_cents"] == 10 and first["kind"] == "adjustment"
    assert first["flags"] == ["offline"] and everything[1]["flags"] == []
    assert first["origin_site"] == "s1" and everything[2]["origin_site"] is None
    assert first["applied_at"] == APPLIED_AT and first["occurred_at"] == OCCURRED_AT
    assert first["balance_after_cents"] == 10

    # paging by since_seq walks every row once, in order
    seen: list[object] = []
    since = 0
    while rows := page(None, since, 3):
        assert len(rows) <= 3
        seen += [r["seq"] for r in rows]
        since = rows[-1]["seq"]  # type: ignore[assignment]
    assert seen == list(range(1, 11))
    assert page(None, 10, 5) == []
    assert [r["seq"] for r in page(None, 4, 2)] == [5, 6]

    s1 = page("s1", 0, 100)
    assert [r["seq"] for r in s1] == [1, 4, 7, 10]
    assert {r["origin_site"] for r in s1} == {"s1"}
    assert [r["seq"] for r in page("s1", 4, 2)] == [7, 10]
    assert [r["seq"] for r in page("s2", 0, 100)] == [2, 5, 8]
    assert page("s9", 0, 100) == []


def test_account_label() -> None:
    assert account_label("personal", "alice") == "user:alice"
    assert account_label("shared", "Marketing") == "shared:Marketing"
    assert account_label("shared", "Offline Account") == "shared:Offline Account"


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["personal", "shared"]), name=st.text(min_size=1, max_size=40))
def test_account_label_sql_names_accounts_as_account_label_does(kind: str, name: str) -> None:
    """The SQL form (used where one statement must name the account) and the Python form agree."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE accounts (kind TEXT, name TEXT)")
        conn.execute("INSERT INTO accounts VALUES (?, ?)", [kind, name])
        (label,) = conn.execute(f"SELECT {ledger.account_label_sql('a')} FROM accounts a").fetchone()
    finally:
        conn.close()
    assert label == account_label(kind, name)


# -- what each site merged lately (the fleet page) ---------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(st.integers(1, 4), st.sampled_from(["branch-01", "branch-02", None])), max_size=40
    ),
    cut=st.integers(0, 41),
)
def test_merged_per_site_since_counts_what_a_scan_counts(
    fresh_db: Database, accounts: dict[str, int], rows: list[tuple[int, str | None]], cut: int
) -> None:
    """Rows applied minute by minute, with gaps in seq: the bisection finds the same rows as a
    scan of applied_at."""

    def work(d: sqlite_utils.Database) -> tuple[dict[str, int], dict[str, int]]:
        d.execute("DROP TRIGGER IF EXISTS ledger_no_delete")  # a fresh ledger for each example
        d.execute("DELETE FROM ledger")
        seq = 0
        for minute, (gap, site) in enumerate(rows):
            seq += gap
            d.execute(
                "INSERT INTO ledger (seq, txn_id, account_id, amount_cents, balance_after_cents, kind,"
                " origin_site, occurred_at, applied_at, flags, epoch)"
                " VALUES (?, ?, ?, -1, 0, 'charge', ?, ?, ?, '[]', 1)",
                [
                    seq,
                    str(uuid.uuid4()),
                    accounts["alice"],
                    site,
                    OCCURRED_AT,
                    f"2024-05-01T10:{minute:02d}:00.000Z",
                ],
            )
        at = f"2024-05-01T10:{cut:02d}:00.000Z"
        scanned: dict[str, int] = {}
        for (site,) in d.execute("SELECT origin_site FROM ledger WHERE applied_at >= ?", [at]):
            if site is not None:
                scanned[site] = scanned.get(site, 0) + 1
        return ledger.merged_per_site_since(d, at), scanned

    found, scanned = fresh_db.write_sync(work)
    assert found == scanned


def test_every_balance_the_ledger_moves_is_in_the_change_feed(
    fresh_db: Database, accounts: dict[str, int]
) -> None:
    """apply() logs the accounts whose balance it moved (one statement, not the accounts
    trigger); any other update of an account is still logged by the trigger."""

    def logged(d: sqlite_utils.Database, after: int) -> list[str]:
        return [
            r[0] for r in d.execute("SELECT pk FROM change_log WHERE tbl = 'accounts' AND seq > ?", [after])
        ]

    start = fresh_db.read_sync(
        lambda d: d.execute("SELECT COALESCE(MAX(seq), 0) FROM change_log").fetchone()[0]
    )
    apply(
        fresh_db,
        [entry(accounts["alice"], -10, FACT), entry(accounts["carol"], -5), entry(accounts["carol"], 7)],
    )
    moved = fresh_db.read_sync(lambda d: logged(d, start))
    assert sorted(moved) == sorted([f"[{accounts['alice']}]", f"[{accounts['carol']}]"])  # once each
    apply(fresh_db, [entry(accounts["Marketing"], -1000)])  # denied: no balance moved, nothing logged
    assert fresh_db.read_sync(lambda d: logged(d, start)) == moved
    after = fresh_db.read_sync(lambda d: d.execute("SELECT MAX(seq) FROM change_log").fetchone()[0])
    fresh_db.write_sync(
        lambda d: d.execute("UPDATE accounts SET overdraft_cents = 50 WHERE id = ?", [accounts["Marketing"]])
    )
    assert fresh_db.read_sync(lambda d: logged(d, after)) == [f"[{accounts['Marketing']}]"]
