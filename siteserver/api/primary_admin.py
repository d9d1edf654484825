"""Primary administration (admin token): users, accounts, printers, sites, machines, policies."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import StreamingResponse

from siteserver import contract
from siteserver.domain import OfflinePolicies

from .auth import Admin
from .deps import PrimaryAdminDep

router = APIRouter(prefix="/api/admin/v1", tags=["primary administration"])


def _name_in_path() -> Any:
    """A fresh Path() per parameter: FastAPI records the first parameter's name as the alias of a
    shared FieldInfo, so one instance reused for `{name}` would look for `{username}`."""
    return Path(min_length=1, max_length=128, pattern=contract.NAME_PATTERN)


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": contract.ErrorOut},
    404: {"model": contract.ErrorOut},
    409: {"model": contract.ErrorOut},
    422: {"model": contract.ErrorOut},
}


@router.post("/users", status_code=201, response_model=contract.UserOut, responses=_ERRORS)
async def create_user(body: contract.UserCreate, _: Admin, admin: PrimaryAdminDep) -> Any:
    return await admin.create_user(body)


@router.get("/users/{username}", response_model=contract.UserOut, responses=_ERRORS)
async def get_user(_: Admin, admin: PrimaryAdminDep, username: str = _name_in_path()) -> Any:
    return await admin.get_user(username)


@router.patch("/users/{username}", response_model=contract.UserOut, responses=_ERRORS)
async def patch_user(
    body: contract.UserPatch, _: Admin, admin: PrimaryAdminDep, username: str = _name_in_path()
) -> Any:
    return await admin.patch_user(username, body)


@router.delete("/users/{username}", status_code=204, responses=_ERRORS)
async def delete_user(_: Admin, admin: PrimaryAdminDep, username: str = _name_in_path()) -> Response:
    await admin.delete_user(username)
    return Response(status_code=204)


@router.post("/users/{username}/adjustments", response_model=contract.AdjustmentOut, responses=_ERRORS)
async def adjust(
    body: contract.AdjustmentIn, _: Admin, admin: PrimaryAdminDep, username: str = _name_in_path()
) -> Any:
    return await admin.adjust(username, body)


@router.post("/shared-accounts", status_code=201, response_model=contract.SharedAccountOut, responses=_ERRORS)
async def create_shared_account(body: contract.SharedAccountCreate, _: Admin, admin: PrimaryAdminDep) -> Any:
    return await admin.create_shared_account(body)


@router.get("/shared-accounts/{name}", response_model=contract.SharedAccountOut, responses=_ERRORS)
async def get_shared_account(_: Admin, admin: PrimaryAdminDep, name: str = _name_in_path()) -> Any:
    return await admin.get_shared_account(name)


@router.patch("/shared-accounts/{name}", response_model=contract.SharedAccountOut, responses=_ERRORS)
async def patch_shared_account(
    body: contract.SharedAccountPatch, _: Admin, admin: PrimaryAdminDep, name: str = _name_in_path()
) -> Any:
    """Change any field of the create call; `members` replaces the list."""
    return await admin.patch_shared_account(name, body)


@router.delete("/shared-accounts/{name}", status_code=204, responses=_ERRORS)
async def delete_shared_account(_: Admin, admin: PrimaryAdminDep, name: str = _name_in_path()) -> Response:
    """Close the account: no more charges, its ledger kept; 409 while the offline policies name it."""
    await admin.delete_shared_account(name)
    return Response(status_code=204)


@router.post("/printers", status_code=201, response_model=contract.PrinterOut, responses=_ERRORS)
async def create_printer(body: contract.PrinterCreate, _: Admin, admin: PrimaryAdminDep) -> Any:
    return await admin.create_printer(body)


@router.get("/printers/{name}", response_model=contract.PrinterOut, responses=_ERRORS)
async def get_printer(_: Admin, admin: PrimaryAdminDep, name: str = _name_in_path()) -> Any:
    return await admin.get_printer(name)


@router.post("/sites", status_code=201, response_model=contract.SiteCreated, responses=_ERRORS)
async def create_site(body: contract.SiteCreate, _: Admin, admin: PrimaryAdminDep) -> Any:
    return await admin.create_site(body)


@router.get("/sites", response_model=contract.SitesOut, responses=_ERRORS)
async def list_sites(_: Admin, admin: PrimaryAdminDep) -> Any:
    return await admin.list_sites()


def _site_id_in_path() -> Any:
    return Path(min_length=1, max_length=64, pattern=contract.IDENT_PATTERN)


@router.patch("/sites/{site_id}", response_model=contract.SiteOut, responses=_ERRORS)
async def patch_site(
    body: contract.SitePatch, _: Admin, admin: PrimaryAdminDep, site_id: str = _site_id_in_path()
) -> Any:
    """Rename a site or disable it (a disabled site's signed sync calls get 403 site_disabled)."""
    return await admin.patch_site(site_id, body)


@router.post(
    "/sites/{site_id}/enrollment-token",
    status_code=201,
    response_model=contract.SiteCreated,
    responses=_ERRORS,
)
async def new_enrollment_token(_: Admin, admin: PrimaryAdminDep, site_id: str = _site_id_in_path()) -> Any:
    """A new one-time enrollment token (a replaced site server); the site's old key stops working."""
    return await admin.new_enrollment_token(site_id)


@router.get(
    "/sites/{site_id}/report",
    response_class=StreamingResponse,
    responses={
        **_ERRORS,
        200: {"model": contract.PrimaryReportOut, "description": "what the primary received from the site"},
    },
)
async def site_report(
    window: Annotated[contract.ReportIn, Query()],
    _: Admin,
    admin: PrimaryAdminDep,
    site_id: str = _site_id_in_path(),
) -> StreamingResponse:
    """The primary's side of a site's reconciliation report: every ledger row merged from the
    site whose charge occurred in the window (`since`/`until`, default the last 30 days), with
    the conflicts the primary settled, and totals. For when the branch machine is gone."""
    return StreamingResponse(await admin.site_report(site_id, window), media_type="application/json")


@router.post("/devices", status_code=201, response_model=contract.DeviceCreated, responses=_ERRORS)
async def create_device(body: contract.DeviceCreate, _: Admin, admin: PrimaryAdminDep) -> Any:
    return await admin.create_device(body)


@router.post("/providers", status_code=201, response_model=contract.ProviderCreated, responses=_ERRORS)
async def create_provider(body: contract.ProviderCreate, _: Admin, admin: PrimaryAdminDep) -> Any:
    return await admin.create_provider(body)


@router.get("/offline-policies", response_model=OfflinePolicies, responses=_ERRORS)
async def get_policies(_: Admin, admin: PrimaryAdminDep) -> Any:
    return await admin.get_policies()


@router.put("/offline-policies", response_model=OfflinePolicies, responses=_ERRORS)
async def put_policies(body: OfflinePolicies, _: Admin, admin: PrimaryAdminDep) -> Any:
    return await admin.put_policies(body)


@router.get("/transactions", response_model=contract.TransactionsOut, responses=_ERRORS)
async def transactions(
    _: Admin,
    admin: PrimaryAdminDep,
    origin_site: str | None = Query(None, min_length=1, max_length=64, pattern=contract.IDENT_PATTERN),
    since_seq: int = Query(0, ge=0, le=2**62),
    limit: int = Query(500, ge=1, le=10_000),
) -> Any:
    return await admin.transactions(origin_site, since_seq, limit)
