"""The primary's flows: each request becomes domain rules applied inside one transaction.

Administration lives here; the device and print provider flows are `siteserver.frontdesk.FrontDesk`
(shared with the sites), whose charges on the primary go through `store.ledger.apply`.
Hashing runs on a small thread pool (never the event loop, never the writer thread); SQLite runs
through the `Database` facade; money moves only through `store.ledger.apply`.
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from siteserver.api import models as m
from siteserver.domain import (
    Enforcement,
    Invalid,
    Lockout,
    OfflinePolicies,
    SecretHasher,
    SessionRegistry,
    found,
    new_token,
    token_digest,
)
from siteserver.frontdesk import FrontDesk, LedgerCharging
from siteserver.store import Database, catalog, jobs, ledger, settings
from siteserver.store import accounts as acc
from siteserver.timeutil import now_iso


@dataclass
class PrimaryService:
    db: Database
    hasher: SecretHasher
    epoch_of: Any  # () -> int: the guard's current epoch, written into each ledger row
    lockout: Lockout
    sessions: SessionRegistry
    hashing: ThreadPoolExecutor

    def __post_init__(self) -> None:
        # The device and provider flows, shared with the sites; charges go to the ledger.
        self.desk = FrontDesk(
            db=self.db,
            hasher=self.hasher,
            lockout=self.lockout,
            sessions=self.sessions,
            hashing=self.hashing,
            charging=LedgerCharging(self.epoch_of),
        )
        self.releases = self.desk.releases
        self.machine = self.desk.machine
        self.login = self.desk.login
        self.held_jobs = self.desk.held_jobs
        self.release = self.desk.release
        self.usage = self.desk.usage
        self.logout = self.desk.logout
        self.submit_job = self.desk.submit_job
        self.releases_for = self.desk.releases_for
        self.printed = self.desk.printed

    async def _hash(self, secret: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self.hashing, self.hasher.hash, secret)

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
            out.raise_if_conflict()
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
            created = acc.get_shared_account(db, body.name)
            assert created is not None
            return created.public()

        return await self.db.write(work)

    async def get_shared_account(self, name: str) -> dict[str, Any]:
        account = await self.db.read(lambda db: acc.get_shared_account(db, name))
        return found(account, f"no shared account named {name!r}").public()

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
        printer = await self.db.read(lambda db: catalog.get_printer(db, name))
        return found(printer, f"no printer named {name!r}").public()

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

    # -- scheduled ---------------------------------------------------------------------------
