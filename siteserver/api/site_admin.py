"""Site administration (the site's admin token) and the site's health URL. Served by the site
server only; see CONTRACT.md, "Site administration". The service is `admin.site.SiteAdmin`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from siteserver import contract
from siteserver.admin.site import ReportFormat
from siteserver.domain.merge import JournalStatus

from .auth import Admin
from .deps import SiteAdminDep

router = APIRouter(prefix="/api/admin/v1", tags=["site administration"])
health_router = APIRouter(tags=["health"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": contract.ErrorOut},
    503: {"model": contract.ErrorOut},
}


@health_router.get("/api/health/site-server/status", response_model=contract.SiteHealthOut)
async def site_health(site: SiteAdminDep) -> contract.SiteHealthOut:
    """No credential: a monitor polls it. `mode` is online, offline or reconciling."""
    return await site.health()


@router.get("/status", response_model=contract.SiteStatusOut, responses=_ERRORS)
async def status(_: Admin, site: SiteAdminDep) -> contract.SiteStatusOut:
    """Mode, primary endpoints, sync cursor and lag, journal backlog and outages."""
    return await site.status()


@router.post("/sync", response_model=contract.PullOut, responses=_ERRORS)
async def sync_now(_: Admin, site: SiteAdminDep) -> contract.PullOut:
    """Pull from the primary now; answers after one pull completed, with the new cursor."""
    return await site.pull_now()


@router.get("/journal", response_model=contract.JournalEntriesOut, responses=_ERRORS)
async def journal(
    _: Admin,
    site: SiteAdminDep,
    status: JournalStatus = "rejected",
    after_seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> contract.JournalEntriesOut:
    """The site's journal entries of one status (default: rejected ones, with the primary's reason),
    oldest first, a page at a time."""
    return await site.journal(status, after_seq, limit)


@router.post(
    "/journal/{txn_id}/retry",
    response_model=contract.JournalEntryOut,
    responses={**_ERRORS, 404: {"model": contract.ErrorOut}, 409: {"model": contract.ErrorOut}},
)
async def retry(txn_id: uuid.UUID, _: Admin, site: SiteAdminDep) -> contract.JournalEntryOut:
    """Merge a rejected entry again (a charge that happened, e.g. once its account is back on the
    primary): it is pending again at once; 409 for an entry that is not rejected or not a fact."""
    return await site.retry(str(txn_id))


@router.post("/merge", response_model=contract.MergeNowOut, responses=_ERRORS)
async def merge_now(_: Admin, site: SiteAdminDep) -> contract.MergeNowOut:
    """Merge the pending journal into the primary now (in batches, oldest first); answers with how
    many entries were sent and the journal counts after the primary's verdicts were recorded."""
    return await site.merge_now()


@router.post(
    "/reports/reconciliation",
    status_code=201,
    response_model=contract.ReportCreatedOut,
    responses={**_ERRORS, 422: {"model": contract.ErrorOut}},
)
async def create_report(body: contract.ReportIn, _: Admin, site: SiteAdminDep) -> contract.ReportCreatedOut:
    """Make a reconciliation report of the window (`since`/`until`, ISO 8601; default: the last 30
    days): every journal entry checked against the primary's ledger as it stands. Answers once it
    is made, with its id and the check's verdict; a primary that cannot be reached makes a report
    that says so (`verified_against_primary: false`)."""
    return await site.create_report(body)


@router.get(
    "/reports/reconciliation/{report_id}",
    response_class=StreamingResponse,
    responses={
        **_ERRORS,
        404: {"model": contract.ErrorOut},
        200: {
            "description": "the report: JSON (ReportOut), CSV (one row per entry) or one printable HTML page",
            "model": contract.ReportOut,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "text/html": {"schema": {"type": "string"}},
            },
        },
    },
)
async def get_report(
    report_id: uuid.UUID, _: Admin, site: SiteAdminDep, format: ReportFormat = "json"
) -> StreamingResponse:
    """A report made before, streamed in the asked format."""
    body, media_type = await site.report(str(report_id), format)
    return StreamingResponse(body, media_type=media_type)
