"""Primary administration (admin token): users, accounts, printers, sites, machines, policies."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request, Response

from siteserver.domain import OfflinePolicies

from . import models as m
from .auth import Admin, Backend

router = APIRouter(prefix="/api/admin/v1", tags=["primary administration"])


def _name_in_path() -> Any:
    """A fresh Path() per parameter: FastAPI records the first parameter's name as the alias of a
    shared FieldInfo, so one instance reused for `{name}` would look for `{username}`."""
    return Path(min_length=1, max_length=128, pattern=m.NAME_PATTERN)


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": m.ErrorOut},
    404: {"model": m.ErrorOut},
    409: {"model": m.ErrorOut},
    422: {"model": m.ErrorOut},
}


@router.post("/users", status_code=201, response_model=m.UserOut, responses=_ERRORS)
async def create_user(body: m.UserCreate, _: Admin, backend: Backend) -> Any:
    return await backend.create_user(body)


@router.get("/users/{username}", response_model=m.UserOut, responses=_ERRORS)
async def get_user(_: Admin, backend: Backend, username: str = _name_in_path()) -> Any:
    return await backend.get_user(username)


@router.patch("/users/{username}", response_model=m.UserOut, responses=_ERRORS)
async def patch_user(body: m.UserPatch, _: Admin, backend: Backend, username: str = _name_in_path()) -> Any:
    return await backend.patch_user(username, body)


@router.delete("/users/{username}", status_code=204, responses=_ERRORS)
async def delete_user(_: Admin, backend: Backend, username: str = _name_in_path()) -> Response:
    await backend.delete_user(username)
    return Response(status_code=204)


@router.post("/users/{username}/adjustments", response_model=m.AdjustmentOut, responses=_ERRORS)
async def adjust(body: m.AdjustmentIn, _: Admin, backend: Backend, username: str = _name_in_path()) -> Any:
    return await backend.adjust(username, body)


@router.post("/shared-accounts", status_code=201, response_model=m.SharedAccountOut, responses=_ERRORS)
async def create_shared_account(body: m.SharedAccountCreate, _: Admin, backend: Backend) -> Any:
    return await backend.create_shared_account(body)


@router.get("/shared-accounts/{name}", response_model=m.SharedAccountOut, responses=_ERRORS)
async def get_shared_account(_: Admin, backend: Backend, name: str = _name_in_path()) -> Any:
    return await backend.get_shared_account(name)


@router.post("/printers", status_code=201, response_model=m.PrinterOut, responses=_ERRORS)
async def create_printer(body: m.PrinterCreate, _: Admin, backend: Backend) -> Any:
    return await backend.create_printer(body)


@router.get("/printers/{name}", response_model=m.PrinterOut, responses=_ERRORS)
async def get_printer(_: Admin, backend: Backend, name: str = _name_in_path()) -> Any:
    return await backend.get_printer(name)


@router.post("/sites", status_code=201, response_model=m.SiteCreated, responses=_ERRORS)
async def create_site(body: m.SiteCreate, _: Admin, backend: Backend) -> Any:
    return await backend.create_site(body)


@router.get("/sites", response_model=m.SitesOut, responses=_ERRORS)
async def list_sites(_: Admin, backend: Backend) -> Any:
    return await backend.list_sites()


def _site_id_in_path() -> Any:
    return Path(min_length=1, max_length=64, pattern=m.IDENT_PATTERN)


@router.patch("/sites/{site_id}", response_model=m.SiteOut, responses=_ERRORS)
async def patch_site(body: m.SitePatch, _: Admin, request: Request, site_id: str = _site_id_in_path()) -> Any:
    """Rename a site or disable it (a disabled site's signed sync calls get 403 site_disabled)."""
    return await request.app.state.sync.patch_site(site_id, body)


@router.post(
    "/sites/{site_id}/enrollment-token", status_code=201, response_model=m.SiteCreated, responses=_ERRORS
)
async def new_enrollment_token(_: Admin, request: Request, site_id: str = _site_id_in_path()) -> Any:
    """A new one-time enrollment token (a replaced site server); the site's old key stops working."""
    return await request.app.state.sync.new_enrollment_token(site_id)


@router.post("/devices", status_code=201, response_model=m.DeviceCreated, responses=_ERRORS)
async def create_device(body: m.DeviceCreate, _: Admin, backend: Backend) -> Any:
    return await backend.create_device(body)


@router.post("/providers", status_code=201, response_model=m.ProviderCreated, responses=_ERRORS)
async def create_provider(body: m.ProviderCreate, _: Admin, backend: Backend) -> Any:
    return await backend.create_provider(body)


@router.get("/offline-policies", response_model=OfflinePolicies, responses=_ERRORS)
async def get_policies(_: Admin, backend: Backend) -> Any:
    return await backend.get_policies()


@router.put("/offline-policies", response_model=OfflinePolicies, responses=_ERRORS)
async def put_policies(body: OfflinePolicies, _: Admin, backend: Backend) -> Any:
    return await backend.put_policies(body)


@router.get("/transactions", response_model=m.TransactionsOut, responses=_ERRORS)
async def transactions(
    _: Admin,
    backend: Backend,
    origin_site: str | None = Query(None, min_length=1, max_length=64, pattern=m.IDENT_PATTERN),
    since_seq: int = Query(0, ge=0, le=2**62),
    limit: int = Query(500, ge=1, le=10_000),
) -> Any:
    return await backend.transactions(origin_site, since_seq, limit)
