"""The site server: the FastAPI app and the process that runs it (`siteserver site run`).

It mirrors the primary in a background thread (bootstrap once, then follow the change feed),
probes every primary endpoint and keeps the site's mode (siteserver.site.monitor, docs/wan.md),
heartbeats every 10 s, pushes its outbox journal to the primary, and serves the Device API and the
Print provider API from its own store (`siteserver.frontdesk.FrontDesk`, the primary's flows, with
`JournalCharging`: every charge goes through the journal), its health URL and site administration.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlite_utils
from apscheduler.schedulers.background import BackgroundScheduler
from fastapi import FastAPI

import siteserver
from migrations.site import migrations
from siteserver import logs
from siteserver.api import device, provider, site_admin
from siteserver.api.application import build_app
from siteserver.config import SiteConfig
from siteserver.domain import Lockout, SecretHasher, SessionRegistry
from siteserver.frontdesk import FrontDesk
from siteserver.keys import load_or_create_token
from siteserver.serving import serve
from siteserver.store import Database, journal
from siteserver.timeutil import now_iso

from .charging import BACKGROUND_TIMEOUT_SECS, UPLOADERS, JournalCharging, Pusher, recover_releasing
from .identity import Identity
from .mirror import Endpoints, Mirror, read_state, set_state
from .monitor import WanMonitor
from .status import DEFAULT_MODE, mode_of

log = logging.getLogger("siteserver.site")

HEARTBEAT_SECS = 10.0
FEED_TIMEOUT_MARGIN_SECS = 15.0


class NotEnrolled(Exception):
    """The site has no enrollment in its data_dir (exit 2)."""


def check_enrollment(config: SiteConfig) -> Identity:
    identity = Identity(Path(config.data_dir))
    if not identity.enrollment_path.exists() or not identity.key_path.exists():
        raise NotEnrolled(
            f"site {config.site_id!r} is not enrolled (no enrollment in {config.data_dir}): "
            "run `siteserver site enroll` first"
        )
    try:
        enrolled = json.loads(identity.enrollment_path.read_text())["site_id"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NotEnrolled(
            f"{identity.enrollment_path} is unreadable: run `siteserver site enroll` first"
        ) from e
    if enrolled != config.site_id:
        raise NotEnrolled(
            f"{config.data_dir} is enrolled as site {enrolled!r}, not {config.site_id!r}: "
            "run `siteserver site enroll` first"
        )
    return identity


class SiteServer:
    """Everything one site process owns: database, primary endpoints, mirror, heartbeat."""

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        identity = check_enrollment(config)
        data_dir = Path(config.data_dir)
        self.admin_token = load_or_create_token(data_dir / "admin.token", config.admin_token)
        self.db = Database(data_dir / "site.db")
        self.db.open(migrations)
        self.db.write_sync(self._init_state, fenced=False)
        self.stop_event = threading.Event()
        self.endpoints = Endpoints.create(
            config.primary,
            config.site_id,
            identity.load_key(),
            feed_timeout=config.sync.changes_wait_secs + FEED_TIMEOUT_MARGIN_SECS,
        )
        self.mirror = Mirror(
            self.db, self.endpoints, wait_secs=config.sync.changes_wait_secs, stop=self.stop_event
        )
        self.pusher = Pusher(self.db, self.endpoints, self.stop_event)
        self.mirror.settle = lambda rows: self.pusher.push(rows, BACKGROUND_TIMEOUT_SECS)
        health_key = identity.load_health_key()
        self.monitor = WanMonitor(
            self.db,
            self.endpoints,
            config.wan,
            health_key,
            self.stop_event,
            on_reconciling=self.pusher.wake.set,  # drain the journal at once
        )
        self.hashing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hashing")
        charging = JournalCharging(
            self.db,
            self.pusher,
            lambda: self.monitor.machine.mode,
            budget_secs=config.wan.request_budget_ms / 1000,
            limits=config.offline,
        )
        # A push that missed its budget is evidence of a dead WAN: it speeds the monitor's detection.
        charging.on_push_missed = self.monitor.note_push_missed
        self.desk = FrontDesk(
            db=self.db,
            hasher=SecretHasher(identity.load_pepper()),
            lockout=Lockout(),
            sessions=SessionRegistry(),
            hashing=self.hashing,
            charging=charging,
        )
        self._threads: list[threading.Thread] = []
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.scheduler.add_job(self._expire_holds, "interval", seconds=60, id="hold-expiry", coalesce=True)

    def note_push_missed(self) -> None:
        """A journal push missed its budget: evidence for the WAN monitor (cheap, thread-safe)."""
        self.monitor.note_push_missed()

    def _expire_holds(self) -> None:
        n = self.desk.expire_held_jobs()
        if n:
            log.info("expired %d held job(s) past the hold timeout", n)

    @staticmethod
    def _init_state(d: sqlite_utils.Database) -> None:
        state = read_state(d)
        if "mode" not in state:
            set_state(d, mode=DEFAULT_MODE, mode_since=now_iso())
        recover_releasing(d)

    def heartbeat_once(self) -> None:
        ep = self.endpoints.current()
        state, backlog = self.db.read_sync(lambda d: (read_state(d), journal.pending_count(d)))
        try:
            r = ep.quick.heartbeat(mode_of(state), int(backlog), siteserver.__version__)
        except Exception as e:
            if not self.stop_event.is_set():
                log.warning("heartbeat to %s failed: %s", ep.url, e or type(e).__name__)
                self.endpoints.failed(ep, None)
            return
        if r.status_code == 200:
            self.endpoints.ok(ep)
        else:
            log.warning("heartbeat to %s answered HTTP %d", ep.url, r.status_code)
            self.endpoints.failed(ep, r.status_code)

    def _heartbeat_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.heartbeat_once()
            except Exception:
                log.exception("heartbeat failed")
            self.stop_event.wait(HEARTBEAT_SECS)

    def start(self) -> None:
        for name, target in (
            ("mirror", self.mirror.run),
            ("heartbeat", self._heartbeat_loop),
            ("journal-pusher", self.pusher.run),
            *((f"journal-upload-{i}", self.pusher.run_uploader) for i in range(UPLOADERS)),
            ("wan-monitor", self.monitor.run),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.stop_event.set()
        self.pusher.wake.set()
        self.endpoints.close()  # ends a long poll in flight
        for t in self._threads:
            t.join(timeout=5)
        self.hashing.shutdown(wait=False)
        self.db.close()

    def app(self) -> FastAPI:
        return build_app(
            title="siteserver site",
            description="A branch site server: the device and print provider APIs served from its own "
            "store, its health URL and site administration. See CONTRACT.md.",
            routers=(device.router, provider.router, site_admin.health_router, site_admin.router),
            admin_token=self.admin_token,
            db=self.db,
            site=self,
            backend=self.desk,
        )


def run(config: SiteConfig) -> int:
    """`siteserver site run`: serve until SIGTERM/SIGINT. Raises NotEnrolled (exit 2)."""
    check_enrollment(config)
    log_config = logs.setup(config.log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per long poll is noise
    server = SiteServer(config)
    server.start()
    log.info("site %s listening on %s (data_dir %s)", config.site_id, config.listen, config.data_dir)
    try:
        started = serve(
            server.app(),
            host=config.host,
            port=config.port,
            access_log=config.access_log,
            log_config=log_config,
        )
    finally:
        server.stop()
    return 0 if started else 1


__all__ = ["NotEnrolled", "SiteServer", "check_enrollment", "run"]
