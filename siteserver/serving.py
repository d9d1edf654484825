"""How a role's FastAPI app is served: uvicorn, signals handled so shutdown code runs, and the
garbage collector tuned for a request server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from siteserver import tls
from siteserver.config import Http, RoleConfig

# A request allocates thousands of short-lived objects. With CPython's default thresholds the
# collector runs every few requests and now and then walks the whole heap (FastAPI, pydantic and
# every module), which showed as a 48 ms p99 under load. Startup objects are frozen out of its
# sight; cycles made while serving are still collected.
GC_THRESHOLDS = (20_000, 50, 100)

# Set when this process begins a polite stop: long-polls (change feed, releases) answer at once
# with what they have, instead of holding the shutdown until uvicorn cancels them.
stopping = threading.Event()


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, which would kill the process before
    the role's shutdown runs (the primary hands its lease back there). Handle the signal, finish,
    and return normally instead."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        stopping.set()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        original = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in original.items():
                signal.signal(s, h)


_OVER_CAPACITY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"retry-after: 1\r\n"
)


def guarded_protocol(http: Http) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol with two limits it lacks: a request's headers must be complete
    within `header_timeout_secs` of its first byte (or of the connection), else the connection
    is closed (a slow client holds nothing for ever); and beyond `max_connections` open
    connections a new one is answered 503 (JSON) and closed."""
    body = b'{"error":"over_capacity","detail":"too many connections; try again shortly"}'
    over = _OVER_CAPACITY + b"content-length: %d\r\n\r\n" % len(body) + body

    class Guarded(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _over_capacity = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._over_capacity = len(self.connections) > http.max_connections
            self._arm()

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(http.header_timeout_secs, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            if self._over_capacity:
                self.transport.write(over)
                self.transport.close()
                return
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return Guarded


def serve(
    app: Any,
    *,
    host: str,
    port: int,
    access_log: bool,
    http: Http,
    log_config: dict[str, Any] | None = None,
    tls_files: tuple[Path, Path] | None = None,
) -> bool:
    """Serve until SIGTERM/SIGINT, over HTTPS with `tls_files` (certificate, private key); False
    if the server could not start (port taken)."""
    server = _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            http=guarded_protocol(http),
            log_config=log_config,
            access_log=access_log,
            timeout_graceful_shutdown=5,
            lifespan="off",
            ssl_certfile=str(tls_files[0]) if tls_files else None,
            ssl_keyfile=str(tls_files[1]) if tls_files else None,
        )
    )
    tune_gc()
    server.run()
    return bool(server.started)


def serve_role(
    app: Any, config: RoleConfig, *, log_config: dict[str, Any] | None, stop: Callable[[], None]
) -> int:
    """A role's process: serve on `config.listen` until SIGTERM/SIGINT, then `stop` the role (also
    when serving failed); the exit code: 0, or 1 when the server could not start (port taken)."""
    try:
        started = serve(
            app,
            host=config.host,
            port=config.port,
            access_log=config.access_log,
            http=config.http,
            log_config=log_config,
            tls_files=tls.server_files(config.tls, Path(config.data_dir), config.host),
        )
    finally:
        stop()
    return 0 if started else 1
