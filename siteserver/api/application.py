"""One FastAPI application for a role: its routers, the error handlers, and its typed services
(`deps.Services`), which the routes reach through `deps`. Both roles assemble theirs here."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI

from siteserver.config import Http
from sync import wire

from . import errors
from .deps import Services
from .limits import BodyLimit
from .metrics import RequestTimer
from .metrics import router as metrics_router


def build_app(
    *, title: str, description: str, routers: Sequence[APIRouter], services: Services, http: Http
) -> FastAPI:
    """Routers are included in the order given: put the hot path (device routes) first, route
    matching walks the list in order."""
    app = FastAPI(title=title, version="1", description=description)
    app.state.services = services
    errors.install(app)
    for router in (*routers, metrics_router):
        app.include_router(router)
    journal = {wire.PREFIX + wire.MERGE_PATH: http.max_journal_body_bytes}
    app.add_middleware(BodyLimit, max_bytes=http.max_body_bytes, own_caps=journal)
    app.add_middleware(RequestTimer, metrics=services.metrics)
    return app
