"""Reconciliation: assembling a report of a window of the site's journal, checking every entry
against the primary's ledger as it stands, and rendering it (JSON, CSV, one printable HTML page)."""
