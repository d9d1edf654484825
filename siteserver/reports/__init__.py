"""Reconciliation reports."""
