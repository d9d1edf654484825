"""What the primary answers for each journal entry a site merges, the conflicts it settles on the
way, and the states an entry of a site's journal goes through: pure rules, shared by the protocol,
the primary's apply and the site's store.

An entry is `pending` until the primary answers; then it takes the primary's verdict:

- `applied`: recorded now; `duplicate`: recorded before (the first answer is repeated);
- `applied_with_conflict`: recorded now, but not quite as the site made it, because the primary
  changed while the site was cut off (the user deleted or disabled, a shared account gone, the
  user no longer a member, a restricted account driven past its limit): the charge is a fact,
  so it is booked anyway and the conflict says what was done (DESIGN.md invariant 9);
- `rejected`: not money at all (a `txn_id` reused with other content, a malformed entry), or a
  release the site had not answered yet that the primary refused (nothing was printed).

A site stores `applied_with_conflict` as `applied` with the conflict beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .policies import OfflinePolicies

MergeStatus = Literal["applied", "duplicate", "applied_with_conflict", "rejected"]
JournalStatus = Literal["pending", "applied", "duplicate", "rejected"]
ConflictKind = Literal[
    "user_deleted",
    "unknown_user",
    "user_disabled",
    "over_limit",
    "shared_account_gone",
    "not_a_member",
    "earlier_release_billed",
]
#: the fallback of last resort: the account the primary's first migration creates
OFFLINE_ACCOUNT = "Offline Account"


@dataclass(frozen=True, slots=True)
class MergeConflict:
    """What the primary did with an entry it could not book exactly as the site made it."""

    kind: ConflictKind
    action: str  # a sentence for an admin


@dataclass(frozen=True, slots=True)
class MergeVerdict:
    """The primary's answer for one entry. `account`/`amount_cents`: what the primary booked,
    when that differs from the entry (a fallback account; an earlier release's amount)."""

    status: MergeStatus
    seq: int | None = None
    balance_cents: int | None = None
    reason: str | None = None
    conflict: MergeConflict | None = None
    account: str | None = None
    amount_cents: int | None = None


@dataclass(frozen=True, slots=True)
class NamedAccount:
    """What the primary knows now of the account a merged entry names (`user:…`/`shared:…`) and of
    the user who spent it (the `by:` flag of an offline entry, or a personal account's user)."""

    label: str
    open: bool  # the account exists and is open
    closed: bool  # it existed and was closed since (a user or shared account deleted)
    user_disabled: bool = False  # a personal account whose user is disabled
    spender: str | None = None
    spender_known: bool = False  # the spender is a user of the primary now
    spender_member: bool = True  # a shared account: the spender is (still) one of its members


@dataclass(frozen=True, slots=True)
class Booking:
    """Where a merged charge goes, and the conflict if that is not where the site put it."""

    account: str
    conflict: MergeConflict | None = None


def fallback_account(policies: OfflinePolicies) -> str:
    """The shared account that takes a charge whose account is gone: the offline policy's."""
    return (
        policies.account_selection.shared_account
        or policies.unauthenticated_users.shared_account
        or OFFLINE_ACCOUNT
    )


def book(named: NamedAccount, policies: OfflinePolicies) -> Booking:
    """Where the primary books a merged charge (a fact: it is booked somewhere, never dropped)."""
    fallback = f"shared:{fallback_account(policies)}"
    who = named.label.partition(":")[2]
    if named.label.startswith("user:"):
        if named.open and named.user_disabled:
            return Booking(named.label, MergeConflict("user_disabled", f"charged to {who}, who is disabled"))
        if named.open:
            return Booking(named.label)
        kind: ConflictKind = "user_deleted" if named.closed else "unknown_user"
        gone = "was deleted" if named.closed else "is not known"
        return Booking(
            fallback,
            MergeConflict(kind, f"user {who} {gone} on the primary: charged to {fallback}, username kept"),
        )
    if named.open and named.spender_member:
        return Booking(named.label)
    if named.open:
        kind, why = "not_a_member", f"{named.spender} is no longer a member of {who}"
    else:
        gone = "was deleted" if named.closed else "is not known"
        kind, why = "shared_account_gone", f"shared account {who} {gone} on the primary"
    mode = policies.account_selection.mode
    if mode == "personal" and named.spender is not None and named.spender_known:
        target = f"user:{named.spender}"
    elif mode == "cancel" and named.open:
        target = named.label  # cancelling is for offline; a charge made is booked as made
    else:
        target = fallback
    return Booking(target, MergeConflict(kind, f"{why}: charged to {target} (account selection: {mode})"))


def over_limit(conflict: MergeConflict | None, account: str, past_cents: int) -> MergeConflict:
    """The conflict of a charge that drove a restricted account `past_cents` beyond its limit
    (applied all the same: the pages were made), added to the account's conflict if any."""
    said = f"{account} is now {past_cents} cents past its limit (overdraft)"
    if conflict is None:
        return MergeConflict("over_limit", f"applied as made offline: {said}")
    return MergeConflict(conflict.kind, f"{conflict.action}; {said}")
