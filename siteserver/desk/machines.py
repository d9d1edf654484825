"""Device and print provider tokens, resolved to their credential (cached for two seconds, so a
card login costs no lookup of its device's token)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from siteserver.domain import token_digest
from siteserver.store import Database, catalog
from siteserver.store.catalog import MachineCredential

CACHE_SECS = 2.0
CACHE_MAX = 10_000


@dataclass
class Machines:
    db: Database
    _cache: dict[str, tuple[float, MachineCredential | None]] = field(default_factory=dict)

    async def credential(self, token: str) -> MachineCredential | None:
        """The credential of a device or provider token; None: not a valid one."""
        digest = token_digest(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < CACHE_SECS:
            return hit[1]
        cred = await self.db.read(lambda conn: catalog.credential_by_token(conn, digest))
        if len(self._cache) > CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now, cred)
        return cred
