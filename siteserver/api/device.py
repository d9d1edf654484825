"""Device API (MFDs, terminals, release stations): served by the primary and by every site."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from siteserver import contract

from .auth import Device
from .deps import DeviceDeskDep

router = APIRouter(prefix="/api/device/v1", tags=["device"])

SessionId = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": contract.ErrorOut},
    404: {"model": contract.ErrorOut},
    422: {"model": contract.ErrorOut},
}


@router.post(
    "/login", response_model=contract.LoginOut, responses={**_ERRORS, 429: {"model": contract.ErrorOut}}
)
async def login(body: contract.LoginIn, device: Device, desk: DeviceDeskDep) -> Any:
    return await desk.login(device, body)


@router.get("/sessions/{session_id}/jobs", response_model=contract.HeldJobsOut, responses=_ERRORS)
async def held_jobs(device: Device, desk: DeviceDeskDep, session_id: str = SessionId) -> Any:
    return await desk.held_jobs(device, session_id)


@router.post("/sessions/{session_id}/release", response_model=contract.ReleaseOut, responses=_ERRORS)
async def release(
    body: contract.ReleaseIn, device: Device, desk: DeviceDeskDep, session_id: str = SessionId
) -> Any:
    return await desk.release(device, session_id, body)


@router.post(
    "/sessions/{session_id}/usage",
    response_model=contract.UsageOut,
    responses={**_ERRORS, 409: {"model": contract.ErrorOut}},
)
async def usage(
    body: contract.UsageIn, device: Device, desk: DeviceDeskDep, session_id: str = SessionId
) -> Any:
    return await desk.usage(device, session_id, body)


@router.post("/sessions/{session_id}/logout", response_model=contract.LogoutOut, responses=_ERRORS)
async def logout(device: Device, desk: DeviceDeskDep, session_id: str = SessionId) -> Any:
    return desk.logout(device, session_id)
