"""The site's primary endpoints: every configured URL (both members of the pair, or one balancer
URL), each with a client for long polls and one for quick calls. The active one is used until it
fails, then the next; the WAN monitor probes every one and points the pull and the merge at the
active member."""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from siteserver import contract
from siteserver.timeutil import now_iso

from . import balancer
from .client import SyncClient

#: a quick call's timeout (heartbeat, merge in the background, an admin's pull)
QUICK_TIMEOUT_SECS = 10.0


@dataclass
class Endpoint:
    """One configured primary URL, with a client for long polls and one for quick calls."""

    url: str
    feed: SyncClient
    quick: SyncClient
    state: str = "down"
    last_ok_at: str | None = None
    #: a probe here was answered by the passive member, then by the active one on a retry
    passive_routed: bool = False
    #: why the last probe refused the primary's TLS certificate (None: it did not)
    tls_refused: str | None = None

    @property
    def note(self) -> str | None:
        if self.tls_refused is not None:
            return self.tls_refused
        routed = self.passive_routed or self.feed.passive_answers or self.quick.passive_answers
        return balancer.NOTE if routed else None


@dataclass
class Endpoints:
    """The configured primary URLs; the active one is used until it fails, then the next. The WAN
    monitor (siteserver.site.monitor) probes every one and moves `index` to the active member."""

    items: list[Endpoint]
    index: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(
        cls,
        urls: list[str],
        site_id: str,
        key: Ed25519PrivateKey,
        *,
        feed_timeout: float,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> Endpoints:
        """`transport`: where requests go instead of the network (tests: httpx.MockTransport);
        `verify`: how an https:// primary's certificate is checked."""

        def client(url: str, timeout: float) -> SyncClient:
            return SyncClient(url, site_id, key, timeout=timeout, transport=transport, verify=verify)

        return cls([Endpoint(u, client(u, feed_timeout), client(u, QUICK_TIMEOUT_SECS)) for u in urls])

    def current(self) -> Endpoint:
        with self.lock:
            return self.items[self.index]

    def ok(self, ep: Endpoint) -> None:
        with self.lock:
            ep.state = "active"
            ep.last_ok_at = now_iso()

    def failed(self, ep: Endpoint, status: int | None) -> None:
        with self.lock:
            ep.state = "passive" if status == 503 else "down"
            if self.items[self.index] is ep:
                self.index = (self.index + 1) % len(self.items)

    def probed(self, ep: Endpoint, state: str) -> None:
        """The WAN monitor's verdict on one endpoint: active, passive or down."""
        with self.lock:
            ep.state = state
            if state == "active":
                ep.last_ok_at = now_iso()

    def follow_active(self) -> Endpoint | None:
        """Point the pull and the merge at an active member when the current one is not;
        returns the endpoint switched to, or None when nothing changed."""
        with self.lock:
            if self.items[self.index].state == "active":
                return None
            for i, e in enumerate(self.items):
                if e.state == "active":
                    self.index = i
                    return e
            return None

    def view(self) -> contract.PrimaryOut:
        with self.lock:
            cur = self.items[self.index]
            return contract.PrimaryOut(
                active=cur.url if cur.state == "active" else None,
                endpoints=[
                    contract.EndpointOut(url=e.url, state=e.state, last_ok_at=e.last_ok_at, note=e.note)
                    for e in self.items
                ],
            )

    def close(self) -> None:
        for e in self.items:
            e.feed.close()
            e.quick.close()
