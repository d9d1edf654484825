"""A client that goes away mid-request (a cut WAN link, a fault proxy that stops) is a disconnect,
not a bug: the primary logs one INFO line (no "internal error", no traceback), acts on nothing
half-read, and keeps serving."""

from __future__ import annotations

import json
import socket
import time

import httpx

from sync import signing
from tests.kit.journal import JOURNAL, add_payers, balances, entry
from tests.kit.primary import Primary
from tests.kit.site import enrolled_site

DISCONNECTED = "client disconnected during POST "


def send_half(primary: Primary, path: str, body: bytes, headers: dict[str, str]) -> None:
    """Announce the whole body in Content-Length, send half of it, and hang up."""
    port = primary.process.port
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[: len(body) // 2])


def log_once_it_has(primary: Primary, needle: str, timeout: float = 3.0) -> str:
    """The primary's log as soon as it holds `needle` (or as it is at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        log = primary.process.log_path.read_text(errors="replace")
        if needle in log or time.monotonic() > deadline:
            return log
        time.sleep(0.02)


def assert_disconnect_logged(primary: Primary, path: str) -> None:
    log = log_once_it_has(primary, DISCONNECTED + path)
    assert "internal error" not in log and "Traceback" not in log, log
    assert "Exception in ASGI application" not in log, log
    assert log.count(DISCONNECTED + path) == 1, log  # one INFO line, nothing more
    assert httpx.get(primary.health, timeout=5).status_code == 200


def test_journal_upload_cut_mid_body_is_a_disconnect(primary: Primary) -> None:
    """The signed sync route reads the raw body itself (for the signature), before any check."""
    site = enrolled_site(primary)
    add_payers(primary)
    body = json.dumps({"entries": [entry("user:alice", -150)]}).encode()
    send_half(
        primary, JOURNAL, body, signing.sign(site.key, "POST", JOURNAL, "", body, site.site_id, time.time())
    )
    assert_disconnect_logged(primary, JOURNAL)
    assert balances(primary)["alice"] == 1000  # nothing of the half-read body was applied


def test_admin_post_cut_mid_body_is_a_disconnect(primary: Primary) -> None:
    """An ordinary route: FastAPI reads the body, and wraps the disconnect in a 400."""
    path = "/api/admin/v1/users"
    body = json.dumps({"username": "carol", "balance_cents": 500}).encode()
    send_half(primary, path, body, {"Authorization": f"Bearer {primary.admin_token}"})
    assert_disconnect_logged(primary, path)
    with primary.admin() as c:
        assert c.get(f"{path}/carol").status_code == 404
