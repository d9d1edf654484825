"""The sync API (primary side): what site servers call, signed with the site's key (docs/sync.md).

Enrollment is the one unsigned call: its credential is the one-time token in the body. Every other
call needs a site signature (`SignedSite`); admin, device and provider tokens open nothing here,
and a site signature opens nothing elsewhere.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from sync import models as sm

from . import models as m
from .auth import EnrollmentToken, RawBodyRoute, SignedSite

router = APIRouter(prefix="/api/sync/v1", tags=["sync (site signature)"], route_class=RawBodyRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": m.ErrorOut},
    403: {"model": m.ErrorOut},
    422: {"model": m.ErrorOut},
}


@router.post("/enroll", response_model=m.EnrollOut, responses=_ERRORS)
async def enroll(body: m.EnrollIn, _: EnrollmentToken, request: Request) -> Any:
    """Register the site's public key with its one-time enrollment token; answers the hashing
    pepper the site needs (send it over TLS only)."""
    return await request.app.state.sync.enroll(body)


@router.post("/heartbeat", response_model=m.HeartbeatOut, responses=_ERRORS)
async def heartbeat(body: m.HeartbeatIn, site_id: SignedSite, request: Request) -> Any:
    """The site's mode and journal backlog, shown to admins in `GET /api/admin/v1/sites`."""
    return await request.app.state.sync.heartbeat(site_id, body)


@router.get(
    "/snapshot",
    response_class=StreamingResponse,
    responses={
        **_ERRORS,
        200: {
            "content": {sm.SNAPSHOT_MEDIA_TYPE: {}},
            "description": "NDJSON: a `begin` line, one `row` line per mirrored row, an `end` line.",
        },
    },
)
async def snapshot(site_id: SignedSite, request: Request) -> StreamingResponse:
    """Every row the site mirrors, at one cursor, streamed as NDJSON (docs/sync.md)."""
    return StreamingResponse(request.app.state.sync.snapshot(), media_type=sm.SNAPSHOT_MEDIA_TYPE)


@router.get("/changes", response_model=sm.ChangesOut, responses=_ERRORS)
async def changes(
    site_id: SignedSite,
    request: Request,
    after: Annotated[int, Query(ge=0, le=2**62)],
    wait: Annotated[float, Query(ge=0, le=sm.MAX_CHANGES_WAIT_SECS)] = 0,
    limit: Annotated[int, Query(ge=1, le=sm.MAX_CHANGES_LIMIT)] = 1000,
) -> Any:
    """The rows changed after the cursor `after`, each as it is now (null: deleted); long-polls up
    to `wait` seconds when there is nothing yet. `reset: true`: bootstrap from a snapshot again."""
    return await request.app.state.sync.changes(after, wait, limit)


@router.post("/journal", response_model=sm.JournalOut, responses=_ERRORS)
async def journal(body: sm.JournalIn, site_id: SignedSite, request: Request) -> Any:
    """Upload journal entries: applied at most once per txn_id, one result per entry, a receipt."""
    return await request.app.state.sync.upload_journal(site_id, body)
