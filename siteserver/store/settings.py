"""Settings kept as JSON documents in the database: the offline policies."""

from __future__ import annotations

import sqlite_utils

from siteserver.domain import DEFAULT_POLICIES, OfflinePolicies

_POLICIES = "offline_policies"


def get_policies(conn: sqlite_utils.Database) -> OfflinePolicies:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", [_POLICIES]).fetchone()
    return DEFAULT_POLICIES if row is None else OfflinePolicies.model_validate_json(row[0])


def put_policies(conn: sqlite_utils.Database, policies: OfflinePolicies) -> None:
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [_POLICIES, policies.model_dump_json()],
    )
