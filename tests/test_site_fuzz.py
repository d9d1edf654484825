"""Schemathesis against a live site server (with its real primary): whatever the generated
request, never a 5xx, and every 4xx is the contract's JSON error `{"error", "detail"}`.

As in tests/test_api_fuzz.py: bounded, derandomized examples; admin endpoints get the site's admin
token, device and provider endpoints a device token; half of the cases are steered at things that
exist (a live session, held jobs, the user, a printer) so the bodies reach the journal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error

from tests.kit.fuzz import (
    CARD,
    Jobs,
    assert_json_4xx,
    bounded,
    card_login,
    hold_jobs,
    live_schema,
    send,
    steered,
    token_for,
)
from tests.kit.primary import Primary, start_primary
from tests.kit.site import FINDME, MONO, Branch, eventually, start_branch

USER = "fuzz-user"


@dataclass
class SiteTarget:
    primary: Primary
    branch: Branch
    jobs: Jobs = field(default_factory=Jobs)  # what the run created, for steering

    def login(self) -> str | None:
        # The color device logs in only this way, so it is never locked out by the fuzzer.
        with self.branch.client(self.branch.color_device) as c:
            return card_login(c)


@pytest.fixture(scope="module")
def site_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteTarget]:
    tmp: Path = tmp_path_factory.mktemp("site-fuzz")
    p = start_primary(tmp)
    try:
        with p.admin() as c:
            c.post(
                "/api/admin/v1/users",
                json={
                    "username": USER,
                    "pin": "1234",
                    "card_numbers": [CARD],
                    "restricted": False,
                    "balance_cents": 100_000,
                },
            ).raise_for_status()
        b = start_branch(p, tmp, budget_ms=2000)
        try:
            eventually(lambda: bool(b.query("SELECT 1 FROM user_cards")), 10.0, "the user mirrored")
            target = SiteTarget(p, b)
            with b.client(b.provider) as c:
                target.jobs.held += hold_jobs(c, USER, FINDME)
            yield target
        finally:
            b.process.stop()
    finally:
        p.process.stop()


@pytest.fixture(scope="module")
def site_schema(site_target: SiteTarget) -> Any:
    return live_schema(site_target.branch.url)


schema = schemathesis.pytest.from_fixture("site_schema")


def _steer(case: Any, t: SiteTarget) -> str | None:
    path, params = case.operation.path, case.path_parameters
    body = case.body if isinstance(case.body, dict) else None
    token = None
    if isinstance(params, dict) and "session_id" in params:
        session = t.login()
        if session is not None:
            params["session_id"] = session
            token = t.branch.color_device
            if path.endswith("/release") and body is not None:
                t.jobs.steer_release(body)
            if body is not None and "account" in body:
                body.pop("account")
    elif path == "/api/provider/v1/jobs/{job_id}/printed" and isinstance(params, dict) and t.jobs.released:
        params["job_id"] = t.jobs.released[-1]
        token = t.branch.provider
    elif path == "/api/provider/v1/jobs" and body is not None:
        body.update({"username": USER, "queue": FINDME})
        token = t.branch.provider
    elif path == "/api/provider/v1/releases" and isinstance(case.query, dict):
        case.query["printer"] = MONO
        token = t.branch.provider
    return token


@bounded
@schema.parametrize()
def test_site_no_server_errors_and_json_4xx(case: Any, site_target: SiteTarget) -> None:
    branch = site_target.branch
    token = token_for(case.operation.path, admin=branch.admin_token, device=branch.mono_device)
    if steered(case):
        token = _steer(case, site_target) or token
    response, headers, what = send(case, token, site_target.jobs)
    if case.operation.path in ("/api/admin/v1/sync", "/api/admin/v1/merge") and response.status_code == 503:
        # The primary briefly unreachable is an answer, not a bug: it must still be the JSON error.
        assert json.loads(response.content).get("error") == "primary_unreachable", what
    else:
        case.validate_response(response, checks=[not_a_server_error], headers=headers)
    assert_json_4xx(response, what)
