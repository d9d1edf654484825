"""One FastAPI application for a role: its routers, the error handlers, and its typed services
(`deps.Services`), which the routes reach through `deps`. Both roles assemble theirs here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel
from starlette.middleware import Middleware

from siteserver.config import Http
from sync import wire

from . import errors
from .deps import Services
from .limits import BodyLimit
from .metrics import RequestTimer
from .metrics import router as metrics_router
from .request_id import RequestId


def build_app(
    *,
    title: str,
    description: str,
    routers: Sequence[APIRouter],
    services: Services,
    http: Http,
    middleware: Sequence[Middleware] = (),
    self_parsed_bodies: Sequence[type[BaseModel]] = (),
) -> FastAPI:
    """Routers are included in the order given: put the hot path (device routes) first, route
    matching walks the list in order. A role's own `middleware` runs inside the request id and
    the timer (its answers carry both), the first given outermost. `self_parsed_bodies`: the
    models of request bodies that routes parse themselves, named in the OpenAPI document."""
    app = FastAPI(title=title, version="1", description=description)
    if self_parsed_bodies:
        _document_bodies(app, self_parsed_bodies)
    app.state.services = services
    errors.install(app)
    for router in (*routers, metrics_router):
        app.include_router(router)
    journal = {wire.PREFIX + wire.MERGE_PATH: http.max_journal_body_bytes}
    app.add_middleware(BodyLimit, max_bytes=http.max_body_bytes, own_caps=journal)
    for m in reversed(middleware):
        app.add_middleware(m.cls, *m.args, **m.kwargs)
    app.add_middleware(RequestTimer, metrics=services.metrics)
    app.add_middleware(RequestId)
    return app


def _document_bodies(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Add these models (and the models they hold) to the OpenAPI document's schemas, where the
    routes' `openapi_extra` request bodies point."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = make()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
        return app.openapi_schema or make()

    app.openapi = openapi  # type: ignore[method-assign]
