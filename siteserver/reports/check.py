"""The check of one journal entry against the primary's ledger as it stands (DESIGN.md
invariant 10): pure, so that every way the books can disagree is tested without a server."""

from __future__ import annotations

from collections.abc import Sequence

from siteserver.store.journal import JournalRow
from sync.wire import LedgerRow


def mismatch(row: JournalRow, found: Sequence[LedgerRow]) -> str | None:
    """Why the entry and the primary's rows of its txn_id disagree, or None when they agree.
    A pending entry is not checked (the primary has not answered it yet)."""
    if row.status == "pending":
        return None
    if row.status == "rejected":
        if found:
            r = found[0]
            return (
                f"rejected at the site ({row.reason}), but the primary's ledger holds it:"
                f" seq {r.seq}, {r.amount_cents} cents to {r.account}"
            )
        return None
    if not found:
        return f"merged at the site (primary seq {row.primary_seq}) but missing from the primary's ledger"
    if len(found) > 1:
        seqs = ", ".join(str(r.seq) for r in found)
        return f"applied {len(found)} times on the primary (seqs {seqs})"
    r = found[0]
    booked = row.primary_account or row.account
    if r.amount_cents != row.amount_cents:
        why = f" ({row.conflict.action})" if row.conflict is not None else ""
        return (
            f"the site charged {row.amount_cents} cents, the primary's ledger holds {r.amount_cents}"
            f" cents (seq {r.seq}){why}"
        )
    if r.account != booked:
        return f"booked to {r.account} on the primary, but the primary answered {booked} (seq {r.seq})"
    return None
