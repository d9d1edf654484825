"""Device and print provider tokens, resolved to their credential (cached for two seconds, so a
card login costs no lookup of its device's token). A site serves only the devices and providers
of its own printers, though its mirror holds every site's; the primary serves all."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from siteserver.domain import Forbidden, token_digest
from siteserver.store import Database, catalog
from siteserver.store.catalog import MachineCredential

CACHE_SECS = 2.0
CACHE_MAX = 10_000


@dataclass
class Machines:
    db: Database
    #: the site this server is (None: the primary)
    site_id: str | None = None
    _cache: dict[str, tuple[float, MachineCredential | None]] = field(default_factory=dict)

    async def credential(self, token: str) -> MachineCredential | None:
        """The credential of a device or provider token; None: not a valid one."""
        digest = token_digest(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < CACHE_SECS:
            return self._scoped(hit[1])
        cred = await self.db.read(lambda conn: catalog.credential_by_token(conn, digest))
        if len(self._cache) > CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now, cred)
        return self._scoped(cred)

    def _scoped(self, cred: MachineCredential | None) -> MachineCredential | None:
        """At a site: the credential limited to this site's printers, refused if none is."""
        if cred is None or self.site_id is None:
            return cred
        printers = tuple(
            p for p, s in zip(cred.printers, cred.printer_sites, strict=True) if s == self.site_id
        )
        if not printers:
            raise Forbidden(
                f"{cred.kind} {cred.ident!r} serves no printer of site {self.site_id!r}:"
                " point it at its own site's server"
            )
        return replace(
            cred, printers=printers, site_ids=(self.site_id,), printer_sites=(self.site_id,) * len(printers)
        )
