"""Totals per user, account, printer and kind: one accumulator for the site's report and for the
primary's side of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NONE = "(none)"  # the key of entries without a user or printer


@dataclass
class Totals:
    #: (user, account, printer, kind) -> [entries, cents]: one dictionary step per entry; the
    #: four tables are folded from it once, at the end
    combos: dict[tuple[str, str, str, str], list[int]] = field(default_factory=dict)

    def add(self, *, user: str | None, account: str, printer: str | None, kind: str, cents: int) -> None:
        t = self.combos.get(key := (user or NONE, account, printer or NONE, kind))
        if t is None:
            self.combos[key] = [1, cents]
        else:
            t[0] += 1
            t[1] += cents

    def public(self) -> dict[str, Any]:
        tables: list[dict[str, list[int]]] = [{}, {}, {}, {}]
        for key, (n, c) in self.combos.items():
            for table, k in zip(tables, key, strict=True):
                t = table.setdefault(k, [0, 0])
                t[0] += n
                t[1] += c

        def shown(table: dict[str, list[int]]) -> dict[str, Any]:
            return {k: {"entries": n, "cents": c} for k, (n, c) in sorted(table.items())}

        by_user, by_account, by_printer, by_kind = (shown(t) for t in tables)
        return {"by_user": by_user, "by_account": by_account, "by_printer": by_printer, "by_kind": by_kind}
