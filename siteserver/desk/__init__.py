"""The device and print provider flows, one implementation for both roles.

The primary and every site answer MFDs and print providers with the same code; the roles differ
only in how a charge is applied and confirmed (`charging`: `LedgerCharging` on the primary,
`journal_charging.JournalCharging` at a site). `FrontDesk` is what a role's app serves them from:
the machine credentials, the device flows and the provider flows, sharing one release signal.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from siteserver.domain import LoginGuard, SecretHasher, SessionRegistry
from siteserver.store import Database

from .charging import Charging
from .device import DeviceDesk
from .machines import Machines
from .provider import ProviderDesk
from .releases import ReleaseSignal


@dataclass
class FrontDesk:
    machines: Machines
    device: DeviceDesk
    provider: ProviderDesk

    @classmethod
    def create(
        cls,
        db: Database,
        *,
        hasher: SecretHasher,
        sessions: SessionRegistry,
        hashing: ThreadPoolExecutor,
        charging: Charging,
        site_id: str | None = None,
    ) -> FrontDesk:
        """`site_id`: a site's front desk serves only its own printers' devices and providers."""
        releases = ReleaseSignal()
        return cls(
            Machines(db, site_id),
            DeviceDesk(db, hasher, LoginGuard(), sessions, hashing, charging, releases),
            ProviderDesk(db, charging, releases),
        )


__all__ = ["DeviceDesk", "FrontDesk", "Machines", "ProviderDesk"]
