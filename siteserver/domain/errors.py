"""Domain errors: what went wrong in print-management terms, mapped to HTTP by the API layer."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class DomainError(Exception):
    """Base of every refusal the core makes; `code` is the stable machine-readable name."""

    code = "error"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class NotFound(DomainError):
    code = "not_found"


def found(value: T | None, missing: str) -> T:
    """`value`, or NotFound(`missing`) when there is none."""
    if value is None:
        raise NotFound(missing)
    return value


class Conflict(DomainError):
    """The request contradicts what already exists (a reused txn_id, a duplicate name)."""

    code = "conflict"


class Invalid(DomainError):
    """Well-formed but meaningless: unknown printer in a queue, a shared account that does not exist."""

    code = "invalid_request"


class Unauthorized(DomainError):
    code = "unauthorized"


class Forbidden(DomainError):
    code = "forbidden"


class LockedOut(DomainError):
    code = "locked_out"

    def __init__(self, detail: str, *, retry_after_secs: float) -> None:
        super().__init__(detail)
        self.retry_after_secs = retry_after_secs


class Shed(DomainError):
    """Load this server turns away for now, to keep serving devices (a merge while another site
    merges): try again after `retry_after_secs` (429 with Retry-After)."""

    code = "busy"

    def __init__(self, detail: str, *, retry_after_secs: float) -> None:
        super().__init__(detail)
        self.retry_after_secs = retry_after_secs


class Unavailable(DomainError):
    """What the request needs is not reachable now (the primary, for a site's pull or merge)."""

    code = "unavailable"


class NotActive(DomainError):
    """This application server is passive or was fenced: it must not serve or write."""

    code = "not_active"
