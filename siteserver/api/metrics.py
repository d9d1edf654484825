"""`GET /metrics` (Prometheus text, the admin token or `metrics_token`) and the timing of every
HTTP request by its route template (never its path: no label takes a user, card or txn id)."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from siteserver import contract
from siteserver.metrics import CONTENT_TYPE, Metrics

from .auth import MetricsReader
from .deps import services_of

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}, 401: {"model": contract.ErrorOut}},
)
async def metrics(request: Request, _: MetricsReader) -> Response:
    """This role's metrics in the Prometheus text format."""
    registry = services_of(request).metrics
    # The state gauges read the database: off the event loop.
    return Response(await asyncio.to_thread(registry.render), media_type=CONTENT_TYPE)


class RequestTimer:
    """Observes each HTTP request's duration under its route template ("unmatched" for none)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.http.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )
