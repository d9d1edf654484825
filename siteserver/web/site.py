"""The site's admin page (`/admin`): its mode and why, the primary's endpoints, sync lag, the
journal's backlog and oldest entry, merge progress, outages, offline exposure, rejected entries
(each retryable) and the form that makes a reconciliation report and opens its HTML. Every
figure comes from the same service as `GET /api/admin/v1/status`."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import ValidationError

from siteserver import contract
from siteserver.api.deps import SiteAdminDep
from siteserver.domain import DomainError

from .pages import HEADERS, Login, checked_form, page, problem, refused, see_other

router = APIRouter(prefix="/admin", include_in_schema=False)

#: rejected entries listed on the page (the API pages through all of them)
REJECTED_SHOWN = 50


def canonical_uuid(text: str) -> str | None:
    """A report or journal id as the site stores it; None for what is not a UUID."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, login: Login, site: SiteAdminDep) -> Response:
    if login is None:
        return see_other("/admin/login")
    status = await site.status()
    rejected = await site.journal("rejected", 0, REJECTED_SHOWN)
    return page(request, "site.html.j2", login=login, status=status, rejected=rejected.entries)


@router.post("/reports", response_class=HTMLResponse)
async def make_report(request: Request, login: Login, site: SiteAdminDep) -> Response:
    """Make a report of the window asked (blank: the last 30 days) and open its HTML."""
    form = await checked_form(request, login)
    if isinstance(form, Response):
        return form
    try:
        window = contract.ReportIn.model_validate(
            {k: form.get(k, "").strip() or None for k in ("since", "until")}
        )
    except ValidationError as e:
        why = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'window'}: {err['msg']}" for err in e.errors())
        return problem(
            request,
            422,
            f"The report's window is not valid ({why}): give ISO 8601 instants, e.g."
            " 2026-12-01T00:00:00Z, or leave them blank.",
            login,
        )
    made = await site.create_report(window)
    return see_other(f"/admin/reports/{made.report_id}")


@router.get("/reports/{report_id}", response_class=HTMLResponse)
async def show_report(request: Request, report_id: str, login: Login, site: SiteAdminDep) -> Response:
    if login is None:
        return see_other("/admin/login")
    known = canonical_uuid(report_id)
    if known is None:
        return problem(request, 404, f"There is no report {report_id!r}.", login)
    try:
        body, media_type = await site.report(known, "html")
    except DomainError as e:
        return refused(request, e, login)
    return StreamingResponse(body, media_type=media_type, headers=HEADERS)


@router.post("/journal/{txn_id}/retry", response_class=HTMLResponse)
async def retry(request: Request, txn_id: str, login: Login, site: SiteAdminDep) -> Response:
    """Merge a rejected entry again (as `POST /api/admin/v1/journal/{txn_id}/retry`)."""
    form = await checked_form(request, login)
    if isinstance(form, Response):
        return form
    known = canonical_uuid(txn_id)
    if known is None:
        return problem(request, 404, f"There is no journal entry {txn_id!r}.", login)
    try:
        await site.retry(known)
    except DomainError as e:
        return refused(request, e, login)
    return see_other("/admin")
