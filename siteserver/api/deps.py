"""What the routes depend on, each a real type (as the template's `deps.py`): one role's
`Services`, set on its app by `application.build_app`, and one typed dependency per service.
A route of a service its role does not have is not mounted; reaching one anyway is a bug.

The dependencies are `async def`: FastAPI runs a plain `def` dependency on its thread pool, a
thread hop per request on the hot path (card logins) for what is an attribute read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Protocol, TypeVar

from fastapi import Depends, Request

from siteserver.admin.logins import AdminLogins
from siteserver.admin.primary import PrimaryAdmin
from siteserver.admin.site import SiteAdmin
from siteserver.desk import DeviceDesk, FrontDesk, Machines, ProviderDesk
from siteserver.metrics import Metrics
from sync.service import SyncService

T = TypeVar("T")


class PairMember(Protocol):
    """The primary's HA guard as its health URL sees it (siteserver.primary.guard.Guard)."""

    server_uuid: str
    epoch: int

    @property
    def starting(self) -> bool: ...

    def is_active(self) -> bool: ...


@dataclass(frozen=True)
class PrimaryHealth:
    health_key: str
    member: PairMember
    database: Path  # its file system's free space is part of the answer


@dataclass(frozen=True)
class Services:
    """Everything a role's routes reach, typed; None: this role does not have it."""

    admin_token: str
    desk: FrontDesk
    primary_admin: PrimaryAdmin | None = None
    primary_health: PrimaryHealth | None = None
    sync: SyncService | None = None
    site_admin: SiteAdmin | None = None
    metrics: Metrics = field(default_factory=Metrics)
    metrics_token: str | None = None
    admin_logins: AdminLogins = field(default_factory=AdminLogins)  # the admin pages' logins


def services_of(request: Request) -> Services:
    services = request.app.state.services
    if not isinstance(services, Services):
        raise TypeError("the app was not assembled by siteserver.api.application.build_app")
    return services


def _present(service: T | None, what: str) -> T:
    if service is None:
        raise LookupError(f"this role serves no {what}")
    return service


async def get_machines(request: Request) -> Machines:
    return services_of(request).desk.machines


async def get_device_desk(request: Request) -> DeviceDesk:
    return services_of(request).desk.device


async def get_provider_desk(request: Request) -> ProviderDesk:
    return services_of(request).desk.provider


async def get_primary_admin(request: Request) -> PrimaryAdmin:
    return _present(services_of(request).primary_admin, "primary administration")


async def get_primary_health(request: Request) -> PrimaryHealth:
    return _present(services_of(request).primary_health, "primary health URL")


def sync_of(request: Request) -> SyncService:
    return _present(services_of(request).sync, "sync API")


async def get_sync(request: Request) -> SyncService:
    return sync_of(request)


async def get_site_admin(request: Request) -> SiteAdmin:
    return _present(services_of(request).site_admin, "site administration")


MachinesDep = Annotated[Machines, Depends(get_machines)]
DeviceDeskDep = Annotated[DeviceDesk, Depends(get_device_desk)]
ProviderDeskDep = Annotated[ProviderDesk, Depends(get_provider_desk)]
PrimaryAdminDep = Annotated[PrimaryAdmin, Depends(get_primary_admin)]
PrimaryHealthDep = Annotated[PrimaryHealth, Depends(get_primary_health)]
SyncDep = Annotated[SyncService, Depends(get_sync)]
SiteAdminDep = Annotated[SiteAdmin, Depends(get_site_admin)]
