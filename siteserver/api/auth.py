"""Credentials as dependencies. Admin tokens, device/provider tokens and site signatures are
separate realms: a credential of one realm is simply unknown (401) to the others."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from siteserver.domain import Forbidden, Unauthorized, same_secret
from siteserver.store.catalog import MachineCredential
from sync.sites import invalid_enrollment

from .deps import Services, services_of, sync_of

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")


def _token(creds: HTTPAuthorizationCredentials | None) -> str:
    if creds is None or not creds.credentials:
        raise Unauthorized("missing credential: send Authorization: Bearer <token>")
    return creds.credentials


def is_admin_token(services: Services, token: str) -> bool:
    """The role's admin token (the API's bearer, the pages' login form)."""
    return bool(token) and same_secret(token, services.admin_token)


async def require_admin(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    if not is_admin_token(services_of(request), _token(creds)):
        raise Unauthorized("not a valid admin token")


async def require_metrics_reader(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """The admin token, or the role's `metrics_token`, which opens `GET /metrics` alone."""
    token = _token(creds)
    services = services_of(request)
    extra = services.metrics_token
    if not (is_admin_token(services, token) or (extra is not None and same_secret(token, extra))):
        raise Unauthorized("not a valid admin or metrics token")


async def require_machine(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> MachineCredential:
    token = _token(creds)
    cred = await services_of(request).desk.machines.credential(token)
    if cred is None:
        raise Unauthorized("not a valid device or provider token")
    return cred


async def require_device(
    cred: Annotated[MachineCredential, Depends(require_machine)],
) -> MachineCredential:
    if cred.kind != "device":
        raise Forbidden("this endpoint needs a device token, not a print provider token")
    return cred


# -- site signatures (sync API) ------------------------------------------------------------------

_RAW_BODY = "siteserver.raw_body"
_SIGNED_SITE = "siteserver.signed_site"
_MAX_ENROLL_BODY = 4096


class RawBodyRoute(APIRoute):
    """Keeps the raw request body in the ASGI scope: a signature covers the exact bytes, and the
    error handlers (which get a new Request) must be able to check it when the body is not JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def keep_body(request: Request) -> Response:
            request.scope[_RAW_BODY] = await request.body()
            return await handler(request)

        return keep_body


async def raw_body(request: Request) -> bytes:
    cached = request.scope.get(_RAW_BODY)
    if isinstance(cached, bytes):
        return cached
    return await request.body()


async def require_site_signature(request: Request) -> str:
    """A request signed by an enrolled, enabled site's key, fresh and not seen before (see
    sync.signing). Checked once per request: the nonce it records would make a second check a
    replay."""
    done = request.scope.get(_SIGNED_SITE)
    if isinstance(done, str):
        return done
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else request.url.path
    query = request.scope.get("query_string", b"").decode("latin-1")
    site_id = await sync_of(request).sites.authenticate(
        request.method, path, query, await raw_body(request), request.headers
    )
    request.scope[_SIGNED_SITE] = site_id
    return site_id


async def require_enrollment_token(request: Request) -> None:
    """Enrollment's credential is the one-time token in the body: without a token valid for the
    named site the answer is 401, whatever else the body holds (it is consumed by the enroll
    call itself, in one write transaction)."""
    body = await raw_body(request)
    if len(body) > _MAX_ENROLL_BODY:
        raise invalid_enrollment()
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        raise invalid_enrollment() from None
    site_id = data.get("site_id") if isinstance(data, dict) else None
    token = data.get("enrollment_token") if isinstance(data, dict) else None
    if not (isinstance(site_id, str) and isinstance(token, str) and 0 < len(token) <= 256):
        raise invalid_enrollment()
    if not await sync_of(request).sites.enrollment_token_valid(site_id, token):
        raise invalid_enrollment()


_CHECKS = (require_admin, require_machine, require_device, require_site_signature, require_enrollment_token)


def _auth_calls(dependant: Dependant | None) -> set[Callable[..., Any]]:
    calls: set[Callable[..., Any]] = set()
    for dep in dependant.dependencies if dependant is not None else ():
        if dep.call in _CHECKS:
            calls.add(dep.call)
        calls |= _auth_calls(dep)
    return calls


async def check_route_credentials(request: Request) -> None:
    """Run the matched route's credential checks, raising Unauthorized/Forbidden.

    FastAPI decodes a JSON body before it runs dependencies, so a malformed body would be
    answered 422 (or 400, not UTF-8) before the credential was looked at; the error handlers
    call this first, so that a caller without a valid credential learns nothing but 401/403."""
    calls = _auth_calls(getattr(request.scope.get("route"), "dependant", None))
    if not calls:
        return
    creds = await _bearer(request)
    if require_admin in calls:
        await require_admin(request, creds)
    if calls & {require_machine, require_device}:
        cred = await require_machine(request, creds)
        if require_device in calls:
            await require_device(cred)
    if require_site_signature in calls:
        await require_site_signature(request)
    if require_enrollment_token in calls:
        await require_enrollment_token(request)


Admin = Annotated[None, Depends(require_admin)]
MetricsReader = Annotated[None, Depends(require_metrics_reader)]
Machine = Annotated[MachineCredential, Depends(require_machine)]
Device = Annotated[MachineCredential, Depends(require_device)]
SignedSite = Annotated[str, Depends(require_site_signature)]
EnrollmentToken = Annotated[None, Depends(require_enrollment_token)]
