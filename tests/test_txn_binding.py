"""A txn_id is bound to everything it was first used for: the user, the account named, the kind
and the amount. A retry repeats it and gets the first answer; anything else reusing the id is 409,
at the primary and at a site alike (one rule: siteserver.domain.use_of and same_use)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from siteserver import sample
from siteserver.domain import same_use, use_of
from tests.kit.primary import Primary, expect_error
from tests.kit.site import Branch, eventually, login, start_branch

names = st.text(min_size=1, max_size=12)
uses = st.tuples(
    names, st.none() | names, st.sampled_from(["copy", "scan", "fax", "print"]), st.integers(0, 10**9)
)


@given(uses, uses)
def test_a_use_matches_only_itself(
    first: tuple[str, str | None, str, int], again: tuple[str, str | None, str, int]
) -> None:
    assert same_use(use_of(*first), use_of(*first))
    assert same_use(use_of(*first), use_of(*again)) == (first == again)
    assert same_use(None, use_of(*again))  # a row from before uses were kept


@given(uses, st.integers(0, 3), names)
def test_changing_any_part_is_another_use(
    first: tuple[str, str | None, str, int], part: int, other: str
) -> None:
    username, account, kind, amount = first
    changed = [
        (username + other, account, kind, amount),
        (username, (account or "") + other, kind, amount),
        (username, account, kind + other, amount),
        (username, account, kind, amount + len(other)),
    ][part]
    assert not same_use(use_of(*first), use_of(*changed))


def _usage(c: httpx.Client, session: str, txn_id: str, **extra: Any) -> httpx.Response:
    body = {"txn_id": txn_id, "kind": "copy", "pages": 2, "color": False, "duplex": False, **extra}
    return c.post(f"/api/device/v1/sessions/{session}/usage", json=body)


def _people(primary: Primary) -> None:
    with primary.admin() as c:
        for name in ("bob", "alice"):
            r = c.post(
                "/api/admin/v1/users",
                json={"username": name, "card_numbers": [f"CARD-{name}"], "balance_cents": 1000},
            )
            assert r.status_code == 201, r.text
        r = c.post("/api/admin/v1/shared-accounts", json={"name": "Dept", "members": ["bob", "alice"]})
        assert r.status_code == 201, r.text


def _check_binding(server: Any, device: str) -> None:
    """`server` is a Primary or a Branch: both have .client(token)."""
    with server.client(device) as c:
        bob = c.post("/api/device/v1/login", json={"card_number": "CARD-bob"}).json()["session_id"]
        alice = c.post("/api/device/v1/login", json={"card_number": "CARD-alice"}).json()["session_id"]
        txn = str(uuid.uuid4())
        first = _usage(c, bob, txn)
        assert first.status_code == 200, first.text
        assert _usage(c, bob, txn).json() == first.json()  # a retry: the first answer again
        expect_error(_usage(c, alice, txn), 409, "conflict")  # Alice's session, Bob's txn_id
        expect_error(_usage(c, bob, txn, account="Dept"), 409, "conflict")  # another account
        expect_error(_usage(c, bob, txn, kind="scan"), 409, "conflict")  # another kind
        # On a shared account both may use, the user still binds it.
        shared = str(uuid.uuid4())
        assert _usage(c, bob, shared, account="Dept").status_code == 200
        expect_error(_usage(c, alice, shared, account="Dept"), 409, "conflict")
        alice_balance = c.post("/api/device/v1/login", json={"card_number": "CARD-alice"}).json()
        assert alice_balance["balance_cents"] == 1000  # Alice was never charged, nor answered charged


def test_the_primary_binds_a_txn_id_to_its_first_use(primary: Primary, world: sample.World) -> None:
    _people(primary)
    _check_binding(primary, world.mono_device)


@pytest.fixture
def branch(primary: Primary, tmp_path: Path) -> Iterator[Branch]:
    b = start_branch(primary, tmp_path)
    yield b
    b.process.stop()


def test_a_site_binds_a_txn_id_to_its_first_use(primary: Primary, branch: Branch) -> None:
    _people(primary)
    eventually(
        lambda: (
            login(branch, branch.mono_device, card_number="CARD-alice").status_code == 200
            and len(branch.query("SELECT 1 FROM shared_account_members")) == 2
        ),
        5.0,
        "bob, alice and Dept mirrored",
    )
    _check_binding(branch, branch.mono_device)
