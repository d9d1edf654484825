"""Pricing: what a print, copy, scan or fax costs on a given printer's cost model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .money import percent_of

UsageKind = Literal["copy", "scan", "fax"]


@dataclass(frozen=True, slots=True)
class CostModel:
    mono_page_cents: int
    color_page_cents: int
    duplex_discount_pct: int = 0
    scan_page_cents: int = 0
    fax_page_cents: int = 0


@dataclass(frozen=True, slots=True)
class PrinterModel:
    """What pricing needs to know about a printer."""

    name: str
    color: bool
    duplex: bool
    cost: CostModel


@dataclass(frozen=True, slots=True)
class Quote:
    cost_cents: int
    color: bool  # what is charged and printed: False when a color job lands on a mono printer
    duplex: bool

    @property
    def grayscale(self) -> bool:
        return not self.color


def _pages_cost(cost: CostModel, printed_pages: int, color: bool, duplex: bool) -> int:
    per_page = cost.color_page_cents if color else cost.mono_page_cents
    gross = printed_pages * per_page
    if duplex and cost.duplex_discount_pct:
        gross -= percent_of(gross, cost.duplex_discount_pct)
    return gross


def quote_print(printer: PrinterModel, *, pages: int, copies: int, color: bool, duplex: bool) -> Quote:
    """Price a print job at `printer`. A color job on a mono printer is converted and priced as
    mono; duplex on a simplex-only printer is printed (and priced) simplex."""
    eff_color = color and printer.color
    eff_duplex = duplex and printer.duplex
    return Quote(_pages_cost(printer.cost, pages * copies, eff_color, eff_duplex), eff_color, eff_duplex)


def quote_usage(printer: PrinterModel, *, kind: UsageKind, pages: int, color: bool, duplex: bool) -> Quote:
    """Price device usage: copies like prints, scans and faxes at their per-page price."""
    if kind == "copy":
        return quote_print(printer, pages=pages, copies=1, color=color, duplex=duplex)
    per_page = printer.cost.scan_page_cents if kind == "scan" else printer.cost.fax_page_cents
    return Quote(pages * per_page, color and printer.color, False)
