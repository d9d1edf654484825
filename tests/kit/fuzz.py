"""What both fuzz modules share (schemathesis over the primary's and over a site's live OpenAPI):
bounded hypothesis settings, the live schema, which token a path gets, which cases get steered at
real objects, the card login the steering uses, the long-poll cap, sending a case, the jobs a run
creates, and the contract's JSON error shape for every 4xx."""

from __future__ import annotations

import json
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, settings

MAX_EXAMPLES = 25
MAX_LONG_POLL_SECS = 0.2
CARD = "FUZZ-CARD"  # the fuzz user's card, for the steering's logins

bounded = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)


@dataclass
class Jobs:
    held: list[str] = field(default_factory=list)  # held job ids, for steered releases
    released: list[str] = field(default_factory=list)  # released job ids, for steered "printed"

    def record(self, case: Any, response: Any) -> None:
        if response.status_code != 200:
            return
        body = json.loads(response.content)
        if case.operation.path == "/api/provider/v1/jobs" and body.get("action") == "hold":
            self.held.append(body["job_id"])
        if case.operation.path.endswith("/release"):
            self.released += [r["job_id"] for r in body.get("results", []) if r.get("status") == "released"]

    def steer_release(self, body: dict[str, Any]) -> None:
        """Point a release body at a held job: each one once while more than one is left, then
        the last one again and again."""
        if self.held:
            body["job_ids"] = [self.held.pop()] if len(self.held) > 1 else self.held[-1:]


def live_schema(url: str) -> Any:
    """The schema a server at `url` publishes at /openapi.json, with its cases sent there."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json", timeout=30)
    schema.config.base_url = url
    return schema


def token_for(path: str, *, admin: str, device: str) -> str | None:
    """The token that gets a path past authentication: the admin's, a device's, or none."""
    if path.startswith("/api/admin/"):
        return admin
    if path.startswith(("/api/device/", "/api/provider/")):
        return device
    return None


def card_login(client: httpx.Client) -> str | None:
    """A session for the fuzz user's card at the device whose token the client carries (None if
    the login is refused)."""
    r = client.post("/api/device/v1/login", json={"card_number": CARD})
    return r.json()["session_id"] if r.status_code == 200 else None


def hold_jobs(client: httpx.Client, username: str, queue: str, n: int = 6) -> list[str]:
    """`n` one-page jobs held for `username` in `queue` (the client carries a provider's token)."""
    ids = []
    for _ in range(n):
        job = {
            "job_id": str(uuid.uuid4()),
            "username": username,
            "queue": queue,
            "document_name": "seed.pdf",
            "pages": 1,
            "copies": 1,
            "color": False,
            "duplex": False,
        }
        r = client.post("/api/provider/v1/jobs", json=job)
        assert r.status_code == 200 and r.json()["action"] == "hold", r.text
        ids.append(r.json()["job_id"])
    return ids


def steered(case: Any) -> bool:
    """Half of the cases, chosen by content so that a replayed example is steered alike."""
    return bool(zlib.crc32(repr((case.path_parameters, case.query, case.body)).encode()) % 2)


def cap_wait(case: Any) -> None:
    """The fuzzer may ask for a 120 s long-poll (a valid request): answer it quickly instead."""
    if case.operation.path != "/api/provider/v1/releases" or not isinstance(case.query, dict):
        return
    try:
        long = float(case.query.get("wait")) > MAX_LONG_POLL_SECS  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return  # not a number: the server says 422
    if long:
        case.query["wait"] = MAX_LONG_POLL_SECS


def send(case: Any, token: str | None, jobs: Jobs) -> tuple[Any, dict[str, str], str]:
    """The case sent (its long-poll capped) with this bearer token, and the jobs it made recorded:
    (the response, the headers it went with, a description for assertion messages)."""
    cap_wait(case)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    response = case.call(headers=headers, timeout=30)
    jobs.record(case, response)
    return response, headers, f"{case.operation.label}: {response.status_code} {response.text[:300]!r}"


def assert_json_4xx(response: Any, what: str) -> None:
    if not 400 <= response.status_code < 500:
        return
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/json"), what
    body = json.loads(response.content)
    assert isinstance(body, dict), what
    assert isinstance(body.get("error"), str) and body["error"], what
    assert isinstance(body.get("detail"), str) and body["detail"], what
