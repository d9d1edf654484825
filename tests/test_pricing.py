"""Pricing: the pure rules for what a print, copy, scan or fax costs at a printer."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siteserver.domain import CostModel, PrinterModel, percent_of, quote_print, quote_usage
from siteserver.domain.money import MAX_PAGE_PRICE_CENTS, format_cents

COST = CostModel(
    mono_page_cents=10,
    color_page_cents=50,
    duplex_discount_pct=20,
    scan_page_cents=2,
    fax_page_cents=15,
)
COLOR_DUPLEX = PrinterModel("color-duplex", color=True, duplex=True, cost=COST)
MONO_DUPLEX = PrinterModel("mono-duplex", color=False, duplex=True, cost=COST)
COLOR_SIMPLEX = PrinterModel("color-simplex", color=True, duplex=False, cost=COST)
MONO_SIMPLEX = PrinterModel("mono-simplex", color=False, duplex=False, cost=COST)


# -- money ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "pct", "expected"),
    [
        (100, 20, 20),
        (0, 50, 0),
        (5, 10, 1),  # 0.5 -> 1 (half away from zero, not to even)
        (4, 10, 0),  # 0.4 -> 0
        (15, 10, 2),  # 1.5 -> 2
        (25, 10, 3),  # 2.5 -> 3 (banker's rounding would give 2)
        (-5, 10, -1),  # -0.5 -> -1 (away from zero)
        (-25, 10, -3),
        (-4, 10, 0),
        (7, 100, 7),
        (7, 0, 0),
    ],
)
def test_percent_of_rounds_half_away_from_zero(amount: int, pct: int, expected: int) -> None:
    got = percent_of(amount, pct)
    assert got == expected
    assert type(got) is int


@given(st.integers(-(10**13), 10**13), st.integers(0, 100))
def test_percent_of_matches_decimal_half_up(amount: int, pct: int) -> None:
    exact = (Decimal(amount) * pct / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    assert percent_of(amount, pct) == int(exact)


def test_format_cents() -> None:
    assert format_cents(12345) == "123.45"
    assert format_cents(-5) == "-0.05"
    assert format_cents(0) == "0.00"
    assert format_cents(100) == "1.00"


# -- prints --------------------------------------------------------------------------------


def test_mono_and_color_per_page() -> None:
    mono = quote_print(COLOR_DUPLEX, pages=3, copies=1, color=False, duplex=False)
    assert (mono.cost_cents, mono.color, mono.duplex, mono.grayscale) == (30, False, False, True)
    color = quote_print(COLOR_DUPLEX, pages=3, copies=1, color=True, duplex=False)
    assert (color.cost_cents, color.color, color.duplex, color.grayscale) == (150, True, False, False)


def test_copies_multiply() -> None:
    assert quote_print(COLOR_DUPLEX, pages=3, copies=4, color=False, duplex=False).cost_cents == 120
    assert quote_print(COLOR_DUPLEX, pages=3, copies=4, color=True, duplex=False).cost_cents == 600


def test_zero_pages_cost_nothing() -> None:
    assert quote_print(COLOR_DUPLEX, pages=0, copies=5, color=True, duplex=True).cost_cents == 0


def test_duplex_discount_percent() -> None:
    q = quote_print(COLOR_DUPLEX, pages=3, copies=1, color=False, duplex=True)
    assert (q.cost_cents, q.duplex) == (24, True)  # 30 - 20 %
    q = quote_print(COLOR_DUPLEX, pages=3, copies=2, color=True, duplex=True)
    assert q.cost_cents == 240  # 300 - 20 %


def test_duplex_discount_rounds_half_away_from_zero() -> None:
    # 1 page at 5 cents with a 50 % discount: the discount is 2.5 -> 3 cents, the cost 2.
    p = PrinterModel("p", color=True, duplex=True, cost=CostModel(5, 5, duplex_discount_pct=50))
    assert quote_print(p, pages=1, copies=1, color=False, duplex=True).cost_cents == 2
    # 3 pages at 5 cents with 10 %: 15 - 1.5 -> 15 - 2 = 13.
    p = PrinterModel("p", color=True, duplex=True, cost=CostModel(5, 5, duplex_discount_pct=10))
    assert quote_print(p, pages=3, copies=1, color=False, duplex=True).cost_cents == 13


def test_no_discount_means_duplex_costs_as_simplex() -> None:
    p = PrinterModel("p", color=True, duplex=True, cost=CostModel(7, 33))
    for color in (False, True):
        simplex = quote_print(p, pages=11, copies=3, color=color, duplex=False)
        duplex = quote_print(p, pages=11, copies=3, color=color, duplex=True)
        assert duplex.cost_cents == simplex.cost_cents
        assert duplex.duplex is True


def test_full_discount_is_free() -> None:
    p = PrinterModel("p", color=True, duplex=True, cost=CostModel(7, 33, duplex_discount_pct=100))
    assert quote_print(p, pages=11, copies=3, color=True, duplex=True).cost_cents == 0


def test_color_job_on_mono_printer_is_mono_and_grayscale() -> None:
    q = quote_print(MONO_DUPLEX, pages=4, copies=2, color=True, duplex=False)
    assert q.cost_cents == 80  # mono price, not 400
    assert q.color is False
    assert q.grayscale is True
    assert q == quote_print(MONO_DUPLEX, pages=4, copies=2, color=False, duplex=False)


def test_duplex_on_simplex_printer_is_priced_simplex() -> None:
    q = quote_print(COLOR_SIMPLEX, pages=5, copies=1, color=False, duplex=True)
    assert q.cost_cents == 50  # no duplex discount
    assert q.duplex is False
    q = quote_print(MONO_SIMPLEX, pages=5, copies=1, color=True, duplex=True)
    assert (q.cost_cents, q.color, q.duplex) == (50, False, False)


# -- device usage --------------------------------------------------------------------------


def test_scan_and_fax_per_page() -> None:
    scan = quote_usage(COLOR_DUPLEX, kind="scan", pages=7, color=False, duplex=False)
    assert scan.cost_cents == 14
    fax = quote_usage(COLOR_DUPLEX, kind="fax", pages=7, color=False, duplex=False)
    assert fax.cost_cents == 105


def test_scan_and_fax_ignore_color_price_and_duplex_discount() -> None:
    cases: tuple[tuple[Literal["scan", "fax"], int], ...] = (("scan", 2), ("fax", 15))
    for kind, per_page in cases:
        q = quote_usage(COLOR_DUPLEX, kind=kind, pages=10, color=True, duplex=True)
        assert q.cost_cents == 10 * per_page
        assert q.duplex is False


def test_scan_in_color_on_mono_device_is_grayscale() -> None:
    q = quote_usage(MONO_DUPLEX, kind="scan", pages=1, color=True, duplex=False)
    assert q.grayscale is True


@pytest.mark.parametrize("printer", [COLOR_DUPLEX, MONO_DUPLEX, COLOR_SIMPLEX, MONO_SIMPLEX])
@pytest.mark.parametrize("color", [False, True])
@pytest.mark.parametrize("duplex", [False, True])
def test_copy_is_priced_like_a_one_copy_print(printer: PrinterModel, color: bool, duplex: bool) -> None:
    copy = quote_usage(printer, kind="copy", pages=9, color=color, duplex=duplex)
    assert copy == quote_print(printer, pages=9, copies=1, color=color, duplex=duplex)


def test_copy_examples() -> None:
    assert quote_usage(COLOR_DUPLEX, kind="copy", pages=3, color=True, duplex=True).cost_cents == 120
    q = quote_usage(MONO_SIMPLEX, kind="copy", pages=3, color=True, duplex=True)
    assert (q.cost_cents, q.color, q.duplex) == (30, False, False)


# -- properties ----------------------------------------------------------------------------

prices = st.integers(0, MAX_PAGE_PRICE_CENTS)
cost_models = st.builds(
    CostModel,
    mono_page_cents=prices,
    color_page_cents=prices,
    duplex_discount_pct=st.integers(0, 100),
    scan_page_cents=prices,
    fax_page_cents=prices,
)
printers = st.builds(
    PrinterModel, name=st.just("p"), color=st.booleans(), duplex=st.booleans(), cost=cost_models
)
pages = st.integers(0, 100_000)
copies = st.integers(1, 1_000)


@given(printers, pages, copies, st.booleans(), st.booleans())
def test_print_cost_is_bounded_non_negative_int(
    printer: PrinterModel, pages: int, copies: int, color: bool, duplex: bool
) -> None:
    q = quote_print(printer, pages=pages, copies=copies, color=color, duplex=duplex)
    assert type(q.cost_cents) is int
    assert (
        0 <= q.cost_cents <= pages * copies * max(printer.cost.mono_page_cents, printer.cost.color_page_cents)
    )
    assert q.color == (color and printer.color)
    assert q.duplex == (duplex and printer.duplex)
    # duplex never costs more than simplex
    simplex = quote_print(printer, pages=pages, copies=copies, color=color, duplex=False)
    assert q.cost_cents <= simplex.cost_cents


@given(cost_models, st.booleans(), pages, copies, st.booleans())
def test_color_on_mono_costs_the_mono_price(
    cost: CostModel, printer_duplex: bool, pages: int, copies: int, duplex: bool
) -> None:
    mono = PrinterModel("m", color=False, duplex=printer_duplex, cost=cost)
    as_color = quote_print(mono, pages=pages, copies=copies, color=True, duplex=duplex)
    as_mono = quote_print(mono, pages=pages, copies=copies, color=False, duplex=duplex)
    assert as_color == as_mono
    assert as_color.grayscale


@given(printers, pages, st.sampled_from(["copy", "scan", "fax"]), st.booleans(), st.booleans())
def test_usage_cost_is_bounded_non_negative_int(
    printer: PrinterModel, pages: int, kind: str, color: bool, duplex: bool
) -> None:
    q = quote_usage(printer, kind=kind, pages=pages, color=color, duplex=duplex)  # type: ignore[arg-type]
    c = printer.cost
    assert type(q.cost_cents) is int
    assert (
        0
        <= q.cost_cents
        <= pages * max(c.mono_page_cents, c.color_page_cents, c.scan_page_cents, c.fax_page_cents)
    )
