"""Device API (MFDs, terminals, release stations): served by the primary and by every site."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from . import models as m
from .auth import Backend, Device

router = APIRouter(prefix="/api/device/v1", tags=["device"])

SessionId = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": m.ErrorOut},
    404: {"model": m.ErrorOut},
    422: {"model": m.ErrorOut},
}


@router.post("/login", response_model=m.LoginOut, responses={**_ERRORS, 429: {"model": m.ErrorOut}})
async def login(body: m.LoginIn, device: Device, backend: Backend) -> Any:
    return await backend.login(device, body)


@router.get("/sessions/{session_id}/jobs", response_model=m.HeldJobsOut, responses=_ERRORS)
async def held_jobs(device: Device, backend: Backend, session_id: str = SessionId) -> Any:
    return await backend.held_jobs(device, session_id)


@router.post("/sessions/{session_id}/release", response_model=m.ReleaseOut, responses=_ERRORS)
async def release(body: m.ReleaseIn, device: Device, backend: Backend, session_id: str = SessionId) -> Any:
    return await backend.release(device, session_id, body)


@router.post(
    "/sessions/{session_id}/usage",
    response_model=m.UsageOut,
    responses={**_ERRORS, 409: {"model": m.ErrorOut}},
)
async def usage(body: m.UsageIn, device: Device, backend: Backend, session_id: str = SessionId) -> Any:
    return await backend.usage(device, session_id, body)


@router.post("/sessions/{session_id}/logout", response_model=m.LogoutOut, responses=_ERRORS)
async def logout(device: Device, backend: Backend, session_id: str = SessionId) -> Any:
    return backend.logout(device, session_id)
