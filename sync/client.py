"""The site's end of the sync API: an httpx client that signs every request with the site's key,
builds each request from `sync.wire`'s models and parses each answer with them."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ValidationError

from . import balancer, signing, wire
from .errors import SyncFailed

M = TypeVar("M", bound=BaseModel)


def enroll(
    base_url: str,
    body: wire.EnrollIn,
    *,
    timeout: float | httpx.Timeout = 5.0,
    verify: ssl.SSLContext | bool = True,
) -> httpx.Response:
    """Unsigned: the one-time enrollment token in the body is the credential. The caller reads the
    answer (`wire.EnrollOut` on 200, an error body otherwise)."""

    def post() -> httpx.Response:  # a new connection each time (httpx.post keeps none)
        return httpx.post(
            base_url.rstrip("/") + wire.url_path(wire.ENROLL_PATH),
            content=body.model_dump_json(),
            headers={"Content-Type": "application/json"},
            timeout=timeout,
            verify=verify,
        )

    response = post()
    for _ in range(balancer.RETRIES):
        if not balancer.sent_to_passive(response):
            break
        response = post()
    return response


def parse(model: type[M], response: httpx.Response) -> M:
    """The answer as `model`; SyncFailed (with the status) for any other status or a body that
    does not fit."""
    if response.status_code != 200:
        raise SyncFailed(
            f"{response.request.method} {response.request.url.path} answered HTTP {response.status_code}",
            response.status_code,
            retry_after=retry_after(response),
        )
    try:
        return model.model_validate_json(response.content)
    except ValidationError as e:
        raise SyncFailed(f"{response.request.url.path} answered a body that does not fit: {e}") from e


#: the longest wait a primary's Retry-After is taken for (a bigger one is a misconfiguration)
MAX_RETRY_AFTER_SECS = 300.0


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a 429 or 503 answer's `Retry-After` asks for (delta-seconds only), capped."""
    if response.status_code not in (429, 503):
        return None
    value = response.headers.get("Retry-After", "").strip()
    try:
        secs = float(value)
    except ValueError:
        return None
    return min(secs, MAX_RETRY_AFTER_SECS) if secs >= 0 else None


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
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """`transport`: what carries the requests (default: the network; tests pass an
        `httpx.MockTransport` that answers like the primary); `verify`: how an https:// primary's
        certificate is checked (siteserver.tls.client_context)."""
        self.site_id = site_id
        self.private_key = private_key
        self.clock = clock
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport, verify=verify
        )
        #: for a request a balancer sent to the passive member: asked again on a new connection
        self.fresh = balancer.fresh_connections(timeout, transport, verify)
        #: answers of the passive member that a retry replaced (a balancer with a TCP check)
        self.passive_answers = 0

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()
        self.fresh.close()

    def build(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | httpx.Timeout | None = None,
    ) -> httpx.Request:
        """A signed request to a full URL path, not sent (tests replay or tamper with it).
        `json_body`: a model or plain JSON data. `timeout` overrides the client's for this request."""
        if json_body is None:
            content = b""
        elif isinstance(json_body, BaseModel):
            content = json_body.model_dump_json().encode()
        else:
            content = json.dumps(json_body, separators=(",", ":")).encode()
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
            signing.sign(self.private_key, method, url.path, url.query, content, self.site_id, self.clock())
        )
        return request

    def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        response = self.http.send(request, stream=stream)
        for _ in range(balancer.RETRIES):
            if not balancer.sent_to_passive(response):
                break
            response.close()
            self.passive_answers += 1
            response = self.fresh.send(self._signed_again(request), stream=stream)
        return response

    def _signed_again(self, request: httpx.Request) -> httpx.Request:
        """The same request with a new signature (a signature's nonce is good for one request)."""
        again = self.fresh.build_request(
            request.method,
            request.url,
            content=request.content,
            headers=request.headers,
            extensions=request.extensions,
        )
        url = urlsplit(str(request.url))
        again.headers.update(
            signing.sign(
                self.private_key,
                request.method,
                url.path,
                url.query,
                request.content,
                self.site_id,
                self.clock(),
            )
        )
        return again

    def request(
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        return self.send(self.build(method, path, json_body=json_body, params=params))

    # -- the calls of the protocol ---------------------------------------------------------------

    def heartbeat(self, body: wire.HeartbeatIn) -> wire.HeartbeatOut:
        r = self.request("POST", wire.url_path(wire.HEARTBEAT_PATH), json_body=body)
        return parse(wire.HeartbeatOut, r)

    def changes(
        self, after: int, wait: float, limit: int, scope: wire.MirrorScope = "all"
    ) -> wire.ChangesOut:
        """One page of the change feed after `after`, long-polling up to `wait` seconds."""
        params: dict[str, Any] = {
            "after": after,
            "wait": int(wait) if float(wait).is_integer() else wait,
            "limit": limit,
        }
        if scope != "all":
            params["scope"] = scope
        r = self.request("GET", wire.url_path(wire.CHANGES_PATH), params=params)
        return parse(wire.ChangesOut, r)

    @contextmanager
    def snapshot(
        self, scope: wire.MirrorScope = "all"
    ) -> Iterator[Iterator[wire.SnapshotBegin | wire.SnapshotRow | wire.SnapshotEnd]]:
        """The snapshot stream as parsed lines; the response is closed when the block ends."""
        params = {"scope": scope} if scope != "all" else None
        response = self.send(self.build("GET", wire.url_path(wire.SNAPSHOT_PATH), params=params), stream=True)
        try:
            if response.status_code != 200:
                response.read()
                raise SyncFailed(f"snapshot answered HTTP {response.status_code}", response.status_code)
            yield _snapshot_lines(response)
        finally:
            response.close()

    def merge(
        self,
        entries: list[wire.JournalEntry],
        *,
        timeout: float | httpx.Timeout | None = None,
        background: bool = False,
    ) -> wire.MergeOut:
        """Merge these journal entries (1-5000) into the primary: one verdict per entry.
        `background`: no device waits on it, so the primary may shed it (429 + Retry-After)."""
        request = self.build(
            "POST",
            wire.url_path(wire.MERGE_PATH),
            json_body=wire.MergeIn(entries=entries),
            params={wire.BACKGROUND: "true"} if background else None,
            timeout=timeout,
        )
        return parse(wire.MergeOut, self.send(request))

    def lookup(self, txn_ids: list[str], *, timeout: float | httpx.Timeout | None = None) -> wire.LookupOut:
        """The primary's ledger rows of these txn_ids (1-1000) that came from this site."""
        request = self.build(
            "POST",
            wire.url_path(wire.LOOKUP_PATH),
            json_body=wire.LookupIn.model_validate({"txn_ids": txn_ids}),
            timeout=timeout,
        )
        return parse(wire.LookupOut, self.send(request))


def _snapshot_lines(
    response: httpx.Response,
) -> Iterator[wire.SnapshotBegin | wire.SnapshotRow | wire.SnapshotEnd]:
    for line in response.iter_lines():
        if not line.strip():
            continue
        try:
            yield wire.SNAPSHOT_LINE.validate_json(line)
        except ValidationError as e:
            raise SyncFailed(f"snapshot line does not fit the protocol: {e}") from e
