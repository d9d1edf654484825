"""Health URLs: what a load balancer (primary) or a monitor (site) polls. No bearer token: the
primary's takes its key as a query parameter, as load balancers need."""

from __future__ import annotations

import shutil
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from siteserver import contract
from siteserver.domain import same_secret

from .deps import PrimaryAdminDep, PrimaryHealthDep

router = APIRouter(tags=["health"])


@router.get(
    "/api/health/application-server/status",
    response_model=contract.PrimaryHealthOut,
    responses={401: {"model": contract.ErrorOut}, 503: {"model": contract.PrimaryHealthOut}},
)
async def primary_health(
    health: PrimaryHealthDep,
    disk_threshold_mb: int = Query(0, alias="disk-threshold-mb", ge=0, le=2**40),
    authorization: str = Query("", alias="Authorization", max_length=512),
) -> Any:
    if not same_secret(authorization, health.health_key):
        return JSONResponse({"error": "unauthorized", "detail": "wrong or missing health key"}, 401)
    member = health.member
    if not member.is_active():
        status = "STARTING" if member.starting else "PASSIVE"
        return JSONResponse({"status": status, "role": "passive"}, 503)
    free_mb = shutil.disk_usage(health.database.parent).free // (1024 * 1024)
    body = {
        "status": "OK",
        "role": "active",
        "server_uuid": member.server_uuid,
        "epoch": member.epoch,
        "disk_free_mb": free_mb,
    }
    if free_mb < disk_threshold_mb:
        return JSONResponse({**body, "status": "DISK_LOW"}, 503)
    return body


@router.get(
    "/api/health/site-servers/status",
    response_model=contract.FleetHealthOut,
    responses={401: {"model": contract.ErrorOut}, 503: {"model": contract.FleetHealthOut}},
)
async def fleet_health(
    health: PrimaryHealthDep,
    admin: PrimaryAdminDep,
    authorization: str = Query("", alias="Authorization", max_length=512),
) -> Any:
    """For monitoring tools: 200 when every enrolled, enabled site was heard from within three
    of its heartbeats, else 503 with the sites that were not."""
    if not same_secret(authorization, health.health_key):
        return JSONResponse({"error": "unauthorized", "detail": "wrong or missing health key"}, 401)
    body = await admin.fleet_health()
    return JSONResponse(body.model_dump(), 503 if body.late else 200)
