"""Offline policies: what the site does, and may charge, while it cannot reach the primary.

The admin edits them on the primary; sites mirror them. Defaults are CONTRACT.md's.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .money import MAX_AMOUNT_CENTS

Name = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccountSelection(_Strict):
    mode: Literal["shared_account", "personal", "cancel"] = "shared_account"
    shared_account: str | None = Field(
        "Offline Account", min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$"
    )

    @model_validator(mode="after")
    def _needs_account(self) -> AccountSelection:
        if self.mode == "shared_account" and not self.shared_account:
            raise ValueError("account_selection.mode 'shared_account' needs shared_account")
        return self


class RestrictedCredit(_Strict):
    mode: Literal["cached_balance", "allowance", "deny", "unlimited"] = "cached_balance"
    offline_credit_cents: int = Field(0, strict=True, ge=0, le=MAX_AMOUNT_CENTS)


class UnauthenticatedUsers(_Strict):
    mode: Literal["deny", "shared_account"] = "deny"
    shared_account: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")

    @model_validator(mode="after")
    def _needs_account(self) -> UnauthenticatedUsers:
        if self.mode == "shared_account" and not self.shared_account:
            raise ValueError("unauthenticated_users.mode 'shared_account' needs shared_account")
        return self


class PasswordAuthentication(_Strict):
    allowed: bool = True


class OfflinePolicies(_Strict):
    account_selection: AccountSelection = AccountSelection()
    restricted_credit: RestrictedCredit = RestrictedCredit()
    unauthenticated_users: UnauthenticatedUsers = UnauthenticatedUsers()
    password_authentication: PasswordAuthentication = PasswordAuthentication()
    hold_timeout_minutes: int = Field(240, ge=1, le=60 * 24 * 30)

    def shared_accounts_named(self) -> set[str]:
        """Shared accounts these policies charge; each must exist on the primary."""
        names = set()
        if self.account_selection.mode == "shared_account" and self.account_selection.shared_account:
            names.add(self.account_selection.shared_account)
        if self.unauthenticated_users.mode == "shared_account" and self.unauthenticated_users.shared_account:
            names.add(self.unauthenticated_users.shared_account)
        return names


DEFAULT_POLICIES = OfflinePolicies()
