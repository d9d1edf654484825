"""Schemathesis against a live primary: whatever the generated request, never a 5xx, and every
4xx is the contract's JSON error `{"error", "detail"}`.

The primary is started once for the module. Admin endpoints get the admin token, device and
print provider endpoints a device token, so the fuzzer gets past authentication and reaches the
validation and the backend. Half of the cases are steered at things that exist (a live session,
held and released jobs, a real user, printer and shared account) so that the fuzzed bodies reach
the ledger, not only the 404s.
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

HEALTH = "/api/health/application-server/status"
PRINTER = "fuzz-printer-1"
USER = "fuzz-user"  # logs in by card; never the target of admin calls
ADMIN_TARGET = "fuzz-admin-target"  # what steered admin user calls change or delete
SHARED = "fuzz-shared"


@dataclass
class FuzzTarget:
    primary: Primary
    device_token: str  # for the login endpoint and the provider API (it may get locked out)
    session_device_token: str  # logs in only the way the steering does: never locked out
    jobs: Jobs = field(default_factory=Jobs)  # what the run created, for steering

    def login(self) -> str | None:
        with self.primary.client(self.session_device_token) as c:
            return card_login(c)


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    p = start_primary(tmp)
    try:
        with p.admin() as c:
            c.post(
                "/api/admin/v1/printers",
                json={
                    "name": PRINTER,
                    "site_id": "fuzz-site",
                    "color": True,
                    "duplex": True,
                    "hold": True,
                    "cost": {"mono_page_cents": 10, "color_page_cents": 40},
                },
            ).raise_for_status()
            tokens = []
            for device_id in ("fuzz-mfd", "fuzz-mfd-sessions"):
                dev = c.post("/api/admin/v1/devices", json={"device_id": device_id, "printer": PRINTER})
                dev.raise_for_status()
                tokens.append(dev.json()["token"])
            c.post(
                "/api/admin/v1/users",
                json={
                    "username": USER,
                    "password": "fuzz-password",
                    "pin": "1234",
                    "card_numbers": [CARD],
                    "restricted": False,
                    "balance_cents": 100_000,
                },
            ).raise_for_status()
            c.post("/api/admin/v1/users", json={"username": ADMIN_TARGET}).raise_for_status()
            shared = c.post("/api/admin/v1/shared-accounts", json={"name": SHARED, "members": [USER]})
            shared.raise_for_status()
        target = FuzzTarget(p, tokens[0], tokens[1])
        with p.client(target.device_token) as c:  # held jobs for the steered releases
            target.jobs.held += hold_jobs(c, USER, PRINTER)
        yield target
    finally:
        p.process.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_target: FuzzTarget) -> Any:
    return live_schema(fuzz_target.primary.url)


schema = schemathesis.pytest.from_fixture("api_schema")


def _steer(case: Any, t: FuzzTarget) -> str | None:
    """Every other case, point the generated request at things that exist — a live session,
    a held job, the user and printer — so the fuzzer reaches the backend, not just the 404s.
    Returns the token to use instead of the default one, if any."""
    path, params = case.operation.path, case.path_parameters
    body = case.body if isinstance(case.body, dict) else None
    token = None
    if isinstance(params, dict) and "session_id" in params:
        session = t.login()
        if session is not None:
            params["session_id"] = session
            token = t.session_device_token
            if path.endswith("/release") and body is not None:
                t.jobs.steer_release(body)
            if body is not None and "account" in body:
                body["account"] = SHARED
    elif isinstance(params, dict) and "username" in params:
        params["username"] = ADMIN_TARGET
    elif isinstance(params, dict) and "name" in params:
        params["name"] = SHARED if "shared-accounts" in path else PRINTER
    elif path == "/api/provider/v1/jobs/{job_id}/printed" and isinstance(params, dict) and t.jobs.released:
        params["job_id"] = t.jobs.released[-1]
    elif path == "/api/provider/v1/jobs" and body is not None:
        body.update({"username": USER, "queue": PRINTER})
    elif path == "/api/provider/v1/releases" and isinstance(case.query, dict):
        case.query["printer"] = PRINTER
    return token


@bounded
@schema.parametrize()
def test_no_server_errors_and_json_4xx(case: Any, fuzz_target: FuzzTarget) -> None:
    if case.operation.path == HEALTH:
        # Exercise both the key check and the guarded path.
        case.query = {**(case.query or {}), "Authorization": fuzz_target.primary.health_key}
    token = token_for(
        case.operation.path, admin=fuzz_target.primary.admin_token, device=fuzz_target.device_token
    )
    if steered(case):
        token = _steer(case, fuzz_target) or token
    response, headers, what = send(case, token, fuzz_target.jobs)
    if case.operation.path == HEALTH and response.status_code == 503:
        # The load balancer's signal, not an error: passive member or disk under the threshold.
        assert json.loads(response.content).get("status") in {"DISK_LOW", "PASSIVE", "STARTING"}, what
    else:
        case.validate_response(response, checks=[not_a_server_error], headers=headers)
    assert_json_4xx(response, what)
