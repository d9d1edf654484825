"""The fault proxy, as a real subprocess on loopback in front of a real HTTP server.

Timings: lower bounds where a fault must cost time, generous upper bounds elsewhere, so a slow
machine does not fail them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from siteserver.faultproxy import FaultProxy, FaultProxyError, FaultProxyProcess, check_loopback
from siteserver.launch import free_port
from tests.kit.primary import Primary, expect_error, start_primary

STREAM_PART = b"x" * 1000


class Target(ThreadingHTTPServer):
    daemon_threads = True
    release: threading.Event


class Handler(BaseHTTPRequestHandler):
    """GET /hello → "hello" (keep-alive); GET /stream → half a body, then the rest once released."""

    protocol_version = "HTTP/1.1"
    server: Target

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Length", str(2 * len(STREAM_PART)))
            self.end_headers()
            self.wfile.write(STREAM_PART)
            self.wfile.flush()
            self.server.release.wait(10)
            self.wfile.write(STREAM_PART)
            return
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    server = Target(("127.0.0.1", 0), Handler)
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def proxy(target: Target) -> Iterator[FaultProxyProcess]:
    target.release.clear()
    p = FaultProxyProcess(target_port=target.server_address[1]).start()
    yield p
    target.release.set()
    assert p.stop() == 0


def timed_get(url: str, timeout: float) -> tuple[float, httpx.Response | Exception]:
    t0 = time.monotonic()
    result: httpx.Response | Exception
    try:
        result = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as e:
        result = e
    return time.monotonic() - t0, result


def test_pass_forwards_request_and_answer_and_counts(proxy: FaultProxyProcess) -> None:
    r = httpx.get(proxy.url + "/hello", timeout=5)
    assert r.status_code == 200 and r.text == "hello"
    state = proxy.state()
    assert state["mode"] == "pass" and state["forwarding"] is True
    assert state["connections_accepted"] == 1
    assert state["bytes_to_target"] > 0 and state["bytes_to_client"] > len("hello")


def test_refuse_gives_an_immediate_connection_error_and_cuts_existing(proxy: FaultProxyProcess) -> None:
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        assert client.get("/hello").status_code == 200
        assert proxy.set("refuse")["listening"] is False
        t0 = time.monotonic()
        with pytest.raises(httpx.TransportError) as cut:
            client.get("/hello")  # the kept-alive connection was reset
        assert not isinstance(cut.value, httpx.TimeoutException)
        assert time.monotonic() - t0 < 2.0
    elapsed, result = timed_get(proxy.url + "/hello", timeout=5)
    assert isinstance(result, httpx.ConnectError), result
    assert elapsed < 1.0
    proxy.set("pass")
    assert httpx.get(proxy.url + "/hello", timeout=5).text == "hello"


def test_blackhole_new_connection_times_out(proxy: FaultProxyProcess) -> None:
    proxy.set("blackhole")
    elapsed, result = timed_get(proxy.url + "/hello", timeout=0.5)
    assert isinstance(result, httpx.TimeoutException), result  # not an error at once
    assert 0.45 <= elapsed < 5
    assert proxy.state()["connections_accepted"] == 1  # accepted, never answered
    proxy.set("pass")
    assert httpx.get(proxy.url + "/hello", timeout=5).text == "hello"


def test_blackhole_existing_keepalive_connection_goes_silent(proxy: FaultProxyProcess) -> None:
    with httpx.Client(base_url=proxy.url, timeout=0.5) as client:
        assert client.get("/hello").text == "hello"
        proxy.set("blackhole")
        t0 = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            client.get("/hello")
        assert 0.45 <= time.monotonic() - t0 < 5
    assert proxy.state()["connections_accepted"] == 1  # the same connection, not a new one


def test_blackhole_stops_forwarding_mid_response(proxy: FaultProxyProcess, target: Target) -> None:
    with (
        httpx.Client(base_url=proxy.url, timeout=1.0) as client,
        client.stream("GET", "/stream") as r,
    ):
        assert r.status_code == 200
        chunks = r.iter_raw()
        first = next(chunks)
        assert 0 < len(first) <= len(STREAM_PART)
        before = proxy.set("blackhole")["bytes_to_client"]
        target.release.set()  # the server sends the rest now; it must not arrive
        t0 = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            for _ in chunks:
                pass
        assert time.monotonic() - t0 >= 0.9
    state = proxy.state()
    assert state["bytes_to_client"] == before
    assert state["connections_accepted"] == 1


def test_latency_delays_each_way(proxy: FaultProxyProcess) -> None:
    state = proxy.set("latency", latency_ms=300)
    assert state["mode"] == "latency" and state["latency_ms"] == 300
    elapsed, result = timed_get(proxy.url + "/hello", timeout=10)
    assert isinstance(result, httpx.Response) and result.text == "hello"
    assert 0.58 <= elapsed < 8  # 300 ms for the request, 300 ms for the answer
    proxy.set("pass")
    elapsed, result = timed_get(proxy.url + "/hello", timeout=10)
    assert isinstance(result, httpx.Response) and elapsed < 3


def up_down_up(outcomes: list[bool]) -> bool:
    """Success, then failure, then success again (outcomes holds only the changes)."""
    return True in outcomes and len(outcomes[outcomes.index(True) :]) >= 3


def test_flap_alternates_up_and_down(proxy: FaultProxyProcess) -> None:
    state = proxy.set("flap", up_secs=0.5, down_secs=0.5)
    assert (state["mode"], state["up_secs"], state["down_secs"]) == ("flap", 0.5, 0.5)
    outcomes: list[bool] = []
    seen = []
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        _, result = timed_get(proxy.url + "/hello", timeout=0.3)
        ok = isinstance(result, httpx.Response) and result.text == "hello"
        if not outcomes or outcomes[-1] != ok:
            outcomes.append(ok)
        seen.append(proxy.state()["forwarding"])
        if up_down_up(outcomes):
            break
        time.sleep(0.05)
    assert up_down_up(outcomes), outcomes
    assert True in seen and False in seen


def test_back_to_pass_restores_service(proxy: FaultProxyProcess) -> None:
    for fault in ("refuse", "blackhole"):
        proxy.set(fault)
        _, result = timed_get(proxy.url + "/hello", timeout=0.3)
        assert isinstance(result, httpx.HTTPError)
        proxy.set("pass")
        _, result = timed_get(proxy.url + "/hello", timeout=5)
        assert isinstance(result, httpx.Response) and result.text == "hello", fault


def test_control_api_rejects_bad_requests(proxy: FaultProxyProcess) -> None:
    url = proxy.control_url + "/mode"
    expect_error(httpx.put(url, json={"mode": "explode"}), 400, "unknown_mode")
    expect_error(httpx.put(url, json={"mode": "latency"}), 400, "invalid_request")
    expect_error(httpx.put(url, json={"mode": "flap", "up_secs": 1}), 400, "invalid_request")
    expect_error(httpx.put(url, json={"mode": "pass", "latency_ms": 5}), 400, "invalid_request")
    expect_error(httpx.put(url, json={"mode": "pass", "colour": 1}), 400, "invalid_request")
    expect_error(httpx.put(url, content=b"{not json"), 400, "invalid_request")
    expect_error(httpx.get(proxy.control_url + "/other"), 404, "not_found")
    expect_error(httpx.delete(url), 405, "method_not_allowed")
    with pytest.raises(FaultProxyError):
        proxy.set("latency", latency_ms=-1)
    assert proxy.state()["mode"] == "pass"  # nothing changed


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_exits_zero_on_signal(target: Target, sig: int) -> None:
    p = FaultProxyProcess(target_port=target.server_address[1]).start()
    with httpx.Client(base_url=p.url, timeout=5) as client:  # with a connection open
        assert client.get("/hello").status_code == 200
        assert p.proc is not None
        p.proc.send_signal(sig)
        assert p.proc.wait(10) == 0
    assert p.stop() == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--listen", "0.0.0.0:{p}", "--target", "127.0.0.1:{p}", "--control", "127.0.0.1:{c}"],
        ["--listen", "127.0.0.1:{p}", "--target", "10.1.2.3:80", "--control", "127.0.0.1:{c}"],
        ["--listen", "127.0.0.1:{p}", "--target", "example.com:80", "--control", "127.0.0.1:{c}"],
        ["--listen", "127.0.0.1:{p}", "--target", "127.0.0.1:{p}", "--control", "192.168.1.1:{c}"],
    ],
)
def test_non_loopback_addresses_are_refused(args: list[str]) -> None:
    port, control = free_port(), free_port()
    done = subprocess.run(
        [sys.executable, "-m", "siteserver.faultproxy", *(a.format(p=port, c=control) for a in args)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "loopback" in done.stderr


def test_non_loopback_refused_in_process() -> None:
    for host in ("0.0.0.0", "8.8.8.8", "::", "printers.example"):
        with pytest.raises(FaultProxyError, match="loopback"):
            FaultProxy(host, 1, "127.0.0.1", 2)
        with pytest.raises(FaultProxyError, match="loopback"):
            FaultProxy("127.0.0.1", 1, host, 2)
    assert check_loopback("localhost", "x") == "127.0.0.1"
    assert check_loopback("::1", "x") == "::1"
    with pytest.raises(FaultProxyError):
        FaultProxyProcess(target_port=80, target_host="10.0.0.1").start()


def test_between_client_and_a_real_primary(tmp_path: Path) -> None:
    primary: Primary = start_primary(tmp_path)
    try:
        with FaultProxyProcess.in_front_of(primary.url) as proxy:
            health = primary.health.replace(primary.url, proxy.url)
            assert httpx.get(health, timeout=5).status_code == 200
            proxy.set("blackhole")
            with pytest.raises(httpx.TimeoutException):
                httpx.get(health, timeout=0.5)
            proxy.set("refuse")
            with pytest.raises(httpx.ConnectError):
                httpx.get(health, timeout=5)
            proxy.set("pass")
            assert httpx.get(health, timeout=5).status_code == 200
    finally:
        primary.process.stop()
