"""Every error of the sync protocol, in one place:

SyncFailed            a sync call that did not work (`status`: the HTTP status when answered)
└── MergeUnsettled    the primary did not answer for journal entries in doubt: the feed page
                      that needs them settled waits (not the feed endpoint's failure)
"""

from __future__ import annotations


class SyncFailed(Exception):
    """A sync call that did not work; `status` is the HTTP status when the primary answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MergeUnsettled(SyncFailed):
    """The primary did not answer for entries in doubt: the page waits. Not the feed endpoint's
    failure (the merge's own endpoint handling already counted it)."""
