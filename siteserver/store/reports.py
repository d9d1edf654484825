"""The site's reconciliation reports: each a snapshot of its window, made once and read as often
as an admin asks (JSON, CSV, HTML), its entries in pages so that no reader holds them all."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

#: reports kept; making one more drops the oldest
KEEP_REPORTS = 20


@dataclass(frozen=True, slots=True)
class ReportHead:
    report_id: str
    since: str
    until: str
    generated_at: str
    summary: dict[str, Any]  # outages, totals, check (its mismatches apart)


@dataclass(frozen=True, slots=True)
class ReportLine:
    """One entry of a report, with its conflict and the check's mismatch, as JSON texts."""

    entry: str
    conflict: str | None
    mismatch: str | None


def add_lines(conn: sqlite_utils.Database, report_id: str, before: int, lines: Sequence[ReportLine]) -> None:
    """Lines `before` + 1, + 2, … of a report (numbered from 1, in journal order)."""
    conn.conn.executemany(
        "INSERT INTO report_entries (report_id, n, entry, conflict, mismatch) VALUES (?,?,?,?,?)",
        [(report_id, before + i, x.entry, x.conflict, x.mismatch) for i, x in enumerate(lines, 1)],
    )


def finish(conn: sqlite_utils.Database, head: ReportHead) -> None:
    """The report's head, written last: a report without one is unfinished (never shown) and
    is dropped with the oldest."""
    conn.execute(
        "INSERT INTO reports (report_id, since, until, generated_at, summary) VALUES (?,?,?,?,?)",
        [head.report_id, head.since, head.until, head.generated_at, json.dumps(head.summary)],
    )
    conn.execute(
        "DELETE FROM reports WHERE report_id NOT IN"
        " (SELECT report_id FROM reports ORDER BY generated_at DESC, rowid DESC LIMIT ?)",
        [KEEP_REPORTS],
    )
    # Reports are made one at a time, so lines without a report are only those dropped above
    # and those of a report a crash left unfinished.
    conn.execute("DELETE FROM report_entries WHERE report_id NOT IN (SELECT report_id FROM reports)")


def drop_unfinished(conn: sqlite_utils.Database, report_id: str) -> None:
    conn.execute("DELETE FROM report_entries WHERE report_id = ?", [report_id])


def head(conn: sqlite_utils.Database, report_id: str) -> ReportHead | None:
    row = conn.execute(
        "SELECT report_id, since, until, generated_at, summary FROM reports WHERE report_id = ?", [report_id]
    ).fetchone()
    if row is None:
        return None
    return ReportHead(str(row[0]), str(row[1]), str(row[2]), str(row[3]), json.loads(row[4]))


def lines(
    conn: sqlite_utils.Database, report_id: str, *, after_n: int, limit: int, column: str = "entry"
) -> list[tuple[int, str]]:
    """A page of one column (`entry`, `conflict` or `mismatch`) of a report's lines, after `after_n`;
    for `conflict` and `mismatch`, only the lines that have one."""
    if column not in ("entry", "conflict", "mismatch"):
        raise ValueError(column)
    return [
        (int(n), str(text))
        for n, text in conn.execute(
            f"SELECT n, {column} FROM report_entries WHERE report_id = ? AND n > ? AND {column} IS NOT NULL"
            " ORDER BY n LIMIT ?",
            [report_id, after_n, limit],
        )
    ]
