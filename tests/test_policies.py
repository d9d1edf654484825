"""Offline policies: CONTRACT.md's defaults, and what the model refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from siteserver.domain import DEFAULT_POLICIES, OfflinePolicies

# Verbatim from CONTRACT.md, "Offline policies (PUT /api/admin/v1/offline-policies), defaults shown".
CONTRACT_DEFAULTS = """
{"account_selection": {"mode": "shared_account", "shared_account": "Offline Account"},
 "restricted_credit": {"mode": "cached_balance", "offline_credit_cents": 0},
 "unauthenticated_users": {"mode": "deny", "shared_account": null},
 "password_authentication": {"allowed": true},
 "hold_timeout_minutes": 240}
"""


def _with(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(CONTRACT_DEFAULTS)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = doc
        for p in parents:
            node = node[p]
        node[leaf] = value
    return doc


def test_defaults_equal_contract_exactly() -> None:
    expected = json.loads(CONTRACT_DEFAULTS)
    assert OfflinePolicies().model_dump() == expected
    assert DEFAULT_POLICIES.model_dump() == expected
    assert json.loads(DEFAULT_POLICIES.model_dump_json()) == expected
    assert list(DEFAULT_POLICIES.model_dump()) == list(expected)  # same keys, same order


def test_contract_defaults_round_trip() -> None:
    parsed = OfflinePolicies.model_validate_json(CONTRACT_DEFAULTS)
    assert parsed == DEFAULT_POLICIES
    assert OfflinePolicies.model_validate({}) == DEFAULT_POLICIES  # every field has its default


def test_default_policies_name_the_offline_account() -> None:
    assert DEFAULT_POLICIES.shared_accounts_named() == {"Offline Account"}


@pytest.mark.parametrize(
    "doc",
    [
        {**json.loads(CONTRACT_DEFAULTS), "surprise": 1},
        _with(account_selection__extra=True),
        _with(restricted_credit__offline_credit=5),
        _with(unauthenticated_users__account="x"),
        _with(password_authentication__allowed_offline=True),
    ],
)
def test_unknown_fields_rejected(doc: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        OfflinePolicies.model_validate(doc)
    assert any(err["type"] == "extra_forbidden" for err in info.value.errors())


@pytest.mark.parametrize(
    "doc",
    [
        _with(account_selection__mode="shared"),
        _with(account_selection__mode="SHARED_ACCOUNT"),
        _with(account_selection__mode=None),
        _with(restricted_credit__mode="credit"),
        _with(restricted_credit__mode=""),
        _with(unauthenticated_users__mode="allow"),
        _with(password_authentication__allowed="sometimes"),
    ],
)
def test_invalid_modes_rejected(doc: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OfflinePolicies.model_validate(doc)


@pytest.mark.parametrize("account", [None, ""])
def test_shared_account_mode_needs_an_account(account: str | None) -> None:
    with pytest.raises(ValidationError):
        OfflinePolicies.model_validate(_with(account_selection__shared_account=account))
    with pytest.raises(ValidationError):
        OfflinePolicies.model_validate(
            _with(unauthenticated_users__mode="shared_account", unauthenticated_users__shared_account=account)
        )


def test_other_modes_need_no_account() -> None:
    p = OfflinePolicies.model_validate(
        _with(account_selection__mode="personal", account_selection__shared_account=None)
    )
    assert p.account_selection.mode == "personal"
    assert p.shared_accounts_named() == set()
    p = OfflinePolicies.model_validate(
        _with(
            account_selection__mode="cancel",
            unauthenticated_users__mode="shared_account",
            unauthenticated_users__shared_account="Guests",
        )
    )
    assert p.shared_accounts_named() == {"Guests"}


@pytest.mark.parametrize("cents", [-1, -100])
def test_negative_credit_rejected(cents: int) -> None:
    with pytest.raises(ValidationError):
        OfflinePolicies.model_validate(
            _with(restricted_credit__mode="allowance", restricted_credit__offline_credit_cents=cents)
        )


def test_credit_must_be_an_integer() -> None:
    with pytest.raises(ValidationError):
        OfflinePolicies.model_validate(_with(restricted_credit__offline_credit_cents=1.5))
    with pytest.raises(ValidationError):
        OfflinePolicies.model_validate(_with(restricted_credit__offline_credit_cents=10**14))


@pytest.mark.parametrize("minutes", [0, -5, 60 * 24 * 30 + 1])
def test_hold_timeout_bounds(minutes: int) -> None:
    with pytest.raises(ValidationError):
        OfflinePolicies.model_validate(_with(hold_timeout_minutes=minutes))


def test_every_documented_mode_is_accepted() -> None:
    for mode in ("shared_account", "personal", "cancel"):
        OfflinePolicies.model_validate(_with(account_selection__mode=mode))
    for mode in ("cached_balance", "allowance", "deny", "unlimited"):
        OfflinePolicies.model_validate(_with(restricted_credit__mode=mode))
    for allowed in (True, False):
        OfflinePolicies.model_validate(_with(password_authentication__allowed=allowed))


def test_policies_are_immutable() -> None:
    with pytest.raises(ValidationError):
        DEFAULT_POLICIES.hold_timeout_minutes = 1  # type: ignore[misc]
