"""Every error of the sync protocol, in one place:

SyncFailed            a sync call that did not work (`status`: the HTTP status when answered)
└── MergeUnsettled    the primary did not answer for journal entries in doubt: the feed page
                      that needs them settled waits (not the feed endpoint's failure)
UnreadableUpload      (primary side) a merge upload that is not a MergeIn: the route's 422
"""

from __future__ import annotations

from typing import Any


class SyncFailed(Exception):
    """A sync call that did not work; `status` is the HTTP status when the primary answered."""

    def __init__(self, message: str, status: int | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        #: seconds the primary asked the site to wait (`Retry-After` on a 429 or 503), if it did
        self.retry_after = retry_after


class MergeUnsettled(SyncFailed):
    """The primary did not answer for entries in doubt: the page waits. Not the feed endpoint's
    failure (the merge's own endpoint handling already counted it)."""


class UnreadableUpload(Exception):
    """A signed merge upload that is not a MergeIn; `errors` as pydantic says them (type, loc,
    msg), the route answers them as any request body's 422."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} error(s) in the upload")
        self.errors = errors
