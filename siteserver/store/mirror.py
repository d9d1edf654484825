"""The site's mirror of the primary's tables (migrations.mirrored): rows upserted and deleted as
the snapshot and the change feed bring them, with the primary's columns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlite_utils

from migrations.mirrored import MIRRORED_TABLES

from .ledger import account_label


class MirrorMismatch(Exception):
    """A row or key from the primary that does not fit the mirror's tables."""


def _columns(conn: sqlite_utils.Database, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})").fetchall()]


def upsert(conn: sqlite_utils.Database, table: str, rows: list[dict[str, Any]]) -> None:
    """INSERT … ON CONFLICT(pk) DO UPDATE: never REPLACE, whose delete would cascade to children."""
    if not rows:
        return
    known = _columns(conn, table)
    pk = MIRRORED_TABLES[table]
    # Columns the primary has and this site does not (a newer primary) are left out.
    by_cols: dict[tuple[str, ...], list[list[Any]]] = {}
    for row in rows:
        cols = tuple(c for c in known if c in row)
        by_cols.setdefault(cols, []).append([row[c] for c in cols])
    for cols, values in by_cols.items():
        rest = [c for c in cols if c not in pk]
        action = "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in rest) if rest else "DO NOTHING"
        sql = (
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
            f"ON CONFLICT({', '.join(pk)}) {action}"
        )
        conn.conn.executemany(sql, values)


def delete(conn: sqlite_utils.Database, table: str, key: list[Any]) -> None:
    pk = MIRRORED_TABLES[table]
    if len(key) != len(pk):
        raise MirrorMismatch(f"change for {table} has a primary key of {len(key)} values, not {len(pk)}")
    conn.execute(f"DELETE FROM {table} WHERE " + " AND ".join(f"{c} = ?" for c in pk), key)


def clear(conn: sqlite_utils.Database) -> None:
    """Empty every mirrored table (a bootstrap's first batch), children first."""
    for table in reversed(MIRRORED_TABLES):
        conn.execute(f"DELETE FROM {table}")


def defer_foreign_keys(conn: sqlite_utils.Database) -> None:
    """Parents and children in any order within the transaction."""
    conn.execute("PRAGMA defer_foreign_keys = ON")


def account_labels(
    conn: sqlite_utils.Database, rows: Iterable[tuple[list[Any], dict[str, Any] | None]]
) -> set[str]:
    """The labels (`user:alice`, `shared:X`) of the accounts these changed `accounts` rows (key,
    row or None) name, as the page names them and as the mirror knows them now."""
    labels: set[str] = set()
    for pk, row in rows:
        if row is not None and isinstance(row.get("kind"), str) and isinstance(row.get("name"), str):
            labels.add(account_label(row["kind"], row["name"]))
        if len(pk) == 1 and isinstance(pk[0], int):
            known = conn.execute("SELECT kind, name FROM accounts WHERE id = ?", [pk[0]]).fetchone()
            if known is not None:
                labels.add(account_label(known[0], known[1]))
    return labels
