"""Logging for both roles: one line per event, and nothing secret in any of them."""

from __future__ import annotations

import logging
import re
import sys

# The health URL carries its key as a query parameter; bearer tokens could appear in errors.
_SECRET = re.compile(r"(Authorization=|Bearer\s+|token=)[^&\s\"']+", re.IGNORECASE)


def scrub(text: str) -> str:
    return _SECRET.sub(r"\1[redacted]", text)


class ScrubSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(scrub(a) if isinstance(a, str) else a for a in record.args)  # type: ignore[union-attr]
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg)
        return True


def setup(level: str) -> dict[str, object]:
    """Configure root logging and return a uvicorn log_config that uses the same handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(ScrubSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return {"version": 1, "disable_existing_loggers": False}
