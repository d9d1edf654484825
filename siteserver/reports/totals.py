"""Totals per user, account, printer and kind: one accumulator for the site's report and for the
primary's side of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NONE = "(none)"  # the key of entries without a user or printer


@dataclass
class Totals:
    by_user: dict[str, list[int]] = field(default_factory=dict)
    by_account: dict[str, list[int]] = field(default_factory=dict)
    by_printer: dict[str, list[int]] = field(default_factory=dict)
    by_kind: dict[str, list[int]] = field(default_factory=dict)

    def add(self, *, user: str | None, account: str, printer: str | None, kind: str, cents: int) -> None:
        for table, key in (
            (self.by_user, user or NONE),
            (self.by_account, account),
            (self.by_printer, printer or NONE),
            (self.by_kind, kind),
        ):
            t = table.setdefault(key, [0, 0])
            t[0] += 1
            t[1] += cents

    def public(self) -> dict[str, Any]:
        def shown(table: dict[str, list[int]]) -> dict[str, Any]:
            return {k: {"entries": n, "cents": c} for k, (n, c) in sorted(table.items())}

        return {
            "by_user": shown(self.by_user),
            "by_account": shown(self.by_account),
            "by_printer": shown(self.by_printer),
            "by_kind": shown(self.by_kind),
        }


def spender(flags: tuple[str, ...] | list[str], account: str) -> str | None:
    """Who spent an entry: its `by:` flag, else the user of the personal account it names."""
    by = next((f[3:] for f in flags if f.startswith("by:")), None)
    if by is not None:
        return by
    return account[5:] if account.startswith("user:") else None
