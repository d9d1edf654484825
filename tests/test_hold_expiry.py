"""Held jobs expire after the offline policies' hold_timeout_minutes."""

from __future__ import annotations

from datetime import timedelta

import sqlite_utils

from siteserver.domain import JobStatus
from siteserver.store import Database, jobs, settings
from siteserver.timeutil import iso, utcnow

from .conftest import new_id


def held(job_id: str, submitted_at: str) -> jobs.Job:
    return jobs.Job(
        job_id=job_id,
        request_digest="d",
        username="alice",
        queue="findme",
        site_id="s1",
        findme=True,
        document_name="doc",
        pages=1,
        copies=1,
        color=False,
        duplex=False,
        client=None,
        submitted_at=submitted_at,
        action="hold",
        status=JobStatus.HELD,
        reason=None,
        txn_id=new_id(),
    )


def test_held_jobs_expire_after_the_hold_timeout(fresh_db: Database) -> None:
    policies = fresh_db.read_sync(settings.get_policies)
    fresh_db.write_sync(
        lambda d: settings.put_policies(d, policies.model_copy(update={"hold_timeout_minutes": 30}))
    )
    timeout = fresh_db.read_sync(settings.get_policies).hold_timeout_minutes
    assert timeout == 30
    now = utcnow()
    old, young = new_id(), new_id()

    def setup(db: sqlite_utils.Database) -> None:
        jobs.insert_job(db, held(old, iso(now - timedelta(minutes=timeout, seconds=1))))
        jobs.insert_job(db, held(young, iso(now - timedelta(minutes=timeout - 1))))

    fresh_db.write_sync(setup)
    before = iso(now - timedelta(minutes=timeout))
    assert fresh_db.write_sync(lambda d: jobs.expire_held(d, submitted_before=before, now=iso(now))) == 1
    statuses = fresh_db.read_sync(lambda d: {j: jobs.get_job(d, j).status for j in (old, young)})  # type: ignore[union-attr]
    assert statuses == {old: JobStatus.EXPIRED, young: JobStatus.HELD}
    assert [j.job_id for j in fresh_db.read_sync(lambda d: jobs.held_jobs_of(d, "alice"))] == [young]
