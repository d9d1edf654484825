"""Request bodies over their cap get 413 before the route reads them (config `[http]`).

Pure ASGI: a declared Content-Length over the cap is refused before a byte of the body is
read; a chunked body is counted as it arrives and refused once it passes the cap."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error


class _TooLarge(BaseException):
    """Not an Exception: FastAPI turns any Exception raised while reading a body into a 400."""


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, own_caps: dict[str, int]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.own_caps = own_caps  # path: its cap, for the calls that carry more (journal uploads)

    def _refuse(self, cap: int) -> ASGIApp:
        return error(413, "too_large", f"the request body is over this call's limit of {cap} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.own_caps.get(scope["path"], self.max_bytes)
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > cap):
                await self._refuse(cap)(scope, receive, send)
                return
            chunked = chunked or name == b"transfer-encoding"
        if not chunked:  # no body, or one the HTTP parser holds to its declared length
            await self.app(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if started:  # the route answered before reading it all: nothing more to say
                return
            await self._refuse(cap)(scope, receive, send)
