"""The public API's request and answer models (CONTRACT.md): administration, device, print
provider, health, site status. Below the flows, so the flows and the routers share them. Every
request model forbids unknown fields (422, not silence). The sync API's are `sync.wire`'s."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from siteserver.domain.merge import ConflictKind, MergeConflict
from siteserver.domain.modes import Mode
from siteserver.domain.money import MAX_AMOUNT_CENTS, MAX_PAGE_PRICE_CENTS
from siteserver.timeutil import iso, parse_iso

NAME_PATTERN = r"^[^\x00-\x1f\x7f/]+$"
IDENT_PATTERN = r"^[A-Za-z0-9._-]+$"

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN)]
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=IDENT_PATTERN)]
Text = Annotated[str, Field(max_length=512, pattern=r"^[^\x00]*$")]
# Money is a JSON integer: strict, so 10.0 or "10" is refused rather than quietly converted.
Cents = Annotated[int, Field(strict=True, ge=-MAX_AMOUNT_CENTS, le=MAX_AMOUNT_CENTS)]
NonNegCents = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT_CENTS)]
PagePrice = Annotated[int, Field(strict=True, ge=0, le=MAX_PAGE_PRICE_CENTS)]
Pages = Annotated[int, Field(ge=1, le=100_000)]
Password = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00]+$")]
Pin = Annotated[str, Field(min_length=4, max_length=16, pattern=r"^[0-9]+$")]
CardNumber = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
Email = Annotated[str, Field(max_length=254, pattern=r"^[^\s@\x00]+@[^\s@\x00]+$")]
# A UUID comes as a JSON string; strict mode would take only a UUID object, so it parses the string.
Uuid = Annotated[uuid.UUID, Field(strict=False)]


class Strict(BaseModel):
    """A request: unknown fields refused, and no coercion (`"3"` is not 3, `"yes"` is not true)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorOut(BaseModel):
    error: str
    detail: str


# -- users and accounts ------------------------------------------------------------------------


class UserCreate(Strict):
    username: Name
    full_name: Annotated[str, Field(max_length=256, pattern=r"^[^\x00]*$")] | None = None
    email: Email | None = None
    password: Password | None = None
    pin: Pin | None = None
    card_numbers: Annotated[list[CardNumber], Field(max_length=20)] | None = None
    id_number: CardNumber | None = None
    balance_cents: Cents = 0
    restricted: bool = True
    overdraft_cents: NonNegCents = 0
    #: the sites this user belongs to: a site with mirror_scope = "home" mirrors only its own
    #: people (docs/security.md); empty or absent: none in particular
    home_sites: Annotated[list[Ident], Field(max_length=100)] | None = None


class UserPatch(Strict):
    """Any field of the create call (but the username), plus `disabled`. An explicit null clears
    an optional field (email, password, PIN, ID number)."""

    full_name: Annotated[str, Field(max_length=256, pattern=r"^[^\x00]*$")] | None = None
    email: Email | None = None
    password: Password | None = None
    pin: Pin | None = None
    card_numbers: Annotated[list[CardNumber], Field(max_length=20)] | None = None
    id_number: CardNumber | None = None
    balance_cents: Cents | None = None
    restricted: bool | None = None
    overdraft_cents: NonNegCents | None = None
    disabled: bool | None = None
    #: the sites this user belongs to: a site with mirror_scope = "home" mirrors only its own
    #: people (docs/security.md); null or empty: none in particular
    home_sites: Annotated[list[Ident], Field(max_length=100)] | None = None


class UserOut(BaseModel):
    username: str
    full_name: str
    email: str | None
    balance_cents: int
    restricted: bool
    overdraft_cents: int
    disabled: bool
    home_sites: list[str]


class AdjustmentIn(Strict):
    txn_id: Uuid
    amount_cents: Cents
    comment: Annotated[str, Field(max_length=1000, pattern=r"^[^\x00]*$")] = ""


class AdjustmentOut(BaseModel):
    txn_id: uuid.UUID
    status: Literal["applied", "duplicate"]
    balance_cents: int


class SharedAccountCreate(Strict):
    name: Name
    balance_cents: Cents = 0
    restricted: bool = False
    overdraft_cents: NonNegCents = 0
    members: Annotated[list[Name], Field(max_length=10_000)] = []


class SharedAccountPatch(Strict):
    """Any field of the create call; `members` replaces the list; `name` renames the account."""

    name: Name | None = None
    balance_cents: Cents | None = None
    restricted: bool | None = None
    overdraft_cents: NonNegCents | None = None
    members: Annotated[list[Name], Field(max_length=10_000)] | None = None


class SharedAccountOut(BaseModel):
    name: str
    balance_cents: int
    restricted: bool
    overdraft_cents: int
    members: list[str]


# -- printers, sites, machines -----------------------------------------------------------------


class CostIn(Strict):
    mono_page_cents: PagePrice
    color_page_cents: PagePrice
    duplex_discount_pct: Annotated[int, Field(ge=0, le=100)] = 0
    scan_page_cents: PagePrice = 0
    fax_page_cents: PagePrice = 0


class PrinterCreate(Strict):
    name: Name
    site_id: Ident
    color: bool
    duplex: bool
    hold: bool
    cost: CostIn


class PrinterOut(BaseModel):
    name: str
    site_id: str
    color: bool
    duplex: bool
    hold: bool
    cost: CostIn


class FindMeQueueIn(Strict):
    name: Name
    printers: Annotated[list[Name], Field(min_length=1, max_length=200)]


class SiteCreate(Strict):
    site_id: Ident
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
    findme_queues: Annotated[list[FindMeQueueIn], Field(max_length=100)] = []


class SiteCreated(BaseModel):
    site_id: str
    enrollment_token: str


class FindMeQueueOut(BaseModel):
    name: str
    printers: list[str]


class OutageSpanOut(BaseModel):
    started_at: str
    ended_at: str | None


class SiteOut(BaseModel):
    site_id: str
    name: str
    enrolled: bool
    enrolled_at: str | None
    disabled: bool
    last_contact_at: str | None
    mode: str | None
    journal_backlog: int | None
    findme_queues: list[FindMeQueueOut]
    heartbeat_secs: float | None = None  # how often the site says it heartbeats (v1.1)
    last_outage: OutageSpanOut | None = None  # the site's last outage as it reported it (v1.1)


class SitesOut(BaseModel):
    sites: list[SiteOut]


class SitePatch(Strict):
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")] | None = None
    disabled: bool | None = None


class DeviceCreate(Strict):
    device_id: Ident
    printer: Name


class DeviceCreated(BaseModel):
    device_id: str
    token: str


class ProviderCreate(Strict):
    provider_id: Ident
    printers: Annotated[list[Name], Field(min_length=1, max_length=1000)]


class ProviderCreated(BaseModel):
    provider_id: str
    token: str


class TransactionOut(BaseModel):
    txn_id: str
    seq: int
    account: str
    amount_cents: int
    kind: str
    origin_site: str | None
    occurred_at: str
    applied_at: str
    flags: list[str]
    balance_after_cents: int
    ref: str | None
    comment: str | None


class TransactionsOut(BaseModel):
    transactions: list[TransactionOut]
    next_seq: int


# -- device API --------------------------------------------------------------------------------


class LoginIn(Strict):
    """One of: {card_number}, {username, password}, {username, pin}, {id_number, pin?}."""

    card_number: CardNumber | None = None
    username: Name | None = None
    password: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    pin: Annotated[str, Field(min_length=1, max_length=16)] | None = None
    id_number: CardNumber | None = None

    @model_validator(mode="after")
    def _one_method(self) -> LoginIn:
        given = {
            k
            for k in ("card_number", "username", "password", "pin", "id_number")
            if getattr(self, k) is not None
        }
        allowed = [
            {"card_number"},
            {"username", "password"},
            {"username", "pin"},
            {"id_number"},
            {"id_number", "pin"},
        ]
        if given not in allowed:
            raise ValueError(
                "give exactly one of: {card_number}, {username, password}, {username, pin}, {id_number, pin?}"
            )
        return self


class LoginOut(BaseModel):
    session_id: str
    username: str
    full_name: str
    balance_cents: int
    restricted: bool
    shared_accounts: list[str]
    mode: Mode


class HeldJobOut(BaseModel):
    job_id: str
    document_name: str
    pages: int
    copies: int
    color: bool
    duplex: bool
    queue: str
    submitted_at: str
    cost_cents: int


class HeldJobsOut(BaseModel):
    jobs: list[HeldJobOut]
    mode: Mode


class ReleaseIn(Strict):
    job_ids: Annotated[list[Uuid], Field(min_length=1, max_length=100)]
    account: Name | None = None


class ReleaseResultOut(BaseModel):
    job_id: str
    status: Literal["released", "denied", "not_found"]
    reason: str | None = None
    cost_cents: int
    balance_cents: int


class ReleaseOut(BaseModel):
    results: list[ReleaseResultOut]
    mode: Mode


class UsageIn(Strict):
    txn_id: Uuid
    kind: Literal["copy", "scan", "fax"]
    pages: Pages
    color: bool
    duplex: bool = False
    account: Name | None = None


class UsageOut(BaseModel):
    txn_id: str
    status: Literal["charged"]
    cost_cents: int
    balance_cents: int
    mode: Mode


class LogoutOut(BaseModel):
    status: Literal["logged_out"]


# -- print provider API ------------------------------------------------------------------------


class JobIn(Strict):
    job_id: Uuid
    username: Name
    queue: Name
    document_name: Text
    pages: Pages
    copies: Annotated[int, Field(ge=1, le=1000)]
    color: bool
    duplex: bool
    client: Annotated[str, Field(max_length=256, pattern=r"^[^\x00]*$")] | None = None


class JobOut(BaseModel):
    job_id: str
    action: Literal["hold", "print", "deny"]
    reason: str | None = None
    cost_cents: int | None = None


class ReleaseItemOut(BaseModel):
    job_id: str
    printer: str
    grayscale: bool


class ReleasesOut(BaseModel):
    releases: list[ReleaseItemOut]


class PrintedIn(Strict):
    pages_printed: Annotated[int, Field(ge=0, le=100_000_000)]


class PrintedOut(BaseModel):
    job_id: str
    status: Literal["printed"]


# -- health ------------------------------------------------------------------------------------


class PrimaryHealthOut(BaseModel):
    status: str
    role: str
    server_uuid: str | None = None
    epoch: int | None = None
    disk_free_mb: int | None = None


# -- site administration ---------------------------------------------------------------------


class LateSiteOut(BaseModel):
    site_id: str
    last_contact_at: str | None  # None: never heard from since it was enrolled
    age_secs: float | None
    allowed_secs: float  # three of the site's heartbeats


class FleetHealthOut(BaseModel):
    status: Literal["OK", "SITES_LATE"]
    sites: int  # enrolled, enabled sites
    late: list[LateSiteOut]


class SiteHealthOut(BaseModel):
    status: str
    mode: Mode


class EndpointOut(BaseModel):
    url: str
    state: str
    last_ok_at: str | None
    #: set when a balancer at this URL routes some requests to the passive member, or when the
    #: primary's TLS certificate was refused (the state is then `tls_refused`) (v1.1 extension)
    note: str | None = None


class PrimaryOut(BaseModel):
    active: str | None
    endpoints: list[EndpointOut]


class SyncOut(BaseModel):
    cursor: int | None
    last_sync_at: str | None
    lag_secs: float | None


class JournalCountsOut(BaseModel):
    pending: int
    merged: int  # applied (with a conflict or not) or duplicate
    rejected: int
    applied: int = 0  # of merged: applied as made
    applied_with_conflict: int = 0  # of merged: applied with a conflict the primary settled
    duplicate: int = 0  # of merged: the primary had it before
    oldest_pending_at: str | None = None  # when the oldest pending entry was made (status only)


class MergeProgressOut(BaseModel):
    """The background merge's drain of the journal: running while entries are pending."""

    running: bool
    started_at: str | None  # when this drain (or the last one) began
    finished_at: str | None  # when the last one ended (null while running)
    done: int  # entries the primary answered in this drain
    total: int  # entries to drain: those pending when it began, and any added since
    rate_per_sec: float | None  # answered entries per second so far


class JournalEntryOut(BaseModel):
    """One entry of the site's journal as an admin sees it."""

    txn_id: str
    seq: int
    account: str
    amount_cents: int
    kind: str
    enforcement: str
    occurred_at: str
    flags: list[str]
    ref: str | None
    status: str
    primary_seq: int | None
    reason: str | None  # why the primary rejected it


class JournalEntriesOut(BaseModel):
    entries: list[JournalEntryOut]
    next_seq: int  # ask again with after_seq=next_seq for the next page


class OutageOut(BaseModel):
    started_at: str
    ended_at: str | None
    detection_secs: float | None = None  # from the last good contact to the change to offline
    merge_secs: float | None = None  # from the link back to the journal drained
    offline_transactions: int
    offline_cents: int = 0  # what the entries of the outage charged


class TopSpenderOut(BaseModel):
    username: str
    cents: int


class OfflineExposureOut(BaseModel):
    """Offline charges not yet merged against the optional caps (null: no cap)."""

    site_cents: int
    top_user: TopSpenderOut | None
    site_cap_cents: int | None
    per_user_cap_cents: int | None


class TlsOut(BaseModel):
    """How the site serves (v1.1): HTTPS with this certificate, or plain HTTP."""

    serving: Literal["https", "http"]
    certificate: str | None = None
    fingerprint: str | None = None  # SHA256:AB:CD:… of the certificate, as an admin compares it
    generated: bool = False


class SiteStatusOut(BaseModel):
    site_id: str
    mode: Mode
    since: str | None
    mode_cause: str | None = None  # why the site changed to this mode (null: it never changed)
    primary: PrimaryOut
    sync: SyncOut
    journal: JournalCountsOut
    merge: MergeProgressOut | None = None
    outages: list[OutageOut]
    offline_exposure: OfflineExposureOut
    tls: TlsOut | None = None


class PullOut(BaseModel):
    cursor: int


class MergeNowOut(BaseModel):
    merged: int  # entries sent to the primary by this merge
    journal: JournalCountsOut


# -- the reconciliation report (v1.1) -----------------------------------------------------------


def _instant(v: str | None) -> str | None:
    """An ISO 8601 instant as the journal writes them (UTC, milliseconds, Z), so that windows
    compare as text; one without a zone is UTC."""
    if v is None:
        return None
    try:
        return iso(parse_iso(v))
    except ValueError as e:
        raise ValueError("must be an ISO 8601 instant, e.g. 2026-12-01T00:00:00Z") from e


Instant = Annotated[str, Field(min_length=10, max_length=40), AfterValidator(_instant)]


class ReportIn(Strict):
    since: Instant | None = None  # default: 30 days before `until`
    until: Instant | None = None  # default: now

    @model_validator(mode="after")
    def _ordered(self) -> ReportIn:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError("since must not be after until")
        return self


class ReportCreatedOut(BaseModel):
    report_id: str
    books_agree: bool | None = None  # the report's check, so a caller need not fetch it all
    verified_against_primary: bool = False
    summary: str = ""


class ConflictOut(BaseModel):
    """What the primary did with a merged charge it could not book exactly as the site made it
    (the sync API's merge answers and look-up, and the reports)."""

    kind: ConflictKind
    action: str  # what the primary did, in a sentence

    @classmethod
    def of(cls, c: MergeConflict | None) -> ConflictOut | None:
        return None if c is None else cls(kind=c.kind, action=c.action)

    def domain(self) -> MergeConflict:
        return MergeConflict(self.kind, self.action)


class ReportEntryOut(BaseModel):
    """One journal entry of the window, as the site and the primary each see it."""

    txn_id: str
    occurred_at: str
    username: str | None
    account: str
    kind: str
    printer: str | None
    pages: int | None
    amount_cents: int
    offline: bool
    flags: list[str]
    site_status: Literal["pending", "merged", "rejected"]
    primary_status: Literal["applied", "duplicate", "applied_with_conflict", "rejected"] | None
    primary_account: str | None
    primary_amount_cents: int | None
    primary_seq: int | None
    conflict: ConflictOut | None
    reason: str | None


class TotalOut(BaseModel):
    entries: int
    cents: int


class ReportTotalsOut(BaseModel):
    """Entries and cents of the window (rejected ones are not money, so not counted)."""

    by_user: dict[str, TotalOut]
    by_account: dict[str, TotalOut]
    by_printer: dict[str, TotalOut]
    by_kind: dict[str, TotalOut]


class ReportConflictOut(BaseModel):
    txn_id: str
    kind: str
    action: str


class MismatchOut(BaseModel):
    txn_id: str
    why: str


class ReportCheckOut(BaseModel):
    books_agree: bool | None  # null: the primary could not be asked
    verified_against_primary: bool
    entries_checked: int  # merged and rejected entries compared with the primary's ledger
    pending: int = 0  # entries the primary has not answered yet: listed, not mismatches
    site_total_cents: int  # what the site's merged entries of the window charged
    primary_total_cents: int | None  # what the primary's ledger holds for them now
    mismatches: list[MismatchOut]
    summary: str


class ReportOut(BaseModel):
    report_id: str
    site_id: str
    since: str
    until: str
    generated_at: str
    outages: list[OutageOut]
    entries: list[ReportEntryOut]
    totals: ReportTotalsOut
    conflicts: list[ReportConflictOut]
    check: ReportCheckOut


class PrimaryReportEntryOut(BaseModel):
    """A ledger row the primary booked from a site's journal."""

    txn_id: str
    seq: int
    occurred_at: str
    applied_at: str
    account: str  # the account booked
    requested_account: str | None  # the account the site's entry named, when a conflict moved it
    amount_cents: int
    kind: str
    flags: list[str]
    conflict: ConflictOut | None


class PrimaryReportOut(BaseModel):
    """What the primary received from one site in a window (when the branch machine is gone)."""

    site_id: str
    since: str
    until: str
    generated_at: str
    entries: list[PrimaryReportEntryOut]
    totals: ReportTotalsOut
    conflicts: list[ReportConflictOut]
