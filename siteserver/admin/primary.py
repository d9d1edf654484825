"""The primary's administration (CONTRACT.md, "Primary administration"): users, accounts,
printers, sites, devices, providers, offline policies, transactions. Each request becomes domain
rules applied inside one transaction; money moves only through `store.ledger.apply`.
Hashing runs on a small thread pool (never the event loop, never the writer thread).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlite_utils

from siteserver import contract
from siteserver.domain import (
    Conflict,
    CostModel,
    Enforcement,
    Invalid,
    OfflinePolicies,
    PrinterModel,
    SecretHasher,
    SessionRegistry,
    found,
    new_token,
    token_digest,
)
from siteserver.reports import reconcile
from siteserver.reports.received import received
from siteserver.store import Database, catalog, jobs, ledger, settings
from siteserver.store import accounts as accounts_store
from siteserver.timeutil import iso, now_iso, parse_iso, utcnow

#: the fleet health URL allows this many heartbeats of silence per site
FLEET_HEARTBEATS = 3
#: a site's heartbeat interval when it never said (an older site): the site's default
DEFAULT_HEARTBEAT_SECS = 10.0
#: the fleet page colours a contact older than this many allowed windows as lost, not late
LOST_WINDOWS = 10
Freshness = Literal["fresh", "late", "lost", "never", "disabled"]


def allowed_silence_secs(heartbeat_secs: float | None) -> float:
    """How long a site may be silent before the fleet health calls it late."""
    return FLEET_HEARTBEATS * (heartbeat_secs or DEFAULT_HEARTBEAT_SECS)


def silence_secs(last_contact_at: str | None, now: datetime) -> float | None:
    """Seconds since a site was last heard from; None: never."""
    return None if last_contact_at is None else (now - parse_iso(last_contact_at)).total_seconds()


def is_late(silence: float | None, allowed: float) -> bool:
    """The fleet health's rule: never heard from, or silent longer than allowed."""
    return silence is None or silence > allowed


@dataclass(frozen=True)
class FleetSite:
    """One site as the primary's fleet page shows it."""

    site: contract.SiteOut
    age_secs: float | None  # since its last contact; None: never heard from
    allowed_secs: float
    merged_24h: int  # its entries the ledger applied in the last 24 hours

    @property
    def freshness(self) -> Freshness:
        if self.site.disabled:
            return "disabled"
        if self.age_secs is None:
            return "never"
        if not is_late(self.age_secs, self.allowed_secs):
            return "fresh"
        return "late" if self.age_secs <= LOST_WINDOWS * self.allowed_secs else "lost"


@dataclass
class PrimaryAdmin:
    db: Database
    hasher: SecretHasher
    #: the guard's current epoch, written into each ledger row
    epoch_of: Callable[[], int]
    sessions: SessionRegistry
    hashing: ThreadPoolExecutor

    async def _hash(self, secret: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self.hashing, self.hasher.hash, secret)

    # -- administration ----------------------------------------------------------------------

    async def _user_changes(
        self, body: contract.UserCreate | contract.UserPatch
    ) -> accounts_store.UserChanges:
        given = body.model_fields_set
        card_hashes = (
            [self.hasher.card_hash(c) for c in body.card_numbers] if body.card_numbers is not None else None
        )
        return accounts_store.UserChanges(
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
            restricted=body.restricted
            if "restricted" in given or isinstance(body, contract.UserCreate)
            else None,
            overdraft_cents=body.overdraft_cents,
            disabled=getattr(body, "disabled", None),
            # An explicit null clears the list, as for the other optional fields.
            home_sites=body.home_sites or [] if "home_sites" in given else None,
        )

    def _set_balance(
        self, conn: sqlite_utils.Database, account_id: int, target: int, kind: str, now: str
    ) -> None:
        current = accounts_store.balance_of(conn, account_id)
        if target != current:
            ledger.apply(
                conn,
                [ledger.Entry(str(uuid.uuid4()), account_id, target - current, kind, Enforcement.FACT, now)],
                epoch=self.epoch_of(),
                applied_at=now,
            )

    async def create_user(self, body: contract.UserCreate) -> dict[str, Any]:
        changes = await self._user_changes(body)

        def insert_user(conn: sqlite_utils.Database) -> dict[str, Any]:
            now = now_iso()
            account_id = accounts_store.create_user(conn, body.username, changes, now=now)
            self._set_balance(conn, account_id, body.balance_cents, "initial_balance", now)
            return accounts_store.require_user(conn, body.username).public()

        return await self.db.write(insert_user)

    async def get_user(self, username: str) -> dict[str, Any]:
        return await self.db.read(lambda conn: accounts_store.require_user(conn, username).public())

    async def patch_user(self, username: str, body: contract.UserPatch) -> dict[str, Any]:
        changes = await self._user_changes(body)

        def update_user(conn: sqlite_utils.Database) -> dict[str, Any]:
            now = now_iso()
            accounts_store.update_user(conn, username, changes, now=now)
            user = accounts_store.require_user(conn, username)
            if body.balance_cents is not None:
                self._set_balance(conn, user.account_id, body.balance_cents, "set_balance", now)
            return accounts_store.require_user(conn, username).public()

        out = await self.db.write(update_user)
        if body.disabled or "password" in body.model_fields_set or "pin" in body.model_fields_set:
            self.sessions.close_user(username)
        return out

    async def delete_user(self, username: str) -> None:
        def remove_user(conn: sqlite_utils.Database) -> None:
            now = now_iso()
            accounts_store.delete_user(conn, username, now=now)
            jobs.expire_held_of_user(conn, username, now=now)

        await self.db.write(remove_user)
        self.sessions.close_user(username)

    async def adjust(self, username: str, body: contract.AdjustmentIn) -> dict[str, Any]:
        def apply_adjustment(conn: sqlite_utils.Database) -> dict[str, Any]:
            user = accounts_store.require_user(conn, username)
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
            (out,) = ledger.apply(conn, [entry], epoch=self.epoch_of(), applied_at=now)
            out.raise_if_conflict()
            # A repeat of the same txn_id answers exactly what the first call answered.
            return {"txn_id": body.txn_id, "status": "applied", "balance_cents": out.balance_after_cents}

        return await self.db.write(apply_adjustment)

    async def create_shared_account(self, body: contract.SharedAccountCreate) -> dict[str, Any]:
        def insert_shared_account(conn: sqlite_utils.Database) -> dict[str, Any]:
            now = now_iso()
            account_id = accounts_store.create_shared_account(
                conn,
                body.name,
                restricted=body.restricted,
                overdraft_cents=body.overdraft_cents,
                members=body.members,
                now=now,
            )
            self._set_balance(conn, account_id, body.balance_cents, "initial_balance", now)
            created = accounts_store.get_shared_account(conn, body.name)
            assert created is not None
            return created.public()

        return await self.db.write(insert_shared_account)

    async def patch_shared_account(self, name: str, body: contract.SharedAccountPatch) -> dict[str, Any]:
        def update_shared_account(conn: sqlite_utils.Database) -> dict[str, Any]:
            account_id = accounts_store.update_shared_account(
                conn,
                name,
                new_name=body.name,
                restricted=body.restricted,
                overdraft_cents=body.overdraft_cents,
                members=body.members,
            )
            if body.balance_cents is not None:
                self._set_balance(conn, account_id, body.balance_cents, "set_balance", now_iso())
            return accounts_store.require_shared_account(conn, body.name or name).public()

        return await self.db.write(update_shared_account)

    async def delete_shared_account(self, name: str) -> None:
        def close_shared_account(conn: sqlite_utils.Database) -> None:
            if name in settings.get_policies(conn).shared_accounts_named():
                raise Conflict(f"the offline policies charge the shared account {name!r}: change them first")
            accounts_store.close_shared_account(conn, name, now=now_iso())

        await self.db.write(close_shared_account)

    async def get_shared_account(self, name: str) -> dict[str, Any]:
        account = await self.db.read(lambda conn: accounts_store.get_shared_account(conn, name))
        return found(account, f"no shared account named {name!r}").public()

    async def create_printer(self, body: contract.PrinterCreate) -> dict[str, Any]:
        c = body.cost
        cost = CostModel(
            c.mono_page_cents, c.color_page_cents, c.duplex_discount_pct, c.scan_page_cents, c.fax_page_cents
        )
        printer = catalog.Printer(
            body.name, body.site_id, body.hold, PrinterModel(body.name, body.color, body.duplex, cost)
        )
        await self.db.write(lambda conn: catalog.create_printer(conn, printer, now=now_iso()))
        return printer.public()

    async def get_printer(self, name: str) -> dict[str, Any]:
        printer = await self.db.read(lambda conn: catalog.get_printer(conn, name))
        return found(printer, f"no printer named {name!r}").public()

    async def create_site(self, body: contract.SiteCreate) -> dict[str, Any]:
        token = new_token("enr")
        queues = [(q.name, q.printers) for q in body.findme_queues]
        await self.db.write(
            lambda conn: catalog.create_site(
                conn,
                body.site_id,
                body.name,
                queues,
                enrollment_token_hash=token_digest(token),
                now=now_iso(),
            )
        )
        return {"site_id": body.site_id, "enrollment_token": token}

    async def list_sites(self) -> dict[str, Any]:
        return {"sites": await self.db.read(catalog.list_sites)}

    async def fleet_health(self) -> contract.FleetHealthOut:
        """The enrolled, enabled sites, and those not heard from within three of their
        heartbeats (never heard from counts as late): what the fleet health URL reports."""
        contacts = await self.db.read(catalog.enrolled_site_contacts)
        now = utcnow()
        late = []
        for c in contacts:
            allowed = allowed_silence_secs(c.heartbeat_secs)
            age = silence_secs(c.last_contact_at, now)
            if is_late(age, allowed):
                late.append(
                    contract.LateSiteOut(
                        site_id=c.site_id,
                        last_contact_at=c.last_contact_at,
                        age_secs=None if age is None else round(age, 1),
                        allowed_secs=allowed,
                    )
                )
        return contract.FleetHealthOut(status="SITES_LATE" if late else "OK", sites=len(contacts), late=late)

    async def fleet(self) -> list[FleetSite]:
        """Every site with the age of its last contact and what it merged in the last 24 hours."""
        now = utcnow()
        day_ago = iso(now - timedelta(hours=24))
        sites, merged = await self.db.read(
            lambda conn: (catalog.list_sites(conn), ledger.merged_per_site_since(conn, day_ago))
        )
        rows = []
        for s in sites:
            site = contract.SiteOut.model_validate(s)
            rows.append(
                FleetSite(
                    site=site,
                    age_secs=silence_secs(site.last_contact_at, now),
                    allowed_secs=allowed_silence_secs(site.heartbeat_secs),
                    merged_24h=merged.get(site.site_id, 0),
                )
            )
        return rows

    async def create_device(self, body: contract.DeviceCreate) -> dict[str, Any]:
        token = new_token("dev")
        await self.db.write(
            lambda conn: catalog.create_device(
                conn, body.device_id, body.printer, token_digest(token), now=now_iso()
            )
        )
        return {"device_id": body.device_id, "token": token}

    async def create_provider(self, body: contract.ProviderCreate) -> dict[str, Any]:
        token = new_token("prv")
        await self.db.write(
            lambda conn: catalog.create_provider(
                conn, body.provider_id, body.printers, token_digest(token), now=now_iso()
            )
        )
        return {"provider_id": body.provider_id, "token": token}

    async def get_policies(self) -> OfflinePolicies:
        return await self.db.read(settings.get_policies)

    async def put_policies(self, policies: OfflinePolicies) -> OfflinePolicies:
        def store_policies(conn: sqlite_utils.Database) -> OfflinePolicies:
            missing = [
                n
                for n in sorted(policies.shared_accounts_named())
                if accounts_store.get_shared_account(conn, n) is None
            ]
            if missing:
                raise Invalid(f"offline policies name shared account(s) that do not exist: {missing}")
            settings.put_policies(conn, policies)
            return policies

        return await self.db.write(store_policies)

    async def transactions(self, origin_site: str | None, since_seq: int, limit: int) -> dict[str, Any]:
        rows = await self.db.read(
            lambda conn: ledger.list_transactions(
                conn, origin_site=origin_site, since_seq=since_seq, limit=limit
            )
        )
        next_seq = rows[-1]["seq"] if rows else since_seq
        return {"transactions": rows, "next_seq": next_seq}

    # -- a site's identity ------------------------------------------------------------------------

    async def patch_site(self, site_id: str, body: contract.SitePatch) -> dict[str, Any]:
        def update_site(conn: sqlite_utils.Database) -> dict[str, Any]:
            catalog.update_site(conn, site_id, name=body.name, disabled=body.disabled)
            return found(catalog.get_site(conn, site_id), f"no site {site_id!r}")

        return await self.db.write(update_site)

    async def site_report(self, site_id: str, body: contract.ReportIn) -> Iterator[bytes]:
        """What the ledger received from the site in the window (its side of a reconciliation
        report), as a JSON stream; 404 for an unknown site."""
        await self.db.read(lambda conn: found(catalog.get_site(conn, site_id), f"no site {site_id!r}"))
        since, until = reconcile.window(body)
        return received(self.db, site_id, since, until)

    async def new_enrollment_token(self, site_id: str) -> dict[str, Any]:
        token = new_token("enr")
        digest = token_digest(token)
        await self.db.write(lambda conn: catalog.reissue_enrollment_token(conn, site_id, digest))
        return {"site_id": site_id, "enrollment_token": token}
