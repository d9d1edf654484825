"""Print jobs: held jobs waiting at Find-Me and secure-print queues, releases waiting for the
print provider, and what each job finally cost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlite_utils

from siteserver.domain import JobStatus
from siteserver.domain.jobs import hold_expires_at
from siteserver.store.settings import get_policies
from siteserver.timeutil import iso

_COLS = (
    "job_id, request_digest, username, queue, site_id, findme, document_name, pages, copies,"
    " color, duplex, client, submitted_at, action, status, reason, txn_id, printer, grayscale,"
    " cost_cents, account_id, balance_after_cents, released_at, released_by_device,"
    " pages_printed, printed_at"
)


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    request_digest: str
    username: str
    queue: str
    site_id: str | None
    findme: bool
    document_name: str
    pages: int
    copies: int
    color: bool
    duplex: bool
    client: str | None
    submitted_at: str
    action: str
    status: JobStatus
    reason: str | None
    txn_id: str
    printer: str | None = None
    grayscale: bool | None = None
    cost_cents: int | None = None
    account_id: int | None = None
    balance_after_cents: int | None = None
    released_at: str | None = None
    released_by_device: str | None = None
    pages_printed: int | None = None
    printed_at: str | None = None


def _job(row: Any) -> Job:
    v = list(row)
    for i in (5, 9, 10):
        v[i] = bool(v[i])
    v[14] = JobStatus(v[14])
    if v[18] is not None:
        v[18] = bool(v[18])
    return Job(*v)


def get_job(conn: sqlite_utils.Database, job_id: str) -> Job | None:
    row = conn.execute(f"SELECT {_COLS} FROM jobs WHERE job_id = ?", [job_id]).fetchone()
    return None if row is None else _job(row)


def insert_job(conn: sqlite_utils.Database, job: Job) -> None:
    values = [getattr(job, f.strip()) for f in _COLS.split(",")]
    values = [v.value if isinstance(v, JobStatus) else v for v in values]
    conn.execute(f"INSERT INTO jobs ({_COLS}) VALUES ({','.join('?' * len(values))})", values)


def held_jobs_of(conn: sqlite_utils.Database, username: str) -> list[Job]:
    return [
        _job(r)
        for r in conn.execute(
            f"SELECT {_COLS} FROM jobs WHERE username = ? AND status = 'held' ORDER BY submitted_at",
            [username],
        )
    ]


def mark_released(
    conn: sqlite_utils.Database,
    job_id: str,
    *,
    printer: str,
    grayscale: bool,
    cost_cents: int,
    account_id: int,
    balance_after_cents: int,
    device_id: str,
    now: str,
) -> None:
    conn.execute(
        "UPDATE jobs SET status = 'released', printer = ?, grayscale = ?, cost_cents = ?,"
        " account_id = ?, balance_after_cents = ?, released_at = ?, released_by_device = ?"
        " WHERE job_id = ?",
        [printer, int(grayscale), cost_cents, account_id, balance_after_cents, now, device_id, job_id],
    )


def pending_releases(conn: sqlite_utils.Database, printers: Sequence[str]) -> list[Job]:
    """Released jobs not yet reported printed: handed out until the provider says `printed`,
    so a lost long-poll answer loses no job (the provider de-duplicates by job_id)."""
    marks = ",".join("?" * len(printers))
    return [
        _job(r)
        for r in conn.execute(
            f"SELECT {_COLS} FROM jobs WHERE status = 'released' AND printer IN ({marks})"
            " ORDER BY released_at",
            list(printers),
        )
    ]


def mark_printed(conn: sqlite_utils.Database, job_id: str, pages_printed: int, *, now: str) -> None:
    conn.execute(
        "UPDATE jobs SET status = 'printed', pages_printed = ?, printed_at = ? WHERE job_id = ?",
        [pages_printed, now, job_id],
    )


def expire_held(conn: sqlite_utils.Database, *, submitted_before: str, now: str) -> int:
    cur = conn.execute(
        "UPDATE jobs SET status = 'expired', reason = 'hold timeout', expired_at = ?"
        " WHERE status = 'held' AND submitted_at < ?",
        [now, submitted_before],
    )
    return cur.rowcount


def expire_past_hold_timeout(conn: sqlite_utils.Database, now: datetime) -> int:
    """Expire held jobs older than the offline policies' hold_timeout_minutes (both roles: the
    policies are mirrored, so a site expires its held jobs by the same rule as the primary)."""
    timeout = get_policies(conn).hold_timeout_minutes
    return expire_held(conn, submitted_before=iso(hold_expires_at(now, -timeout)), now=iso(now))


def expire_held_of_user(conn: sqlite_utils.Database, username: str, *, now: str) -> int:
    """A deleted user's held jobs go with them: a later user of the same name must not see or
    release (and pay for) them."""
    cur = conn.execute(
        "UPDATE jobs SET status = 'expired', reason = 'user deleted', expired_at = ?"
        " WHERE status = 'held' AND username = ?",
        [now, username],
    )
    return cur.rowcount


def set_status(conn: sqlite_utils.Database, job_id: str, status: JobStatus) -> None:
    conn.execute("UPDATE jobs SET status = ? WHERE job_id = ?", [status.value, job_id])


def finish_release(conn: sqlite_utils.Database, job_id: str) -> None:
    """A release the primary did not refuse: now the print provider may fetch it."""
    conn.execute(
        "UPDATE jobs SET status = 'released' WHERE job_id = ? AND status = ?",
        [job_id, JobStatus.RELEASING.value],
    )


def undo_release(conn: sqlite_utils.Database, job_id: str, *, held_cost_cents: int | None) -> None:
    """A release the primary refused: the job is held again, as before the release."""
    conn.execute(
        "UPDATE jobs SET status = 'held', printer = NULL, grayscale = NULL,"
        " cost_cents = ?, account_id = NULL, balance_after_cents = NULL,"
        " released_at = NULL, released_by_device = NULL"
        " WHERE job_id = ? AND status = ?",
        [held_cost_cents, job_id, JobStatus.RELEASING.value],
    )


def deny_direct_print(conn: sqlite_utils.Database, job_id: str, reason: str | None) -> None:
    """A direct print the primary refused after the site let it print: recorded as denied."""
    conn.execute(
        "UPDATE jobs SET action = 'deny', status = 'denied', reason = ?, printer = NULL,"
        " grayscale = NULL, account_id = NULL, balance_after_cents = NULL,"
        " released_at = NULL WHERE job_id = ? AND status = 'printing'",
        [reason, job_id],
    )


def recover_releasing(conn: sqlite_utils.Database) -> int:
    """At a site's start: jobs left 'releasing' by a stop between a release and its confirmation.
    No merge is in flight, so the journal decides: a rejected charge puts the job back on hold, any
    other (pending or merged) lets it print."""
    held = conn.execute(
        "UPDATE jobs SET status = 'held', printer = NULL, grayscale = NULL, account_id = NULL,"
        " balance_after_cents = NULL, released_at = NULL, released_by_device = NULL"
        " WHERE status = 'releasing' AND txn_id IN (SELECT txn_id FROM journal WHERE status = 'rejected')"
    ).rowcount
    released = conn.execute("UPDATE jobs SET status = 'released' WHERE status = 'releasing'").rowcount
    return int(held) + int(released)
