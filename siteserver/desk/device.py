"""The Device API's flows (MFDs, terminals, release stations), one implementation for both roles:
login, held jobs, release, usage, logout. Each request is domain rules applied inside one write
transaction of the role's own database; only the charging differs (siteserver.desk.charging).

Hashing runs on a small thread pool (never the event loop, never the writer thread)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from siteserver import contract
from siteserver.domain import (
    Enforcement,
    Forbidden,
    JobStatus,
    LockedOut,
    LoginGuard,
    SecretHasher,
    SessionRegistry,
    Unauthorized,
    found,
    quote_print,
    quote_usage,
    releasable_at,
)
from siteserver.store import Database, catalog, jobs
from siteserver.store import accounts as accounts_store
from siteserver.store.catalog import MachineCredential, Printer
from siteserver.store.settings import get_policies
from siteserver.timeutil import now_iso

from .charging import ChargeAsk, Charging
from .releases import ReleaseSignal

NO_PRINTER = "this device's printer no longer exists"


@dataclass
class _Charged:
    """A job released in the write transaction, waiting for its confirmation."""

    index: int
    job_id: str
    txn_id: str
    printer: str
    amount_cents: int
    held_cost_cents: int | None
    account_id: int


@dataclass
class _Release:
    """What one release request knows while it walks its jobs (inside the write transaction)."""

    device: MachineCredential
    username: str
    user: accounts_store.UserRecord
    account: str | None
    printer: Printer
    findme: dict[str, set[str]]
    balance: int
    now: str


def _result(job_id: str, status: str, reason: str | None, cost: int, balance: int) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": status,
        "reason": reason,
        "cost_cents": cost,
        "balance_cents": balance,
    }


@dataclass
class DeviceDesk:
    db: Database
    hasher: SecretHasher
    guard: LoginGuard
    sessions: SessionRegistry
    hashing: ThreadPoolExecutor
    charging: Charging
    releases: ReleaseSignal

    async def _verify(self, secret: str, encoded: str | None) -> bool:
        return await asyncio.get_running_loop().run_in_executor(
            self.hashing, self.hasher.verify, secret, encoded
        )

    def _session_user(self, device: MachineCredential, session_id: str) -> str:
        return self.sessions.get(session_id, device.ident).username

    # -- login -----------------------------------------------------------------------------------

    async def login(self, device: MachineCredential, body: contract.LoginIn) -> dict[str, Any]:
        device_key = f"device:{device.ident}"
        wait = self.guard.retry_after(device_key)
        if wait is not None:
            raise LockedOut("too many failed logins; try again later", retry_after_secs=wait)

        if body.card_number is not None:
            by, value = "card", self.hasher.card_hash(body.card_number)
        elif body.id_number is not None:
            by, value = "id_number", self.hasher.card_hash(body.id_number)
        else:
            assert body.username is not None
            by, value = "username", body.username

        def lookup(conn: sqlite_utils.Database) -> tuple[accounts_store.UserRecord | None, list[str], int]:
            user, shared = accounts_store.login_lookup(conn, by, value)
            balance = 0 if user is None else self.charging.balance(conn, user.account_id, user.balance_cents)
            return user, shared, balance

        def password_refused(conn: sqlite_utils.Database) -> bool:
            return not get_policies(conn).password_authentication.allowed

        if body.password is not None and self.charging.offline() and await self.db.read(password_refused):
            raise Forbidden(
                "password logins are not allowed while the site is offline; use a card, PIN or ID number"
            )
        # No transaction around it: the balance is one statement on both roles (a site's effective
        # balance included), so it is consistent by itself; and no thread hop (`read_now`).
        user, shared, balance = self.db.read_now(lookup)
        secret = body.password if body.password is not None else body.pin
        # A secret login guesses at a user: one budget for the user, whichever path names them,
        # and one for what was typed, so an unknown name locks exactly like a known one.
        user_keys = [f"{by}:{value}"] + ([f"user:{user.username}"] if user is not None else [])
        if secret is None:
            user_keys = []
        wait = self.guard.retry_after(device_key, user_keys)
        if wait is not None:
            raise LockedOut("too many failed logins; try again later", retry_after_secs=wait)
        ok = user is not None and not user.disabled
        if secret is not None:
            # Same Argon2 work for an unknown user, a disabled one and a wrong secret.
            stored = (
                None if user is None else (user.password_hash if body.password is not None else user.pin_hash)
            )
            ok = await self._verify(secret, stored) and ok
        if not ok or user is None:
            self.guard.failure(device_key, user_keys)
            raise Unauthorized("unknown user or wrong credentials")
        self.guard.success(user_keys)
        session = self.sessions.open(user.username, device.ident)
        return {
            "session_id": session.session_id,
            "username": user.username,
            "full_name": user.full_name,
            "balance_cents": balance,
            "restricted": user.restricted,
            "shared_accounts": shared,
            "mode": self.charging.mode(),
        }

    def logout(self, device: MachineCredential, session_id: str) -> dict[str, Any]:
        self.sessions.close(session_id, device.ident)
        return {"status": "logged_out"}

    # -- held jobs and release -------------------------------------------------------------------

    async def held_jobs(self, device: MachineCredential, session_id: str) -> dict[str, Any]:
        username = self._session_user(device, session_id)

        def list_releasable(conn: sqlite_utils.Database) -> dict[str, Any]:
            printer = found(catalog.get_printer(conn, device.printer), NO_PRINTER)
            findme = catalog.findme_queues(conn, device.site_ids)
            out = []
            for j in jobs.held_jobs_of(conn, username):
                if not releasable_at(j.queue, device.printer, findme):
                    continue
                q = quote_print(printer.model, pages=j.pages, copies=j.copies, color=j.color, duplex=j.duplex)
                out.append(
                    {
                        "job_id": j.job_id,
                        "document_name": j.document_name,
                        "pages": j.pages,
                        "copies": j.copies,
                        "color": j.color,
                        "duplex": j.duplex,
                        "queue": j.queue,
                        "submitted_at": j.submitted_at,
                        "cost_cents": q.cost_cents,
                    }
                )
            return {"jobs": out, "mode": self.charging.mode()}

        return await self.db.read(list_releasable)

    async def release(
        self, device: MachineCredential, session_id: str, body: contract.ReleaseIn
    ) -> dict[str, Any]:
        username = self._session_user(device, session_id)
        charged: list[_Charged] = []
        out = await self.db.write(lambda conn: self._release_jobs(conn, device, username, body, charged))
        if charged and self.charging.confirms:
            out = await self._confirm_releases(out, charged)
        self.releases.notify([c.printer for c in charged if out["results"][c.index]["status"] == "released"])
        return out

    def _release_jobs(
        self,
        conn: sqlite_utils.Database,
        device: MachineCredential,
        username: str,
        body: contract.ReleaseIn,
        charged: list[_Charged],
    ) -> dict[str, Any]:
        user = accounts_store.require_user(conn, username)
        release = _Release(
            device=device,
            username=username,
            user=user,
            account=body.account,
            printer=found(catalog.get_printer(conn, device.printer), NO_PRINTER),
            findme=catalog.findme_queues(conn, device.site_ids),
            balance=self.charging.balance(conn, user.account_id, user.balance_cents),
            now=now_iso(),
        )
        results: list[dict[str, Any]] = []
        for job_id in dict.fromkeys(str(j) for j in body.job_ids):
            results.append(self._release_one(conn, release, job_id, len(results), charged))
        return {"results": results, "mode": self.charging.mode()}

    def _release_one(
        self, conn: sqlite_utils.Database, r: _Release, job_id: str, index: int, charged: list[_Charged]
    ) -> dict[str, Any]:
        j = jobs.get_job(conn, job_id)
        if j is None or j.username != r.username:
            return _result(job_id, "not_found", "no such held job", 0, r.balance)
        if (
            j.status in (JobStatus.RELEASED, JobStatus.PRINTED, JobStatus.RELEASING)
            and j.released_by_device == r.device.ident
        ):
            # A retry after a lost answer: the same answer again, no second charge.
            return _result(job_id, "released", None, j.cost_cents or 0, j.balance_after_cents or 0)
        if j.status is not JobStatus.HELD:
            return _result(job_id, "not_found", f"job is {j.status.value}", 0, r.balance)
        if not releasable_at(j.queue, r.device.printer, r.findme):
            return _result(job_id, "denied", "this job cannot be released at this printer", 0, r.balance)
        q = quote_print(r.printer.model, pages=j.pages, copies=j.copies, color=j.color, duplex=j.duplex)
        ask = ChargeAsk(
            j.txn_id,
            r.username,
            r.user,
            r.account,
            q.cost_cents,
            "print",
            Enforcement.AUTHORIZE,
            r.now,
            j.job_id,
            r.printer.name,
            j.pages * j.copies,
        )
        out, account_id = self.charging.charge_for(conn, ask)
        out.raise_if_conflict()
        if out.status == "denied" or account_id is None:
            balance = out.balance_after_cents if out.balance_after_cents is not None else r.balance
            return _result(job_id, "denied", out.reason, q.cost_cents, balance)
        assert out.balance_after_cents is not None
        jobs.mark_released(
            conn,
            j.job_id,
            printer=r.printer.name,
            grayscale=q.grayscale,
            cost_cents=q.cost_cents,
            account_id=account_id,
            balance_after_cents=out.balance_after_cents,
            device_id=r.device.ident,
            now=r.now,
        )
        if self.charging.release_status is not JobStatus.RELEASED:
            jobs.set_status(conn, j.job_id, self.charging.release_status)
        charged.append(
            _Charged(index, j.job_id, j.txn_id, r.printer.name, -q.cost_cents, j.cost_cents, account_id)
        )
        return _result(job_id, "released", None, q.cost_cents, out.balance_after_cents)

    async def _confirm_releases(self, out: dict[str, Any], charged: list[_Charged]) -> dict[str, Any]:
        """A site: the primary's verdict (if in time) decides; a rejected release is undone - the
        job is held again and the answer is the primary's denial. Only then may the provider see it."""
        verdicts = await self.charging.confirm([c.txn_id for c in charged]) or {}

        def finish(conn: sqlite_utils.Database) -> dict[str, Any]:
            results = [dict(r) for r in out["results"]]
            refunded = 0
            for c in charged:
                v = verdicts.get(c.txn_id)
                r = results[c.index]
                if v is not None and v.status == "rejected":
                    jobs.undo_release(conn, c.job_id, held_cost_cents=c.held_cost_cents)
                    refunded -= c.amount_cents
                    r.update(status="denied", reason=v.reason)
                else:
                    jobs.finish_release(conn, c.job_id)
                    r["balance_cents"] += refunded
            for c in charged:
                if results[c.index]["status"] == "denied":
                    results[c.index]["balance_cents"] = self.charging.balance(conn, c.account_id, 0)
            return {"results": results, "mode": self.charging.mode()}

        return await self.db.write(finish)

    # -- usage -----------------------------------------------------------------------------------

    async def usage(
        self, device: MachineCredential, session_id: str, body: contract.UsageIn
    ) -> dict[str, Any]:
        username = self._session_user(device, session_id)
        txn_id = str(body.txn_id)
        charged_to: list[int] = []

        def charge_usage(conn: sqlite_utils.Database) -> dict[str, Any]:
            user = accounts_store.require_user(conn, username)
            printer = found(catalog.get_printer(conn, device.printer), NO_PRINTER)
            q = quote_usage(
                printer.model, kind=body.kind, pages=body.pages, color=body.color, duplex=body.duplex
            )
            # Usage already happened at the device: a fact, charged even past the limit.
            ask = ChargeAsk(
                txn_id,
                username,
                user,
                body.account,
                q.cost_cents,
                body.kind,
                Enforcement.FACT,
                now_iso(),
                device.ident,
                printer.name,
                body.pages,
            )
            out, account_id = self.charging.charge_for(conn, ask)
            out.raise_if_conflict()
            if out.status == "denied" or account_id is None:
                raise Forbidden(out.reason or "account not allowed")
            charged_to.append(account_id)
            return {
                "txn_id": txn_id,
                "status": "charged",
                "cost_cents": -out.amount_cents,
                "balance_cents": out.balance_after_cents,
                "mode": self.charging.mode(),
            }

        out = await self.db.write(charge_usage)
        # A fact stays charged whatever the primary says (a rejection is recorded in the journal
        # for the reconciliation); once the primary was asked, the answer is the balance as it
        # now stands.
        if self.charging.confirms and await self.charging.confirm([txn_id]) is not None:
            account_id = charged_to[0]
            out["balance_cents"] = await self.db.read(
                lambda conn: self.charging.balance(conn, account_id, 0), snapshot=False
            )
            out["mode"] = self.charging.mode()
        return out
