"""`X-Request-ID`: honoured when a client sends a sensible one, else made; returned on every
response and bound to every log line written while the request runs (siteserver.logs)."""

from __future__ import annotations

import re
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
#: what a client's id may be: short, and nothing a log line could be forged with
_SENSIBLE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == HEADER), b"")
        rid = given if _SENSIBLE.fullmatch(given) else uuid.uuid4().hex.encode()

        async def send_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, rid)]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=rid.decode()):
            await self.app(scope, receive, send_id)
