"""The ledger's rules: who may spend what. Pure functions; the stores apply them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum


class Enforcement(StrEnum):
    """How a charge meets a restricted account's limit."""

    AUTHORIZE = "authorize"  # refuse if it would take a restricted account below its limit
    FACT = "fact"  # already happened (a copy, a merge of offline usage): always charged


@dataclass(frozen=True, slots=True)
class AccountState:
    balance_cents: int
    restricted: bool
    overdraft_cents: int = 0

    @property
    def spendable_cents(self) -> int | None:
        """How much may still be spent, or None when there is no limit."""
        if not self.restricted:
            return None
        return self.balance_cents + self.overdraft_cents


@dataclass(frozen=True, slots=True)
class Authorization:
    allowed: bool
    reason: str | None = None


def authorize(account: AccountState, amount_cents: int, enforcement: Enforcement) -> Authorization:
    """May `amount_cents` (negative = a charge) be applied to `account`?

    A restricted account never goes below -overdraft_cents through an authorized charge;
    credits and facts always apply.
    """
    if enforcement is Enforcement.FACT or amount_cents >= 0:
        return Authorization(True)
    spendable = account.spendable_cents
    if spendable is None or spendable + amount_cents >= 0:
        return Authorization(True)
    return Authorization(False, "insufficient balance")


def use_of(username: str, account: str | None, kind: str, amount_cents: int) -> str:
    """What a txn_id was first used for, as one value: who, the account they named (None: their
    own), the kind and the amount. Stored beside the charge on both roles."""
    return hashlib.sha256(json.dumps([username, account, kind, amount_cents]).encode()).hexdigest()


def same_use(first: str | None, again: str) -> bool:
    """Whether a request repeats the charge its txn_id was first used for (a retry, answered
    with the first answer) rather than reusing the id for another (409, on both roles). A first
    use of None was recorded before uses were kept: its account and amount are all there is."""
    return first is None or first == again
