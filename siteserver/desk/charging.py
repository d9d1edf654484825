"""How a role applies and confirms a charge: the one place the primary and a site differ.

- the primary (`LedgerCharging`): a charge is `store.ledger.apply`, final when committed;
- a site (`siteserver.desk.journal_charging.JournalCharging`): a charge is an entry in the outbox
  journal, decided locally against the effective balance, then confirmed by merging it into the
  primary within the request budget; the primary's verdict, when it comes in time, is the answer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlite_utils

from siteserver.domain import Enforcement, JobStatus, use_of
from siteserver.domain.merge import MergeVerdict
from siteserver.domain.modes import Mode
from siteserver.store import accounts as accounts_store
from siteserver.store import ledger


@dataclass(frozen=True, slots=True)
class ChargeAsk:
    """One charge a flow wants made: who, which account they name, how much, how enforced."""

    txn_id: str
    username: str
    user: accounts_store.UserRecord | None  # None: the role does not know this username
    account: str | None  # a shared account named by the release or usage (None: personal)
    cost_cents: int  # >= 0
    kind: str
    enforcement: Enforcement
    occurred_at: str
    ref: str | None = None
    printer: str | None = None  # where it was printed, copied, scanned or faxed
    pages: int | None = None  # pages charged (copies included)

    @property
    def use(self) -> str:
        """What this txn_id is used for (siteserver.domain.use_of): a retry must repeat it."""
        return use_of(self.username, self.account, self.kind, self.cost_cents)


def refused(ask: ChargeAsk, reason: str | None) -> ledger.Outcome:
    return ledger.Outcome(ask.txn_id, "denied", -ask.cost_cents, reason=reason)


class Charging(ABC):
    """How a role applies and confirms a charge (the one place the roles differ)."""

    #: the status of a job released at a device until `confirm` is done
    release_status: JobStatus = JobStatus.RELEASED
    #: whether `confirm` does anything (the primary's charges are final at commit)
    confirms: bool = False

    @abstractmethod
    def charge_for(self, conn: sqlite_utils.Database, ask: ChargeAsk) -> tuple[ledger.Outcome, int | None]:
        """Inside the flow's write transaction: choose the account and charge it; the outcome and
        the account charged (None when refused before an account was chosen)."""

    def offline(self) -> bool:
        """Whether this role decides alone right now (a site that cannot reach the primary)."""
        return False

    def balance(self, conn: sqlite_utils.Database, account_id: int, stored: int) -> int:
        """The balance to answer for an account whose stored balance is `stored`."""
        return stored

    def mode(self) -> Mode:
        return Mode.ONLINE

    async def confirm(self, txn_ids: Sequence[str]) -> dict[str, MergeVerdict] | None:
        """After commit: the final verdicts known for these entries (missing: none in time).
        None: nothing was asked (a site known to be offline), so nothing changed since the commit."""
        return {}


@dataclass
class LedgerCharging(Charging):
    """The primary: known, enabled users only; a named shared account must be one of the user's;
    money moves through `store.ledger.apply`, final when committed."""

    epoch_of: Callable[[], int]

    def charge_for(self, conn: sqlite_utils.Database, ask: ChargeAsk) -> tuple[ledger.Outcome, int | None]:
        user = ask.user
        if user is None or user.disabled:
            return refused(ask, "unknown or disabled user"), None
        account_id, why = accounts_store.charge_account(conn, user, ask.account)
        if account_id is None:
            return refused(ask, why), None
        entry = ledger.Entry(
            ask.txn_id,
            account_id,
            -ask.cost_cents,
            ask.kind,
            ask.enforcement,
            ask.occurred_at,
            ref=ask.ref,
            use=ask.use,
        )
        (out,) = ledger.apply(conn, [entry], epoch=self.epoch_of(), applied_at=entry.occurred_at)
        return out, account_id
