"""What a site decides alone: the one local decision for a charge, online or offline.

A site decides every charge locally before it merges it into the primary (DESIGN.md, invariant 2).
Online the local rule is the primary's own (`authorize` against the effective balance; a named
shared account must be one the user is a member of; an unknown user is refused) and the primary's
verdict, when it comes in time, replaces it. Offline (the site's mode is not `online`, or the last
merge missed its budget) the mirrored offline policies decide, and nothing replaces the decision
until the merge. Pure: no storage, no clock. See docs/offline.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .ledger import AccountState, Enforcement, authorize
from .policies import OfflinePolicies

OFFLINE_FLAG = "offline"  # the journal flag of an entry decided offline
CAP_EXCEEDED = "cap:exceeded"
SHARED_FALLBACK = "account:shared_fallback"  # charged to the account-selection policy's account
UNAUTHENTICATED_SHARED = "unauthenticated:shared_account"  # an unknown user's, by policy
#: an entry charged to a shared account by an offline policy, not by its user's membership
POLICY_FLAGS = frozenset({SHARED_FALLBACK, UNAUTHENTICATED_SHARED})
BY = "by:"  # the flag naming who spent an entry (a journal flag is at most 64 characters)


def by_flag(username: str) -> str | None:
    """The flag naming who spent a charge (None when it would not fit in a flag)."""
    flag = BY + username
    return flag if len(flag) <= 64 else None


def spender(flags: Iterable[str], account: str) -> str | None:
    """Who spent an entry: its `by:` flag, else the user of the personal account it names."""
    by = next((f[len(BY) :] for f in flags if f.startswith(BY)), None)
    if by is not None or not account.startswith("user:"):
        return by
    return account[len("user:") :]


@dataclass(frozen=True, slots=True)
class ChargeQuestion:
    """One charge to decide. `named_account`: the shared account the job or usage names (None:
    the user's personal account); `named_allowed`: it is in the mirror and the user is a member."""

    username: str
    cost_cents: int  # >= 0
    enforcement: Enforcement
    user_known: bool  # the mirror has this username
    named_account: str | None = None
    named_allowed: bool = False


@dataclass(frozen=True, slots=True)
class Caps:
    """Bounded exposure: limits (None = none) and the offline spend so far (cents, >= 0)."""

    per_user_cents: int | None = None
    site_cents: int | None = None
    user_spent_cents: int = 0
    site_spent_cents: int = 0


NO_CAPS = Caps()


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    #: whose account: None = the user's personal account, else a shared account's name
    shared_account: str | None
    flags: tuple[str, ...] = ()
    reason: str | None = None
    #: the enforcement the entry carries to the primary (an offline decision is a fact to settle)
    enforcement: Enforcement = Enforcement.AUTHORIZE


#: account states by target: None = the personal account, a name = that shared account
Accounts = Mapping[str | None, AccountState]


def target_of(ask: ChargeQuestion, policies: OfflinePolicies, *, offline: bool) -> Decision:
    """The account a charge goes to (step one); `allowed=False` when none may be charged."""
    if not ask.user_known:
        if offline and policies.unauthenticated_users.mode == "shared_account":
            name = policies.unauthenticated_users.shared_account
            return Decision(True, name, (OFFLINE_FLAG, UNAUTHENTICATED_SHARED))
        flags = (OFFLINE_FLAG, "unauthenticated:deny") if offline else ()
        return Decision(False, None, flags, "unknown or disabled user")
    if ask.named_account is None:
        return Decision(True, None, (OFFLINE_FLAG,) if offline else ())
    if ask.named_allowed:
        return Decision(True, ask.named_account, (OFFLINE_FLAG,) if offline else ())
    refused = f"{ask.named_account!r} is not a shared account this user may charge"
    if not offline:
        return Decision(False, None, (), refused)
    sel = policies.account_selection
    if sel.mode == "shared_account":
        return Decision(True, sel.shared_account, (OFFLINE_FLAG, SHARED_FALLBACK))
    if sel.mode == "personal":
        return Decision(True, None, (OFFLINE_FLAG, "account:personal_fallback"))
    return Decision(
        False, None, (OFFLINE_FLAG, "account:cancel"), refused + " offline (offline policy: cancel)"
    )


def decide(
    ask: ChargeQuestion, policies: OfflinePolicies, accounts: Accounts, *, offline: bool, caps: Caps = NO_CAPS
) -> Decision:
    """The local decision for one charge. `accounts` holds the state (effective balance,
    restricted, overdraft) of each account the charge may go to that the mirror has."""
    target = target_of(ask, policies, offline=offline)
    if not target.allowed:
        return target
    state = accounts.get(target.shared_account)
    if state is None:
        what = "the user's account" if target.shared_account is None else repr(target.shared_account)
        return Decision(False, target.shared_account, target.flags, f"{what} is not known at this site")
    amount = -ask.cost_cents
    if not offline:
        verdict = authorize(state, amount, ask.enforcement)
        return Decision(verdict.allowed, target.shared_account, (), verdict.reason, ask.enforcement)

    flags = list(target.flags)
    credit = policies.restricted_credit
    if state.restricted:
        flags.append(f"policy:{credit.mode}")
    if ask.enforcement is Enforcement.AUTHORIZE and state.restricted and ask.cost_cents > 0:
        if credit.mode == "deny":
            return Decision(
                False,
                target.shared_account,
                tuple(flags),
                "restricted accounts cannot spend while the site is offline (offline policy: deny)",
            )
        if credit.mode in ("cached_balance", "allowance"):
            extra = credit.offline_credit_cents if credit.mode == "allowance" else 0
            spendable = state.balance_cents + state.overdraft_cents + extra
            if spendable - ask.cost_cents < 0:
                return Decision(
                    False,
                    target.shared_account,
                    tuple(flags),
                    f"insufficient balance (offline policy: {credit.mode})",
                )
    over = _over_cap(ask.cost_cents, caps)
    if over is not None:
        if ask.enforcement is Enforcement.AUTHORIZE:
            return Decision(False, target.shared_account, (*flags, CAP_EXCEEDED), over)
        flags.append(CAP_EXCEEDED)
    # Decided here, for good: the primary records it at the merge (settled there, not re-decided).
    return Decision(True, target.shared_account, tuple(flags), None, Enforcement.FACT)


def _over_cap(cost: int, caps: Caps) -> str | None:
    if cost <= 0:
        return None
    if caps.per_user_cents is not None and caps.user_spent_cents + cost > caps.per_user_cents:
        return (
            f"offline spending limit per user reached ({caps.user_spent_cents} of"
            f" {caps.per_user_cents} cents spent offline)"
        )
    if caps.site_cents is not None and caps.site_spent_cents + cost > caps.site_cents:
        return (
            f"offline spending limit of this site reached ({caps.site_spent_cents} of"
            f" {caps.site_cents} cents spent offline)"
        )
    return None
