"""Print provider API (print servers): submit jobs, long-poll releases, report printed pages."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query

from siteserver import contract

from .auth import Machine
from .deps import ProviderDeskDep

router = APIRouter(prefix="/api/provider/v1", tags=["provider"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": contract.ErrorOut},
    403: {"model": contract.ErrorOut},
    404: {"model": contract.ErrorOut},
    409: {"model": contract.ErrorOut},
    422: {"model": contract.ErrorOut},
}


@router.post("/jobs", response_model=contract.JobOut, responses=_ERRORS)
async def submit_job(body: contract.JobIn, cred: Machine, desk: ProviderDeskDep) -> Any:
    return await desk.submit_job(cred, body)


@router.get("/releases", response_model=contract.ReleasesOut, responses=_ERRORS)
async def releases(
    cred: Machine,
    desk: ProviderDeskDep,
    printer: str = Query(min_length=1, max_length=128, pattern=contract.NAME_PATTERN),
    wait: float = Query(0, ge=0, le=120, description="long-poll: seconds to wait for a release"),
) -> Any:
    return await desk.releases_for(cred, printer, wait)


@router.post("/jobs/{job_id}/printed", response_model=contract.PrintedOut, responses=_ERRORS)
async def printed(job_id: uuid.UUID, body: contract.PrintedIn, cred: Machine, desk: ProviderDeskDep) -> Any:
    return await desk.printed(cred, str(job_id), body)
