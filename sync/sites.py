"""The primary's side of a site's identity: enrollment with the one-time token, the check of every
signed request (signature, freshness, replay, enrolled and enabled), and heartbeats.

`sync.signing` checks the signature itself; this adds what needs the database: the site's key and
state, one-time enrollment tokens, and the nonces seen within the window (replays).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlite_utils

from siteserver.domain import Forbidden, Invalid, Unauthorized, token_digest
from siteserver.store import Database, catalog
from siteserver.timeutil import now_iso

from . import signing, wire


def invalid_enrollment() -> Unauthorized:
    """One answer for an unknown site, a wrong token and a used one."""
    return Unauthorized("unknown site or invalid enrollment token", code="invalid_enrollment_token")


@dataclass
class Sites:
    db: Database
    pepper: bytes
    server_uuid: str
    epoch_of: Callable[[], int]
    #: handed to a site at enrollment: its WAN monitor probes the health URL with it
    health_key: str | None = None
    window_secs: int = signing.DEFAULT_WINDOW_SECS
    clock: Callable[[], float] = time.time

    # -- enrollment (the one-time token is the credential) ----------------------------------------

    async def enrollment_token_valid(self, site_id: str, token: str) -> bool:
        digest = token_digest(token)
        return await self.db.read(lambda conn: catalog.enrollment_token_matches(conn, site_id, digest))

    async def enroll(self, body: wire.EnrollIn) -> wire.EnrollOut:
        try:
            signing.parse_public_key(body.public_key)
        except ValueError as e:
            raise Invalid(f"public_key: {e}") from e
        digest = token_digest(body.enrollment_token)

        def consume_token(conn: sqlite_utils.Database) -> None:
            # Check and consume in one write transaction: the token works exactly once.
            if not catalog.enroll_site(conn, body.site_id, digest, body.public_key, now=now_iso()):
                raise invalid_enrollment()

        await self.db.write(consume_token)
        return wire.EnrollOut(site_id=body.site_id, pepper=self.pepper.hex(), health_key=self.health_key)

    # -- signed requests ------------------------------------------------------------------------

    async def authenticate(
        self, method: str, path: str, query: str, body: bytes, headers: Mapping[str, str]
    ) -> str:
        """The site id of a correctly signed, fresh, first-seen request; else a DomainError."""
        try:
            site_id = signing.signed_site_id(headers)
        except signing.SignatureError as e:
            raise Unauthorized(str(e), code=e.code) from e
        site = await self.db.read(lambda conn: catalog.site_key(conn, site_id))
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
        keep_secs = 2 * int(self.window_secs)
        fresh = await self.db.write(
            lambda conn: catalog.remember_nonce(conn, site_id, nonce, now=int(now), keep_secs=keep_secs)
        )
        if not fresh:
            raise Unauthorized("this signed request was already received", code="replayed_request")
        return site_id

    async def heartbeat(self, site_id: str, body: wire.HeartbeatIn) -> wire.HeartbeatOut:
        now = now_iso()
        await self.db.write(
            lambda conn: catalog.record_heartbeat(
                conn,
                site_id,
                mode=body.mode.value,
                journal_backlog=body.journal_backlog,
                interval_secs=body.interval_secs,
                last_outage=None
                if body.last_outage is None
                else (body.last_outage.started_at, body.last_outage.ended_at),
                now=now,
            )
        )
        return wire.HeartbeatOut(primary_time=now, server_uuid=self.server_uuid, epoch=self.epoch_of())
