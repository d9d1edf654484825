"""The primary's flows: each request becomes domain rules applied inside one transaction.

Hashing runs on a small thread pool (never the event loop, never the writer thread); SQLite runs
through the `Database` facade; money moves only through `store.ledger.apply`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import sqlite_utils

from siteserver.api import models as m
from siteserver.domain import (
    Conflict,
    Enforcement,
    Forbidden,
    Invalid,
    JobStatus,
    LockedOut,
    Lockout,
    NotFound,
    OfflinePolicies,
    SecretHasher,
    SessionRegistry,
    Unauthorized,
    new_token,
    quote_print,
    quote_usage,
    releasable_at,
    resolve_queue,
    token_digest,
)
from siteserver.store import Database, catalog, jobs, ledger, settings
from siteserver.store import accounts as acc
from siteserver.store.catalog import MachineCredential
from siteserver.timeutil import iso, now_iso, utcnow

_CRED_CACHE_SECS = 2.0
T = TypeVar("T")


class ReleaseSignal:
    """Wakes print providers long-polling for a printer's releases."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, printer: str) -> asyncio.Event:
        return self._events.setdefault(printer, asyncio.Event())

    def notify(self, printers: Sequence[str]) -> None:
        for p in printers:
            ev = self._events.pop(p, None)
            if ev is not None:
                ev.set()


@dataclass
class PrimaryService:
    db: Database
    hasher: SecretHasher
    epoch_of: Any  # () -> int: the guard's current epoch, written into each ledger row
    lockout: Lockout
    sessions: SessionRegistry
    hashing: ThreadPoolExecutor

    def __post_init__(self) -> None:
        self.releases = ReleaseSignal()
        self._creds: dict[str, tuple[float, MachineCredential | None]] = {}

    async def _hash(self, secret: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self.hashing, self.hasher.hash, secret)

    async def _verify(self, secret: str, encoded: str | None) -> bool:
        return await asyncio.get_running_loop().run_in_executor(
            self.hashing, self.hasher.verify, secret, encoded
        )

    # -- machine credentials -----------------------------------------------------------------

    async def machine(self, token: str) -> MachineCredential | None:
        """Resolve a device or provider token; cached for two seconds to keep logins cheap."""
        digest = token_digest(token)
        now = time.monotonic()
        hit = self._creds.get(digest)
        if hit is not None and now - hit[0] < _CRED_CACHE_SECS:
            return hit[1]
        cred = await self.db.read(lambda db: catalog.credential_by_token(db, digest))
        if len(self._creds) > 10_000:
            self._creds.clear()
        self._creds[digest] = (now, cred)
        return cred

    # -- administration ----------------------------------------------------------------------

    async def _user_changes(self, body: m.UserCreate | m.UserPatch) -> acc.UserChanges:
        given = body.model_fields_set
        card_hashes = (
            [self.hasher.card_hash(c) for c in body.card_numbers] if body.card_numbers is not None else None
        )
        return acc.UserChanges(
            full_name=body.full_name,
            email=body.email,
            clear_email="email" in given and body.email is None,
            password_hash=await self._hash(body.password) if body.password is not None else None,
            clear_password="password" in given and body.password is None,
            pin_hash=await self._hash(body.pin) if body.pin is not None else None,
            clear_pin="pin" in given and body.pin is None,
            card_hashes=card_hashes if "card_numbers" in given else None,
            id_number_hash=self.hasher.card_hash(body.id_number) if body.id_number is not None else None,
            clear_id_number="id_number" in given and body.id_number is None,
            restricted=body.restricted if "restricted" in given or isinstance(body, m.UserCreate) else None,
            overdraft_cents=body.overdraft_cents,
            disabled=getattr(body, "disabled", None),
        )

    def _set_balance(
        self, db: sqlite_utils.Database, account_id: int, target: int, kind: str, now: str
    ) -> None:
        current = db.execute("SELECT balance_cents FROM accounts WHERE id = ?", [account_id]).fetchone()[0]
        if target != current:
            ledger.apply(
                db,
                [ledger.Entry(str(uuid.uuid4()), account_id, target - current, kind, Enforcement.FACT, now)],
                epoch=self.epoch_of(),
                applied_at=now,
            )

    async def create_user(self, body: m.UserCreate) -> dict[str, Any]:
        changes = await self._user_changes(body)

        def work(db: sqlite_utils.Database) -> dict[str, Any]:
            now = now_iso()
            account_id = acc.create_user(db, body.username, changes, now=now)
            self._set_balance(db, account_id, body.balance_cents, "initial_balance", now)
            return acc.require_user(db, body.username).public()

        return await self.db.write(work)

    async def get_user(self, username: str) -> dict[str, Any]:
        return await self.db.read(lambda db: acc.require_user(db, username).public())

    async def patch_user(self, username: str, body: m.UserPatch) -> dict[str, Any]:
        changes = await self._user_changes(body)

        def work(db: sqlite_utils.Database) -> dict[str, Any]:
            now = now_iso()
            acc.update_user(db, username, changes, now=now)
            user = acc.require_user(db, username)
            if body.balance_cents is not None:
                self._set_balance(db, user.account_id, body.balance_cents, "set_balance", now)
            return acc.require_user(db, username).public()

        out = await self.db.write(work)
        if body.disabled or "password" in body.model_fields_set or "pin" in body.model_fields_set:
            self.sessions.close_user(username)
        return out

    async def delete_user(self, username: str) -> None:
        def work(db: sqlite_utils.Database) -> None:
            now = now_iso()
            acc.delete_user(db, username, now=now)
            jobs.expire_held_of_user(db, username, now=now)

        await self.db.write(work)
        self.sessions.close_user(username)

    async def adjust(self, username: str, body: m.AdjustmentIn) -> dict[str, Any]:
        def work(db: sqlite_utils.Database) -> dict[str, Any]:
            user = acc.require_user(db, username)
            now = now_iso()
            entry = ledger.Entry(
                str(body.txn_id),
                user.account_id,
                body.amount_cents,
                "adjustment",
                Enforcement.FACT,
                now,
                comment=body.comment or None,
            )
            (out,) = ledger.apply(db, [entry], epoch=self.epoch_of(), applied_at=now)
            _raise_conflict(out)
            # A repeat of the same txn_id answers exactly what the first call answered.
            return {"txn_id": body.txn_id, "status": "applied", "balance_cents": out.balance_after_cents}

        return await self.db.write(work)

    async def create_shared_account(self, body: m.SharedAccountCreate) -> dict[str, Any]:
        def work(db: sqlite_utils.Database) -> dict[str, Any]:
            now = now_iso()
            account_id = acc.create_shared_account(
                db,
                body.name,
                restricted=body.restricted,
                overdraft_cents=body.overdraft_cents,
                members=body.members,
                now=now,
            )
            self._set_balance(db, account_id, body.balance_cents, "initial_balance", now)
            found = acc.get_shared_account(db, body.name)
            assert found is not None
            return found.public()

        return await self.db.write(work)

    async def get_shared_account(self, name: str) -> dict[str, Any]:
        found = await self.db.read(lambda db: acc.get_shared_account(db, name))
        return _found(found, f"no shared account named {name!r}").public()

    async def create_printer(self, body: m.PrinterCreate) -> dict[str, Any]:
        from siteserver.domain import CostModel, PrinterModel

        c = body.cost
        cost = CostModel(
            c.mono_page_cents, c.color_page_cents, c.duplex_discount_pct, c.scan_page_cents, c.fax_page_cents
        )
        printer = catalog.Printer(
            body.name, body.site_id, body.hold, PrinterModel(body.name, body.color, body.duplex, cost)
        )
        await self.db.write(lambda db: catalog.create_printer(db, printer, now=now_iso()))
        return printer.public()

    async def get_printer(self, name: str) -> dict[str, Any]:
        found = await self.db.read(lambda db: catalog.get_printer(db, name))
        return _found(found, f"no printer named {name!r}").public()

    async def create_site(self, body: m.SiteCreate) -> dict[str, Any]:
        token = new_token("enr")
        queues = [(q.name, q.printers) for q in body.findme_queues]
        await self.db.write(
            lambda db: catalog.create_site(
                db, body.site_id, body.name, queues, enrollment_token_hash=token_digest(token), now=now_iso()
            )
        )
        return {"site_id": body.site_id, "enrollment_token": token}

    async def list_sites(self) -> dict[str, Any]:
        return {"sites": await self.db.read(catalog.list_sites)}

    async def create_device(self, body: m.DeviceCreate) -> dict[str, Any]:
        token = new_token("dev")
        await self.db.write(
            lambda db: catalog.create_device(
                db, body.device_id, body.printer, token_digest(token), now=now_iso()
            )
        )
        return {"device_id": body.device_id, "token": token}

    async def create_provider(self, body: m.ProviderCreate) -> dict[str, Any]:
        token = new_token("prv")
        await self.db.write(
            lambda db: catalog.create_provider(
                db, body.provider_id, body.printers, token_digest(token), now=now_iso()
            )
        )
        return {"provider_id": body.provider_id, "token": token}

    async def get_policies(self) -> OfflinePolicies:
        return await self.db.read(settings.get_policies)

    async def put_policies(self, policies: OfflinePolicies) -> OfflinePolicies:
        def work(db: sqlite_utils.Database) -> OfflinePolicies:
            missing = [
                n for n in sorted(policies.shared_accounts_named()) if acc.get_shared_account(db, n) is None
            ]
            if missing:
                raise Invalid(f"offline policies name shared account(s) that do not exist: {missing}")
            settings.put_policies(db, policies)
            return policies

        return await self.db.write(work)

    async def transactions(self, origin_site: str | None, since_seq: int, limit: int) -> dict[str, Any]:
        rows = await self.db.read(
            lambda db: ledger.list_transactions(db, origin_site=origin_site, since_seq=since_seq, limit=limit)
        )
        next_seq = rows[-1]["seq"] if rows else since_seq
        return {"transactions": rows, "next_seq": next_seq}

    # -- device API --------------------------------------------------------------------------

    async def login(self, device: MachineCredential, body: m.LoginIn) -> dict[str, Any]:
        user_key = f"user:{body.username}" if body.username is not None else None
        if body.id_number is not None and body.pin is not None:
            # {id_number, pin} guesses a user's PIN too: lock it per ID number, known or not.
            user_key = f"id_number:{self.hasher.card_hash(body.id_number)}"
        keys = [f"device:{device.ident}"] + ([user_key] if user_key else [])
        wait = self.lockout.retry_after(keys)
        if wait is not None:
            raise LockedOut("too many failed logins; try again later", retry_after_secs=wait)

        if body.card_number is not None:
            by, value = "card", self.hasher.card_hash(body.card_number)
        elif body.id_number is not None:
            by, value = "id_number", self.hasher.card_hash(body.id_number)
        else:
            assert body.username is not None
            by, value = "username", body.username
        user, shared = await self.db.read(lambda db: acc.login_lookup(db, by, value), snapshot=False)
        ok = user is not None and not user.disabled
        secret = body.password if body.password is not None else body.pin
        if secret is not None:
            # Same Argon2 work for an unknown user, a disabled one and a wrong secret.
            stored = (
                None if user is None else (user.password_hash if body.password is not None else user.pin_hash)
            )
            ok = await self._verify(secret, stored) and ok
        if not ok or user is None:
            self.lockout.failure(keys)
            raise Unauthorized("unknown user or wrong credentials")
        self.lockout.success([*keys, f"user:{user.username}"])
        session = self.sessions.open(user.username, device.ident)
        return {
            "session_id": session.session_id,
            "username": user.username,
            "full_name": user.full_name,
            "balance_cents": user.balance_cents,
            "restricted": user.restricted,
            "shared_accounts": shared,
            "mode": "online",
        }

    def _session_user(self, device: MachineCredential, session_id: str) -> str:
        return self.sessions.get(session_id, device.ident).username

    async def held_jobs(self, device: MachineCredential, session_id: str) -> dict[str, Any]:
        username = self._session_user(device, session_id)

        def work(db: sqlite_utils.Database) -> dict[str, Any]:
            printer = _found(
                catalog.get_printer(db, device.printer), "this device's printer no longer exists"
            )
            findme = catalog.findme_queues(db, device.site_ids)
            out = []
            for j in jobs.held_jobs_of(db, username):
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
            return {"jobs": out, "mode": "online"}

        return await self.db.read(work)

    def _charge_account(
        self, db: sqlite_utils.Database, user: acc.UserRecord, account: str | None
    ) -> tuple[int | None, str | None]:
        """The account a charge goes to: the personal one, or a shared one the user is a member of."""
        if account is None:
            return user.account_id, None
        shared = acc.get_shared_account(db, account)
        if shared is None or user.username not in shared.members:
            return None, f"{account!r} is not a shared account this user may charge"
        return shared.account_id, None

    async def release(self, device: MachineCredential, session_id: str, body: m.ReleaseIn) -> dict[str, Any]:
        username = self._session_user(device, session_id)
        released: list[str] = []

        def work(db: sqlite_utils.Database) -> dict[str, Any]:
            now = now_iso()
            user = acc.require_user(db, username)
            printer = _found(
                catalog.get_printer(db, device.printer), "this device's printer no longer exists"
            )
            findme = catalog.findme_queues(db, device.site_ids)
            account_id, why = self._charge_account(db, user, body.account)
            results = []
            for job_uuid in dict.fromkeys(str(j) for j in body.job_ids):
                j = jobs.get_job(db, job_uuid)
                if j is None or j.username != username:
                    results.append(_result(job_uuid, "not_found", "no such held job", 0, user.balance_cents))
                    continue
                if (
                    j.status in (JobStatus.RELEASED, JobStatus.PRINTED)
                    and j.released_by_device == device.ident
                ):
                    # A retry after a lost answer: the same answer again, no second charge.
                    results.append(
                        _result(job_uuid, "released", None, j.cost_cents or 0, j.balance_after_cents or 0)
                    )
                    continue
                if j.status is not JobStatus.HELD:
                    results.append(
                        _result(job_uuid, "not_found", f"job is {j.status.value}", 0, user.balance_cents)
                    )
                    continue
                if not releasable_at(j.queue, device.printer, findme):
                    results.append(
                        _result(
                            job_uuid,
                            "denied",
                            "this job cannot be released at this printer",
                            0,
                            user.balance_cents,
                        )
                    )
                    continue
                q = quote_print(printer.model, pages=j.pages, copies=j.copies, color=j.color, duplex=j.duplex)
                if account_id is None:
                    results.append(_result(job_uuid, "denied", why, q.cost_cents, user.balance_cents))
                    continue
                entry = ledger.Entry(
                    j.txn_id, account_id, -q.cost_cents, "print", Enforcement.AUTHORIZE, now, ref=j.job_id
                )
                (out,) = ledger.apply(db, [entry], epoch=self.epoch_of(), applied_at=now)
                if out.status == "denied":
                    bal = (
                        out.balance_after_cents if out.balance_after_cents is not None else user.balance_cents
                    )
                    results.append(_result(job_uuid, "denied", out.reason, q.cost_cents, bal))
                    continue
                _raise_conflict(out)
                assert out.balance_after_cents is not None
                jobs.mark_released(
                    db,
                    j.job_id,
                    printer=printer.name,
                    grayscale=q.grayscale,
                    cost_cents=q.cost_cents,
                    account_id=account_id,
                    balance_after_cents=out.balance_after_cents,
                    device_id=device.ident,
                    now=now,
                )
                released.append(printer.name)
                results.append(_result(job_uuid, "released", None, q.cost_cents, out.balance_after_cents))
            return {"results": results, "mode": "online"}

        out = await self.db.write(work)
        self.releases.notify(released)
        return out

    async def usage(self, device: MachineCredential, session_id: str, body: m.UsageIn) -> dict[str, Any]:
        username = self._session_user(device, session_id)

        def work(db: sqlite_utils.Database) -> dict[str, Any]:
            now = now_iso()
            user = acc.require_user(db, username)
            printer = _found(
                catalog.get_printer(db, device.printer), "this device's printer no longer exists"
            )
            account_id, why = self._charge_account(db, user, body.account)
            if account_id is None:
                raise Forbidden(why or "account not allowed")
            q = quote_usage(
                printer.model, kind=body.kind, pages=body.pages, color=body.color, duplex=body.duplex
            )
            # Usage already happened at the device: a fact, charged even past the limit.
            entry = ledger.Entry(
                str(body.txn_id),
                account_id,
                -q.cost_cents,
                body.kind,
                Enforcement.FACT,
                now,
                ref=device.ident,
            )
            (out,) = ledger.apply(db, [entry], epoch=self.epoch_of(), applied_at=now)
            _raise_conflict(out)
            return {
                "txn_id": str(body.txn_id),
                "status": "charged",
                "cost_cents": -out.amount_cents,
                "balance_cents": out.balance_after_cents,
                "mode": "online",
            }

        return await self.db.write(work)

    def logout(self, device: MachineCredential, session_id: str) -> dict[str, Any]:
        self.sessions.close(session_id, device.ident)
        return {"status": "logged_out"}

    # -- print provider API ------------------------------------------------------------------

    async def submit_job(self, cred: MachineCredential, body: m.JobIn) -> dict[str, Any]:
        job_id = str(body.job_id)
        digest = hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()

        def work(db: sqlite_utils.Database) -> dict[str, Any]:
            existing = jobs.get_job(db, job_id)
            if existing is not None:
                if existing.request_digest != digest:
                    raise Conflict("job_id already used for a different job")
                return _job_answer(existing)
            now = now_iso()
            findme = {
                q: members
                for q, members in catalog.findme_queues(db, cred.site_ids).items()
                if members & set(cred.printers)
            }
            holds = {p.name: p.hold for p in catalog.printers_named(db, cred.printers).values()}
            target = resolve_queue(body.queue, holds, findme)
            if target is None:
                if catalog.get_printer(db, body.queue) is not None:
                    raise Forbidden(f"this credential does not serve printer {body.queue!r}")
                raise NotFound(f"no printer or Find-Me queue named {body.queue!r} for this credential")
            site_id = cred.site_ids[0] if cred.site_ids else None
            base = jobs.Job(
                job_id=job_id,
                request_digest=digest,
                username=body.username,
                queue=body.queue,
                site_id=site_id,
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
            user = acc.get_user(db, body.username)
            printers = catalog.printers_named(db, sorted(target.printers))
            quotes = [
                quote_print(
                    p.model, pages=body.pages, copies=body.copies, color=body.color, duplex=body.duplex
                )
                for p in printers.values()
            ]
            estimate = min((q.cost_cents for q in quotes), default=0)
            if user is None or user.disabled:
                job = _replace(base, reason="unknown or disabled user")
            elif target.hold:
                job = _replace(base, action="hold", status=JobStatus.HELD, cost_cents=estimate)
            else:
                printer = printers[target.name]
                q = quote_print(
                    printer.model, pages=body.pages, copies=body.copies, color=body.color, duplex=body.duplex
                )
                entry = ledger.Entry(
                    base.txn_id,
                    user.account_id,
                    -q.cost_cents,
                    "print",
                    Enforcement.AUTHORIZE,
                    now,
                    ref=job_id,
                )
                (out,) = ledger.apply(db, [entry], epoch=self.epoch_of(), applied_at=now)
                if out.status == "applied":
                    job = _replace(
                        base,
                        action="print",
                        status=JobStatus.PRINTING,
                        printer=printer.name,
                        grayscale=q.grayscale,
                        cost_cents=q.cost_cents,
                        account_id=user.account_id,
                        balance_after_cents=out.balance_after_cents,
                        released_at=now,
                    )
                else:
                    job = _replace(base, reason=out.reason, cost_cents=q.cost_cents)
            jobs.insert_job(db, job)
            return _job_answer(job)

        return await self.db.write(work)

    async def releases_for(self, cred: MachineCredential, printer: str, wait: float) -> dict[str, Any]:
        if printer not in cred.printers:
            raise Forbidden(f"this credential does not serve printer {printer!r}")
        deadline = time.monotonic() + wait
        while True:
            event = self.releases.event(printer)
            pending = await self.db.read(lambda db: jobs.pending_releases(db, [printer]))
            remaining = deadline - time.monotonic()
            if pending or remaining <= 0:
                return {
                    "releases": [
                        {"job_id": j.job_id, "printer": j.printer, "grayscale": bool(j.grayscale)}
                        for j in pending
                    ]
                }
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(remaining, 1.0))

    async def printed(self, cred: MachineCredential, job_id: str, body: m.PrintedIn) -> dict[str, Any]:
        def work(db: sqlite_utils.Database) -> dict[str, Any]:
            j = jobs.get_job(db, job_id)
            if j is None or not _serves(db, cred, j):
                raise NotFound(f"no job {job_id} on this credential's printers")
            if j.status is JobStatus.PRINTED:
                return {"job_id": job_id, "status": "printed"}
            if j.status not in (JobStatus.RELEASED, JobStatus.PRINTING):
                raise Conflict(f"job is {j.status.value}, not released for printing")
            jobs.mark_printed(db, job_id, body.pages_printed, now=now_iso())
            return {"job_id": job_id, "status": "printed"}

        return await self.db.write(work)

    # -- scheduled ---------------------------------------------------------------------------

    def expire_held_jobs(self) -> int:
        """Held jobs older than the hold timeout expire (run by the scheduler on the active member)."""

        def work(db: sqlite_utils.Database) -> int:
            timeout = settings.get_policies(db).hold_timeout_minutes
            before = iso(utcnow() - timedelta(minutes=timeout))
            return jobs.expire_held(db, submitted_before=before, now=now_iso())

        return self.db.write_sync(work)


def _serves(db: sqlite_utils.Database, cred: MachineCredential, j: jobs.Job) -> bool:
    """Whether the job is this credential's: its printer once released (or printed directly),
    else its queue - a printer it serves or a Find-Me queue with a member it serves."""
    if j.printer is not None:
        return j.printer in cred.printers
    if j.queue in cred.printers:
        return True
    members = catalog.findme_queues(db, cred.site_ids).get(j.queue, set())
    return bool(members & set(cred.printers))


def _found(value: T | None, missing: str) -> T:
    if value is None:
        raise NotFound(missing)
    return value


def _result(job_id: str, status: str, reason: str | None, cost: int, balance: int) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": status,
        "reason": reason,
        "cost_cents": cost,
        "balance_cents": balance,
    }


def _raise_conflict(out: ledger.Outcome) -> None:
    if out.status == "conflict":
        raise Conflict(f"txn_id {out.txn_id} was already used for a different account or amount")


def _replace(job: jobs.Job, **changes: Any) -> jobs.Job:
    from dataclasses import replace

    return replace(job, **changes)


def _job_answer(j: jobs.Job) -> dict[str, Any]:
    return {"job_id": j.job_id, "action": j.action, "reason": j.reason, "cost_cents": j.cost_cents}
