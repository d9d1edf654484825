"""The sync API (primary side): what site servers call, signed with the site's key (docs/sync.md).
Paths and models are `sync.wire`'s, the service is `sync.service.SyncService`.

Enrollment is the one unsigned call: its credential is the one-time token in the body. Every other
call needs a site signature (`SignedSite`); admin, device and provider tokens open nothing here,
and a site signature opens nothing elsewhere.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from siteserver import contract
from sync import wire
from sync.apply import MergeGate
from sync.errors import UnreadableUpload

from .auth import EnrollmentToken, RawBodyRoute, SignedSite, raw_body
from .deps import SyncDep
from .errors import shed_response

ScopeQuery = Annotated[wire.MirrorScope, Query(description="`home`: only the site's own people")]

router = APIRouter(prefix=wire.PREFIX, tags=["sync (site signature)"], route_class=RawBodyRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": contract.ErrorOut},
    403: {"model": contract.ErrorOut},
    422: {"model": contract.ErrorOut},
}


@router.post(wire.ENROLL_PATH, response_model=wire.EnrollOut, responses=_ERRORS)
async def enroll(body: wire.EnrollIn, _: EnrollmentToken, sync: SyncDep) -> wire.EnrollOut:
    """Register the site's public key with its one-time enrollment token; answers the hashing
    pepper the site needs (send it over TLS only)."""
    return await sync.sites.enroll(body)


@router.post(wire.HEARTBEAT_PATH, response_model=wire.HeartbeatOut, responses=_ERRORS)
async def heartbeat(body: wire.HeartbeatIn, site_id: SignedSite, sync: SyncDep) -> wire.HeartbeatOut:
    """The site's mode and journal backlog, shown to admins in `GET /api/admin/v1/sites`."""
    return await sync.sites.heartbeat(site_id, body)


@router.get(
    wire.SNAPSHOT_PATH,
    response_class=StreamingResponse,
    responses={
        **_ERRORS,
        200: {
            "content": {wire.SNAPSHOT_MEDIA_TYPE: {}},
            "description": "NDJSON: a `begin` line, one `row` line per mirrored row, an `end` line.",
        },
    },
)
async def snapshot(site_id: SignedSite, sync: SyncDep, scope: ScopeQuery = "all") -> StreamingResponse:
    """Every row the site mirrors, at one cursor, streamed as NDJSON (docs/sync.md); `scope=home`:
    of the organisation's people only those whose `home_sites` name the site."""
    home = site_id if scope == "home" else None
    return StreamingResponse(sync.feed.snapshot(home), media_type=wire.SNAPSHOT_MEDIA_TYPE)


@router.get(wire.CHANGES_PATH, response_model=wire.ChangesOut, responses=_ERRORS)
async def changes(
    site_id: SignedSite,
    sync: SyncDep,
    after: Annotated[int, Query(ge=0, le=2**62)],
    wait: Annotated[float, Query(ge=0, le=wire.MAX_CHANGES_WAIT_SECS)] = 0,
    limit: Annotated[int, Query(ge=1, le=wire.MAX_CHANGES_LIMIT)] = 1000,
    scope: ScopeQuery = "all",
) -> Response:
    """The rows changed after the cursor `after`, each as it is now (null: deleted); long-polls up
    to `wait` seconds when there is nothing yet. `reset: true`: bootstrap from a snapshot again.
    `scope=home`: as the snapshot of that scope."""
    page = await sync.feed.changes(after, wait, limit, site_id if scope == "home" else None)
    return Response(page.body, media_type="application/json")  # encoded once, off the loop


#: bodies the routes parse elsewhere (`merge_body`): the OpenAPI document names their schemas
SELF_PARSED_BODIES: tuple[type[BaseModel], ...] = (wire.MergeIn,)


async def merge_body(request: Request, _: SignedSite) -> bytes:
    """An upload's raw bytes, once its signature holds: the merge worker parses them in its own
    process (sync.worker), so the event loop that serves devices does not."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind != "application/json":
        raise RequestValidationError(
            [{"type": "json_type", "loc": ("body",), "msg": "the body must be application/json"}]
        )
    return await raw_body(request)


@router.post(
    wire.MERGE_PATH,
    response_model=wire.MergeOut,
    responses={**_ERRORS, 429: {"model": contract.ErrorOut}, 503: {"model": contract.ErrorOut}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MergeIn"}}},
        }
    },
)
async def merge(
    body: Annotated[bytes, Depends(merge_body)],
    site_id: SignedSite,
    sync: SyncDep,
    background: Annotated[bool, Query(alias=wire.BACKGROUND)] = False,
) -> Response:
    """Merge a site's journal entries: applied at most once per txn_id, one result per entry, a
    receipt. `background=true`: the site's drain, which the primary may shed while another site
    merges (429 with Retry-After)."""
    try:
        out = await sync.apply.merge(site_id, body, background=background)
    except UnreadableUpload as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors]) from None
    return Response(out, media_type="application/json")  # the worker's encoding, not validated again


class MergeShedding:
    """Sheds a background merge (`?background=true`) that the gate would turn away, before its
    body (up to 5000 entries) is read, checked and parsed: turning a site away costs nothing.
    Only a peek: the gate is taken by the signed request itself (`Apply.merge`)."""

    def __init__(self, app: ASGIApp, gate: MergeGate) -> None:
        self.app = app
        self.gate = gate
        self.path = wire.url_path(wire.MERGE_PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path and _background(scope):
            site = dict(scope["headers"]).get(b"x-site-id", b"").decode("latin-1")
            shed = self.gate.refusal(site)
            if shed is not None:
                await shed_response(shed)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _background(scope: Scope) -> bool:
    query = parse_qs(scope["query_string"].decode("latin-1"))
    return query.get(wire.BACKGROUND) == ["true"]


@router.post(wire.LOOKUP_PATH, response_model=wire.LookupOut, responses=_ERRORS)
async def lookup(body: wire.LookupIn, site_id: SignedSite, sync: SyncDep) -> Response:
    """The primary's ledger rows, as they stand now, of up to 5000 of the asking site's txn_ids
    (a reconciliation report's check): none for a txn_id never applied."""
    return Response(await sync.apply.lookup(site_id, body), media_type="application/json")
