"""The primary's side of a merge: a site's journal entries booked through `store.ledger.apply`,
all of an upload in one write transaction, at most once per `txn_id`, one verdict per entry.

A merged charge is a fact the site answered: when its account changed while the site was cut off,
it is booked where the offline policy says (siteserver.domain.merge.book) and answered
`applied_with_conflict`, never dropped (DESIGN.md invariant 9). Only an entry that is not money at
all (a `txn_id` reused with other content) or a release the primary refused before the site
answered it is `rejected`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import sqlite_utils

from siteserver import contract
from siteserver.domain import Enforcement, Shed
from siteserver.domain.merge import Booking, MergeConflict, MergeStatus, book, fallback_account
from siteserver.domain.offline import POLICY_FLAGS, by_flag, spender
from siteserver.store import Database, ledger
from siteserver.store import accounts as accounts_store
from siteserver.store.settings import get_policies
from siteserver.timeutil import now_iso

from . import wire

if TYPE_CHECKING:
    from .worker import MergeWorker

#: while other sites wait, the share of time background merges may keep the primary busy
MERGE_DUTY = 0.5
#: while other sites wait, how long one site keeps the gate before it must let them in
MERGE_TURN_SECS = 2.0
#: the longest Retry-After a shed merge is told
MAX_SHED_SECS = 30.0
#: while others wait, how long an owner between two uploads keeps the gate (its next batch is
#: on its way: a drain's first, small upload is answered before the next is sent)
HANDOVER_SECS = 0.5


@dataclass
class MergeGate:
    """Background merges (a site draining its journal; no device waits on them) one site at a
    time, so that many sites reconnecting at once do not crowd out the devices: a site's
    pipelined uploads pass while it has the gate; another site's are shed (Shed: 429 with
    Retry-After). When sites were turned away, the gate then stays closed as long again as it was
    busy (MERGE_DUTY), and a site holds it at most MERGE_TURN_SECS at a time, kept across the
    gap between two of its uploads for HANDOVER_SECS while others wait. Requests' own
    merges (a device waiting) never pass through it. Used on the event loop only."""

    clock: Callable[[], float] = time.monotonic
    owner: str | None = None
    in_flight: int = 0
    busy_since: float = 0.0
    idle_since: float = 0.0  # when the owner's last upload ended (in_flight 0, owner kept)
    closed_until: float = 0.0
    contended: bool = False
    #: sites turned away since the gate was last free (for the Retry-After they are told)
    waiting: set[str] = field(default_factory=set)

    def refusal(self, site_id: str, *, verified: bool = False) -> Shed | None:
        """Why a background merge from `site_id` would be shed now (None: it would pass).
        `verified`: the site's signature was checked, so it counts among those waiting (an
        unchecked X-Site-Id may be anyone's and only gets its answer)."""
        now = self.clock()
        if self.owner is not None and self.in_flight == 0 and now - self.idle_since > HANDOVER_SECS:
            self._release(self.idle_since)
        if self.owner is None and now >= self.closed_until:
            return None
        if self.owner == site_id and not (self.contended and now - self.busy_since > MERGE_TURN_SECS):
            return None
        if self.owner is not None:
            self.contended = True  # someone waits: the owner's turn is limited, a pause follows
        if verified:
            self.waiting.add(site_id)
        # Sites come back one turn (and its pause) after another: spread their retries out.
        turns = max(1, len(self.waiting - {self.owner}))
        wait = max(self.closed_until - now, 0.0) + turns * MERGE_TURN_SECS / MERGE_DUTY
        return Shed(
            "the primary is merging another site's journal: this one waits its turn",
            retry_after_secs=min(wait, MAX_SHED_SECS),
        )

    def enter(self, site_id: str) -> None:
        shed = self.refusal(site_id, verified=True)
        if shed is not None:
            raise shed
        if self.owner is None:
            self.owner, self.busy_since, self.contended = site_id, self.clock(), False
        self.waiting.discard(site_id)
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight > 0:
            return
        now = self.clock()
        if self.contended and now - self.busy_since <= MERGE_TURN_SECS:
            self.idle_since = now  # its turn goes on if its next upload comes soon (HANDOVER_SECS)
            return
        self._release(now)

    def _release(self, now: float) -> None:
        if self.contended:
            self.closed_until = now + (now - self.busy_since) * (1 - MERGE_DUTY) / MERGE_DUTY
        self.owner = None
        self.waiting.clear()  # those still waiting say so again when they retry


@dataclass
class Apply:
    db: Database
    worker: MergeWorker  # where uploads are parsed and applied: a process of its own
    gate: MergeGate = field(default_factory=MergeGate)

    async def merge(self, site_id: str, body: bytes, *, background: bool = False) -> bytes:
        """Apply a signed upload (the JSON of a MergeIn) in one write transaction; answers the
        JSON of its MergeOut, one result per entry, in order. A background merge passes the
        gate first (it may be shed)."""
        if not background:
            return await self.worker.merge(site_id, body)
        self.gate.enter(site_id)
        try:
            return await self.worker.merge(site_id, body)
        finally:
            self.gate.leave()

    async def lookup(self, site_id: str, body: wire.LookupIn) -> bytes:
        """The ledger rows the asking site's txn_ids have now (for its reconciliation check), as
        the JSON of wire.LookupOut: thousands of rows, serialized once."""
        ids = [str(t) for t in body.txn_ids]
        found = await self.db.read(lambda conn: ledger.applications(conn, ids))
        mine = sorted((a for a in found if a.origin_site == site_id), key=lambda a: a.seq)
        out = wire.LookupOut.model_construct(rows=[ledger_row(a) for a in mine])
        return out.model_dump_json().encode()


def ledger_row(a: ledger.Application) -> wire.LedgerRow:
    """A row as the look-up answers it (built from the ledger as it is, not validated again)."""
    return wire.LedgerRow.model_construct(
        txn_id=uuid.UUID(a.txn_id),
        seq=a.seq,
        account=a.account,
        amount_cents=a.amount_cents,
        requested_account=a.requested_account,
        conflict=contract.ConflictOut.of(a.conflict),
    )


def by_spender(flags: Sequence[str]) -> str | None:
    """The spender an entry's `by:` flag names (None: none; a personal account's user spent it)."""
    return spender(flags, "")


def _answer(
    e: wire.JournalEntry,
    status: MergeStatus,
    seq: int | None = None,
    balance: int | None = None,
    reason: str | None = None,
    conflict: MergeConflict | None = None,
    account: str | None = None,
    amount: int | None = None,
) -> wire.MergeResult:
    return wire.MergeResult(
        txn_id=e.txn_id,
        status=status,
        seq=seq,
        balance_cents=balance,
        reason=reason,
        conflict=contract.ConflictOut.of(conflict),
        account=None if account == e.account else account,
        amount_cents=None if amount == e.amount_cents else amount,
    )


def _repeat(e: wire.JournalEntry, site_id: str, first: ledger.Application) -> wire.MergeResult:
    """An entry whose txn_id is in the ledger already: the first answer again, or why not."""
    if first.named_account == e.account and first.amount_cents == e.amount_cents:
        return _answer(
            e, "duplicate", first.seq, first.balance_after_cents, None, first.conflict, first.account
        )
    if first.origin_site == site_id and e.ref is not None and first.ref == e.ref and first.kind == e.kind:
        # The same job released again at the site (its first release refused, then re-released
        # elsewhere) while an upload of the first release was still on its way and got applied.
        conflict = MergeConflict(
            "earlier_release_billed",
            f"an earlier release of this job was billed: {-first.amount_cents} cents to {first.account};"
            " that charge stands",
        )
        return _answer(
            e,
            "duplicate",
            first.seq,
            first.balance_after_cents,
            None,
            conflict,
            first.account,
            first.amount_cents,
        )
    return _answer(e, "rejected", reason=ledger.REUSED_TXN_ID)


def apply_entries(
    conn: sqlite_utils.Database, site_id: str, entries: Sequence[wire.JournalEntry], *, epoch: int
) -> wire.MergeOut:
    now = now_iso()
    firsts = {a.txn_id: a for a in ledger.applications(conn, [str(e.txn_id) for e in entries])}
    policies = get_policies(conn)
    account_ids: dict[str, int] = {}
    bookings: dict[tuple[str, str | None, bool], Booking] = {}
    batch: list[ledger.Entry] = []
    where: list[int] = []
    results: list[wire.MergeResult | None] = []
    for i, e in enumerate(entries):
        first = firsts.get(str(e.txn_id))
        if first is not None:
            results.append(_repeat(e, site_id, first))
            continue
        results.append(None)
        by_policy = bool(POLICY_FLAGS.intersection(e.flags))
        key = (e.account, by_spender(e.flags), by_policy)
        booking = bookings.get(key)
        if booking is None:  # once per account and spender in an upload
            named = accounts_store.named_account(conn, e.account, key[1])
            if by_policy:  # charged there by an offline policy, not by membership
                named = replace(named, spender_member=True)
            booking = bookings[key] = book(named, policies)
        account_id = account_ids.get(booking.account)
        if account_id is None:
            if booking.account == f"shared:{fallback_account(policies)}":
                account_id = accounts_store.open_fallback_account(conn, fallback_account(policies), now=now)
            else:
                found = accounts_store.account_by_label(conn, booking.account)
                assert found is not None, booking  # book() only names accounts that are open
                account_id = found
            account_ids[booking.account] = account_id
        flags = tuple(e.flags)
        if booking.conflict is not None:
            flags = (*flags, f"conflict:{booking.conflict.kind}")
            by = by_flag(e.account.removeprefix("user:"))
            if e.account.startswith("user:") and by_spender(e.flags) is None and by is not None:
                flags = (*flags, by)  # the username stays on the row
        batch.append(
            ledger.Entry(
                str(e.txn_id),
                account_id,
                e.amount_cents,
                e.kind,
                Enforcement(e.enforcement),
                e.occurred_at,
                origin_site=site_id,
                flags=flags,
                ref=e.ref,
                conflict=booking.conflict,
                requested_account=e.account if booking.account != e.account else None,
            )
        )
        where.append(i)
    label_of = {a: label for label, a in account_ids.items()}
    outcomes = ledger.apply(conn, batch, epoch=epoch, applied_at=now)
    for i, entry, out in zip(where, batch, outcomes, strict=True):
        results[i] = _result(entries[i], out, label_of[entry.account_id])
    answered = [r for r in results if r is not None]
    return wire.MergeOut(results=answered, receipt=_receipt(entries, answered))


def _result(e: wire.JournalEntry, out: ledger.Outcome, account: str) -> wire.MergeResult:
    if out.status == "applied":
        status: MergeStatus = "applied" if out.conflict is None else "applied_with_conflict"
        return _answer(e, status, out.seq, out.balance_after_cents, None, out.conflict, account)
    if out.status == "duplicate":  # the same txn_id twice in one upload
        return _answer(e, "duplicate", out.seq, out.balance_after_cents, None, None, account)
    # `denied`: a release the site had not answered yet, refused at its limit (nothing printed)
    return _answer(e, "rejected", reason=out.reason or out.status)


def _receipt(entries: Sequence[wire.JournalEntry], results: Sequence[wire.MergeResult]) -> wire.Receipt:
    booked = [
        e.amount_cents if r.amount_cents is None else r.amount_cents
        for e, r in zip(entries, results, strict=True)
        if r.status in ("applied", "applied_with_conflict")
    ]
    return wire.Receipt(
        entries=len(entries),
        applied=sum(r.status == "applied" for r in results),
        applied_with_conflict=sum(r.status == "applied_with_conflict" for r in results),
        duplicate=sum(r.status == "duplicate" for r in results),
        rejected=sum(r.status == "rejected" for r in results),
        applied_cents=sum(booked),
    )
