"""Wakes print providers long-polling for a printer's releases."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


class ReleaseSignal:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, printer: str) -> asyncio.Event:
        return self._events.setdefault(printer, asyncio.Event())

    def notify(self, printers: Sequence[str]) -> None:
        for p in printers:
            ev = self._events.pop(p, None)
            if ev is not None:
                ev.set()
