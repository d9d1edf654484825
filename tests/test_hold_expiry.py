"""Held jobs expire after the offline policies' hold_timeout_minutes — by the same function on the
primary's database and on a site's (the policies and the jobs table are the same on both)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlite_utils

from migrations.primary import migrations as primary_migrations
from migrations.site import migrations as site_migrations
from siteserver.domain import JobStatus
from siteserver.store import Database, jobs, settings
from siteserver.timeutil import iso, utcnow
from tests.kit.primary import new_id, open_database


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


@pytest.fixture(params=["primary", "site"])
def role_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    migrations = primary_migrations if request.param == "primary" else site_migrations
    with open_database(tmp_path / f"{request.param}.db", migrations) as db:
        yield db


def test_held_jobs_expire_after_the_hold_timeout(role_db: Database) -> None:
    policies = role_db.read_sync(settings.get_policies)
    role_db.write_sync(
        lambda d: settings.put_policies(d, policies.model_copy(update={"hold_timeout_minutes": 30}))
    )
    now = utcnow()
    old, young = new_id(), new_id()

    def setup(db: sqlite_utils.Database) -> None:
        jobs.insert_job(db, held(old, iso(now - timedelta(minutes=30, seconds=1))))
        jobs.insert_job(db, held(young, iso(now - timedelta(minutes=29))))

    role_db.write_sync(setup)
    assert role_db.write_sync(lambda d: jobs.expire_past_hold_timeout(d, now)) == 1
    assert role_db.write_sync(lambda d: jobs.expire_past_hold_timeout(d, now)) == 0
    statuses = role_db.read_sync(lambda d: {j: jobs.get_job(d, j).status for j in (old, young)})  # type: ignore[union-attr]
    assert statuses == {old: JobStatus.EXPIRED, young: JobStatus.HELD}
    assert [j.job_id for j in role_db.read_sync(lambda d: jobs.held_jobs_of(d, "alice"))] == [young]
