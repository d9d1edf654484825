"""Wire models of the sync API (docs/sync.md), shared by the primary and the site.

Requests are strict: unknown fields are refused (422), money is a JSON integer (10.0 and "10" are
refused). Answers are described for the documentation and for the site's parsing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from siteserver.domain.money import MAX_AMOUNT_CENTS

SNAPSHOT_MEDIA_TYPE = "application/x-ndjson"
MAX_JOURNAL_ENTRIES = 1000
MAX_CHANGES_LIMIT = 5000
MAX_CHANGES_WAIT_SECS = 60.0

Cents = Annotated[int, Field(strict=True, ge=-MAX_AMOUNT_CENTS, le=MAX_AMOUNT_CENTS)]
# `user:<username>` or `shared:<account name>`, as in the admin API's transactions.
AccountLabel = Annotated[
    str, Field(min_length=6, max_length=140, pattern=r"^(user|shared):[^\x00-\x1f\x7f/]+$")
]
Flag = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- snapshot (NDJSON lines) -----------------------------------------------------------------------


class SnapshotBegin(BaseModel):
    type: Literal["begin"]
    cursor: int
    tables: list[str]


class SnapshotRow(BaseModel):
    type: Literal["row"]
    table: str
    row: dict[str, Any]


class SnapshotEnd(BaseModel):
    type: Literal["end"]
    cursor: int
    rows: int


# -- change feed -----------------------------------------------------------------------------------


class Change(BaseModel):
    seq: int
    table: str
    pk: list[Any]
    row: dict[str, Any] | None  # None: the row no longer exists (deleted)


class ChangesOut(BaseModel):
    cursor: int
    reset: bool
    changes: list[Change]


# -- journal upload --------------------------------------------------------------------------------


class JournalEntry(_Request):
    txn_id: uuid.UUID
    account: AccountLabel
    amount_cents: Cents
    kind: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[^\x00-\x1f\x7f]+$")]
    enforcement: Literal["authorize", "fact"]
    occurred_at: Annotated[str, Field(min_length=10, max_length=40)]
    flags: Annotated[list[Flag], Field(max_length=32)] = []
    ref: Annotated[str, Field(max_length=256, pattern=r"^[^\x00]*$")] | None = None

    @field_validator("occurred_at")
    @classmethod
    def _iso(cls, v: str) -> str:
        try:
            datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError as e:
            raise ValueError("occurred_at must be an ISO 8601 timestamp") from e
        return v


class JournalIn(_Request):
    entries: Annotated[list[JournalEntry], Field(min_length=1, max_length=MAX_JOURNAL_ENTRIES)]


JournalStatus = Literal["applied", "duplicate", "rejected"]


class JournalResult(BaseModel):
    txn_id: uuid.UUID
    status: JournalStatus
    seq: int | None  # the ledger seq (for a duplicate: the first application's)
    balance_cents: int | None  # the account's balance right after that ledger row
    reason: str | None  # why it was rejected


class Receipt(BaseModel):
    entries: int
    applied: int
    duplicate: int
    rejected: int
    applied_cents: int  # the sum of amount_cents of the entries applied by this upload


class JournalOut(BaseModel):
    results: list[JournalResult]
    receipt: Receipt


__all__ = [
    "MAX_CHANGES_LIMIT",
    "MAX_CHANGES_WAIT_SECS",
    "MAX_JOURNAL_ENTRIES",
    "SNAPSHOT_MEDIA_TYPE",
    "Change",
    "ChangesOut",
    "JournalEntry",
    "JournalIn",
    "JournalOut",
    "JournalResult",
    "Receipt",
    "SnapshotBegin",
    "SnapshotEnd",
    "SnapshotRow",
]
