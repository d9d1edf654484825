"""Printers and their cost models, sites and their Find-Me queues, device and provider credentials."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from siteserver.domain import Conflict, CostModel, Invalid, NotFound, PrinterModel


@dataclass(frozen=True, slots=True)
class Printer:
    name: str
    site_id: str
    hold: bool
    model: PrinterModel

    def public(self) -> dict[str, object]:
        c = self.model.cost
        return {
            "name": self.name,
            "site_id": self.site_id,
            "color": self.model.color,
            "duplex": self.model.duplex,
            "hold": self.hold,
            "cost": {
                "mono_page_cents": c.mono_page_cents,
                "color_page_cents": c.color_page_cents,
                "duplex_discount_pct": c.duplex_discount_pct,
                "scan_page_cents": c.scan_page_cents,
                "fax_page_cents": c.fax_page_cents,
            },
        }


_PRINTER_COLS = (
    "name, site_id, hold, color, duplex, mono_page_cents, color_page_cents,"
    " duplex_discount_pct, scan_page_cents, fax_page_cents"
)


def _printer(row: Any) -> Printer:
    name, site_id, hold, color, duplex, mono, col, disc, scan, fax = row
    cost = CostModel(mono, col, disc, scan, fax)
    return Printer(name, site_id, bool(hold), PrinterModel(name, bool(color), bool(duplex), cost))


def get_printer(conn: sqlite_utils.Database, name: str) -> Printer | None:
    row = conn.execute(f"SELECT {_PRINTER_COLS} FROM printers WHERE name = ?", [name]).fetchone()
    return None if row is None else _printer(row)


def printers_named(conn: sqlite_utils.Database, names: Sequence[str]) -> dict[str, Printer]:
    found: dict[str, Printer] = {}
    for name in names:
        p = get_printer(conn, name)
        if p is not None:
            found[name] = p
    return found


def create_printer(conn: sqlite_utils.Database, p: Printer, *, now: str) -> None:
    if get_printer(conn, p.name) is not None:
        raise Conflict(f"a printer named {p.name!r} already exists")
    c = p.model.cost
    conn.execute(
        f"INSERT INTO printers ({_PRINTER_COLS}, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        [
            p.name,
            p.site_id,
            int(p.hold),
            int(p.model.color),
            int(p.model.duplex),
            c.mono_page_cents,
            c.color_page_cents,
            c.duplex_discount_pct,
            c.scan_page_cents,
            c.fax_page_cents,
            now,
        ],
    )


def _require_printers(conn: sqlite_utils.Database, names: Sequence[str]) -> None:
    missing = [n for n in dict.fromkeys(names) if get_printer(conn, n) is None]
    if missing:
        raise Invalid(f"unknown printer(s): {', '.join(repr(m) for m in missing)}")


# -- sites and Find-Me queues ------------------------------------------------------------------


def create_site(
    conn: sqlite_utils.Database,
    site_id: str,
    name: str,
    findme_queues: Sequence[tuple[str, Sequence[str]]],
    *,
    enrollment_token_hash: str,
    now: str,
) -> None:
    if conn.execute("SELECT 1 FROM sites WHERE site_id = ?", [site_id]).fetchone():
        raise Conflict(f"a site {site_id!r} already exists")
    conn.execute(
        "INSERT INTO sites (site_id, name, enrollment_token_hash, created_at) VALUES (?,?,?,?)",
        [site_id, name, enrollment_token_hash, now],
    )
    queue_names = [q for q, _ in findme_queues]
    if len(set(queue_names)) != len(queue_names):
        raise Invalid("Find-Me queue names must be unique within a site")
    for queue, printers in findme_queues:
        _require_printers(conn, printers)
        conn.execute("INSERT INTO findme_queues (site_id, name) VALUES (?, ?)", [site_id, queue])
        for printer in dict.fromkeys(printers):
            conn.execute(
                "INSERT INTO findme_members (site_id, queue_name, printer) VALUES (?,?,?)",
                [site_id, queue, printer],
            )


def findme_queues(conn: sqlite_utils.Database, site_ids: Sequence[str]) -> dict[str, set[str]]:
    """Find-Me queues of the given sites: queue name -> member printers."""
    queues: dict[str, set[str]] = {}
    for site_id in dict.fromkeys(site_ids):
        for queue, printer in conn.execute(
            "SELECT q.name, m.printer FROM findme_queues q"
            " LEFT JOIN findme_members m ON m.site_id = q.site_id AND m.queue_name = q.name"
            " WHERE q.site_id = ?",
            [site_id],
        ):
            members = queues.setdefault(queue, set())
            if printer is not None:
                members.add(printer)
    return queues


def list_sites(conn: sqlite_utils.Database, *, site_id: str | None = None) -> list[dict[str, object]]:
    out = []
    where, args = ("WHERE site_id = ?", [site_id]) if site_id is not None else ("", [])
    for row in conn.execute(
        "SELECT site_id, name, enrolled_at, disabled, last_contact_at, reported_mode,"
        " journal_backlog, heartbeat_secs, last_outage_started_at, last_outage_ended_at"
        f" FROM sites {where} ORDER BY site_id",
        args,
    ):
        sid = row[0]
        out.append(
            {
                "site_id": sid,
                "name": row[1],
                "enrolled": row[2] is not None,
                "enrolled_at": row[2],
                "disabled": bool(row[3]),
                "last_contact_at": row[4],
                "mode": row[5],
                "journal_backlog": row[6],
                "heartbeat_secs": row[7],
                "last_outage": None if row[8] is None else {"started_at": row[8], "ended_at": row[9]},
                "findme_queues": [
                    {"name": q, "printers": sorted(p)} for q, p in sorted(findme_queues(conn, [sid]).items())
                ],
            }
        )
    return out


def get_site(conn: sqlite_utils.Database, site_id: str) -> dict[str, object] | None:
    """One site as `list_sites` shows it."""
    return next((s for s in list_sites(conn, site_id=site_id)), None)


@dataclass(frozen=True, slots=True)
class SiteKey:
    """What the sync API needs to know of a site to check its signatures."""

    site_id: str
    public_key: str | None
    disabled: bool


def site_key(conn: sqlite_utils.Database, site_id: str) -> SiteKey | None:
    row = conn.execute(
        "SELECT site_id, public_key, disabled FROM sites WHERE site_id = ?", [site_id]
    ).fetchone()
    return None if row is None else SiteKey(row[0], row[1], bool(row[2]))


def enrollment_token_matches(conn: sqlite_utils.Database, site_id: str, token_hash: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM sites WHERE site_id = ? AND enrollment_token_hash = ?", [site_id, token_hash]
        ).fetchone()
        is not None
    )


def enroll_site(
    conn: sqlite_utils.Database, site_id: str, token_hash: str, public_key: str, *, now: str
) -> bool:
    """Consume the one-time token and store the site's key; False if the token does not match."""
    cur = conn.execute(
        "UPDATE sites SET public_key = ?, enrolled_at = ?, enrollment_token_hash = NULL"
        " WHERE site_id = ? AND enrollment_token_hash = ?",
        [public_key, now, site_id, token_hash],
    )
    return cur.rowcount == 1


def reissue_enrollment_token(conn: sqlite_utils.Database, site_id: str, token_hash: str) -> None:
    """A new one-time token; the stored key is dropped, so the old key stops working at once."""
    require_site(conn, site_id)
    conn.execute(
        "UPDATE sites SET enrollment_token_hash = ?, public_key = NULL, enrolled_at = NULL WHERE site_id = ?",
        [token_hash, site_id],
    )


def update_site(
    conn: sqlite_utils.Database, site_id: str, *, name: str | None = None, disabled: bool | None = None
) -> None:
    require_site(conn, site_id)
    if name is not None:
        conn.execute("UPDATE sites SET name = ? WHERE site_id = ?", [name, site_id])
    if disabled is not None:
        conn.execute("UPDATE sites SET disabled = ? WHERE site_id = ?", [int(disabled), site_id])


def record_heartbeat(
    conn: sqlite_utils.Database,
    site_id: str,
    *,
    mode: str,
    journal_backlog: int,
    interval_secs: float | None,
    last_outage: tuple[str, str | None] | None = None,
    now: str,
) -> None:
    """What a heartbeat says; an older site that does not say its interval or last outage keeps
    what was stored."""
    conn.execute(
        "UPDATE sites SET last_contact_at = ?, reported_mode = ?, journal_backlog = ?,"
        " heartbeat_secs = COALESCE(?, heartbeat_secs) WHERE site_id = ?",
        [now, mode, journal_backlog, interval_secs, site_id],
    )
    if last_outage is not None:
        conn.execute(
            "UPDATE sites SET last_outage_started_at = ?, last_outage_ended_at = ? WHERE site_id = ?",
            [*last_outage, site_id],
        )


@dataclass(frozen=True, slots=True)
class SiteContact:
    site_id: str
    last_contact_at: str | None
    heartbeat_secs: float | None  # as the site last said (None: an older site, never said)


def enrolled_site_contacts(conn: sqlite_utils.Database) -> list[SiteContact]:
    """Every enrolled, enabled site with when it was last heard from."""
    return [
        SiteContact(r[0], r[1], r[2])
        for r in conn.execute(
            "SELECT site_id, last_contact_at, heartbeat_secs FROM sites"
            " WHERE enrolled_at IS NOT NULL AND disabled = 0 ORDER BY site_id"
        )
    ]


def remember_nonce(
    conn: sqlite_utils.Database, site_id: str, nonce: str, *, now: int, keep_secs: int
) -> bool:
    """Record a signed request's nonce; False if this site already used it (a replay).

    Rows older than `keep_secs` are pruned in the same transaction."""
    conn.execute("DELETE FROM sync_nonces WHERE seen_at < ?", [now - keep_secs])
    cur = conn.execute(
        "INSERT OR IGNORE INTO sync_nonces (site_id, nonce, seen_at) VALUES (?, ?, ?)", [site_id, nonce, now]
    )
    return cur.rowcount == 1


# -- machine credentials -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MachineCredential:
    """A device (bound to one printer) or a print provider (serving several printers)."""

    kind: str  # "device" | "provider"
    ident: str
    printers: tuple[str, ...]
    site_ids: tuple[str, ...]
    printer_sites: tuple[str, ...] = ()  # the site of each of `printers`

    @property
    def printer(self) -> str:
        """A device's own printer."""
        return self.printers[0]


def create_device(
    conn: sqlite_utils.Database, device_id: str, printer: str, token_hash: str, *, now: str
) -> None:
    if conn.execute("SELECT 1 FROM devices WHERE device_id = ?", [device_id]).fetchone():
        raise Conflict(f"a device {device_id!r} already exists")
    _require_printers(conn, [printer])
    conn.execute(
        "INSERT INTO devices (device_id, printer, token_hash, created_at) VALUES (?,?,?,?)",
        [device_id, printer, token_hash, now],
    )


def create_provider(
    conn: sqlite_utils.Database, provider_id: str, printers: Sequence[str], token_hash: str, *, now: str
) -> None:
    if conn.execute("SELECT 1 FROM providers WHERE provider_id = ?", [provider_id]).fetchone():
        raise Conflict(f"a provider {provider_id!r} already exists")
    _require_printers(conn, printers)
    conn.execute(
        "INSERT INTO providers (provider_id, token_hash, created_at) VALUES (?,?,?)",
        [provider_id, token_hash, now],
    )
    for printer in dict.fromkeys(printers):
        conn.execute(
            "INSERT INTO provider_printers (provider_id, printer) VALUES (?, ?)", [provider_id, printer]
        )


def credential_by_token(conn: sqlite_utils.Database, token_hash: str) -> MachineCredential | None:
    row = conn.execute(
        "SELECT d.device_id, d.printer, p.site_id FROM devices d JOIN printers p ON p.name = d.printer"
        " WHERE d.token_hash = ?",
        [token_hash],
    ).fetchone()
    if row is not None:
        return MachineCredential("device", row[0], (row[1],), (row[2],), (row[2],))
    row = conn.execute("SELECT provider_id FROM providers WHERE token_hash = ?", [token_hash]).fetchone()
    if row is None:
        return None
    pairs = conn.execute(
        "SELECT pp.printer, p.site_id FROM provider_printers pp JOIN printers p ON p.name = pp.printer"
        " WHERE pp.provider_id = ? ORDER BY pp.printer",
        [row[0]],
    ).fetchall()
    return MachineCredential(
        "provider",
        row[0],
        tuple(p for p, _ in pairs),
        tuple(dict.fromkeys(s for _, s in pairs)),
        tuple(s for _, s in pairs),
    )


def require_site(conn: sqlite_utils.Database, site_id: str) -> None:
    if not conn.execute("SELECT 1 FROM sites WHERE site_id = ?", [site_id]).fetchone():
        raise NotFound(f"no site {site_id!r}")
