"""The site's end of the sync API: an httpx client that signs every request with the site's key."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import signing

ENROLL_PATH = "/api/sync/v1/enroll"
HEARTBEAT_PATH = "/api/sync/v1/heartbeat"
JOURNAL_PATH = "/api/sync/v1/journal"


def enroll(
    base_url: str, site_id: str, token: str, public_key: str, *, timeout: float | httpx.Timeout = 5.0
) -> httpx.Response:
    """Unsigned: the one-time enrollment token in the body is the credential."""
    body = {"site_id": site_id, "enrollment_token": token, "public_key": public_key}
    return httpx.post(base_url.rstrip("/") + ENROLL_PATH, json=body, timeout=timeout)


class SyncClient:
    """`SyncClient(base_url, site_id, private_key)`: signed requests to one primary endpoint."""

    def __init__(
        self,
        base_url: str,
        site_id: str,
        private_key: Ed25519PrivateKey,
        *,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`transport`: what carries the requests (default: the network; tests pass an
        `httpx.MockTransport` that answers like the primary)."""
        self.site_id = site_id
        self.private_key = private_key
        self.clock = clock
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def build(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | httpx.Timeout | None = None,
    ) -> httpx.Request:
        """A signed request, not sent (tests replay or tamper with it). `timeout` overrides the
        client's for this request."""
        content = b"" if json_body is None else json.dumps(json_body, separators=(",", ":")).encode()
        request = self.http.build_request(
            method,
            path,
            params=params,
            content=content,
            headers={"Content-Type": "application/json"} if json_body is not None else None,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        url = urlsplit(str(request.url))
        request.headers.update(
            signing.sign(
                self.private_key,
                method,
                url.path,
                url.query,
                content,
                self.site_id,
                self.clock(),
            )
        )
        return request

    def send(self, request: httpx.Request) -> httpx.Response:
        return self.http.send(request)

    def request(
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        return self.send(self.build(method, path, json_body=json_body, params=params))

    def heartbeat(self, mode: str, journal_backlog: int, version: str) -> httpx.Response:
        return self.request(
            "POST",
            HEARTBEAT_PATH,
            json_body={"mode": mode, "journal_backlog": journal_backlog, "version": version},
        )

    def upload_journal(
        self, entries: list[dict[str, Any]], *, timeout: float | httpx.Timeout | None = None
    ) -> httpx.Response:
        """`POST /api/sync/v1/journal` with these entries (wire form, 1-1000 of them)."""
        return self.send(self.build("POST", JOURNAL_PATH, json_body={"entries": entries}, timeout=timeout))
