"""One FastAPI application for a role: its routers, the error handlers, and what the routes read
from `app.state` (the role's backend, credentials, ...). Both roles assemble theirs here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI

from . import errors


def build_app(*, title: str, description: str, routers: Sequence[APIRouter], **state: Any) -> FastAPI:
    """Routers are included in the order given: put the hot path (device routes) first, route
    matching walks the list in order."""
    app = FastAPI(title=title, version="1", description=description)
    for name, value in state.items():
        setattr(app.state, name, value)
    errors.install(app)
    for router in routers:
        app.include_router(router)
    return app
