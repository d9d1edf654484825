"""Logs of real processes: `log_format = "json"` gives one JSON object a line with time, level,
logger, role and (a site) its site id; every HTTP request has a request id, the client's
`X-Request-ID` when it is sensible, else one made, returned in the response and on the request's
log lines; `text` keeps the classic line with the same context after it; no secret in either."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.kit.primary import Primary, start_primary
from tests.kit.site import start_branch

KEYS = {"timestamp", "level", "logger", "role", "event"}


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    assert lines
    return [json.loads(ln) for ln in lines]  # every line is a JSON object


def test_json_logs_carry_role_and_request_ids(tmp_path: Path) -> None:
    primary = start_primary(tmp_path, extra={"log_format": "json"})
    try:
        with primary.admin() as c:
            given = c.get("/api/admin/v1/users/ghost", headers={"X-Request-ID": "trace-42.a"})
            assert given.status_code == 404 and given.headers["x-request-id"] == "trace-42.a"
            made = c.get("/api/admin/v1/users/ghost", headers={"X-Request-ID": "x" * 500})
            rid = made.headers["x-request-id"]
            assert rid != "x" * 500 and len(rid) == 32
            plain = c.get("/api/admin/v1/users/ghost")
            assert plain.headers["x-request-id"] not in (rid, "trace-42.a")
        unmatched = httpx.get(primary.url + "/no/such/route", timeout=5)
        assert unmatched.status_code == 404 and unmatched.headers["x-request-id"]
        primary.process.stop()
        records = json_lines(primary.process.log_path)
        for r in records:
            assert set(r) >= KEYS, r
            assert r["role"] == "primary" and r["level"] in {"debug", "info", "warning", "error", "critical"}
        access = [r for r in records if r["logger"] == "uvicorn.access" and "/users/ghost" in r["event"]]
        assert {r.get("request_id") for r in access} >= {"trace-42.a", rid}
        text = primary.process.log_path.read_text()
        assert primary.admin_token not in text and primary.health_key not in text
    finally:
        primary.process.stop()


def test_text_logs_name_role_and_site(primary: Primary, tmp_path: Path) -> None:
    branch = start_branch(primary, tmp_path)
    try:
        with branch.admin() as c:
            r = c.get("/api/admin/v1/status", headers={"X-Request-ID": "branch-probe-1"})
            assert r.status_code == 200 and r.headers["x-request-id"] == "branch-probe-1"
    finally:
        branch.process.stop()
    lines = branch.process.log_path.read_text().splitlines()
    assert all("role=site site_id=branch-01" in ln for ln in lines if ln[:4].isdigit()), lines[:5]
    (status,) = [ln for ln in lines if "GET /api/admin/v1/status" in ln]
    assert " INFO uvicorn.access: " in status and "request_id=branch-probe-1" in status
    assert branch.admin_token not in "\n".join(lines)
