"""Site administration (the site's admin token) and the site's health URL. Served by the site
server only; see CONTRACT.md, "Site administration"."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import APIRouter, Request
from pydantic import BaseModel

from siteserver.site.mirror import SyncFailed, read_state
from siteserver.site.status import mode_of, site_status
from siteserver.store import journal

from . import models as m
from .auth import Admin
from .errors import error

router = APIRouter(prefix="/api/admin/v1", tags=["site administration"])
health_router = APIRouter(tags=["health"])

_ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": m.ErrorOut}, 503: {"model": m.ErrorOut}}


class SiteHealthOut(BaseModel):
    status: str
    mode: str


class EndpointOut(BaseModel):
    url: str
    state: str
    last_ok_at: str | None


class PrimaryOut(BaseModel):
    active: str | None
    endpoints: list[EndpointOut]


class SyncOut(BaseModel):
    cursor: int | None
    last_sync_at: str | None
    lag_secs: float | None


class JournalOut(BaseModel):
    pending: int
    merged: int
    rejected: int


class OutageOut(BaseModel):
    started_at: str
    ended_at: str | None
    offline_transactions: int


class TopSpenderOut(BaseModel):
    username: str
    cents: int


class OfflineExposureOut(BaseModel):
    """Offline charges not yet merged against the optional caps (null: no cap)."""

    site_cents: int
    top_user: TopSpenderOut | None
    site_cap_cents: int | None
    per_user_cap_cents: int | None


class SiteStatusOut(BaseModel):
    site_id: str
    mode: str
    since: str | None
    primary: PrimaryOut
    sync: SyncOut
    journal: JournalOut
    outages: list[OutageOut]
    offline_exposure: OfflineExposureOut


class PullOut(BaseModel):
    cursor: int


class MergeOut(BaseModel):
    pushed: int
    journal: JournalOut


@health_router.get("/api/health/site-server/status", response_model=SiteHealthOut)
async def site_health(request: Request) -> Any:
    """No credential: a monitor polls it. `mode` is online, offline or reconciling."""
    state = await request.app.state.db.read(read_state)
    return {"status": "OK", "mode": mode_of(state)}


@router.get("/status", response_model=SiteStatusOut, responses=_ERRORS)
async def status(_: Admin, request: Request) -> Any:
    """Mode, primary endpoints, sync cursor and lag, journal backlog and outages."""
    site = request.app.state.site
    view = site.endpoints.view()
    caps = site.config.offline
    return await site.db.read(lambda d: site_status(d, site.config.site_id, view, caps))


@router.post("/sync", response_model=PullOut, responses=_ERRORS)
async def sync_now(_: Admin, request: Request) -> Any:
    """Pull from the primary now; answers after one pull completed, with the new cursor."""
    site = request.app.state.site
    try:
        cursor = await asyncio.to_thread(site.mirror.pull_now)
    except (httpx.HTTPError, SyncFailed) as e:
        return error(503, "primary_unreachable", f"the pull from the primary failed: {e or type(e).__name__}")
    return {"cursor": cursor}


@router.post("/merge", response_model=MergeOut, responses=_ERRORS)
async def merge_now(_: Admin, request: Request) -> Any:
    """Push the pending journal to the primary now (in batches, oldest first); answers with how
    many entries were sent and the journal counts after the primary's verdicts were recorded."""
    site = request.app.state.site
    pushed = 0
    for _round in range(100):  # bounded: entries keep arriving while the site serves
        sent = await asyncio.to_thread(site.pusher.push_pending_once)
        if sent < 0:
            return error(503, "primary_unreachable", "the primary did not answer the journal upload")
        pushed += sent
        if sent == 0:
            break
    return {"pushed": pushed, "journal": await site.db.read(journal.counts)}
