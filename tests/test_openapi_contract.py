"""The published OpenAPI document against CONTRACT.md, and the credential rules for every operation
it lists: no credential, another realm's credential or a made-up token never gets past
authentication, whatever the body.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from siteserver import sample
from siteserver.launch import health_url
from tests.kit.primary import Primary, start_primary

HEALTH = "/api/health/application-server/status"
UNAUTHENTICATED = {HEALTH, "/docs", "/openapi.json"}

# Every endpoint of CONTRACT.md's primary sections: Health, Primary administration, Device API,
# Print provider API.
CONTRACT_ENDPOINTS = [
    # Health
    ("get", "/api/health/application-server/status"),
    # Primary administration
    ("post", "/api/admin/v1/users"),
    ("get", "/api/admin/v1/users/{username}"),
    ("patch", "/api/admin/v1/users/{username}"),
    ("delete", "/api/admin/v1/users/{username}"),
    ("post", "/api/admin/v1/users/{username}/adjustments"),
    ("post", "/api/admin/v1/shared-accounts"),
    ("get", "/api/admin/v1/shared-accounts/{name}"),
    ("post", "/api/admin/v1/printers"),
    ("post", "/api/admin/v1/sites"),
    ("get", "/api/admin/v1/sites"),
    ("post", "/api/admin/v1/devices"),
    ("post", "/api/admin/v1/providers"),
    ("put", "/api/admin/v1/offline-policies"),
    ("get", "/api/admin/v1/offline-policies"),
    ("get", "/api/admin/v1/transactions"),
    # Device API
    ("post", "/api/device/v1/login"),
    ("get", "/api/device/v1/sessions/{session_id}/jobs"),
    ("post", "/api/device/v1/sessions/{session_id}/release"),
    ("post", "/api/device/v1/sessions/{session_id}/usage"),
    ("post", "/api/device/v1/sessions/{session_id}/logout"),
    # Print provider API
    ("post", "/api/provider/v1/jobs"),
    ("get", "/api/provider/v1/releases"),
    ("post", "/api/provider/v1/jobs/{job_id}/printed"),
]

# Query parameters the contract names.
CONTRACT_QUERY_PARAMS = {
    ("get", "/api/health/application-server/status"): {"disk-threshold-mb", "Authorization"},
    ("get", "/api/admin/v1/transactions"): {"origin_site", "since_seq", "limit"},
    ("get", "/api/provider/v1/releases"): {"printer", "wait"},
}

# Endpoints whose contract has a request body.
CONTRACT_BODIES = {
    ("post", "/api/admin/v1/users"),
    ("patch", "/api/admin/v1/users/{username}"),
    ("post", "/api/admin/v1/users/{username}/adjustments"),
    ("post", "/api/admin/v1/shared-accounts"),
    ("post", "/api/admin/v1/printers"),
    ("post", "/api/admin/v1/sites"),
    ("post", "/api/admin/v1/devices"),
    ("post", "/api/admin/v1/providers"),
    ("put", "/api/admin/v1/offline-policies"),
    ("post", "/api/device/v1/login"),
    ("post", "/api/device/v1/sessions/{session_id}/release"),
    ("post", "/api/device/v1/sessions/{session_id}/usage"),
    ("post", "/api/provider/v1/jobs"),
    ("post", "/api/provider/v1/jobs/{job_id}/printed"),
}

# Bodies FastAPI rejects before it runs the credential dependencies (422 and 400).
BAD_BODIES = {"malformed JSON": b"{not json", "not UTF-8": b"\x92\x04Z\x1e"}

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@dataclass
class Contract:
    primary: Primary
    doc: dict[str, Any]
    device_token: str
    provider_token: str


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Contract]:
    tmp: Path = tmp_path_factory.mktemp("contract")
    p = start_primary(tmp)
    try:
        with p.admin() as c:
            world = sample.build(c)
        doc = httpx.get(p.url + "/openapi.json", timeout=30)
        assert doc.status_code == 200, doc.text
        yield Contract(p, doc.json(), world.mono_device, world.provider)
    finally:
        p.process.stop()


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return schema


# -- the document --------------------------------------------------------------------------


def test_every_contract_endpoint_is_documented(contract: Contract) -> None:
    documented = {(method, path) for method, path, _ in operations(contract.doc)}
    missing = [e for e in CONTRACT_ENDPOINTS if e not in documented]
    assert not missing, f"endpoints of CONTRACT.md missing from /openapi.json: {missing}"


def test_contract_query_parameters_and_bodies_are_documented(contract: Contract) -> None:
    ops = {(method, path): op for method, path, op in operations(contract.doc)}
    problems = []
    for key, names in CONTRACT_QUERY_PARAMS.items():
        documented = {p["name"] for p in ops[key].get("parameters", []) if p["in"] == "query"}
        if not names <= documented:
            problems.append(f"{key}: query parameters {sorted(names - documented)} not documented")
    for key in CONTRACT_BODIES:
        body = ops[key].get("requestBody")
        if body is None or "application/json" not in body.get("content", {}):
            problems.append(f"{key}: no JSON request body documented")
            continue
        schema = _resolve(contract.doc, body["content"]["application/json"]["schema"])
        # "Unknown fields in a request are rejected with 422": the document must say so too.
        if schema.get("additionalProperties") is not False:
            problems.append(f"{key}: request body schema allows unknown fields")
    assert not problems, "\n".join(problems)


def test_path_parameters_match_the_path_templates(contract: Contract) -> None:
    """A parameter documented under another name than its `{placeholder}` is a route that can
    never be called (FastAPI looks for the documented name)."""
    problems = []
    for method, path, op in operations(contract.doc):
        placeholders = set(re.findall(r"\{([^}]+)\}", path))
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        if placeholders != declared:
            problems.append(f"{method.upper()} {path}: path parameters {sorted(declared)}")
    assert not problems, "\n".join(problems)


def test_documented_lookups_answer(contract: Contract) -> None:
    """The GET-by-name routes really find what was created (guards the path-parameter bug)."""
    with contract.primary.admin() as c:
        c.post("/api/admin/v1/shared-accounts", json={"name": "Dept A"}).raise_for_status()
        c.post("/api/admin/v1/users", json={"username": "lookup-user"}).raise_for_status()
        assert c.get("/api/admin/v1/shared-accounts/Dept A").json()["name"] == "Dept A"
        assert c.get("/api/admin/v1/printers/mono-1").json()["name"] == "mono-1"
        assert c.get("/api/admin/v1/users/lookup-user").json()["username"] == "lookup-user"
        missing = c.get("/api/admin/v1/shared-accounts/nope")
        assert missing.status_code == 404, missing.text
        assert set(missing.json()) == {"error", "detail"}


def test_docs_and_openapi_need_no_credential(contract: Contract) -> None:
    assert httpx.get(contract.primary.url + "/openapi.json", timeout=30).status_code == 200
    assert httpx.get(contract.primary.url + "/docs", timeout=30).status_code == 200


# -- credentials on every operation --------------------------------------------------------


def _fill_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)


def _query(op: dict[str, Any]) -> dict[str, str]:
    """Plausible values for required query parameters, so that only the credential is wrong."""
    out = {}
    for p in op.get("parameters", []):
        if p["in"] == "query" and p.get("required"):
            kind = p.get("schema", {}).get("type")
            out[p["name"]] = "1" if kind in ("integer", "number") else "x"
    return out


def _realm(path: str) -> str:
    if path.startswith("/api/admin/") or path == "/metrics":  # the admin token opens /metrics too
        return "admin"
    if path.startswith(("/api/device/", "/api/provider/")):
        return "machine"
    return "other"  # e.g. a future sync API (site signatures): no bearer token of ours opens it


def _error_problem(r: httpx.Response, allowed: set[int]) -> str | None:
    if r.status_code not in allowed:
        return f"status {r.status_code} (expected {sorted(allowed)}): {r.text[:200]}"
    try:
        body = r.json()
    except ValueError:
        return f"{r.status_code} body is not JSON: {r.text[:200]!r}"
    if not (
        isinstance(body, dict)
        and set(body) == {"error", "detail"}
        and all(isinstance(body[k], str) and body[k] for k in ("error", "detail"))
    ):
        return f"{r.status_code} body is not {{error, detail}}: {r.text[:200]}"
    return None


def _protected_operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    ops = [(m, p, op) for m, p, op in operations(doc) if p not in UNAUTHENTICATED]
    # Guard against a vacuous pass: at least every non-health contract endpoint is here.
    assert len(ops) >= len(CONTRACT_ENDPOINTS) - 1
    return ops


def _call(
    c: Contract,
    method: str,
    path: str,
    op: dict[str, Any],
    headers: dict[str, str],
    content: bytes | None = None,
) -> httpx.Response:
    kwargs: dict[str, Any] = {"params": _query(op), "headers": dict(headers)}
    if "requestBody" in op:
        if content is None:
            kwargs["json"] = {}
        else:
            kwargs["content"] = content
            kwargs["headers"]["Content-Type"] = "application/json"
    return httpx.request(method.upper(), c.primary.url + _fill_path(path), timeout=30, **kwargs)


def _check_all(c: Contract, cases: list[tuple[str, dict[str, str], set[int], bytes | None]]) -> None:
    problems = []
    for method, path, op in _protected_operations(c.doc):
        for label, headers, allowed, content in cases:
            problem = _error_problem(_call(c, method, path, op, headers, content), allowed)
            if problem:
                problems.append(f"{method.upper()} {path} [{label}]: {problem}")
    assert not problems, "\n".join(problems)


def test_every_operation_needs_a_credential(contract: Contract) -> None:
    _check_all(
        contract,
        [
            ("no credential", {}, {401}, None),
            ("bearer without token", {"Authorization": "Bearer"}, {401}, None),
            ("basic scheme", {"Authorization": "Basic YWRtaW46YWRtaW4="}, {401}, None),
            ("made-up token", {"Authorization": f"Bearer {uuid.uuid4().hex}"}, {401}, None),
            ("made-up device-like token", {"Authorization": "Bearer dev_" + "A" * 43}, {401}, None),
        ],
    )


def test_authentication_comes_before_the_body(contract: Contract) -> None:
    """A body that is not even JSON still gets 401 without a valid credential, not 422/400."""
    cases: list[tuple[str, dict[str, str], set[int], bytes | None]] = []
    for what, content in BAD_BODIES.items():
        cases += [
            (f"no credential, {what}", {}, {401}, content),
            (f"made-up token, {what}", {"Authorization": "Bearer nope-nope-nope"}, {401}, content),
        ]
    _check_all(contract, cases)


def test_no_credential_opens_another_realm(contract: Contract) -> None:
    tokens = {
        "admin": contract.primary.admin_token,
        "device": contract.device_token,
        "provider": contract.provider_token,
    }
    opens = {"admin": {"admin"}, "machine": {"device", "provider"}, "other": set()}
    problems = []
    for method, path, op in _protected_operations(contract.doc):
        for kind, token in tokens.items():
            if kind in opens[_realm(path)]:
                continue
            for what, content in {"{}": None, **BAD_BODIES}.items():
                r = _call(contract, method, path, op, {"Authorization": f"Bearer {token}"}, content)
                problem = _error_problem(r, {401, 403})
                if problem:
                    problems.append(f"{method.upper()} {path} [{kind} token, {what}]: {problem}")
    assert not problems, "\n".join(problems)


def test_the_right_credential_gets_past_authentication(contract: Contract) -> None:
    """The counterpart of the realm checks: with the right token, `{}` is a validation problem
    (422), not an authentication one — so the 401s above really come from the credential."""
    with contract.primary.admin() as c:
        r = c.post("/api/admin/v1/users", json={})
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "invalid_request"
        for content, status in ((BAD_BODIES["malformed JSON"], 422), (BAD_BODIES["not UTF-8"], 400)):
            r = c.post("/api/admin/v1/users", content=content, headers={"Content-Type": "application/json"})
            assert r.status_code == status, r.text
            assert set(r.json()) == {"error", "detail"}
    with contract.primary.client(contract.device_token) as c:
        assert c.post("/api/device/v1/login", json={}).status_code == 422
        assert c.post("/api/provider/v1/jobs", json={}).status_code == 422
    with contract.primary.client(contract.provider_token) as c:
        assert c.post("/api/provider/v1/jobs", json={}).status_code == 422
        # A provider token is not a device's: the device API refuses it.
        r = c.post("/api/device/v1/login", json={"card_number": "x"})
        assert r.status_code == 403, r.text


# -- health ---------------------------------------------------------------------------------


def test_health_key(contract: Contract) -> None:
    p = contract.primary
    for url in (
        f"{p.url}{HEALTH}",
        health_url(p.url, "wrong-" + p.health_key),
        health_url(p.url, p.health_key[:-1]),
        health_url(p.url, ""),
    ):
        r = httpx.get(url, timeout=30)
        assert r.status_code == 401, (url, r.text)
        assert set(r.json()) == {"error", "detail"}
    # The bearer tokens are not the health key.
    r = httpx.get(health_url(p.url, p.admin_token), timeout=30)
    assert r.status_code == 401, r.text


def test_health_ok(contract: Contract) -> None:
    r = httpx.get(contract.primary.health, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"status", "role", "server_uuid", "epoch", "disk_free_mb"}
    assert body["status"] == "OK" and body["role"] == "active"
    assert str(uuid.UUID(body["server_uuid"])) == body["server_uuid"]
    assert isinstance(body["epoch"], int) and body["epoch"] >= 1
    assert isinstance(body["disk_free_mb"], int) and body["disk_free_mb"] > 0
    # The default threshold is 0: no `disk-threshold-mb` at all is fine.
    r = httpx.get(
        f"{contract.primary.url}{HEALTH}", params={"Authorization": contract.primary.health_key}, timeout=30
    )
    assert r.status_code == 200, r.text


def test_health_disk_low(contract: Contract) -> None:
    p = contract.primary
    r = httpx.get(health_url(p.url, p.health_key, threshold_mb=2**40), timeout=30)
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] == "DISK_LOW"
    assert body["role"] == "active"
    assert body["disk_free_mb"] < 2**40
