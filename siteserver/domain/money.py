"""Money is an integer count of minor units (cents). Never a float, anywhere."""

from __future__ import annotations

# Bounds keep every sum far inside a signed 64-bit integer (SQLite's INTEGER):
# 10**13 cents is 100 billion in major units; 900,000 such amounts still fit.
MAX_AMOUNT_CENTS = 10**13
MAX_PAGE_PRICE_CENTS = 10**6


def percent_of(amount_cents: int, pct: int) -> int:
    """`pct` percent of an amount, rounded half away from zero, in integers only."""
    sign = -1 if amount_cents < 0 else 1
    return sign * ((abs(amount_cents) * pct + 50) // 100)


def format_cents(amount_cents: int) -> str:
    """12345 -> '123.45', -5 -> '-0.05' (for reports and humans; never parsed back)."""
    sign = "-" if amount_cents < 0 else ""
    whole, frac = divmod(abs(amount_cents), 100)
    return f"{sign}{whole}.{frac:02d}"
