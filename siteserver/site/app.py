"""The site server: the FastAPI app and the process that runs it (`siteserver site run`).

It pulls from the primary in a background thread (sync.pull: bootstrap once, then follow the
change feed), probes every primary endpoint and keeps the site's mode (siteserver.site.monitor,
docs/wan.md), heartbeats every 10 s, merges its outbox journal into the primary (sync.merge), and
serves the Device API and the Print provider API from its own store (`siteserver.desk`, the
primary's flows, with `JournalCharging`: every charge goes through the journal), its health URL and
site administration.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import sqlite_utils
from apscheduler.schedulers.background import BackgroundScheduler
from fastapi import FastAPI

import siteserver
from migrations.site import migrations
from siteserver import contract, logs, tls
from siteserver.admin.site import SiteAdmin
from siteserver.api import device, provider, site_admin
from siteserver.api.application import build_app
from siteserver.api.deps import Services
from siteserver.config import SiteConfig
from siteserver.desk import FrontDesk
from siteserver.desk.journal_charging import JournalCharging
from siteserver.domain import SecretHasher, SessionRegistry
from siteserver.keys import load_or_create_token
from siteserver.metrics import Metrics
from siteserver.serving import serve_role
from siteserver.store import Database, jobs, journal, sync_state
from siteserver.timeutil import iso, now_iso, utcnow
from siteserver.web import pages
from siteserver.web import site as site_pages
from sync import wire
from sync.endpoints import Endpoints
from sync.errors import SyncFailed
from sync.merge import UPLOADERS, Merger
from sync.pull import Mirror

from .errors import NotEnrolled
from .identity import Identity
from .monitor import WanMonitor
from .observe import SiteMetrics

log = logging.getLogger("siteserver.site")

FEED_TIMEOUT_MARGIN_SECS = 15.0


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
        verify = tls.client_context(config.tls.ca_file)
        self.endpoints = Endpoints.create(
            config.primary,
            config.site_id,
            identity.load_key(),
            feed_timeout=config.sync.changes_wait_secs + FEED_TIMEOUT_MARGIN_SECS,
            verify=verify,
        )
        # Set when a request's merge missed its budget, cleared once an upload is answered again.
        budget_missed = threading.Event()
        self.metrics = Metrics()
        observed = SiteMetrics(self.metrics, self.db, self.endpoints)
        self.merger = Merger(
            self.db,
            self.endpoints,
            self.stop_event,
            on_answered=budget_missed.clear,
            on_verdicts=observed.verdicts,
        )
        self.mirror = Mirror(
            self.db,
            self.endpoints,
            wait_secs=config.sync.changes_wait_secs,
            stop=self.stop_event,
            settle=self.merger.settle_in_doubt,
            scope=config.sync.mirror_scope,
        )
        self.monitor = WanMonitor(
            self.db,
            self.endpoints,
            config.wan,
            identity.load_health_key(),
            self.stop_event,
            on_primary_back=self.merger.wake.set,  # merge the journal at once
            on_probe_secs=observed.probe.observe,
            verify=verify,
        )
        self.hashing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hashing")
        charging = JournalCharging(
            self.db,
            self.merger,
            self.monitor.mode,
            budget_secs=config.wan.request_budget_ms / 1000,
            budget_missed=budget_missed,
            # A merge that missed its budget is evidence of a dead WAN: it speeds detection up.
            on_budget_missed=self.monitor.note_merge_missed,
            limits=config.offline,
        )
        self.desk = FrontDesk.create(
            self.db,
            hasher=SecretHasher(identity.load_pepper()),
            sessions=SessionRegistry(),
            hashing=self.hashing,
            charging=charging,
            site_id=config.site_id,
        )
        self.admin = SiteAdmin(
            self.db,
            config.site_id,
            self.endpoints,
            self.mirror,
            self.merger,
            config.offline,
            self.tls_status(),
        )
        self._threads: list[threading.Thread] = []
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.scheduler.add_job(self._expire_holds, "interval", seconds=60, id="hold-expiry", coalesce=True)
        self.scheduler.add_job(
            self._prune_journal,
            "interval",
            hours=6,
            id="journal-prune",
            coalesce=True,
            next_run_time=utcnow(),  # and at start: a restarted site prunes at once
        )

    def _expire_holds(self) -> None:
        n = self.desk.provider.expire_held_jobs()
        if n:
            log.info("expired %d held job(s) past the hold timeout", n)

    def _prune_journal(self) -> int:
        """Merged entries past `[journal] retention_days` go, in small batches (never pending or
        rejected ones)."""
        cutoff = iso(utcnow() - timedelta(days=self.config.journal.retention_days))
        total = 0
        while not self.stop_event.is_set():
            n = self.db.write_sync(
                lambda conn: journal.prune_merged(conn, answered_before=cutoff), fenced=False
            )
            total += n
            if n < journal.PRUNE_BATCH:
                break
        if total:
            log.info("pruned %d merged journal entries answered before %s", total, cutoff)
        return total

    @staticmethod
    def _init_state(conn: sqlite_utils.Database) -> None:
        sync_state.start_mode(conn, now_iso())
        jobs.recover_releasing(conn)

    def heartbeat_once(self) -> None:
        ep = self.endpoints.current()
        state, backlog, outages = self.db.read_sync(
            lambda conn: (sync_state.read(conn), journal.pending_count(conn), sync_state.outages(conn))
        )
        body = wire.HeartbeatIn(
            mode=state.mode,
            journal_backlog=backlog,
            version=siteserver.__version__,
            interval_secs=self.config.sync.heartbeat_secs,
            last_outage=wire.OutageSpan(started_at=outages[-1].started_at, ended_at=outages[-1].ended_at)
            if outages
            else None,
        )
        try:
            ep.quick.heartbeat(body)
        except SyncFailed as e:
            log.warning("heartbeat to %s failed: %s", ep.url, e)
            self.endpoints.failed(ep, e.status)
            return
        except Exception as e:
            if not self.stop_event.is_set():
                log.warning("heartbeat to %s failed: %s", ep.url, e or type(e).__name__)
                self.endpoints.failed(ep, None)
            return
        self.endpoints.ok(ep)

    def _heartbeat_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.heartbeat_once()
            except Exception:
                log.exception("heartbeat failed")
            self.stop_event.wait(self.config.sync.heartbeat_secs)

    def start(self) -> None:
        for name, target in (
            ("mirror", self.mirror.run),
            ("heartbeat", self._heartbeat_loop),
            ("merge", self.merger.run),
            *((f"merge-upload-{i}", self.merger.run_uploader) for i in range(UPLOADERS)),
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
        self.merger.wake.set()
        self.endpoints.close()  # ends a long poll in flight
        for t in self._threads:
            t.join(timeout=5)
        self.hashing.shutdown(wait=False)
        self.merger.close()
        self.db.close()

    def tls_status(self) -> contract.TlsOut:
        """How this site serves; a generated certificate is made here, on first start."""
        files = tls.server_files(self.config.tls, Path(self.config.data_dir), self.config.host)
        if files is None:
            return contract.TlsOut(serving="http")
        return contract.TlsOut(
            serving="https",
            certificate=str(files[0]),
            fingerprint=tls.fingerprint(files[0]),
            generated=self.config.tls.generate,
        )

    def app(self) -> FastAPI:
        return build_app(
            title="siteserver site",
            description="A branch site server: the device and print provider APIs served from its own "
            "store, its health URL and site administration. See CONTRACT.md.",
            routers=(
                device.router,
                provider.router,
                site_admin.health_router,
                site_admin.router,
                pages.router,
                site_pages.router,
            ),
            http=self.config.http,
            services=Services(
                admin_token=self.admin_token,
                desk=self.desk,
                site_admin=self.admin,
                metrics=self.metrics,
                metrics_token=self.config.metrics_token,
            ),
        )


def run(config: SiteConfig) -> int:
    """`siteserver site run`: serve until SIGTERM/SIGINT. Raises NotEnrolled (exit 2)."""
    check_enrollment(config)
    log_config = logs.setup(config.log_level, config.log_format, role="site", site_id=config.site_id)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per long poll is noise
    server = SiteServer(config)
    server.start()
    log.info("site %s listening on %s (data_dir %s)", config.site_id, config.listen, config.data_dir)
    return serve_role(server.app(), config, log_config=log_config, stop=server.stop)


__all__ = ["NotEnrolled", "SiteServer", "check_enrollment", "run"]
