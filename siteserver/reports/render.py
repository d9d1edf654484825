"""A kept report rendered as a stream of bytes (JSON, CSV, one printable HTML page), its lines
read a page at a time: a report of any size is served in flat memory."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import jinja2

from siteserver.domain import format_cents
from siteserver.store import Database
from siteserver.store import reports as reports_store

PAGE = 5000
#: the CSV columns: the entry's fields, its conflict as two
CSV_FIELDS = [
    "txn_id",
    "occurred_at",
    "username",
    "account",
    "kind",
    "printer",
    "pages",
    "amount_cents",
    "offline",
    "flags",
    "site_status",
    "primary_status",
    "primary_account",
    "primary_amount_cents",
    "primary_seq",
    "conflict_kind",
    "conflict_action",
    "reason",
]
MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "html": "text/html; charset=utf-8",
}


def _pages(db: Database, report_id: str, column: str) -> Iterator[list[str]]:
    """The report's texts of one column, a page at a time (a stream's chunk is a page: each
    chunk of a streamed answer costs a hop to a worker thread)."""

    def page_after(after: int) -> list[tuple[int, str]]:
        return db.read_sync(
            lambda conn: reports_store.lines(conn, report_id, after_n=after, limit=PAGE, column=column)
        )

    after = 0
    while True:
        page = page_after(after)
        if not page:
            return
        after = page[-1][0]
        yield [text for _, text in page]


def _texts(db: Database, report_id: str, column: str) -> Iterator[str]:
    for page in _pages(db, report_id, column):
        yield from page


def _objects(db: Database, report_id: str, column: str) -> Iterator[dict[str, Any]]:
    for text in _texts(db, report_id, column):
        obj: dict[str, Any] = json.loads(text)
        yield obj


def _joined(pages: Iterator[list[str]]) -> Iterator[bytes]:
    """JSON texts as the items of an array, one chunk per page."""
    first = True
    for page in pages:
        yield (("" if first else ",") + ",".join(page)).encode()
        first = False


def json_stream(db: Database, head: reports_store.ReportHead) -> Iterator[bytes]:
    """CONTRACT.md's JSON form, written as it is read."""
    s = head.summary
    top = {
        "report_id": head.report_id,
        "site_id": s["site_id"],
        "since": head.since,
        "until": head.until,
        "generated_at": head.generated_at,
        "outages": s["outages"],
    }
    yield json.dumps(top)[:-1].encode() + b',"entries":['
    yield from _joined(_pages(db, head.report_id, "entry"))
    yield b'],"totals":' + json.dumps(s["totals"]).encode() + b',"conflicts":['
    yield from _joined(_pages(db, head.report_id, "conflict"))
    yield b'],"check":' + json.dumps(s["check"])[:-1].encode() + b',"mismatches":['
    yield from _joined(_pages(db, head.report_id, "mismatch"))
    yield b"]}}"


def csv_row(entry: dict[str, Any]) -> list[object]:
    conflict = entry.get("conflict") or {}
    values = {
        **entry,
        "flags": " ".join(entry["flags"]),
        "offline": "true" if entry["offline"] else "false",
        "conflict_kind": conflict.get("kind"),
        "conflict_action": conflict.get("action"),
    }
    return ["" if values.get(f) is None else values[f] for f in CSV_FIELDS]


def csv_stream(db: Database, head: reports_store.ReportHead) -> Iterator[bytes]:
    """One row per entry, a header row of the entry's field names."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow(CSV_FIELDS)
    for n, entry in enumerate(_objects(db, head.report_id, "entry"), 1):
        out.writerow(csv_row(entry))
        if n % PAGE == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("siteserver.reports", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_TEMPLATES.filters["cents"] = lambda c: "" if c is None else format_cents(int(c))


def html_stream(db: Database, head: reports_store.ReportHead) -> Iterator[bytes]:
    """One printable page: the check's summary first, then outages, conflicts, totals, entries."""
    page = _TEMPLATES.get_template("report.html.j2").generate(
        head=head,
        summary=head.summary,
        check=head.summary["check"],
        mismatches=_objects(db, head.report_id, "mismatch"),
        conflicts=_objects(db, head.report_id, "conflict"),
        entries=_objects(db, head.report_id, "entry"),
    )
    chunk: list[str] = []
    for text in page:
        chunk.append(text)
        if len(chunk) >= 4096:
            yield "".join(chunk).encode()
            chunk = []
    yield "".join(chunk).encode()


RENDERERS = {"json": json_stream, "csv": csv_stream, "html": html_stream}
