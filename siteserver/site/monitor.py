"""The WAN monitor: probes every configured primary endpoint's health URL, feeds the mode machine,
and records every change of mode (docs/wan.md, DESIGN.md invariants 4 and 5).

Every `wan.probe_interval_secs` a round probes all endpoints at once, each probe on its own worker
thread with connect/read/write/pool timeouts of min(probe interval, request budget), on a fresh
connection (as a load balancer probes). The round waits at most that long: a probe that has not
answered by then counts as down, and an endpoint whose previous probe is still stuck is not probed
again (it counts as down) — a blackholed endpoint costs one probe interval, never more, and never
delays the next round.

200 → active, 503 → passive (a passive member's own answer is asked again on a new connection a
few times first: behind a balancer with a TCP-only check the next try may reach the active
member, sync.balancer), anything else (401 for a wrong or missing key, a timeout, a refused
connection) → down. The pull and the merge follow the active member (Endpoints.follow_active).

A change of mode is written to `sync_state` (mode, mode_since) and appended to `mode_changes`
(at, mode, cause) in one write transaction, and logged at WARNING.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures

import httpx

from siteserver import tls
from siteserver.config import Wan
from siteserver.domain.modes import Mode, ModeMachine, Transition
from siteserver.store import Database, journal, sync_state
from siteserver.timeutil import now_iso, parse_iso
from sync import balancer
from sync.endpoints import Endpoint, Endpoints

log = logging.getLogger("siteserver.site.wan")

HEALTH_PATH = "/api/health/application-server/status"


#: an endpoint whose TLS certificate the site refused (a wrong CA): it is not synced with
TLS_REFUSED = "tls_refused"


def probe_state(status_code: int | None) -> str:
    if status_code == 200:
        return "active"
    if status_code == 503:
        return "passive"
    return "down"


class WanMonitor:
    def __init__(
        self,
        db: Database,
        endpoints: Endpoints,
        wan: Wan,
        health_key: str | None,
        stop: threading.Event,
        *,
        on_primary_back: Callable[[], object] | None = None,
        on_probe_secs: Callable[[float], object] | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.db = db
        #: told how long each probe took (the site's metrics)
        self.on_probe_secs = on_probe_secs
        self.endpoints = endpoints
        self.interval = wan.probe_interval_secs
        self.timeout = min(wan.probe_interval_secs, wan.request_budget_ms / 1000)
        self.health_key = health_key
        self.stop = stop
        self.on_primary_back = on_primary_back
        mode = db.read_sync(sync_state.read).mode
        self.machine = ModeMachine(wan.offline_after_failures, wan.online_after_successes, mode=mode)
        self._missed = False
        self._missed_lock = threading.Lock()
        self._in_flight: dict[str, Future[str]] = {}
        n = max(1, len(endpoints.items))
        self._pool = ThreadPoolExecutor(max_workers=2 * n, thread_name_prefix="wan-probe")
        self._http = httpx.Client(
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(max_keepalive_connections=0),  # a fresh connection per probe
            verify=verify,
        )
        self._warned_no_key = False
        self.rounds = 0

    def mode(self) -> Mode:
        """The site's mode now (in memory; every change is stored too)."""
        return self.machine.mode

    # -- the hook for the charging code ----------------------------------------------------------

    def note_merge_missed(self) -> None:
        """A merge missed its request budget; counted (once) at the next round. Cheap and
        thread-safe: any thread, any number of times."""
        with self._missed_lock:
            self._missed = True

    # -- probing ---------------------------------------------------------------------------------

    def _probe(self, ep: Endpoint) -> str:
        started = time.monotonic()
        try:
            return self._probe_once(ep)
        finally:
            if self.on_probe_secs is not None:
                self.on_probe_secs(time.monotonic() - started)

    def _probe_once(self, ep: Endpoint) -> str:
        params: dict[str, str | int] = {"disk-threshold-mb": 1}
        if self.health_key:
            params["Authorization"] = self.health_key
        try:
            r = self._http.get(ep.url.rstrip("/") + HEALTH_PATH, params=params)
            for _ in range(balancer.RETRIES):  # a balancer may pick the active member next time
                if not balancer.sent_to_passive(r):
                    break
                r = self._http.get(ep.url.rstrip("/") + HEALTH_PATH, params=params)
                if r.status_code == 200 and not ep.passive_routed:
                    ep.passive_routed = True
                    log.warning("primary endpoint %s: %s", ep.url, balancer.NOTE)
        except httpx.HTTPError as e:
            refused = tls.refused_reason(e)
            if refused is not None:
                if ep.tls_refused != refused:  # once, until it changes
                    log.error("primary endpoint %s: %s; the site does not sync with it", ep.url, refused)
                ep.tls_refused = refused
                return TLS_REFUSED
            log.debug("probe of %s failed: %s", ep.url, type(e).__name__)
            return "down"
        if ep.tls_refused is not None:
            log.info("primary endpoint %s: its TLS certificate is accepted now", ep.url)
            ep.tls_refused = None
        if r.status_code == 401 and not self._warned_no_key:
            self._warned_no_key = True
            if self.health_key:
                log.error("the primary at %s refused the health key: its endpoints count as down", ep.url)
            else:
                log.error(
                    "this site has no health key (enrolled before enrollment handed it out): the "
                    "primary's health URL answers 401 and every endpoint counts as down; enroll the "
                    "site again to fix it"
                )
        return probe_state(r.status_code)

    def probe_round(self) -> dict[str, str]:
        """Probe every endpoint at once; returns url → state, after at most one probe timeout."""
        futures: dict[str, Future[str]] = {}
        states: dict[str, str] = {}
        for ep in self.endpoints.items:
            prev = self._in_flight.get(ep.url)
            if prev is not None and not prev.done():
                states[ep.url] = "down"  # still stuck from an earlier round
                continue
            fut = self._pool.submit(self._probe, ep)
            self._in_flight[ep.url] = fut
            futures[ep.url] = fut
        wait_futures(list(futures.values()), timeout=self.timeout + 0.05)
        for url, fut in futures.items():
            states[url] = fut.result() if fut.done() and fut.exception() is None else "down"
        for ep in self.endpoints.items:
            self.endpoints.probed(ep, states[ep.url])
        switched = self.endpoints.follow_active()
        if switched is not None:
            log.info("following the active primary endpoint %s", switched.url)
        return states

    # -- the machine -----------------------------------------------------------------------------

    def _apply(self, t: Transition | None) -> None:
        if t is None:
            return
        at = now_iso()
        detection = self._since_last_ok(at) if t.new == Mode.OFFLINE else None
        self.db.write_sync(
            lambda conn: sync_state.record_mode(conn, t.new, t.cause, at, detection), fenced=False
        )
        log.warning("site mode %s -> %s: %s", t.old, t.new, t.cause)
        if t.new == Mode.RECONCILING and self.on_primary_back is not None:
            self.on_primary_back()

    def _since_last_ok(self, at: str) -> float | None:
        """Seconds from the last good contact with any primary endpoint to `at` (an outage's
        detection time, for the reconciliation report)."""
        seen = [e.last_ok_at for e in self.endpoints.items if e.last_ok_at is not None]
        if not seen:
            return None
        return round((parse_iso(at) - parse_iso(max(seen))).total_seconds(), 3)

    def step(self) -> dict[str, str]:
        """One round: probe, feed the machine (missed merge, round, drain), record changes."""
        states = self.probe_round()
        with self._missed_lock:
            missed, self._missed = self._missed, False
        if missed:
            self._apply(self.machine.merge_missed())
        active = any(s == "active" for s in states.values())
        if active and self.machine.mode == Mode.OFFLINE and self.on_primary_back is not None:
            # Merging may start before authority is handed back: the journal drains meanwhile.
            self.on_primary_back()
        self._apply(self.machine.round(active))
        if self.machine.mode == Mode.RECONCILING and self.db.read_sync(journal.pending_count) == 0:
            self._apply(self.machine.drained())
        self.rounds += 1
        return states

    def run(self) -> None:
        """The monitor thread: a round every probe interval; never dies."""
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.step()
            except Exception:
                if self.stop.is_set():
                    break
                log.exception("WAN probe round failed")
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()


__all__ = ["HEALTH_PATH", "WanMonitor", "probe_state"]
