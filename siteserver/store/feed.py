"""The primary's change feed: a consistent snapshot of every mirrored table, pages of changes after a
cursor (from `change_log`, which triggers fill), and pruning of the log (docs/sync.md).

A site with `mirror_scope = "home"` gets only its own people: users whose `home_sites` name it,
their cards, memberships and personal accounts (shared accounts, printers, devices and the rest go
to every site). Its feed ignores the raw changes of those tables and follows the `user_scope`
markers the triggers add for every change of a user, a card or a membership (the user and the
sites they belonged to before): a user now at home is replaced whole (deleted, which cascades to
cards and memberships at the site, then sent again); one who left is deleted; anyone else is not
mentioned at all.

A cursor is a `change_log.seq`. A page names each changed row once, at the largest seq that
changed it, and carries the row as it is now (or None: deleted). Pruning deletes old log rows and
raises `change_log_floor.pruned_through`; a cursor below it can no longer be served (reset).
"""

from __future__ import annotations

import json
import sqlite3
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


#: a user at home at site `:site`
_AT_HOME = "EXISTS (SELECT 1 FROM json_each(u.home_sites) WHERE value = :site)"
_HOME_PEOPLE = f"SELECT u.username FROM users u WHERE {_AT_HOME}"
#: which rows of the tables that hold people a home-scope site gets (every row of the others)
_HOME_ROWS = {
    "accounts": f"(kind = 'shared' OR id IN (SELECT u.account_id FROM users u WHERE {_AT_HOME}))",
    "users": f"username IN ({_HOME_PEOPLE})",
    "user_cards": f"username IN ({_HOME_PEOPLE})",
    "shared_account_members": f"username IN ({_HOME_PEOPLE})",
}
#: the tables whose raw changes a home-scope feed replaces by `user_scope` markers
_BY_MARKER = ("users", "user_cards", "shared_account_members")


def _rows(cur: sqlite3.Cursor) -> Iterator[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    for row in cur:
        yield dict(zip(names, row, strict=True))


def table_rows(conn: sqlite_utils.Database, table: str, home: str | None = None) -> Iterator[dict[str, Any]]:
    """Every row of a mirrored table, all its columns, in primary-key order (a lazy cursor);
    with `home` (a site id), only the rows a home-scope site gets."""
    where = f" WHERE {_HOME_ROWS[table]}" if home is not None and table in _HOME_ROWS else ""
    # table names come from MIRRORED_TABLES
    return _rows(conn.execute(f"SELECT * FROM {table}{where} ORDER BY {_order(table)}", {"site": home}))


def _user_scope(conn: sqlite_utils.Database, seq: int, pk: list[Any], home: str) -> list[dict[str, Any]]:
    """The changes a `user_scope` marker means to site `home`: the user replaced, removed, or
    nothing (see the module's docstring)."""
    username, before = pk[0], json.loads(pk[1])
    now = conn.execute(
        f"SELECT 1 FROM users u WHERE u.username = :user AND {_AT_HOME}", {"user": username, "site": home}
    ).fetchone()
    if now is None and home not in before:
        return []
    changes = [{"seq": seq, "table": "users", "pk": [username], "row": None}]
    if now is None:
        personal = conn.execute("SELECT id FROM accounts WHERE kind = 'personal' AND name = ?", [username])
        return changes + [{"seq": seq, "table": "accounts", "pk": [i], "row": None} for (i,) in personal]
    account = "SELECT a.* FROM accounts a JOIN users u ON u.account_id = a.id WHERE u.username = :user"
    for table, sql in (
        ("accounts", account),
        ("users", "SELECT * FROM users WHERE username = :user"),
        ("user_cards", "SELECT * FROM user_cards WHERE username = :user"),
        ("shared_account_members", "SELECT * FROM shared_account_members WHERE username = :user"),
    ):
        for row in _rows(conn.execute(sql, {"user": username})):
            pk_of = [row[c] for c in MIRRORED_TABLES[table]]
            changes.append({"seq": seq, "table": table, "pk": pk_of, "row": row})
    return changes


def current_rows(
    conn: sqlite_utils.Database, table: str, pks: list[list[Any]], home: str | None = None
) -> dict[tuple[Any, ...], dict[str, Any] | None]:
    """The rows of these primary keys as they are now, in one statement: pk -> the row, or None
    when a home-scope site `home` does not get it (someone else's personal account); a pk that
    is absent is deleted."""
    cols = MIRRORED_TABLES[table]
    keys = ", ".join(f"value ->> {i}" for i in range(len(cols)))
    visible = _HOME_ROWS[table] if home is not None and table in _HOME_ROWS else "1"
    # table names and filters come from MIRRORED_TABLES and _HOME_ROWS; the keys are one parameter
    cur = conn.execute(
        f"SELECT ({visible}) AS _visible, * FROM {table}"
        f" WHERE ({_order(table)}) IN (SELECT {keys} FROM json_each(:pks))",
        {"pks": json.dumps(pks), "site": home},
    )
    found: dict[tuple[Any, ...], dict[str, Any] | None] = {}
    for row in _rows(cur):
        visible_row = row.pop("_visible")
        found[tuple(row[c] for c in cols)] = row if visible_row else None
    return found


def changes_page(
    conn: sqlite_utils.Database, after: int, limit: int, home: str | None = None
) -> dict[str, Any]:
    """The rows changed after `after` (call inside one read transaction: one snapshot); with
    `home` (a site id), as a home-scope site gets them.

    Groups change_log by (tbl, pk), ordered by each group's largest seq, at most `limit` groups;
    `cursor` is the last group's largest seq (or `after`). `reset` when the log was pruned past
    `after`: the caller must bootstrap from a snapshot again. The rows are read table by table,
    one statement each (a page of a merge's balances is a thousand accounts)."""
    if after < pruned_through(conn):
        return {"cursor": after, "reset": True, "changes": []}
    groups = [
        (tbl, json.loads(pk_text), seq)
        for tbl, pk_text, seq in conn.execute(
            "SELECT tbl, pk, MAX(seq) AS s FROM change_log WHERE seq > ? GROUP BY tbl, pk ORDER BY s LIMIT ?",
            [after, limit],
        ).fetchall()
    ]
    wanted: dict[str, list[list[Any]]] = {}
    for tbl, pk, _ in groups:
        if tbl in MIRRORED_TABLES and not (home is not None and tbl in _BY_MARKER):
            wanted.setdefault(tbl, []).append(pk)
    now = {tbl: current_rows(conn, tbl, pks, home) for tbl, pks in wanted.items()}
    changes: list[dict[str, Any]] = []
    for tbl, pk, seq in groups:
        if tbl == "user_scope" and home is not None:
            changes.extend(_user_scope(conn, seq, pk, home))
            continue
        if tbl not in now:  # a marker, a table no longer mirrored, or one the markers replace
            continue
        key = tuple(pk)
        if key in now[tbl] and now[tbl][key] is None:
            continue  # someone else's personal account: not a deletion, and none of its business
        changes.append({"seq": seq, "table": tbl, "pk": pk, "row": now[tbl].get(key)})
    cursor = groups[-1][2] if groups else after
    return {"cursor": cursor, "reset": False, "changes": changes}


def prune(conn: sqlite_utils.Database, *, older_than: str, batch: int = PRUNE_BATCH) -> int:
    """Delete up to `batch` change_log rows recorded before `older_than` (ISO 8601, as `at`), oldest
    first, and raise the floor to the largest deleted seq. Returns how many were deleted; call
    again while it returns `batch` (each call is one short write transaction)."""
    # The oldest `batch` rows by seq, then their age: a look at `batch` rows, never the whole log
    # (`at` grows with seq, so the old rows are the first ones).
    row = conn.execute(
        "SELECT MAX(seq), COUNT(*) FROM (SELECT seq, at FROM change_log ORDER BY seq LIMIT ?) WHERE at < ?",
        [batch, older_than],
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
    "current_rows",
    "max_seq",
    "prune",
    "prune_cutoff",
    "pruned_through",
    "table_rows",
]
