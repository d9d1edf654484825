"""Every error leaves as JSON `{"error", "detail"}` with a fitting 4xx; a 5xx is always a bug."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from siteserver.api.auth import check_route_credentials
from siteserver.domain import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    LockedOut,
    NotActive,
    NotFound,
    Shed,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger("siteserver.api")

STATUS = {
    NotFound: 404,
    Conflict: 409,
    Invalid: 422,
    Unauthorized: 401,
    Forbidden: 403,
    LockedOut: 429,
    Shed: 429,
    NotActive: 503,
    Unavailable: 503,
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "locked_out",
    503: "not_active",
}


def status_of(exc: DomainError) -> int:
    """The HTTP status of a refusal of the core (400 for one without its own)."""
    return next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 400)


def error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def retry_after(secs: float) -> dict[str, str]:
    """The Retry-After header (delta-seconds, at least 1) of a 429."""
    return {"Retry-After": str(max(1, round(secs)))}


def shed_response(exc: Shed) -> JSONResponse:
    return error(429, exc.code, exc.detail, retry_after(exc.retry_after_secs))


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:10]:
        where = ".".join(str(p) for p in e.get("loc", ()))
        msg = "unknown field" if e.get("type") == "extra_forbidden" else e.get("msg", "invalid")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts) or "invalid request"


def _disconnected(request: Request) -> JSONResponse:
    """The client went away while its request body was being read (a cut link, a stopped proxy):
    not a bug, and nothing of the half-read body was acted on. One line in the log; the answer
    goes nowhere (the server drops it), but it is still a well-formed 4xx."""
    log.info("client disconnected during %s %s: request dropped", request.method, request.url.path)
    return error(400, "client_disconnected", "the client disconnected before its request was read")


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        status = status_of(exc)
        headers = None
        if isinstance(exc, LockedOut | Shed):
            headers = retry_after(exc.retry_after_secs)
        return error(status, exc.code, exc.detail, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Credentials first: a malformed JSON body fails before the auth dependencies run.
        try:
            await check_route_credentials(request)
        except DomainError as e:
            return await domain_error(request, e)
        return error(422, "invalid_request", _validation_detail(exc))

    @app.exception_handler(ClientDisconnect)
    async def client_disconnect(request: Request, exc: ClientDisconnect) -> JSONResponse:
        return _disconnected(request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI wraps a cut body read in a 400
            return _disconnected(request)
        if exc.status_code in (400, 413):  # a body that cannot be read: credentials first, too
            try:
                await check_route_credentials(request)
            except DomainError as e:
                return await domain_error(request, e)
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error(500, "internal_error", "internal error (a bug): see the server log")
