"""What `GET /api/admin/v1/status` (and `siteserver status`) shows, computed from real state."""

from __future__ import annotations

from typing import Any

import sqlite_utils

from siteserver.config import Offline
from siteserver.store import journal
from siteserver.timeutil import now_iso, parse_iso, utcnow

from .mirror import read_state

DEFAULT_MODE = "online"


def mode_of(state: dict[str, str]) -> str:
    return state.get("mode", DEFAULT_MODE)


def outages(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Each stretch that began with a change to offline and ended with the next change to online."""
    found: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for at, mode in db.execute("SELECT at, mode FROM mode_changes ORDER BY id").fetchall():
        if mode == "offline" and current is None:
            current = {"started_at": at, "ended_at": None}
            found.append(current)
        elif mode == "online" and current is not None:
            current["ended_at"] = at
            current = None
    for o in found:
        until = o["ended_at"] or now_iso()
        o["offline_transactions"] = journal.count_between(db, o["started_at"], until)
    return found


def offline_exposure(db: sqlite_utils.Database, caps: Offline) -> dict[str, Any]:
    """How close the site is to its offline caps: offline charges not yet merged, and the limits."""
    spend = journal.offline_spend(db).public()
    return {
        **spend,
        "site_cap_cents": caps.max_offline_spend_site_cents,
        "per_user_cap_cents": caps.max_offline_spend_per_user_cents,
    }


def site_status(
    db: sqlite_utils.Database, site_id: str, primary: dict[str, Any], caps: Offline | None = None
) -> dict[str, Any]:
    state = read_state(db)
    last = state.get("last_sync_at")
    lag = round((utcnow() - parse_iso(last)).total_seconds(), 3) if last else None
    cursor = state.get("cursor") if "bootstrapped_at" in state else None
    return {
        "site_id": site_id,
        "mode": mode_of(state),
        "since": state.get("mode_since"),
        "primary": primary,
        "sync": {
            "cursor": int(cursor) if cursor is not None else None,
            "last_sync_at": last,
            "lag_secs": lag,
        },
        "journal": journal.counts(db),
        "outages": outages(db),
        "offline_exposure": offline_exposure(db, caps or Offline()),
    }
