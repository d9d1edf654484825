"""Logging for both roles: one line per event, and nothing secret in any of them.

Every line (the project's, uvicorn's, the libraries') goes through structlog's processors: time
(UTC, ISO 8601), level, logger, the role, the site id (a site), and for HTTP the request id the
`RequestId` middleware binds. `log_format = "text"` keeps the classic line with the context after
the message; `"json"` is one JSON object a line, for log shippers."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

# The health URL carries its key as a query parameter; bearer tokens could appear in errors.
_SECRET = re.compile(r"(Authorization=|Bearer\s+|token=)[^&\s\"']+", re.IGNORECASE)
# Machine and enrollment tokens carry a recognisable prefix (domain.credentials.new_token).
_TOKEN = re.compile(r"\b(dev|prv|enr)_[A-Za-z0-9_-]{20,}")


def scrub(text: str) -> str:
    return _TOKEN.sub(r"\1_[redacted]", _SECRET.sub(r"\1[redacted]", text))


LogFormat = Literal["text", "json"]
_CONTEXT = ("role", "site_id", "request_id")


class ScrubbingFormatter(structlog.stdlib.ProcessorFormatter):
    """Scrubs each finished line: the message with its arguments merged in, whatever their types
    (an exception whose text holds a URL, a mapping, a repr), and any traceback text."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def _text(_: WrappedLogger, __: str, ed: EventDict) -> str:
    """`time LEVEL logger: message key=value …` (the context last, so a line reads as before)."""
    head = f"{ed.pop('timestamp')} {ed.pop('level').upper()} {ed.pop('logger', 'root')}: {ed.pop('event')}"
    exc = ed.pop("exception", None)
    rest = " ".join(f"{k}={v}" for k, v in ed.items() if v is not None)
    line = f"{head} [{rest}]" if rest else head
    return f"{line}\n{exc}" if exc else line


def _context(role: str, site_id: str | None) -> Any:
    def add(_: WrappedLogger, __: str, ed: EventDict) -> EventDict:
        ed.setdefault("role", role)
        if site_id is not None:
            ed.setdefault("site_id", site_id)
        return ed

    return add


def formatter(fmt: LogFormat, role: str, site_id: str | None) -> ScrubbingFormatter:
    chain: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _context(role, site_id),
    ]
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else _text
    return ScrubbingFormatter(
        foreign_pre_chain=chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )


def setup(
    level: str, fmt: LogFormat = "text", *, role: str = "cli", site_id: str | None = None
) -> dict[str, object]:
    """Configure root logging and return a uvicorn log_config that uses the same handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt, role, site_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return {"version": 1, "disable_existing_loggers": False}
