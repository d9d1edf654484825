"""What one client may hold of a server, over real sockets against a primary started with the
CLI: deep or huge JSON is a 4xx JSON answer (never a 5xx), a body over its cap is refused with
413 before it is read, a request whose headers never finish loses its connection, and
connections beyond the configured cap are answered 503."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.kit.primary import Primary, start_primary

HEADER_TIMEOUT_SECS = 1.5
MAX_CONNECTIONS = 6


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Primary]:
    p = start_primary(
        tmp_path,
        extra={"http": {"header_timeout_secs": HEADER_TIMEOUT_SECS, "max_connections": MAX_CONNECTIONS}},
    )
    yield p
    p.process.stop()


def _connect(primary: Primary) -> socket.socket:
    host, port = primary.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def _answer(s: socket.socket) -> tuple[int, bytes]:
    """The status and body of the one answer on a raw connection."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := s.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [
        int(v)
        for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
        if k.lower() == b"content-length"
    ]
    while len(body) < (lengths[0] if lengths else 0) and (chunk := s.recv(65536)):
        body += chunk
    return int(head.split(b" ")[1]), body


DEEP = ("[" * 1500 + "]" * 1500).encode()
DEEP_OBJECT = ('{"a":' * 1500 + "1" + "}" * 1500).encode()


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["array", "object"])
def test_deep_json_is_a_4xx_json_answer_on_every_kind_of_endpoint(limited: Primary, body: bytes) -> None:
    headers = {"content-type": "application/json"}
    calls = [
        ("POST", "/api/sync/v1/enroll", None),  # unauthenticated
        ("POST", "/api/device/v1/login", "dev_not-a-token"),  # a wrong credential
        ("POST", "/api/admin/v1/users", limited.admin_token),  # authenticated
        ("PUT", "/api/admin/v1/offline-policies", limited.admin_token),
        ("POST", "/api/sync/v1/journal", None),  # signed: no signature
    ]
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        for method, path, token in calls:
            auth = {"authorization": f"Bearer {token}"} if token else {}
            r = c.request(method, path, content=body, headers={**headers, **auth})
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
            assert set(r.json()) == {"error", "detail"}, (path, r.text)
        # the connection survived: the next request on it is answered
        assert c.get("/api/health/application-server/status").status_code in (200, 401)
    assert "Traceback" not in limited.process.log_tail(1_000_000)


def test_a_body_over_the_cap_is_refused_before_it_is_read(limited: Primary) -> None:
    # 20 MB announced and not sent: the answer comes at once, without waiting for the body.
    s = _connect(limited)
    s.sendall(
        b"POST /api/admin/v1/users HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 20000000\r\nauthorization: Bearer " + limited.admin_token.encode() + b"\r\n\r\n"
    )
    status, body = _answer(s)
    s.close()
    assert status == 413
    assert json.loads(body)["error"] == "too_large"
    # Without a credential it is 413 too: the size is checked before anything is read.
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        r = c.post(
            "/api/device/v1/login",
            content=b"x" * (1_048_576 + 1),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413 and r.json()["error"] == "too_large"

        # A chunked body (no length declared) is counted as it comes.
        def chunks() -> Iterator[bytes]:
            for _ in range(40):
                yield b" " * 65536

        r = c.post(
            "/api/admin/v1/users",
            content=chunks(),
            headers={"authorization": f"Bearer {limited.admin_token}"},
        )
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        # Under the cap, a body is read and judged as usual.
        r = c.post(
            "/api/admin/v1/users",
            json={"username": "u-" + uuid.uuid4().hex[:8], "full_name": "x" * 200},
            headers={"authorization": f"Bearer {limited.admin_token}"},
        )
        assert r.status_code == 201, r.text


def test_the_journal_upload_has_its_own_larger_cap(limited: Primary) -> None:
    # 2 MiB: over the general cap, under the journal's, so it reaches the signature check (401).
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        r = c.post(
            "/api/sync/v1/journal", content=b" " * 2_097_152, headers={"content-type": "application/json"}
        )
        assert r.status_code == 401, r.text
        r = c.post(
            "/api/sync/v1/journal",
            content=b" " * (17 * 1_048_576),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413


def test_headers_not_complete_in_time_lose_the_connection(limited: Primary) -> None:
    silent = _connect(limited)  # says nothing at all
    slow = _connect(limited)  # starts a request and never ends its headers
    slow.sendall(b"GET /api/health/application-server/status HTTP/1.1\r\nhost: x\r\n")
    started = time.monotonic()
    for s in (silent, slow):
        s.settimeout(HEADER_TIMEOUT_SECS * 10)
        assert s.recv(1024) == b""  # closed by the server
        s.close()
    assert time.monotonic() - started < HEADER_TIMEOUT_SECS * 10
    # A prompt client on a kept-alive connection is not affected.
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        for _ in range(3):
            assert c.get("/api/health/application-server/status").status_code in (200, 401)
            time.sleep(HEADER_TIMEOUT_SECS / 2)


def test_connections_beyond_the_cap_get_503(limited: Primary) -> None:
    held = [_connect(limited) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        s = _connect(limited)
        s.sendall(b"GET /api/health/application-server/status HTTP/1.1\r\nhost: x\r\n\r\n")
        status, body = _answer(s)
        s.close()
        assert status == 503
        assert json.loads(body)["error"] == "over_capacity"
    finally:
        for h in held:
            h.close()
    time.sleep(0.3)
    assert httpx.get(limited.url + "/api/health/application-server/status", timeout=10).status_code in (
        200,
        401,
    )
