"""What the primary answers for each journal entry a site merges, and the states an entry of a
site's journal goes through: pure types, shared by the protocol and the site's store.

An entry is `pending` until the primary answers; then it takes the primary's verdict:

- `applied`: recorded now; `duplicate`: recorded before (the first answer is repeated);
- `rejected`: not money at all (a `txn_id` reused with other content, an account that never was).

The ledger's `denied` (store.ledger: an authorized charge past a restricted limit) is a different
thing: a refusal made before any entry exists, answered to the device at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MergeStatus = Literal["applied", "duplicate", "rejected"]
JournalStatus = Literal["pending", "applied", "duplicate", "rejected"]


@dataclass(frozen=True, slots=True)
class MergeVerdict:
    """The primary's answer for one entry."""

    status: MergeStatus
    seq: int | None = None
    balance_cents: int | None = None
    reason: str | None = None
