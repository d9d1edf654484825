"""The site's own state (`sync_state`: the pull's cursor, the mode) and its history of modes
(`mode_changes`).

Keys in `sync_state`: `cursor` and `bootstrapped_at` (both absent while a bootstrap is under way
or was cut short: the next start bootstraps again), `mirror_scope` (of the last bootstrap; absent:
"all"), `last_sync_at`, `mode` and `mode_since`.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from siteserver.domain import modes
from siteserver.domain.modes import Mode


@dataclass(frozen=True, slots=True)
class SyncState:
    cursor: int | None  # None: no finished bootstrap, the next pull bootstraps
    last_sync_at: str | None
    mode: Mode
    mode_since: str | None
    mirror_scope: str = "all"


def read(conn: sqlite_utils.Database) -> SyncState:
    values: dict[str, str] = dict(conn.execute("SELECT key, value FROM sync_state").fetchall())
    cursor = values.get("cursor") if "bootstrapped_at" in values else None
    return SyncState(
        cursor=int(cursor) if cursor is not None else None,
        last_sync_at=values.get("last_sync_at"),
        mode=Mode(values.get("mode", Mode.ONLINE)),
        mode_since=values.get("mode_since"),
        mirror_scope=values.get("mirror_scope", "all"),
    )


def _set(conn: sqlite_utils.Database, **values: str | int) -> None:
    for k, v in values.items():
        conn.execute(
            "INSERT INTO sync_state (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [k, str(v)],
        )


def start_mode(conn: sqlite_utils.Database, now: str) -> None:
    """A new site starts online (with no history); a restarted one keeps its mode."""
    if conn.execute("SELECT 1 FROM sync_state WHERE key = 'mode'").fetchone() is None:
        _set(conn, mode=Mode.ONLINE.value, mode_since=now)


def record_mode(
    conn: sqlite_utils.Database, mode: Mode, cause: str, at: str, detection_secs: float | None = None
) -> None:
    """A change of mode and its history, in the caller's (one) write transaction.
    `detection_secs`: for a change to offline, how long after the last good contact it came."""
    _set(conn, mode=mode.value, mode_since=at)
    conn.execute(
        "INSERT INTO mode_changes (at, mode, cause, detection_secs) VALUES (?, ?, ?, ?)",
        [at, mode.value, cause, detection_secs],
    )


@dataclass(frozen=True, slots=True)
class ModeChange:
    at: str
    mode: Mode
    detection_secs: float | None = None
    cause: str = ""


_MODE_CHANGES = "SELECT at, mode, detection_secs, cause FROM mode_changes"


def _mode_change(row: tuple[str, str, float | None, str | None]) -> ModeChange:
    at, mode, secs, cause = row
    return ModeChange(at, Mode(mode), secs, cause or "")


def mode_history(conn: sqlite_utils.Database) -> list[ModeChange]:
    """Every change of mode, oldest first."""
    return [_mode_change(r) for r in conn.execute(f"{_MODE_CHANGES} ORDER BY id")]


def outages(conn: sqlite_utils.Database) -> list[modes.Outage]:
    """The outages in the site's history of modes, oldest first."""
    return modes.outages((c.at, c.mode, c.detection_secs) for c in mode_history(conn))


def last_mode_change(conn: sqlite_utils.Database) -> ModeChange | None:
    """The latest change of mode: why the site is in the mode it is in."""
    row = conn.execute(f"{_MODE_CHANGES} ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else _mode_change(row)


def mode_change_counts(conn: sqlite_utils.Database) -> dict[str, int]:
    """How many times the site changed to each mode, ever."""
    return {str(m): int(n) for m, n in conn.execute("SELECT mode, count(*) FROM mode_changes GROUP BY mode")}


def forget_bootstrap(conn: sqlite_utils.Database) -> None:
    """The next pull bootstraps again (the feed no longer reaches the cursor, or a page did not fit)."""
    conn.execute("DELETE FROM sync_state WHERE key = 'bootstrapped_at'")


def begin_bootstrap(conn: sqlite_utils.Database) -> None:
    conn.execute("DELETE FROM sync_state WHERE key IN ('cursor', 'bootstrapped_at')")


def pulled(
    conn: sqlite_utils.Database, cursor: int, now: str, *, bootstrapped_scope: str | None = None
) -> None:
    """A page (or the end of a bootstrap of that scope) is in: its cursor, in the same
    transaction as its rows."""
    if bootstrapped_scope is not None:
        _set(conn, cursor=cursor, bootstrapped_at=now, last_sync_at=now, mirror_scope=bootstrapped_scope)
    else:
        _set(conn, cursor=cursor, last_sync_at=now)


def bootstrapped_cursor(conn: sqlite_utils.Database, scope: str = "all") -> int | None:
    """The stored cursor if a bootstrap of this mirror scope finished (a pull may apply a page
    after it), else None: a site whose scope changed bootstraps again."""
    state = read(conn)
    return state.cursor if state.mirror_scope == scope else None
