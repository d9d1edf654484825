"""The sync API (primary side): what site servers call, signed with the site's key (docs/sync.md).

Enrollment is the one unsigned call: its credential is the one-time token in the body. Every other
call needs a site signature (`SignedSite`); admin, device and provider tokens open nothing here,
and a site signature opens nothing elsewhere.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

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
