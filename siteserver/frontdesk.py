"""The device and print provider flows, one implementation for both roles.

The primary and every site answer MFDs and print providers with the same code: each request
becomes domain rules applied inside one write transaction of the role's own database. The roles
differ only in how a charge is applied and confirmed, behind `Charging`:

- the primary (`LedgerCharging`): a charge is `store.ledger.apply`, final when committed;
- a site (`siteserver.site.charging.JournalCharging`): a charge is an entry in the outbox journal,
  decided locally against the effective balance, then confirmed by pushing it to the primary
  within the request budget; the primary's verdict, when it comes in time, is the answer.

Hashing runs on a small thread pool (never the event loop, never the writer thread); SQLite runs
through the `Database` facade.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import sqlite_utils

from siteserver import serving
from siteserver.api import models as m
from siteserver.domain import (
    Conflict,
    Enforcement,
    Forbidden,
    JobStatus,
    LockedOut,
    Lockout,
    NotFound,
    SecretHasher,
    SessionRegistry,
    Unauthorized,
    found,
    quote_print,
    quote_usage,
    releasable_at,
    resolve_queue,
    token_digest,
)
from siteserver.store import Database, catalog, jobs, ledger
from siteserver.store import accounts as acc
from siteserver.store.catalog import MachineCredential
from siteserver.store.journal import Verdict
from siteserver.store.settings import get_policies
from siteserver.timeutil import now_iso, utcnow

_CRED_CACHE_SECS = 2.0


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


@dataclass(frozen=True, slots=True)
class ChargeAsk:
    """One charge a flow wants made: who, which account they name, how much, how enforced."""

    txn_id: str
    username: str
    user: acc.UserRecord | None  # None: the role does not know this username
    account: str | None  # a shared account named by the release or usage (None: personal)
    cost_cents: int  # >= 0
    kind: str
    enforcement: Enforcement
    occurred_at: str
    ref: str | None = None


def charge_account(
    db: sqlite_utils.Database, user: acc.UserRecord, account: str | None
) -> tuple[int | None, str | None]:
    """The account a charge goes to: the personal one, or a shared one the user is a member of."""
    if account is None:
        return user.account_id, None
    shared = acc.get_shared_account(db, account)
    if shared is None or user.username not in shared.members:
        return None, f"{account!r} is not a shared account this user may charge"
    return shared.account_id, None


class Charging:
    """How a role applies and confirms a charge (the one place the roles differ)."""

    #: the status of a job released at a device until `confirm` is done
    release_status: JobStatus = JobStatus.RELEASED
    #: whether `confirm` does anything (the primary's charges are final at commit)
    confirms: bool = False

    def charge(self, db: sqlite_utils.Database, entry: ledger.Entry) -> ledger.Outcome:
        """Inside the flow's write transaction: apply (or record) one entry."""
        raise NotImplementedError

    def charge_for(self, db: sqlite_utils.Database, ask: ChargeAsk) -> tuple[ledger.Outcome, int | None]:
        """Inside the flow's write transaction: choose the account and charge it; the outcome and
        the account charged (None when refused before an account was chosen). The primary's
        rule: known, enabled users only; a named shared account must be one of the user's."""
        user = ask.user
        if user is None or user.disabled:
            return _refused(ask, "unknown or disabled user"), None
        account_id, why = charge_account(db, user, ask.account)
        if account_id is None:
            return _refused(ask, why), None
        entry = ledger.Entry(
            ask.txn_id,
            account_id,
            -ask.cost_cents,
            ask.kind,
            ask.enforcement,
            ask.occurred_at,
            ref=ask.ref,
        )
        return self.charge(db, entry), account_id

    def offline(self, db: sqlite_utils.Database) -> bool:
        """Whether this role decides alone right now (a site that cannot reach the primary)."""
        return False

    def balance(self, db: sqlite_utils.Database, account_id: int, stored: int) -> int:
        """The balance to answer for an account whose stored balance is `stored`."""
        return stored

    def mode(self, db: sqlite_utils.Database) -> str:
        return "online"

    async def confirm(self, txn_ids: Sequence[str]) -> dict[str, Verdict] | None:
        """After commit: the final verdicts known for these entries (missing: none in time).
        None: nothing was asked (a site known to be offline), so nothing changed since the commit."""
        return {}


@dataclass
class LedgerCharging(Charging):
    """The primary: money moves through `store.ledger.apply`, final when committed."""

    epoch_of: Callable[[], int]

    def charge(self, db: sqlite_utils.Database, entry: ledger.Entry) -> ledger.Outcome:
        (out,) = ledger.apply(db, [entry], epoch=self.epoch_of(), applied_at=entry.occurred_at)
        return out


@dataclass
class _Charged:
    """A job released in the write transaction, waiting for its confirmation."""

    index: int
    job_id: str
    txn_id: str
    printer: str
    amount_cents: int
    held_cost_cents: int | None


@dataclass
class FrontDesk:
    db: Database
    hasher: SecretHasher
    lockout: Lockout
    sessions: SessionRegistry
    hashing: ThreadPoolExecutor
    charging: Charging
    releases: ReleaseSignal = field(default_factory=ReleaseSignal)

    def __post_init__(self) -> None:
        self._creds: dict[str, tuple[float, MachineCredential | None]] = {}

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

        def lookup(db: sqlite_utils.Database) -> tuple[acc.UserRecord | None, list[str], int, str]:
            user, shared = acc.login_lookup(db, by, value)
            balance = 0 if user is None else self.charging.balance(db, user.account_id, user.balance_cents)
            return user, shared, balance, self.charging.mode(db)

        def password_refused(db: sqlite_utils.Database) -> bool:
            return self.charging.offline(db) and not get_policies(db).password_authentication.allowed

        if body.password is not None and await self.db.read(password_refused):
            raise Forbidden(
                "password logins are not allowed while the site is offline; use a card, PIN or ID number"
            )
        # No transaction around it: the balance is one statement on both roles (a site's effective
        # balance included), so it is consistent by itself.
        user, shared, balance, mode = await self.db.read(lookup, snapshot=False)
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
            "balance_cents": balance,
            "restricted": user.restricted,
            "shared_accounts": shared,
            "mode": mode,
        }

    def _session_user(self, device: MachineCredential, session_id: str) -> str:
        return self.sessions.get(session_id, device.ident).username

    async def held_jobs(self, device: MachineCredential, session_id: str) -> dict[str, Any]:
        username = self._session_user(device, session_id)

        def work(db: sqlite_utils.Database) -> dict[str, Any]:
            printer = found(catalog.get_printer(db, device.printer), "this device's printer no longer exists")
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
            return {"jobs": out, "mode": self.charging.mode(db)}

        return await self.db.read(work)

    async def release(self, device: MachineCredential, session_id: str, body: m.ReleaseIn) -> dict[str, Any]:
        username = self._session_user(device, session_id)
        charged: list[_Charged] = []
        account_ids: list[int] = []

        def work(db: sqlite_utils.Database) -> dict[str, Any]:
            now = now_iso()
            user = acc.require_user(db, username)
            balance = self.charging.balance(db, user.account_id, user.balance_cents)
            printer = found(catalog.get_printer(db, device.printer), "this device's printer no longer exists")
            findme = catalog.findme_queues(db, device.site_ids)
            results = []
            for job_uuid in dict.fromkeys(str(j) for j in body.job_ids):
                j = jobs.get_job(db, job_uuid)
                if j is None or j.username != username:
                    results.append(_result(job_uuid, "not_found", "no such held job", 0, balance))
                    continue
                if (
                    j.status in (JobStatus.RELEASED, JobStatus.PRINTED, JobStatus.RELEASING)
                    and j.released_by_device == device.ident
                ):
                    # A retry after a lost answer: the same answer again, no second charge.
                    results.append(
                        _result(job_uuid, "released", None, j.cost_cents or 0, j.balance_after_cents or 0)
                    )
                    continue
                if j.status is not JobStatus.HELD:
                    results.append(_result(job_uuid, "not_found", f"job is {j.status.value}", 0, balance))
                    continue
                if not releasable_at(j.queue, device.printer, findme):
                    results.append(
                        _result(job_uuid, "denied", "this job cannot be released at this printer", 0, balance)
                    )
                    continue
                q = quote_print(printer.model, pages=j.pages, copies=j.copies, color=j.color, duplex=j.duplex)
                ask = ChargeAsk(
                    j.txn_id,
                    username,
                    user,
                    body.account,
                    q.cost_cents,
                    "print",
                    Enforcement.AUTHORIZE,
                    now,
                    ref=j.job_id,
                )
                out, account_id = self.charging.charge_for(db, ask)
                out.raise_if_conflict()
                if out.status == "denied" or account_id is None:
                    bal = out.balance_after_cents if out.balance_after_cents is not None else balance
                    results.append(_result(job_uuid, "denied", out.reason, q.cost_cents, bal))
                    continue
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
                if self.charging.release_status is not JobStatus.RELEASED:
                    jobs.set_status(db, j.job_id, self.charging.release_status)
                charged.append(
                    _Charged(len(results), j.job_id, j.txn_id, printer.name, -q.cost_cents, j.cost_cents)
                )
                account_ids.append(account_id)
                results.append(_result(job_uuid, "released", None, q.cost_cents, out.balance_after_cents))
            return {"results": results, "mode": self.charging.mode(db)}

        out = await self.db.write(work)
        if charged and self.charging.confirms:
            out = await self._confirm_releases(out, charged, account_ids)
        self.releases.notify([c.printer for c in charged if out["results"][c.index]["status"] == "released"])
        return out

    async def _confirm_releases(
        self, out: dict[str, Any], charged: list[_Charged], account_ids: list[int]
    ) -> dict[str, Any]:
        """A site: the primary's verdict (if in time) decides; a rejected release is undone - the
        job is held again and the answer is the primary's denial. Only then may the provider see it."""
        verdicts = await self.charging.confirm([c.txn_id for c in charged]) or {}

        def finish(db: sqlite_utils.Database) -> dict[str, Any]:
            results = [dict(r) for r in out["results"]]
            refunded = 0
            for c in charged:
                v = verdicts.get(c.txn_id)
                r = results[c.index]
                if v is not None and v.status == "rejected":
                    jobs.undo_release(db, c.job_id, held_cost_cents=c.held_cost_cents)
                    refunded -= c.amount_cents
                    r.update(status="denied", reason=v.reason)
                else:
                    jobs.finish_release(db, c.job_id)
                    r["balance_cents"] += refunded
            for c, account_id in zip(charged, account_ids, strict=True):
                if results[c.index]["status"] == "denied":
                    results[c.index]["balance_cents"] = self.charging.balance(db, account_id, 0)
            return {"results": results, "mode": self.charging.mode(db)}

        return await self.db.write(finish)

    async def usage(self, device: MachineCredential, session_id: str, body: m.UsageIn) -> dict[str, Any]:
        username = self._session_user(device, session_id)
        txn_id = str(body.txn_id)
        charged_to: list[int] = []

        def work(db: sqlite_utils.Database) -> dict[str, Any]:
            now = now_iso()
            user = acc.require_user(db, username)
            printer = found(catalog.get_printer(db, device.printer), "this device's printer no longer exists")
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
                now,
                ref=device.ident,
            )
            out, account_id = self.charging.charge_for(db, ask)
            out.raise_if_conflict()
            if out.status == "denied" or account_id is None:
                raise Forbidden(out.reason or "account not allowed")
            charged_to.append(account_id)
            return {
                "txn_id": txn_id,
                "status": "charged",
                "cost_cents": -out.amount_cents,
                "balance_cents": out.balance_after_cents,
                "mode": self.charging.mode(db),
            }

        out = await self.db.write(work)
        # A fact stays charged whatever the primary says (a rejection is recorded in the journal
        # for the reconciliation); once the primary was asked, the answer is the balance as it
        # now stands.
        if self.charging.confirms and await self.charging.confirm([txn_id]) is not None:
            account_id = charged_to[0]

            def after(db: sqlite_utils.Database) -> tuple[int, str]:
                return self.charging.balance(db, account_id, 0), self.charging.mode(db)

            out["balance_cents"], out["mode"] = await self.db.read(after, snapshot=False)
        return out

    def logout(self, device: MachineCredential, session_id: str) -> dict[str, Any]:
        self.sessions.close(session_id, device.ident)
        return {"status": "logged_out"}

    # -- print provider API ------------------------------------------------------------------

    async def submit_job(self, cred: MachineCredential, body: m.JobIn) -> dict[str, Any]:
        job_id = str(body.job_id)
        digest = hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
        to_confirm: list[str] = []

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
            if target.hold and (user is None or user.disabled):
                # Nobody could log in to release it (offline too: the mirror does not know them).
                job = replace(base, reason="unknown or disabled user")
            elif target.hold:
                job = replace(base, action="hold", status=JobStatus.HELD, cost_cents=estimate)
            else:
                printer = printers[target.name]
                q = quote_print(
                    printer.model, pages=body.pages, copies=body.copies, color=body.color, duplex=body.duplex
                )
                ask = ChargeAsk(
                    base.txn_id,
                    body.username,
                    user,
                    None,
                    q.cost_cents,
                    "print",
                    Enforcement.AUTHORIZE,
                    now,
                    ref=job_id,
                )
                out, account_id = self.charging.charge_for(db, ask)
                if out.status == "applied" and account_id is not None:
                    job = replace(
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
                    to_confirm.append(base.txn_id)
                else:
                    known = user is not None and not user.disabled
                    job = replace(base, reason=out.reason, cost_cents=q.cost_cents if known else None)
            jobs.insert_job(db, job)
            return _job_answer(job)

        out = await self.db.write(work)
        if to_confirm and self.charging.confirms:
            verdict = (await self.charging.confirm(to_confirm) or {}).get(to_confirm[0])
            if verdict is not None and verdict.status == "rejected":
                reason = verdict.reason

                def deny(db: sqlite_utils.Database) -> dict[str, Any]:
                    jobs.deny_direct_print(db, job_id, reason)
                    j = jobs.get_job(db, job_id)
                    assert j is not None
                    return _job_answer(j)

                out = await self.db.write(deny)
        return out

    def expire_held_jobs(self) -> int:
        """Held jobs past the hold timeout expire (the scheduler runs this; both roles)."""
        return self.db.write_sync(lambda db: jobs.expire_past_hold_timeout(db, utcnow()))

    async def releases_for(self, cred: MachineCredential, printer: str, wait: float) -> dict[str, Any]:
        if printer not in cred.printers:
            raise Forbidden(f"this credential does not serve printer {printer!r}")
        deadline = time.monotonic() + wait
        while True:
            event = self.releases.event(printer)
            pending = await self.db.read(lambda db: jobs.pending_releases(db, [printer]))
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


def _serves(db: sqlite_utils.Database, cred: MachineCredential, j: jobs.Job) -> bool:
    """Whether the job is this credential's: its printer once released (or printed directly),
    else its queue - a printer it serves or a Find-Me queue with a member it serves."""
    if j.printer is not None:
        return j.printer in cred.printers
    if j.queue in cred.printers:
        return True
    members = catalog.findme_queues(db, cred.site_ids).get(j.queue, set())
    return bool(members & set(cred.printers))


def _result(job_id: str, status: str, reason: str | None, cost: int, balance: int) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": status,
        "reason": reason,
        "cost_cents": cost,
        "balance_cents": balance,
    }


def _refused(ask: ChargeAsk, reason: str | None) -> ledger.Outcome:
    return ledger.Outcome(ask.txn_id, "denied", -ask.cost_cents, reason=reason)


def _job_answer(j: jobs.Job) -> dict[str, Any]:
    return {"job_id": j.job_id, "action": j.action, "reason": j.reason, "cost_cents": j.cost_cents}
