"""The project's own TCP fault proxy, for the tests and the demo.

Put it between a client and a server on loopback and make the path between them pass, refuse,
blackhole, slow down or flap, at any time, for new and existing connections alike. A tiny HTTP
control API on a separate port lets a test in another process steer it. See docs/fault-proxy.md.

    python -m siteserver.faultproxy --listen 127.0.0.1:9001 --target 127.0.0.1:8001 \
        --control 127.0.0.1:9101 [--mode pass]

Only loopback addresses are accepted, for listening, target and control alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlsplit

MODES = ("pass", "refuse", "blackhole", "latency", "flap")
CHUNK = 65536
QUEUE_CHUNKS = 64  # per direction and connection: beyond this, reading stops (backpressure)


class FaultProxyError(ValueError):
    """A request the proxy refuses: a non-loopback address, an unknown mode, a bad parameter."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def check_loopback(host: str, what: str) -> str:
    """The host itself if it is a loopback address (or "localhost"); FaultProxyError otherwise."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise FaultProxyError(
            "not_loopback",
            f"{what} host {host!r} is not a loopback IP address: the fault proxy only talks to "
            "127.0.0.0/8 and ::1 (no name resolution, no traffic elsewhere).",
        ) from None
    if not ip.is_loopback:
        raise FaultProxyError(
            "not_loopback",
            f"{what} host {host!r} is not a loopback address: the fault proxy only talks to "
            "127.0.0.0/8 and ::1.",
        )
    return str(ip)


def parse_address(text: str, what: str) -> tuple[str, int]:
    """'127.0.0.1:8000' or '[::1]:8000' → (host, port), loopback only."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise FaultProxyError("invalid_address", f"{what} {text!r} is not HOST:PORT.")
    try:
        port = int(port_text)
    except ValueError:
        raise FaultProxyError("invalid_address", f"{what} {text!r}: port is not a number.") from None
    if not 0 < port < 65536:
        raise FaultProxyError("invalid_address", f"{what} {text!r}: port out of range.")
    return check_loopback(host, what), port


@dataclass(frozen=True)
class ModeSetting:
    mode: str = "pass"
    latency_ms: float | None = None
    up_secs: float | None = None
    down_secs: float | None = None

    @staticmethod
    def parse(body: Any) -> ModeSetting:
        """A validated setting from the JSON body of `PUT /mode` (or the CLI's equivalent)."""
        if not isinstance(body, dict):
            raise FaultProxyError("invalid_request", "The body must be a JSON object with a 'mode'.")
        allowed = {"mode", "latency_ms", "up_secs", "down_secs"}
        extra = sorted(set(body) - allowed)
        if extra:
            raise FaultProxyError("invalid_request", f"Unknown field(s): {', '.join(extra)}.")
        mode = body.get("mode")
        if mode not in MODES:
            raise FaultProxyError(
                "unknown_mode", f"Mode {mode!r} is unknown; it is one of: {', '.join(MODES)}."
            )

        def number(name: str, *, positive: bool) -> float | None:
            v = body.get(name)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (positive and v == 0):
                raise FaultProxyError(
                    "invalid_request",
                    f"{name} must be a {'positive' if positive else 'non-negative'} number.",
                )
            return float(v)

        latency_ms = number("latency_ms", positive=False)
        up_secs = number("up_secs", positive=True)
        down_secs = number("down_secs", positive=True)
        if mode == "latency" and latency_ms is None:
            raise FaultProxyError("invalid_request", "Mode latency needs latency_ms.")
        if mode != "latency" and latency_ms is not None:
            raise FaultProxyError("invalid_request", "latency_ms only applies to mode latency.")
        if mode == "flap" and (up_secs is None or down_secs is None):
            raise FaultProxyError("invalid_request", "Mode flap needs up_secs and down_secs.")
        if mode != "flap" and (up_secs is not None or down_secs is not None):
            raise FaultProxyError("invalid_request", "up_secs and down_secs only apply to mode flap.")
        return ModeSetting(mode, latency_ms, up_secs, down_secs)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode}
        if self.mode == "latency":
            out["latency_ms"] = self.latency_ms
        if self.mode == "flap":
            out["up_secs"] = self.up_secs
            out["down_secs"] = self.down_secs
        return out


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    task: asyncio.Task[None] | None = None

    def abort(self) -> None:
        """Reset both sides (RST where the OS does it): the path is cut."""
        for w in (self.client, self.upstream):
            if w is not None:
                w.transport.abort()


class FaultProxy:
    """An asyncio TCP proxy from (listen_host, listen_port) to (target_host, target_port).

    The mode may change at any time (`await set_mode(...)`) and applies to new and existing
    connections alike:

    - pass: forward both ways.
    - refuse: stop listening (a new connection gets "connection refused" at once) and reset every
      existing connection.
    - blackhole: accept new connections and never answer; existing connections stop forwarding in
      both directions but stay open. Nothing is reset. Data already read is held, not delivered,
      the way TCP keeps retransmitting over a dead path; if the path comes back before either end
      gives up, the stream resumes intact.
    - latency: each chunk is forwarded latency_ms after it was read, in both directions.
    - flap: pass for up_secs, blackhole for down_secs, over and over, starting up.
    """

    def __init__(self, listen_host: str, listen_port: int, target_host: str, target_port: int) -> None:
        self.listen_host = check_loopback(listen_host, "listen")
        self.listen_port = listen_port
        self.target_host = check_loopback(target_host, "target")
        self.target_port = target_port
        self.setting = ModeSetting()
        self.connections_accepted = 0
        self.bytes_to_target = 0
        self.bytes_to_client = 0
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._gate = asyncio.Event()  # set while data may flow
        self._gate.set()
        self._flap_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, setting: ModeSetting | None = None) -> FaultProxy:
        self._started = True
        await self.set_mode(setting or ModeSetting())
        return self

    async def close(self) -> None:
        self._closed = True
        self._stop_flap()
        self._stop_listening()
        tasks = [c.task for c in self._connections if c.task is not None]
        for c in list(self._connections):
            c.abort()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.listen_host, self.listen_port, reuse_address=True
        )
        if self.listen_port == 0:
            self.listen_port = int(self._server.sockets[0].getsockname()[1])

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()  # closes the listening socket now; connections stay
            self._server = None

    # -- modes -----------------------------------------------------------------------------------

    @property
    def forwarding(self) -> bool:
        return self._gate.is_set()

    @property
    def _latency_secs(self) -> float:
        if self.setting.mode == "latency" and self.setting.latency_ms:
            return self.setting.latency_ms / 1000
        return 0.0

    async def set_mode(self, setting: ModeSetting) -> None:
        """Switch now. When this returns, the listening socket is closed (refuse) or open again."""
        if self._closed:
            raise FaultProxyError("closed", "The proxy is shutting down.")
        self._stop_flap()
        self.setting = setting
        if setting.mode == "refuse":
            self._gate.clear()
            self._stop_listening()
            for c in list(self._connections):
                c.abort()
                if c.task is not None:
                    c.task.cancel()
            return
        if self._server is None and self._started:
            await self._listen()
        if setting.mode in ("pass", "latency"):
            self._gate.set()
        elif setting.mode == "blackhole":
            self._gate.clear()
        elif setting.mode == "flap":
            assert setting.up_secs is not None and setting.down_secs is not None
            self._gate.set()
            self._flap_task = asyncio.create_task(self._flap(setting.up_secs, setting.down_secs))

    async def _flap(self, up_secs: float, down_secs: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        period = up_secs + down_secs
        n = 0
        while True:  # scheduled against the start, so the phases do not drift
            self._gate.set()
            await asyncio.sleep(max(0.0, start + n * period + up_secs - loop.time()))
            self._gate.clear()
            n += 1
            await asyncio.sleep(max(0.0, start + n * period - loop.time()))

    def _stop_flap(self) -> None:
        if self._flap_task is not None:
            self._flap_task.cancel()
            self._flap_task = None

    def state(self) -> dict[str, Any]:
        return {
            **self.setting.as_dict(),
            "forwarding": self.forwarding,
            "listening": self._server is not None,
            "connections_accepted": self.connections_accepted,
            "connections_open": len(self._connections),
            "bytes_to_target": self.bytes_to_target,
            "bytes_to_client": self.bytes_to_client,
        }

    # -- forwarding ------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        conn = _Connection(writer, task=asyncio.current_task())
        self._connections.add(conn)
        try:
            await self._gate.wait()  # blackhole: accepted, and never answered
            try:
                up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                conn.abort()  # the target is down: the client sees its connection reset
                return
            conn.upstream = up_writer
            if self.setting.mode == "refuse":  # switched while connecting
                conn.abort()
                return
            pumps = [
                asyncio.create_task(self._pump(reader, up_writer, to_target=True)),
                asyncio.create_task(self._pump(up_reader, writer, to_target=False)),
            ]
            try:
                await asyncio.gather(*pumps)
            finally:
                for t in pumps:
                    t.cancel()
        except (OSError, asyncio.IncompleteReadError):
            conn.abort()
        finally:
            self._connections.discard(conn)
            for w in (conn.client, conn.upstream):
                if w is not None:
                    w.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, to_target: bool) -> None:
        """One direction: a reader stamps each chunk with its due time, a writer sends it then."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)

        async def read_side() -> None:
            while True:
                await self._gate.wait()
                data = await src.read(CHUNK)
                if not data:
                    await queue.put(None)
                    return
                await queue.put((loop.time() + self._latency_secs, data))

        async def write_side() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    if dst.can_write_eof():
                        with contextlib.suppress(OSError):
                            dst.write_eof()
                    return
                due, data = item
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._gate.wait()
                dst.write(data)
                await dst.drain()
                if to_target:
                    self.bytes_to_target += len(data)
                else:
                    self.bytes_to_client += len(data)

        reading = asyncio.create_task(read_side())
        try:
            await write_side()
            await reading
        finally:
            reading.cancel()


# -- the control API --------------------------------------------------------------------------------


class ControlServer:
    """`GET /mode` and `PUT /mode` over plain HTTP/1.1, one request per connection."""

    def __init__(self, proxy: FaultProxy, host: str, port: int) -> None:
        self.proxy = proxy
        self.host = check_loopback(host, "control")
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> ControlServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        if self.port == 0:
            self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await asyncio.wait_for(self._respond(reader), timeout=10)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        payload = json.dumps(body).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(
            status, "Error"
        )
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
        request_line = (await reader.readline()).decode("latin-1").split()
        length = 0
        while True:
            line = (await reader.readline()).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    return _error(400, "invalid_request", "Content-Length is not a number.")
        if len(request_line) < 2:
            return _error(400, "invalid_request", "Malformed request line.")
        if not 0 <= length <= 65536:
            return _error(400, "invalid_request", "The body is too large.")
        raw = await reader.readexactly(length) if length else b""
        method, path = request_line[0].upper(), request_line[1].split("?", 1)[0]
        if path != "/mode":
            return _error(404, "not_found", f"No such path {path!r}; the control API is /mode.")
        if method == "GET":
            return 200, self.proxy.state()
        if method != "PUT":
            return _error(405, "method_not_allowed", "Use GET or PUT on /mode.")
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return _error(400, "invalid_request", "The body is not JSON.")
        try:
            await self.proxy.set_mode(ModeSetting.parse(body))
        except FaultProxyError as e:
            return _error(400, e.code, e.detail)
        except OSError as e:  # the listening port could not be reopened
            return _error(500, "listen_failed", f"Could not listen again: {e}.")
        return 200, self.proxy.state()


def _error(status: int, code: str, detail: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": code, "detail": detail}


# -- the command line -------------------------------------------------------------------------------


async def serve(
    listen: tuple[str, int], target: tuple[str, int], control: tuple[str, int], setting: ModeSetting
) -> int:
    proxy = FaultProxy(listen[0], listen[1], target[0], target[1])
    await proxy.start(setting)
    ctl = await ControlServer(proxy, control[0], control[1]).start()
    print(
        f"faultproxy {proxy.listen_host}:{proxy.listen_port} -> {proxy.target_host}:{proxy.target_port}, "
        f"control {ctl.host}:{ctl.port}, mode {setting.mode}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await ctl.close()
    await proxy.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m siteserver.faultproxy", description="TCP fault proxy (loopback only)."
    )
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept connections on")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward them to")
    parser.add_argument("--control", required=True, help="HOST:PORT of the control API")
    parser.add_argument("--mode", default="pass", choices=MODES)
    parser.add_argument("--latency-ms", type=float)
    parser.add_argument("--up-secs", type=float)
    parser.add_argument("--down-secs", type=float)
    args = parser.parse_args(argv)
    try:
        listen = parse_address(args.listen, "listen")
        target = parse_address(args.target, "target")
        control = parse_address(args.control, "control")
        body = {
            "mode": args.mode,
            "latency_ms": args.latency_ms,
            "up_secs": args.up_secs,
            "down_secs": args.down_secs,
        }
        setting = ModeSetting.parse({k: v for k, v in body.items() if v is not None})
    except FaultProxyError as e:
        print(f"faultproxy: error: {e.detail}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(listen, target, control, setting))
    except OSError as e:
        print(f"faultproxy: error: {e}", file=sys.stderr)
        return 1


# -- for tests: the proxy as a subprocess -----------------------------------------------------------


@dataclass
class FaultProxyProcess:
    """`python -m siteserver.faultproxy` in a subprocess on free loopback ports, steered over HTTP.

    with FaultProxyProcess.in_front_of(primary.url) as proxy:
        ...  # point the site at proxy.url
        proxy.set("blackhole")
    """

    target_port: int
    target_host: str = "127.0.0.1"
    mode: str = "pass"
    listen_port: int = 0
    control_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @classmethod
    def in_front_of(cls, url: str, **kw: Any) -> FaultProxyProcess:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"{url!r} has no host and port")
        return cls(target_port=parts.port, target_host=parts.hostname, **kw)

    @property
    def url(self) -> str:
        """The proxied server's base URL, through the proxy."""
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def start(self, timeout: float = 15.0) -> FaultProxyProcess:
        from siteserver.launch import free_port

        check_loopback(self.target_host, "target")
        self.listen_port = self.listen_port or free_port()
        while not self.control_port or self.control_port == self.listen_port:
            self.control_port = free_port()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for the child's life
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *("-m", "siteserver.faultproxy"),
                *("--listen", f"127.0.0.1:{self.listen_port}"),
                *("--target", f"{self.target_host}:{self.target_port}"),
                *("--control", f"127.0.0.1:{self.control_port}"),
                *("--mode", self.mode),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        import httpx

        while True:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                code = self.stop()
                raise RuntimeError(f"faultproxy exited with {code}: {tail}")
            try:
                httpx.get(self.control_url + "/mode", timeout=0.5).raise_for_status()
                return self
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    tail = self.log_tail()
                    self.stop()
                    raise TimeoutError(f"faultproxy did not start: {tail}") from None
                time.sleep(0.05)

    def set(self, mode: str, **params: float) -> dict[str, Any]:
        """Switch mode (latency_ms=…, up_secs=…, down_secs=…); the proxy's state after the switch."""
        import httpx

        r = httpx.put(self.control_url + "/mode", json={"mode": mode, **params}, timeout=10)
        if r.status_code != 200:
            raise FaultProxyError(r.json().get("error", "error"), r.json().get("detail", r.text))
        result: dict[str, Any] = r.json()
        return result

    def state(self) -> dict[str, Any]:
        import httpx

        result: dict[str, Any] = httpx.get(self.control_url + "/mode", timeout=10).json()
        return result

    def log_tail(self, n: int = 4000) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read()[-n:].decode(errors="replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait; the exit code (0 after a clean stop)."""
        from siteserver.launch import terminate

        if self.proc is None:
            return None
        code = terminate(self.proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> FaultProxyProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
