"""The primary's end of the sync API: enrollment, signed-request checks, heartbeats, and the admin
calls that manage a site's identity (disable, re-issue an enrollment token).

Signatures are checked by `sync.signing`; this class adds what needs the database: the site's
key and state, one-time enrollment tokens, and the nonces seen within the window (replays).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from siteserver.api import models as m
from siteserver.api.auth import invalid_enrollment
from siteserver.domain import Forbidden, Invalid, NotFound, Unauthorized, new_token, token_digest
from siteserver.store import Database, catalog
from siteserver.timeutil import now_iso
from sync import signing


@dataclass
class SyncService:
    db: Database
    pepper: bytes
    server_uuid: str
    epoch_of: Callable[[], int]
    window_secs: int = signing.DEFAULT_WINDOW_SECS
    clock: Callable[[], float] = time.time

    # -- enrollment (the one-time token is the credential) ----------------------------------------

    async def enrollment_token_valid(self, site_id: str, token: str) -> bool:
        digest = token_digest(token)
        return await self.db.read(lambda db: catalog.enrollment_token_matches(db, site_id, digest))

    async def enroll(self, body: m.EnrollIn) -> dict[str, Any]:
        try:
            signing.parse_public_key(body.public_key)
        except ValueError as e:
            raise Invalid(f"public_key: {e}") from e
        digest = token_digest(body.enrollment_token)

        def work(db: sqlite_utils.Database) -> None:
            # Check and consume in one write transaction: the token works exactly once.
            if not catalog.enroll_site(db, body.site_id, digest, body.public_key, now=now_iso()):
                raise invalid_enrollment()  # one answer: unknown site, wrong or used token

        await self.db.write(work)
        return {"site_id": body.site_id, "pepper": self.pepper.hex()}

    # -- signed requests ------------------------------------------------------------------------

    async def authenticate(
        self, method: str, path: str, query: str, body: bytes, headers: Mapping[str, str]
    ) -> str:
        """The site id of a correctly signed, fresh, first-seen request; else a DomainError."""
        try:
            site_id = signing.signed_site_id(headers)
        except signing.SignatureError as e:
            raise Unauthorized(str(e), code=e.code) from e
        site = await self.db.read(lambda db: catalog.site_key(db, site_id))
        if site is None or site.public_key is None:
            raise Unauthorized(f"no enrolled site {site_id!r}", code="unknown_site")
        now = self.clock()
        try:
            key = signing.parse_public_key(site.public_key)
            signing.verify(key, method, path, query, body, headers, now, self.window_secs)
        except ValueError as e:  # a stored key that does not parse: treat as not enrolled
            raise Unauthorized(f"no enrolled site {site_id!r}", code="unknown_site") from e
        except signing.SignatureError as e:
            raise Unauthorized(str(e), code=e.code) from e
        if site.disabled:
            raise Forbidden(f"site {site_id!r} is disabled on the primary", code="site_disabled")
        nonce = signing.header_value(headers, signing.NONCE) or ""
        fresh = await self.db.write(
            lambda db: catalog.remember_nonce(
                db, site_id, nonce, now=int(now), keep_secs=2 * int(self.window_secs)
            )
        )
        if not fresh:
            raise Unauthorized("this signed request was already received", code="replayed_request")
        return site_id

    async def heartbeat(self, site_id: str, body: m.HeartbeatIn) -> dict[str, Any]:
        now = now_iso()
        await self.db.write(
            lambda db: catalog.record_heartbeat(
                db, site_id, mode=body.mode, journal_backlog=body.journal_backlog, now=now
            )
        )
        return {"primary_time": now, "server_uuid": self.server_uuid, "epoch": self.epoch_of()}

    # -- administration (admin token) -----------------------------------------------------------

    async def patch_site(self, site_id: str, body: m.SitePatch) -> dict[str, Any]:
        def work(db: sqlite_utils.Database) -> dict[str, Any]:
            catalog.update_site(db, site_id, name=body.name, disabled=body.disabled)
            site = catalog.get_site(db, site_id)
            if site is None:
                raise NotFound(f"no site {site_id!r}")
            return site

        return await self.db.write(work)

    async def new_enrollment_token(self, site_id: str) -> dict[str, Any]:
        token = new_token("enr")
        digest = token_digest(token)
        await self.db.write(lambda db: catalog.reissue_enrollment_token(db, site_id, digest))
        return {"site_id": site_id, "enrollment_token": token}
