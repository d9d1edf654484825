"""The Print provider API's flows, one implementation for both roles: submit a job (held for
secure release or Find-Me, or printed at once and charged), long-poll for releases, report a job
printed; and the expiry of held jobs past the hold timeout."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import sqlite_utils

from siteserver import contract, serving
from siteserver.domain import (
    Conflict,
    Enforcement,
    Forbidden,
    JobStatus,
    NotFound,
    QueueTarget,
    quote_print,
    resolve_queue,
)
from siteserver.store import Database, catalog, jobs
from siteserver.store import accounts as accounts_store
from siteserver.store.catalog import MachineCredential
from siteserver.timeutil import now_iso, utcnow

from .charging import ChargeAsk, Charging
from .releases import ReleaseSignal


def _job_answer(j: jobs.Job) -> dict[str, Any]:
    return {"job_id": j.job_id, "action": j.action, "reason": j.reason, "cost_cents": j.cost_cents}


def _serves(conn: sqlite_utils.Database, cred: MachineCredential, j: jobs.Job) -> bool:
    """Whether the job is this credential's: its printer once released (or printed directly),
    else its queue - a printer it serves or a Find-Me queue with a member it serves."""
    if j.printer is not None:
        return j.printer in cred.printers
    if j.queue in cred.printers:
        return True
    members = catalog.findme_queues(conn, cred.site_ids).get(j.queue, set())
    return bool(members & set(cred.printers))


@dataclass
class ProviderDesk:
    db: Database
    charging: Charging
    releases: ReleaseSignal

    # -- submit ----------------------------------------------------------------------------------

    async def submit_job(self, cred: MachineCredential, body: contract.JobIn) -> dict[str, Any]:
        job_id = str(body.job_id)
        digest = hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
        to_confirm: list[str] = []
        out = await self.db.write(lambda conn: self._submit(conn, cred, body, digest, to_confirm))
        if to_confirm and self.charging.confirms:
            verdict = (await self.charging.confirm(to_confirm) or {}).get(to_confirm[0])
            if verdict is not None and verdict.status == "rejected":
                reason = verdict.reason

                def deny(conn: sqlite_utils.Database) -> dict[str, Any]:
                    jobs.deny_direct_print(conn, job_id, reason)
                    return _job_answer(found_job(conn, job_id))

                out = await self.db.write(deny)
        return out

    def _target(self, conn: sqlite_utils.Database, cred: MachineCredential, queue: str) -> QueueTarget:
        findme = {
            q: members
            for q, members in catalog.findme_queues(conn, cred.site_ids).items()
            if members & set(cred.printers)
        }
        holds = {p.name: p.hold for p in catalog.printers_named(conn, cred.printers).values()}
        target = resolve_queue(queue, holds, findme)
        if target is None:
            if catalog.get_printer(conn, queue) is not None:
                raise Forbidden(f"this credential does not serve printer {queue!r}")
            raise NotFound(f"no printer or Find-Me queue named {queue!r} for this credential")
        return target

    def _submit(
        self,
        conn: sqlite_utils.Database,
        cred: MachineCredential,
        body: contract.JobIn,
        digest: str,
        to_confirm: list[str],
    ) -> dict[str, Any]:
        job_id = str(body.job_id)
        existing = jobs.get_job(conn, job_id)
        if existing is not None:
            if existing.request_digest != digest:
                raise Conflict("job_id already used for a different job")
            return _job_answer(existing)
        now = now_iso()
        target = self._target(conn, cred, body.queue)
        base = jobs.Job(
            job_id=job_id,
            request_digest=digest,
            username=body.username,
            queue=body.queue,
            site_id=cred.site_ids[0] if cred.site_ids else None,
            findme=target.findme,
            document_name=body.document_name,
            pages=body.pages,
            copies=body.copies,
            color=body.color,
            duplex=body.duplex,
            client=body.client,
            submitted_at=now,
            action="deny",
            status=JobStatus.DENIED,
            reason=None,
            txn_id=str(uuid.uuid4()),
        )
        user = accounts_store.get_user(conn, body.username)
        printers = catalog.printers_named(conn, sorted(target.printers))
        if target.hold and (user is None or user.disabled):
            # Nobody could log in to release it (offline too: the mirror does not know them).
            job = replace(base, reason="unknown or disabled user")
        elif target.hold:
            quotes = [
                quote_print(
                    p.model, pages=body.pages, copies=body.copies, color=body.color, duplex=body.duplex
                )
                for p in printers.values()
            ]
            estimate = min((q.cost_cents for q in quotes), default=0)
            job = replace(base, action="hold", status=JobStatus.HELD, cost_cents=estimate)
        else:
            job = self._print_now(conn, base, user, printers[target.name], now)
            if job.status is JobStatus.PRINTING:
                to_confirm.append(base.txn_id)
        jobs.insert_job(conn, job)
        return _job_answer(job)

    def _print_now(
        self,
        conn: sqlite_utils.Database,
        base: jobs.Job,
        user: accounts_store.UserRecord | None,
        printer: catalog.Printer,
        now: str,
    ) -> jobs.Job:
        """A job for a printer that does not hold: charged and printed at once, or denied."""
        q = quote_print(
            printer.model, pages=base.pages, copies=base.copies, color=base.color, duplex=base.duplex
        )
        ask = ChargeAsk(
            base.txn_id,
            base.username,
            user,
            None,
            q.cost_cents,
            "print",
            Enforcement.AUTHORIZE,
            now,
            base.job_id,
            printer.name,
            base.pages * base.copies,
        )
        out, account_id = self.charging.charge_for(conn, ask)
        if out.status == "applied" and account_id is not None:
            return replace(
                base,
                action="print",
                status=JobStatus.PRINTING,
                printer=printer.name,
                grayscale=q.grayscale,
                cost_cents=q.cost_cents,
                account_id=account_id,
                balance_after_cents=out.balance_after_cents,
                released_at=now,
            )
        known = user is not None and not user.disabled
        return replace(base, reason=out.reason, cost_cents=q.cost_cents if known else None)

    # -- releases and printing -------------------------------------------------------------------

    async def releases_for(self, cred: MachineCredential, printer: str, wait: float) -> dict[str, Any]:
        if printer not in cred.printers:
            raise Forbidden(f"this credential does not serve printer {printer!r}")
        deadline = time.monotonic() + wait
        while True:
            event = self.releases.event(printer)
            pending = await self.db.read(lambda conn: jobs.pending_releases(conn, [printer]))
            remaining = deadline - time.monotonic()
            if pending or remaining <= 0 or serving.stopping.is_set():
                return {
                    "releases": [
                        {"job_id": j.job_id, "printer": j.printer, "grayscale": bool(j.grayscale)}
                        for j in pending
                    ]
                }
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(remaining, 1.0))

    async def printed(self, cred: MachineCredential, job_id: str, body: contract.PrintedIn) -> dict[str, Any]:
        def mark_printed(conn: sqlite_utils.Database) -> dict[str, Any]:
            j = jobs.get_job(conn, job_id)
            if j is None or not _serves(conn, cred, j):
                raise NotFound(f"no job {job_id} on this credential's printers")
            if j.status is JobStatus.PRINTED:
                return {"job_id": job_id, "status": "printed"}
            if j.status not in (JobStatus.RELEASED, JobStatus.PRINTING):
                raise Conflict(f"job is {j.status.value}, not released for printing")
            jobs.mark_printed(conn, job_id, body.pages_printed, now=now_iso())
            return {"job_id": job_id, "status": "printed"}

        return await self.db.write(mark_printed)

    def expire_held_jobs(self) -> int:
        """Held jobs past the hold timeout expire (the scheduler runs this; both roles)."""
        return self.db.write_sync(lambda conn: jobs.expire_past_hold_timeout(conn, utcnow()))


def found_job(conn: sqlite_utils.Database, job_id: str) -> jobs.Job:
    j = jobs.get_job(conn, job_id)
    assert j is not None
    return j
