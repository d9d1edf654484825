"""The sync API on the wire (docs/sync.md): every path and every request and answer, both ends.

The primary's routers declare their routes with these paths and models; the site's client builds
its requests and parses the answers with the same ones: nothing of the protocol is declared twice.
Requests are strict: unknown fields are refused (422), no value is coerced (10.0 and "10" are not
money, "true" is not a bool).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from siteserver.contract import ConflictOut, Instant, Uuid
from siteserver.domain.merge import MergeStatus
from siteserver.domain.modes import Mode
from siteserver.domain.money import MAX_AMOUNT_CENTS

PREFIX = "/api/sync/v1"
ENROLL_PATH = "/enroll"
HEARTBEAT_PATH = "/heartbeat"
SNAPSHOT_PATH = "/snapshot"
CHANGES_PATH = "/changes"
MERGE_PATH = "/journal"  # the site merges its journal into the primary here
#: the merge's query parameter of a site's background drain (no device waits on it): the
#: primary may shed such an upload (429 + Retry-After) before it reads its body
BACKGROUND = "background"
LOOKUP_PATH = "/ledger/lookup"  # the primary's ledger rows of a site's txn_ids (reconciliation)


def url_path(path: str) -> str:
    """The full URL path of one of the paths above."""
    return PREFIX + path


SNAPSHOT_MEDIA_TYPE = "application/x-ndjson"
MAX_JOURNAL_ENTRIES = 5000
MAX_CHANGES_LIMIT = 5000
MAX_CHANGES_WAIT_SECS = 60.0

Cents = Annotated[int, Field(strict=True, ge=-MAX_AMOUNT_CENTS, le=MAX_AMOUNT_CENTS)]
# `user:<username>` or `shared:<account name>`, as in the admin API's transactions.
AccountLabel = Annotated[
    str, Field(min_length=6, max_length=140, pattern=r"^(user|shared):[^\x00-\x1f\x7f/]+$")
]
Flag = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# -- enrollment and heartbeat ----------------------------------------------------------------------

Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class EnrollIn(_Request):
    site_id: Ident
    enrollment_token: Annotated[str, Field(min_length=1, max_length=256)]
    public_key: Annotated[str, Field(min_length=43, max_length=43, pattern=r"^[A-Za-z0-9_-]{43}$")]


class EnrollOut(BaseModel):
    site_id: str
    pepper: str
    health_key: str | None = None  # the health URL's key, for the site's WAN monitor


class OutageSpan(_Request):
    started_at: Instant
    ended_at: Instant | None  # None: still offline (a site says so once it can reach a primary)


class HeartbeatIn(_Request):
    mode: Annotated[Mode, Field(strict=False)]  # a JSON string
    journal_backlog: Annotated[int, Field(ge=0, le=2**62)]
    version: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
    #: how often this site sends one (extension): the fleet health URL allows three of them
    interval_secs: Annotated[float, Field(gt=0, le=3600)] | None = None
    #: the site's last outage as it saw it (extension): the primary's fleet page shows it
    last_outage: OutageSpan | None = None


class HeartbeatOut(BaseModel):
    primary_time: str
    server_uuid: str
    epoch: int


# -- snapshot (NDJSON lines) -----------------------------------------------------------------------


class SnapshotBegin(BaseModel):
    """The first line: the cursor the snapshot was read at."""

    type: Literal["begin"]
    cursor: int
    tables: list[str]


class SnapshotRow(BaseModel):
    type: Literal["row"]
    table: str
    row: dict[str, Any]


class SnapshotEnd(BaseModel):
    """The last line; a stream without it is an incomplete snapshot."""

    type: Literal["end"]
    cursor: int
    rows: int


SnapshotLine = Annotated[SnapshotBegin | SnapshotRow | SnapshotEnd, Field(discriminator="type")]
SNAPSHOT_LINE: TypeAdapter[SnapshotBegin | SnapshotRow | SnapshotEnd] = TypeAdapter(SnapshotLine)


def snapshot_line(line: SnapshotBegin | SnapshotRow | SnapshotEnd) -> bytes:
    """One NDJSON line of the snapshot stream."""
    return line.__pydantic_serializer__.to_json(line) + b"\n"


# -- change feed -----------------------------------------------------------------------------------


#: what a site mirrors of the organisation's people: everyone, or only those whose `home_sites`
#: name it (the `scope` query parameter of the snapshot and the changes)
MirrorScope = Literal["all", "home"]


class Change(BaseModel):
    seq: int
    table: str
    pk: list[Any]
    row: dict[str, Any] | None  # None: the row no longer exists (deleted)


class ChangesOut(BaseModel):
    cursor: int
    reset: bool
    changes: list[Change]


# -- merge: the journal upload -------------------------------------------------------------------


class JournalEntry(_Request):
    txn_id: Uuid
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


class MergeIn(_Request):
    entries: Annotated[list[JournalEntry], Field(min_length=1, max_length=MAX_JOURNAL_ENTRIES)]


class MergeResult(BaseModel):
    txn_id: uuid.UUID
    status: MergeStatus
    seq: int | None  # the ledger seq (for a duplicate: the first application's)
    balance_cents: int | None  # the account's balance right after that ledger row
    reason: str | None  # why it was rejected
    conflict: ConflictOut | None = None  # applied_with_conflict (or a duplicate of one): what was done
    account: str | None = None  # the account booked, when it is not the entry's
    amount_cents: int | None = None  # the amount booked, when it is not the entry's


class Receipt(BaseModel):
    entries: int
    applied: int  # applied as made
    applied_with_conflict: int = 0
    duplicate: int
    rejected: int
    applied_cents: int  # the sum of amount_cents booked by this upload (with conflict or not)


# -- look-up: the primary's ledger as it stands, for a reconciliation report -----------------------


class LookupIn(_Request):
    txn_ids: Annotated[list[Uuid], Field(min_length=1, max_length=MAX_JOURNAL_ENTRIES)]


class LedgerRow(BaseModel):
    """What a reconciliation check needs of a ledger row (the site has the rest)."""

    txn_id: uuid.UUID
    seq: int
    account: str  # the account booked
    amount_cents: int
    requested_account: str | None  # the account the entry named, when a conflict moved it
    conflict: ConflictOut | None


class LookupOut(BaseModel):
    """Every ledger row of the asked txn_ids that came from the asking site (none: never
    applied; two: the ledger was altered), in seq order."""

    rows: list[LedgerRow]


class MergeOut(BaseModel):
    results: list[MergeResult]
    receipt: Receipt
