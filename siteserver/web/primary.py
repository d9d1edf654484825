"""The primary's admin page (`/admin`): the fleet, each site's mode, last contact (coloured by
its age against the fleet health's allowance), backlog, last outage, entries merged in the last
24 hours, and a link to the primary's side of its reconciliation report."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from siteserver import contract
from siteserver.api.deps import PrimaryAdminDep
from siteserver.domain import DomainError

from .pages import HEADERS, Login, page, refused, see_other

router = APIRouter(prefix="/admin", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
async def fleet(request: Request, login: Login, admin: PrimaryAdminDep) -> Response:
    if login is None:
        return see_other("/admin/login")
    sites = await admin.fleet()
    health = await admin.fleet_health()
    return page(request, "fleet.html.j2", login=login, sites=sites, health=health)


@router.get("/sites/{site_id}/report")
async def site_report(request: Request, site_id: str, login: Login, admin: PrimaryAdminDep) -> Response:
    """What the primary received from the site in the last 30 days (as
    `GET /api/admin/v1/sites/{site_id}/report`), for when the branch machine is gone."""
    if login is None:
        return see_other("/admin/login")
    try:
        body = await admin.site_report(site_id, contract.ReportIn())
    except DomainError as e:
        return refused(request, e, login)
    return StreamingResponse(body, media_type="application/json", headers=HEADERS)
