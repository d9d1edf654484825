"""The domain core both roles share: money, pricing, credentials, policies, held jobs, ledger rules.

Nothing here knows about HTTP or SQL, so the rules are tested without a server.
"""

from .credentials import Lockout, LoginGuard, SecretHasher, new_token, same_secret, token_digest
from .errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    LockedOut,
    NotActive,
    NotFound,
    Shed,
    Unauthorized,
    Unavailable,
    found,
)
from .jobs import JobStatus, QueueTarget, is_expired, releasable_at, resolve_queue
from .ledger import AccountState, Authorization, Enforcement, authorize, same_use, use_of
from .money import MAX_AMOUNT_CENTS, format_cents, percent_of
from .policies import DEFAULT_POLICIES, OfflinePolicies
from .pricing import CostModel, PrinterModel, Quote, quote_print, quote_usage
from .sessions import Session, SessionRegistry

__all__ = [
    "DEFAULT_POLICIES",
    "MAX_AMOUNT_CENTS",
    "AccountState",
    "Authorization",
    "Conflict",
    "CostModel",
    "DomainError",
    "Enforcement",
    "Forbidden",
    "Invalid",
    "JobStatus",
    "LockedOut",
    "Lockout",
    "LoginGuard",
    "NotActive",
    "NotFound",
    "OfflinePolicies",
    "PrinterModel",
    "QueueTarget",
    "Quote",
    "SecretHasher",
    "Session",
    "SessionRegistry",
    "Shed",
    "Unauthorized",
    "Unavailable",
    "authorize",
    "format_cents",
    "found",
    "is_expired",
    "new_token",
    "percent_of",
    "quote_print",
    "quote_usage",
    "releasable_at",
    "resolve_queue",
    "same_secret",
    "same_use",
    "token_digest",
    "use_of",
]
