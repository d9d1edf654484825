"""Run a multi-statement SQL script inside the migration's transaction.

(`executescript` would COMMIT first and break the atomic migration.)"""

from __future__ import annotations

import sqlite3

import sqlite_utils


def run_script(conn: sqlite_utils.Database, script: str) -> None:
    stmt = ""
    for line in script.splitlines(keepends=True):
        stmt += line
        if sqlite3.complete_statement(stmt):
            conn.execute(stmt)
            stmt = ""
    if stmt.strip():
        raise ValueError(f"incomplete SQL statement in migration: {stmt[:80]!r}")
