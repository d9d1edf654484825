"""Requests take JSON types as they are: no string for a number, no number or string for a
boolean, on every field kind of both roles' request models (422 with a clear error, never a
quiet conversion)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from siteserver import sample
from tests.kit.primary import Primary, expect_error

LOOSE = [
    # (what, the field's kind, a well-formed body, the field, a loose value)
    ("usage pages as a string", "count", {"kind": "copy", "pages": 3, "color": False}, "pages", "3"),
    ("usage pages as a float", "count", {"kind": "copy", "pages": 3, "color": False}, "pages", 3.0),
    ("usage color as a string", "flag", {"kind": "copy", "pages": 3, "color": False}, "color", "yes"),
    ("usage color as a number", "flag", {"kind": "copy", "pages": 3, "color": False}, "color", 1),
    ("usage duplex as a string", "flag", {"kind": "copy", "pages": 3, "color": False}, "duplex", "false"),
]


def _session(primary: Primary, world: sample.World) -> str:
    with primary.admin() as admin:
        r = admin.post("/api/admin/v1/users", json={"username": "sam", "card_numbers": ["CARD-SAM"]})
        assert r.status_code == 201, r.text
    with primary.client(world.mono_device) as mfd:
        return str(mfd.post("/api/device/v1/login", json={"card_number": "CARD-SAM"}).json()["session_id"])


@pytest.mark.parametrize(("what", "kind", "body", "field", "value"), LOOSE, ids=[x[0] for x in LOOSE])
def test_device_usage_takes_no_loose_types(
    primary: Primary, world: sample.World, what: str, kind: str, body: dict[str, Any], field: str, value: Any
) -> None:
    session = _session(primary, world)
    with primary.client(world.mono_device) as mfd:
        url = f"/api/device/v1/sessions/{session}/usage"
        ok = mfd.post(url, json={**body, "txn_id": str(uuid.uuid4())})
        assert ok.status_code == 200, ok.text  # the well-formed body is fine
        r = mfd.post(url, json={**body, field: value, "txn_id": str(uuid.uuid4())})
        error = expect_error(r, 422, "invalid_request")
        assert field in error["detail"]


def test_provider_jobs_take_no_loose_types(primary: Primary, world: sample.World) -> None:
    job = {"username": "sam", "queue": "mono-1", "document_name": "a.pdf", "pages": 2, "copies": 1}
    job |= {"color": False, "duplex": False}
    with primary.admin() as admin:
        assert admin.post("/api/admin/v1/users", json={"username": "sam"}).status_code == 201
    with primary.client(world.provider) as prov:
        assert prov.post("/api/provider/v1/jobs", json={**job, "job_id": str(uuid.uuid4())}).status_code in (
            200,
            201,
        )
        for field, value in (
            ("copies", True),
            ("copies", "1"),
            ("pages", "2"),
            ("color", "no"),
            ("duplex", 0),
        ):
            r = prov.post("/api/provider/v1/jobs", json={**job, field: value, "job_id": str(uuid.uuid4())})
            assert field in expect_error(r, 422, "invalid_request")["detail"]


def test_admin_calls_take_no_loose_types(primary: Primary) -> None:
    with primary.admin() as admin:
        for body in (
            {"username": "u1", "restricted": "false"},
            {"username": "u2", "restricted": 0},
            {"username": 12345},
        ):
            expect_error(admin.post("/api/admin/v1/users", json=body), 422, "invalid_request")
        assert (
            admin.post("/api/admin/v1/users", json={"username": "u3", "restricted": False}).status_code == 201
        )
        expect_error(admin.patch("/api/admin/v1/users/u3", json={"disabled": "true"}), 422, "invalid_request")
        cost = {"mono_page_cents": 10, "color_page_cents": 50, "duplex_discount_pct": "20"}
        printer = {"name": "p9", "site_id": "s1", "color": True, "duplex": True, "hold": False, "cost": cost}
        expect_error(admin.post("/api/admin/v1/printers", json=printer), 422, "invalid_request")
