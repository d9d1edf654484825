"""The primary's change feed: a consistent snapshot of every mirrored table, pages of changes after a
cursor (from `change_log`, which triggers fill), and pruning of the log (docs/sync.md).

A cursor is a `change_log.seq`. A page names each changed row once, at the largest seq that
changed it, and carries the row as it is now (or None: deleted). Pruning deletes old log rows and
raises `change_log_floor.pruned_through`; a cursor below it can no longer be served (reset).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import sqlite_utils

from migrations.mirrored import MIRRORED_TABLES
from siteserver.timeutil import iso, utcnow

DEFAULT_RETENTION = timedelta(days=30)
PRUNE_BATCH = 20_000


def _order(table: str) -> str:
    return ", ".join(MIRRORED_TABLES[table])


def max_seq(conn: sqlite_utils.Database) -> int:
    """The newest change's seq (0 for none): the cursor of a snapshot, and a cheap poll."""
    return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM change_log").fetchone()[0])


def pruned_through(conn: sqlite_utils.Database) -> int:
    return int(conn.execute("SELECT pruned_through FROM change_log_floor WHERE id = 1").fetchone()[0])


def table_rows(conn: sqlite_utils.Database, table: str) -> Iterator[dict[str, Any]]:
    """Every row of a mirrored table, all its columns, in primary-key order (a lazy cursor)."""
    cur = conn.execute(
        f"SELECT * FROM {table} ORDER BY {_order(table)}"
    )  # table names come from MIRRORED_TABLES
    names = [d[0] for d in cur.description]
    for row in cur:
        yield dict(zip(names, row, strict=True))


def current_row(conn: sqlite_utils.Database, table: str, pk: list[Any]) -> dict[str, Any] | None:
    cols = MIRRORED_TABLES[table]
    where = " AND ".join(f"{c} = ?" for c in cols)
    cur = conn.execute(f"SELECT * FROM {table} WHERE {where}", pk)  # table names come from MIRRORED_TABLES
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row, strict=True))


def changes_page(conn: sqlite_utils.Database, after: int, limit: int) -> dict[str, Any]:
    """The rows changed after `after` (call inside one read transaction: one snapshot).

    Groups change_log by (tbl, pk), ordered by each group's largest seq, at most `limit` groups;
    `cursor` is the last group's largest seq (or `after`). `reset` when the log was pruned past
    `after`: the caller must bootstrap from a snapshot again."""
    if after < pruned_through(conn):
        return {"cursor": after, "reset": True, "changes": []}
    groups = conn.execute(
        "SELECT tbl, pk, MAX(seq) AS s FROM change_log WHERE seq > ? GROUP BY tbl, pk ORDER BY s LIMIT ?",
        [after, limit],
    ).fetchall()
    changes: list[dict[str, Any]] = []
    for tbl, pk_text, seq in groups:
        if tbl not in MIRRORED_TABLES:  # a table no longer mirrored: nothing a site can use
            continue
        pk = json.loads(pk_text)
        changes.append({"seq": seq, "table": tbl, "pk": pk, "row": current_row(conn, tbl, pk)})
    cursor = groups[-1][2] if groups else after
    return {"cursor": cursor, "reset": False, "changes": changes}


def prune(conn: sqlite_utils.Database, *, older_than: str, batch: int = PRUNE_BATCH) -> int:
    """Delete up to `batch` change_log rows recorded before `older_than` (ISO 8601, as `at`), oldest
    first, and raise the floor to the largest deleted seq. Returns how many were deleted; call
    again while it returns `batch` (each call is one short write transaction)."""
    row = conn.execute(
        "SELECT MAX(seq), COUNT(*) FROM (SELECT seq FROM change_log WHERE at < ? ORDER BY seq LIMIT ?)",
        [older_than, batch],
    ).fetchone()
    top, count = row[0], int(row[1])
    if top is None:
        return 0
    # By seq, not by time: the floor then says exactly which cursors the log still serves.
    cur = conn.execute("DELETE FROM change_log WHERE seq <= ?", [top])
    conn.execute("UPDATE change_log_floor SET pruned_through = MAX(pruned_through, ?) WHERE id = 1", [top])
    return max(count, cur.rowcount or 0)


def prune_cutoff(retention: timedelta = DEFAULT_RETENTION) -> str:
    return iso(utcnow() - retention)


__all__ = [
    "DEFAULT_RETENTION",
    "changes_page",
    "current_row",
    "max_seq",
    "prune",
    "prune_cutoff",
    "pruned_through",
    "table_rows",
]
