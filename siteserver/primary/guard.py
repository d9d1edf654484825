"""The high-availability guard: which member of the active/passive pair may serve and write.

Both members share one database. The active member holds the lease row and renews it every
heartbeat; a passive member watches the lease's beat counter on its *own* monotonic clock (so
clock skew between machines does not matter) and takes over when the beat has not moved for
`fail-over-interval-secs`. Each takeover increments the epoch, the fencing token that every write
transaction checks: a member that froze and woke up after being replaced cannot write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

import sqlite_utils

from siteserver.config import HighAvailabilityGuard
from siteserver.domain import NotActive
from siteserver.store import Database, lease
from siteserver.store.db import BUSY_TIMEOUT_MS, is_locked, private_dir
from siteserver.timeutil import now_iso

log = logging.getLogger("siteserver.ha")

#: SQLite cannot take a lock from a process that holds it, so the pair cannot fail over past it.
LOCKED_WHY = (
    f"another process has held the database's write lock for over {BUSY_TIMEOUT_MS // 1000} s. "
    "A member frozen in the middle of a write (SIGSTOP, a paused VM) keeps it until it runs again "
    "or is killed, and no member can take over until then"
)


class Role(StrEnum):
    PASSIVE = "passive"
    STARTING = "starting"  # holds the lease, has not reached running yet
    ACTIVE = "active"
    STOPPED = "stopped"


class DuplicateServer(RuntimeError):
    """Another live server uses this server.uuid (a cloned VM): starting would corrupt the database."""


def load_server_uuid(data_dir: Path) -> str:
    """This member's identity, made on first start (delete the file on a cloned VM)."""
    private_dir(data_dir)
    path = data_dir / "server.uuid"
    try:
        return str(uuid.UUID(path.read_text().strip()))
    except FileNotFoundError:
        value = str(uuid.uuid4())
        path.write_text(value + "\n")
        return value
    except ValueError as e:
        raise RuntimeError(f"{path} does not hold a UUID; delete it to make a new one") from e


def host_identity() -> str:
    """Hostname plus kernel boot id: a clone of this VM has another boot id."""
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{socket.gethostname()}/{boot}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Guard:
    def __init__(
        self,
        db: Database,
        server_uuid: str,
        settings: HighAvailabilityGuard,
        *,
        on_activate: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.server_uuid = server_uuid
        self.settings = settings
        self.interval = settings.fail_over_interval_secs
        self.heartbeat_secs = max(0.1, min(5.0, self.interval / 6))
        self.on_activate = on_activate or (lambda: None)
        self.clock = clock
        self.instance_id = uuid.uuid4().hex
        self.host_id = host_identity()
        self.role = Role.PASSIVE
        self.epoch = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_renewed = 0.0
        self._seen_beat: int | None = None
        self._seen_holder: str | None = None
        self._seen_at = 0.0
        self._cooldown_until = 0.0
        self._activation: threading.Thread | None = None
        self._activation_started = 0.0
        self._activated = threading.Event()
        self._failed_epoch: int | None = None  # the epoch whose activation hook raised
        self._failing_since: float | None = None  # when the heartbeats began to fail

    # -- what the rest of the server asks ----------------------------------------------------

    @property
    def starting(self) -> bool:
        return self.role is Role.STARTING

    def is_active(self) -> bool:
        """Active and renewed recently: a member that was frozen stops answering at once."""
        return self.role is Role.ACTIVE and self.clock() - self._last_renewed < self.interval

    def fence(self, conn: sqlite_utils.Database) -> None:
        """Run first inside every write transaction: refuse unless we still hold the epoch."""
        if self.role not in (Role.ACTIVE, Role.STARTING):
            raise NotActive("this application server is passive and does not write")
        held = lease.read_lease(conn)
        if not held.held_by(self.server_uuid, self.epoch):
            self._step_down(f"fenced: epoch {self.epoch} was replaced by epoch {held.epoch} ({held.holder})")
            raise NotActive(lease.REPLACED)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Register this member (refusing a live clone), then run the guard loop in a thread."""
        self._register()
        self.db.set_fence(self.fence)
        if not self.settings.enabled:
            # Guard off: this server is simply active; it still takes an epoch so a second
            # server started by mistake on the same database fences it instead of corrupting it.
            self.db.write_sync(self._take_lease_unconditionally, fenced=False)
            self._begin_activation()
            self._activated.wait(self.settings.startup_timeout_secs)
        self._thread = threading.Thread(target=self._loop, name="ha-guard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Polite stop: give the lease back so a passive member takes over at its next beat."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.db.write_sync(self._release, fenced=False, timeout=5)
        self.role = Role.STOPPED

    def wait_until_active(self, timeout: float) -> bool:
        return self._activated.wait(timeout)

    # -- internals ---------------------------------------------------------------------------

    def _register(self) -> None:
        found = self.db.write_sync(self._read_member, fenced=False)
        if found is not None:
            if found.host_id == self.host_id and not _pid_alive(found.pid):
                log.info("replacing the record of this server's previous run (pid %s)", found.pid)
            else:
                # Is that other instance still beating? Watch its counter for two beats.
                time.sleep(self.heartbeat_secs * 2.5 + 0.2)
                later = self.db.write_sync(self._read_member, fenced=False)
                if later is not None and (later.beat != found.beat or later.instance_id != found.instance_id):
                    msg = (
                        f"DUPLICATE SERVER UUID {self.server_uuid}: another live application server "
                        f"(host {later.host_id}, pid {later.pid}) uses the same server.uuid. This happens "
                        "after cloning a VM: stop this server, delete its data_dir/server.uuid and "
                        "start it again. Refusing to start: two servers with one identity corrupt "
                        "the database."
                    )
                    log.critical(msg)
                    raise DuplicateServer(msg)
        self.db.write_sync(self._claim_member, fenced=False)

    def _read_member(self, conn: sqlite_utils.Database) -> lease.Member | None:
        return lease.read_member(conn, self.server_uuid)

    def _claim_member(self, conn: sqlite_utils.Database) -> None:
        me = lease.Member(self.instance_id, self.host_id, os.getpid(), 0)
        lease.claim_member(conn, self.server_uuid, me, role=self.role.value, now=now_iso())

    def _beat_member(self, conn: sqlite_utils.Database) -> None:
        if not lease.beat_member(
            conn, self.server_uuid, self.instance_id, role=self.role.value, now=now_iso()
        ):
            raise DuplicateServer(
                f"DUPLICATE SERVER UUID {self.server_uuid}: another server claimed this identity"
            )

    def _take_lease_unconditionally(self, conn: sqlite_utils.Database) -> None:
        self.epoch = lease.take_lease(conn, self.server_uuid, now_iso())
        self._last_renewed = self.clock()
        self.role = Role.STARTING

    def _release(self, conn: sqlite_utils.Database) -> None:
        lease.free_lease(conn, self.server_uuid, self.epoch)
        lease.forget_member(conn, self.server_uuid, self.instance_id)

    def _loop(self) -> None:
        while not self._stop.wait(self.heartbeat_secs):
            try:
                self.tick()
                self._failing_since = None
            except DuplicateServer as e:
                log.critical("%s; this server stops serving", e)
                self._step_down(str(e))
                self.role = Role.STOPPED
                return
            except Exception as e:  # a busy or failing database: keep trying, fence by time
                self._heartbeat_failed(e)
                if self.role in (Role.ACTIVE, Role.STARTING) and (
                    self.clock() - self._last_renewed >= self.interval
                ):
                    self._step_down("could not renew the lease within fail-over-interval-secs")

    def _heartbeat_failed(self, e: Exception) -> None:
        """Log a failed heartbeat; once failures have lasted the interval, as an error."""
        now = self.clock()
        if self._failing_since is None:
            self._failing_since = now
        failing = now - self._failing_since
        log.log(
            logging.ERROR if failing >= self.interval else logging.WARNING,
            "guard heartbeat failed (failing for %.0f s): %s",
            failing,
            f"{e}: {LOCKED_WHY}" if is_locked(e) else e,
        )

    def tick(self) -> None:
        """One heartbeat: renew the lease if we hold it, else watch it and maybe take over."""
        if self.role in (Role.ACTIVE, Role.STARTING):
            # The lease runs from before the renewal, not from after it: a pause between the
            # commit and reading the clock must not extend it past a successor's takeover.
            started = self.clock()
            held = self.db.write_sync(self._renew, fenced=False)
            if not held:
                self._step_down("the lease was taken over by another member")
                return
            self._last_renewed = started
            if self.role is Role.STARTING and not self._activated.is_set():
                failed = self._failed_epoch == self.epoch
                late = self.clock() - self._activation_started > self.settings.startup_timeout_secs
                if failed or late:
                    log.error(
                        "%s; giving way",
                        "the activation hook failed"
                        if failed
                        else "did not reach running within startup-timeout-secs "
                        f"({self.settings.startup_timeout_secs}s)",
                    )
                    self.db.write_sync(self._give_way, fenced=False)
                    self._step_down("startup timeout")
                    self._cooldown_until = self.clock() + self.interval * 2
            return
        if self.role is Role.STOPPED:
            return
        if self.db.write_sync(self._watch, fenced=False):
            self._begin_activation()

    def _renew(self, conn: sqlite_utils.Database) -> bool:
        self._beat_member(conn)
        held = lease.read_lease(conn)
        if not held.held_by(self.server_uuid, self.epoch):
            return False
        lease.renew_lease(conn, now_iso())
        return True

    def _give_way(self, conn: sqlite_utils.Database) -> None:
        lease.free_lease(conn, self.server_uuid, self.epoch)

    def _watch(self, conn: sqlite_utils.Database) -> bool:
        """Passive: note the lease's beat; take it over when it has been still for the interval."""
        self._beat_member(conn)
        seen = lease.read_lease(conn)
        holder, beat = seen.holder, seen.beat
        now = self.clock()
        if beat != self._seen_beat or holder != self._seen_holder:
            self._seen_beat, self._seen_holder, self._seen_at = beat, holder, now
        if now < self._cooldown_until:
            return False
        if holder is not None and now - self._seen_at < self.interval:
            return False
        self.epoch = lease.take_lease(conn, self.server_uuid, now_iso())
        self._last_renewed = now
        self.role = Role.STARTING
        log.warning(
            "taking over as the active application server (epoch %s; previous holder %s)",
            self.epoch,
            holder or "none",
        )
        return True

    def _begin_activation(self) -> None:
        self._activated.clear()
        self._activation_started = self.clock()
        epoch = self.epoch

        def run() -> None:
            try:
                self.on_activate()
            except Exception:
                log.exception("activation failed; giving the lease back at the next heartbeat")
                self._failed_epoch = epoch
                return
            with self._lock:
                if self.role is Role.STARTING and self.epoch == epoch:
                    self.role = Role.ACTIVE
                    self._activated.set()
                    log.warning("this server is now ACTIVE (epoch %s)", epoch)

        self._activation = threading.Thread(target=run, name="ha-activate", daemon=True)
        self._activation.start()

    def _step_down(self, why: str) -> None:
        with self._lock:
            if self.role in (Role.ACTIVE, Role.STARTING):
                log.error("stepping down to PASSIVE: %s", why)
                self.role = Role.PASSIVE
                self._activated.clear()
                self._seen_beat = None
