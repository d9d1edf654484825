"""Credentials as dependencies. Admin tokens, device/provider tokens and site signatures are
separate realms: a credential of one realm is simply unknown (401) to the others."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from siteserver.domain import Forbidden, Unauthorized, same_secret
from siteserver.store.catalog import MachineCredential

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")


def _token(creds: HTTPAuthorizationCredentials | None) -> str:
    if creds is None or not creds.credentials:
        raise Unauthorized("missing credential: send Authorization: Bearer <token>")
    return creds.credentials


async def require_admin(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    token = _token(creds)
    if not same_secret(token, request.app.state.admin_token):
        raise Unauthorized("not a valid admin token")


async def require_machine(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> MachineCredential:
    token = _token(creds)
    cred = await request.app.state.backend.machine(token)
    if cred is None:
        raise Unauthorized("not a valid device or provider token")
    return cred


async def require_device(
    cred: Annotated[MachineCredential, Depends(require_machine)],
) -> MachineCredential:
    if cred.kind != "device":
        raise Forbidden("this endpoint needs a device token, not a print provider token")
    return cred


def _auth_calls(dependant: Any) -> set[Any]:
    calls: set[Any] = set()
    for dep in getattr(dependant, "dependencies", ()):
        if dep.call in (require_admin, require_machine, require_device):
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


async def get_backend(request: Request) -> Any:
    return request.app.state.backend


Admin = Annotated[None, Depends(require_admin)]
Machine = Annotated[MachineCredential, Depends(require_machine)]
Device = Annotated[MachineCredential, Depends(require_device)]
Backend = Annotated[Any, Depends(get_backend)]
