"""The primary's end of the sync API in one service, for the sync router: a site's identity
(enrollment, signed requests, heartbeats), the feed (snapshot, changes) and the merge apply
(its worker process started and stopped with the primary)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from siteserver.store import Database

from .apply import Apply
from .feed import Feed
from .sites import Sites
from .worker import MergeWorker


@dataclass
class SyncService:
    sites: Sites
    feed: Feed
    apply: Apply

    @classmethod
    def create(
        cls,
        db: Database,
        *,
        pepper: bytes,
        server_uuid: str,
        epoch_of: Callable[[], int],
        health_key: str | None,
    ) -> SyncService:
        return cls(
            Sites(db, pepper, server_uuid, epoch_of, health_key=health_key),
            Feed(db),
            Apply(db, MergeWorker(db, server_uuid, epoch_of)),
        )
