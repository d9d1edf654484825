"""The primary application server: the FastAPI app and the process that runs it."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from migrations.primary import migrations
from siteserver import logs
from siteserver.admin.primary import PrimaryAdmin
from siteserver.api import device, health, primary_admin, provider, sync
from siteserver.api.application import build_app
from siteserver.api.deps import PrimaryHealth, Services
from siteserver.api.sync import SELF_PARSED_BODIES, MergeShedding
from siteserver.config import PrimaryConfig
from siteserver.desk import FrontDesk
from siteserver.desk.charging import LedgerCharging
from siteserver.domain import SecretHasher, SessionRegistry
from siteserver.keys import load_or_create_pepper, load_or_create_token
from siteserver.metrics import Metrics
from siteserver.serving import serve_role
from siteserver.store import Database, feed
from siteserver.store.db import private_dir
from siteserver.web import pages
from siteserver.web import primary as fleet_page
from sync.service import SyncService
from sync.worker import WorkerNotStarted

from .guard import DuplicateServer, Guard, load_server_uuid
from .observe import PrimaryMetrics

log = logging.getLogger("siteserver.primary")

EXIT_DUPLICATE_UUID = 3


class ActiveOnly:
    """A passive member answers only its health URL; everything else gets a clear 503."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and not self.guard.is_active()
            and not scope["path"].startswith("/api/health/")
        ):
            response = JSONResponse(
                {
                    "error": "not_active",
                    "detail": "this application server is passive; send requests to the active "
                    "member (through the load balancer)",
                },
                status_code=503,
                # A kept-alive connection stays on the member a TCP-check balancer chose for it:
                # closing it makes the client's next request choose again.
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class PrimaryServer:
    """Everything one primary process owns: database, guard, services, scheduler."""

    def __init__(self, config: PrimaryConfig) -> None:
        self.config = config
        data_dir = Path(config.data_dir)
        private_dir(data_dir)
        self.admin_token = load_or_create_token(data_dir / "admin.token", config.admin_token)
        self.health_key = load_or_create_token(data_dir / "health.key", config.health_key)
        self.server_uuid = load_server_uuid(data_dir)
        self.db = Database(config.database)
        self.db.open(migrations)
        self.hashing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hashing")
        self.guard = Guard(
            self.db, self.server_uuid, config.high_availability_guard, on_activate=self._activate
        )
        self.metrics = Metrics()
        PrimaryMetrics(self.metrics, self.db, self.guard)
        hasher = SecretHasher(load_or_create_pepper(config.secrets_path))
        sessions = SessionRegistry()
        self.admin = PrimaryAdmin(self.db, hasher, self._epoch, sessions, self.hashing)
        # The device and provider flows, shared with the sites; charges go to the ledger.
        self.desk = FrontDesk.create(
            self.db,
            hasher=hasher,
            sessions=sessions,
            hashing=self.hashing,
            charging=LedgerCharging(self._epoch),
        )
        self.sync = SyncService.create(
            self.db,
            pepper=hasher.pepper,
            server_uuid=self.server_uuid,
            epoch_of=self._epoch,
            health_key=self.health_key,
        )
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.scheduler.add_job(self._expire_holds, "interval", seconds=60, id="hold-expiry", coalesce=True)
        self.scheduler.add_job(
            self._prune_change_log, "interval", hours=24, id="change-log-prune", coalesce=True
        )

    def _epoch(self) -> int:
        """The guard's current epoch, written into each ledger row (the fencing token)."""
        return self.guard.epoch

    def _activate(self) -> None:
        """Reaching 'running' after a takeover: the schema must be what this code expects."""
        pending = self.db.read_sync(lambda conn: [m.name for m in migrations.pending(conn)])
        if pending:
            raise RuntimeError(f"database has unapplied migrations: {pending}")

    def _expire_holds(self) -> None:
        if self.guard.is_active():
            n = self.desk.provider.expire_held_jobs()
            if n:
                log.info("expired %d held job(s) past the hold timeout", n)

    def _prune_change_log(self) -> None:
        """Daily: drop change_log rows past the retention (sites behind that bootstrap again)."""
        if not self.guard.is_active():
            return
        cutoff = feed.prune_cutoff(feed.DEFAULT_RETENTION)
        total = 0
        while self.guard.is_active():
            n = self.db.write_sync(lambda conn: feed.prune(conn, older_than=cutoff))
            total += n
            if n < feed.PRUNE_BATCH:
                break
        if total:
            log.info("pruned %d change_log row(s) older than %s", total, cutoff)

    def start(self) -> None:
        self.guard.start()  # raises DuplicateServer for a live clone
        self.sync.apply.worker.start()
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.guard.stop()
        self.hashing.shutdown(wait=False)
        self.db.close()  # the uploads handed to the merge worker are answered first
        self.sync.apply.worker.stop()

    def app(self) -> FastAPI:
        app = build_app(
            title="siteserver primary",
            description="The primary application server: administration, device and print provider "
            "APIs, health for the load balancer, and the sync API for site servers. See CONTRACT.md.",
            routers=(
                device.router,
                provider.router,
                health.router,
                primary_admin.router,
                sync.router,
                pages.router,
                fleet_page.router,
            ),
            http=self.config.http,
            self_parsed_bodies=SELF_PARSED_BODIES,
            services=Services(
                admin_token=self.admin_token,
                desk=self.desk,
                primary_admin=self.admin,
                primary_health=PrimaryHealth(self.health_key, self.guard, self.config.database),
                sync=self.sync,
                metrics=self.metrics,
                metrics_token=self.config.metrics_token,
            ),
            # A passive member refuses before the merge's shedding is asked.
            middleware=(
                Middleware(ActiveOnly, guard=self.guard),
                Middleware(MergeShedding, gate=self.sync.apply.gate),
            ),
        )
        return app


def run(config: PrimaryConfig) -> int:
    """`siteserver primary run`: serve until SIGTERM/SIGINT; exit 3 on a duplicate server.uuid,
    1 when the merge worker cannot start."""
    log_config = logs.setup(config.log_level, config.log_format, role="primary")
    server = PrimaryServer(config)
    try:
        server.start()
    except DuplicateServer:
        # Never registered: nothing of ours to release in the shared database, only close it.
        server.hashing.shutdown(wait=False)
        server.db.close()
        return EXIT_DUPLICATE_UUID
    except WorkerNotStarted as e:
        log.error("%s: not serving", e)
        server.stop()  # the lease handed back
        return 1
    log.info(
        "primary %s listening on %s (guard %s, data_dir %s)",
        server.server_uuid,
        config.listen,
        "enabled" if config.high_availability_guard.enabled else "disabled",
        config.data_dir,
    )
    return serve_role(server.app(), config, log_config=log_config, stop=server.stop)


__all__ = ["EXIT_DUPLICATE_UUID", "PrimaryServer", "run"]
