"""Print provider API (print servers): submit jobs, long-poll releases, report printed pages."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query

from . import models as m
from .auth import Backend, Machine

router = APIRouter(prefix="/api/provider/v1", tags=["provider"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": m.ErrorOut},
    403: {"model": m.ErrorOut},
    404: {"model": m.ErrorOut},
    409: {"model": m.ErrorOut},
    422: {"model": m.ErrorOut},
}


@router.post("/jobs", response_model=m.JobOut, responses=_ERRORS)
async def submit_job(body: m.JobIn, cred: Machine, backend: Backend) -> Any:
    return await backend.submit_job(cred, body)


@router.get("/releases", response_model=m.ReleasesOut, responses=_ERRORS)
async def releases(
    cred: Machine,
    backend: Backend,
    printer: str = Query(min_length=1, max_length=128, pattern=m.NAME_PATTERN),
    wait: float = Query(0, ge=0, le=120, description="long-poll: seconds to wait for a release"),
) -> Any:
    return await backend.releases_for(cred, printer, wait)


@router.post("/jobs/{job_id}/printed", response_model=m.PrintedOut, responses=_ERRORS)
async def printed(job_id: uuid.UUID, body: m.PrintedIn, cred: Machine, backend: Backend) -> Any:
    return await backend.printed(cred, str(job_id), body)
