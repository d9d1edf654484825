"""Logging for both roles: one line per event, and nothing secret in any of them."""

from __future__ import annotations

import logging
import re
import sys

# The health URL carries its key as a query parameter; bearer tokens could appear in errors.
_SECRET = re.compile(r"(Authorization=|Bearer\s+|token=)[^&\s\"']+", re.IGNORECASE)
# Machine and enrollment tokens carry a recognisable prefix (domain.credentials.new_token).
_TOKEN = re.compile(r"\b(dev|prv|enr)_[A-Za-z0-9_-]{20,}")


def scrub(text: str) -> str:
    return _TOKEN.sub(r"\1_[redacted]", _SECRET.sub(r"\1[redacted]", text))


class ScrubbingFormatter(logging.Formatter):
    """Scrubs each finished line: the message with its arguments merged in, whatever their types
    (an exception whose text holds a URL, a mapping, a repr), and any traceback text."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def setup(level: str) -> dict[str, object]:
    """Configure root logging and return a uvicorn log_config that uses the same handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ScrubbingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return {"version": 1, "disable_existing_loggers": False}
