"""Schema of the primary's database (shared by both members of the active/passive pair)."""

from __future__ import annotations

import sqlite_utils
from sqlite_utils import Migrations

from ._sql import run_script

migrations = Migrations("siteserver-primary")


@migrations()
def m001_initial(conn: sqlite_utils.Database) -> None:
    run_script(
        conn,
        """
-- Accounts hold money; a user has one personal account, shared accounts have members.
CREATE TABLE accounts (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('personal', 'shared')),
  name TEXT NOT NULL,
  balance_cents INTEGER NOT NULL DEFAULT 0,
  restricted INTEGER NOT NULL CHECK (restricted IN (0, 1)),
  overdraft_cents INTEGER NOT NULL DEFAULT 0 CHECK (overdraft_cents >= 0),
  created_at TEXT NOT NULL,
  closed_at TEXT
);
CREATE UNIQUE INDEX accounts_open_name ON accounts(kind, name) WHERE closed_at IS NULL;

CREATE TABLE users (
  username TEXT PRIMARY KEY,
  account_id INTEGER NOT NULL UNIQUE REFERENCES accounts(id),
  full_name TEXT NOT NULL DEFAULT '',
  email TEXT,
  password_hash TEXT,
  pin_hash TEXT,
  id_number_hash TEXT UNIQUE,
  disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);

-- Card numbers only as keyed hashes.
CREATE TABLE user_cards (
  card_hash TEXT PRIMARY KEY,
  username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE
);
CREATE INDEX user_cards_user ON user_cards(username);

CREATE TABLE shared_account_members (
  account_id INTEGER NOT NULL REFERENCES accounts(id),
  username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
  PRIMARY KEY (account_id, username)
);
CREATE INDEX shared_account_members_user ON shared_account_members(username);

-- The ledger: one immutable row per applied txn_id; a balance is the sum of its rows.
CREATE TABLE ledger (
  seq INTEGER PRIMARY KEY,
  txn_id TEXT NOT NULL UNIQUE,
  account_id INTEGER NOT NULL REFERENCES accounts(id),
  amount_cents INTEGER NOT NULL,
  balance_after_cents INTEGER NOT NULL,
  kind TEXT NOT NULL,
  origin_site TEXT,
  occurred_at TEXT NOT NULL,
  applied_at TEXT NOT NULL,
  flags TEXT NOT NULL DEFAULT '[]',
  ref TEXT,
  comment TEXT,
  epoch INTEGER NOT NULL
);
CREATE INDEX ledger_account ON ledger(account_id, seq);
CREATE INDEX ledger_origin ON ledger(origin_site, seq);
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger rows are immutable'); END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger rows are immutable'); END;

CREATE TABLE printers (
  name TEXT PRIMARY KEY,
  site_id TEXT NOT NULL,
  color INTEGER NOT NULL CHECK (color IN (0, 1)),
  duplex INTEGER NOT NULL CHECK (duplex IN (0, 1)),
  hold INTEGER NOT NULL CHECK (hold IN (0, 1)),
  mono_page_cents INTEGER NOT NULL CHECK (mono_page_cents >= 0),
  color_page_cents INTEGER NOT NULL CHECK (color_page_cents >= 0),
  duplex_discount_pct INTEGER NOT NULL DEFAULT 0 CHECK (duplex_discount_pct BETWEEN 0 AND 100),
  scan_page_cents INTEGER NOT NULL DEFAULT 0 CHECK (scan_page_cents >= 0),
  fax_page_cents INTEGER NOT NULL DEFAULT 0 CHECK (fax_page_cents >= 0),
  created_at TEXT NOT NULL
);
CREATE INDEX printers_site ON printers(site_id);

CREATE TABLE sites (
  site_id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  enrollment_token_hash TEXT UNIQUE,
  public_key TEXT,
  enrolled_at TEXT,
  disabled INTEGER NOT NULL DEFAULT 0,
  last_contact_at TEXT,
  reported_mode TEXT,
  journal_backlog INTEGER,
  created_at TEXT NOT NULL
);

CREATE TABLE findme_queues (
  site_id TEXT NOT NULL REFERENCES sites(site_id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  PRIMARY KEY (site_id, name)
);
CREATE TABLE findme_members (
  site_id TEXT NOT NULL,
  queue_name TEXT NOT NULL,
  printer TEXT NOT NULL REFERENCES printers(name),
  PRIMARY KEY (site_id, queue_name, printer),
  FOREIGN KEY (site_id, queue_name) REFERENCES findme_queues(site_id, name) ON DELETE CASCADE
);

-- Machine credentials: only SHA-256 digests of high-entropy tokens.
CREATE TABLE devices (
  device_id TEXT PRIMARY KEY,
  printer TEXT NOT NULL REFERENCES printers(name),
  token_hash TEXT NOT NULL UNIQUE,
  created_at TEXT NOT NULL
);
CREATE TABLE providers (
  provider_id TEXT PRIMARY KEY,
  token_hash TEXT NOT NULL UNIQUE,
  created_at TEXT NOT NULL
);
CREATE TABLE provider_printers (
  provider_id TEXT NOT NULL REFERENCES providers(provider_id) ON DELETE CASCADE,
  printer TEXT NOT NULL REFERENCES printers(name),
  PRIMARY KEY (provider_id, printer)
);

-- Print jobs as the provider submitted them, and what became of them.
CREATE TABLE jobs (
  job_id TEXT PRIMARY KEY,
  request_digest TEXT NOT NULL,
  username TEXT NOT NULL,
  queue TEXT NOT NULL,
  site_id TEXT,
  findme INTEGER NOT NULL,
  document_name TEXT NOT NULL,
  pages INTEGER NOT NULL,
  copies INTEGER NOT NULL,
  color INTEGER NOT NULL,
  duplex INTEGER NOT NULL,
  client TEXT,
  submitted_at TEXT NOT NULL,
  action TEXT NOT NULL,
  status TEXT NOT NULL,
  reason TEXT,
  txn_id TEXT NOT NULL UNIQUE,
  printer TEXT,
  grayscale INTEGER,
  cost_cents INTEGER,
  account_id INTEGER REFERENCES accounts(id),
  balance_after_cents INTEGER,
  released_at TEXT,
  released_by_device TEXT,
  pages_printed INTEGER,
  printed_at TEXT,
  expired_at TEXT
);
CREATE INDEX jobs_user_status ON jobs(username, status);
CREATE INDEX jobs_printer_status ON jobs(printer, status);
CREATE INDEX jobs_status_submitted ON jobs(status, submitted_at);

CREATE TABLE settings (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

-- The active/passive guard: one lease row (holder + epoch = fencing token), one row per member.
CREATE TABLE ha_lease (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  holder_uuid TEXT,
  epoch INTEGER NOT NULL,
  beat INTEGER NOT NULL,
  renewed_at TEXT
);
INSERT INTO ha_lease (id, holder_uuid, epoch, beat) VALUES (1, NULL, 0, 0);
CREATE TABLE ha_members (
  server_uuid TEXT PRIMARY KEY,
  instance_id TEXT NOT NULL,
  host_id TEXT NOT NULL,
  pid INTEGER NOT NULL,
  role TEXT NOT NULL,
  started_at TEXT NOT NULL,
  seen_at TEXT NOT NULL,
  beat INTEGER NOT NULL DEFAULT 0
);

-- The default offline policies charge this account, so it exists from the start.
INSERT INTO accounts (kind, name, balance_cents, restricted, overdraft_cents, created_at)
VALUES ('shared', 'Offline Account', 0, 0, 0, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
""",
    )


@migrations()
def m002_sync_nonces(conn: sqlite_utils.Database) -> None:
    run_script(
        conn,
        """
-- Nonces of signed sync requests seen recently, per site: a replayed request is refused.
-- Rows older than twice the signature window are pruned as new ones arrive.
CREATE TABLE sync_nonces (
  site_id TEXT NOT NULL,
  nonce TEXT NOT NULL,
  seen_at INTEGER NOT NULL,
  PRIMARY KEY (site_id, nonce)
);
CREATE INDEX sync_nonces_seen ON sync_nonces(seen_at);
""",
    )


@migrations()
def m003_change_feed(conn: sqlite_utils.Database) -> None:
    from migrations.mirrored import MIRRORED_TABLES, change_log_triggers

    run_script(
        conn,
        """
-- The seq of the last ledger row applied to an account: a site compares it with the seq the
-- primary gave each of its journal entries, so no charge is subtracted twice or forgotten.
ALTER TABLE accounts ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;

-- Every change of a mirrored row, in commit order; the sync feed reads it after a site's cursor.
CREATE TABLE change_log (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  tbl TEXT NOT NULL,
  pk TEXT NOT NULL,
  at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX change_log_row ON change_log(tbl, pk);
CREATE INDEX change_log_at ON change_log(at);

-- How far back the feed reaches: a site whose cursor is older bootstraps again.
CREATE TABLE change_log_floor (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  pruned_through INTEGER NOT NULL
);
INSERT INTO change_log_floor (id, pruned_through) VALUES (1, 0);
"""
        + "".join(change_log_triggers(t, pk) for t, pk in MIRRORED_TABLES.items()),
    )


@migrations()
def m004_ledger_conflicts(conn: sqlite_utils.Database) -> None:
    run_script(
        conn,
        """
-- A merged charge the primary booked with a conflict (its user deleted or disabled, its shared
-- account gone, a restricted account driven past its limit): what was done, and the account the
-- site's entry named. Never changed, like the ledger row it explains.
CREATE TABLE ledger_conflicts (
  txn_id TEXT PRIMARY KEY REFERENCES ledger(txn_id),
  requested_account TEXT,
  kind TEXT NOT NULL,
  action TEXT NOT NULL
);
""",
    )


@migrations()
def m005_ledger_use(conn: sqlite_utils.Database) -> None:
    run_script(
        conn,
        """
-- What a device's txn_id was first used for (user, named account, kind, amount, as one digest):
-- a request reusing the id for anything else is refused. NULL for merged and older rows.
ALTER TABLE ledger ADD COLUMN use TEXT;
""",
    )


@migrations()
def m006_site_heartbeat_interval(conn: sqlite_utils.Database) -> None:
    run_script(
        conn,
        """
-- How often each site says it sends its heartbeat: the fleet health URL allows three of them.
ALTER TABLE sites ADD COLUMN heartbeat_secs REAL;
""",
    )


@migrations()
def m007_home_sites(conn: sqlite_utils.Database) -> None:
    def scope_trigger(table: str, op: str, user: str, sites: str) -> str:
        return (
            f"CREATE TRIGGER user_scope_{table}_{op} AFTER {op.upper()} ON {table}\n"
            "BEGIN INSERT INTO change_log (tbl, pk)"
            f" VALUES ('user_scope', json_array({user}, {sites})); END;\n"
        )

    triggers = [
        scope_trigger("users", "insert", "NEW.username", "NEW.home_sites"),
        scope_trigger("users", "update", "NEW.username", "OLD.home_sites"),
        scope_trigger("users", "delete", "OLD.username", "OLD.home_sites"),
    ]
    for table in ("user_cards", "shared_account_members"):
        for op, row in (("insert", "NEW"), ("update", "NEW"), ("delete", "OLD")):
            owner = f"COALESCE((SELECT home_sites FROM users WHERE username = {row}.username), '[]')"
            triggers.append(scope_trigger(table, op, f"{row}.username", owner))
    run_script(
        conn,
        """
-- The sites a user belongs to (a JSON array of site ids; empty: none in particular). A site with
-- mirror_scope = "home" mirrors only its own people (docs/security.md).
ALTER TABLE users ADD COLUMN home_sites TEXT NOT NULL DEFAULT '[]';

-- Every change of a user, their cards or memberships also names the user and the sites they
-- belonged to before it: the feed of a home-scope site replaces or removes that user as a whole
-- and tells it nothing of anyone else (store.feed).
"""
        + "".join(triggers),
    )


@migrations()
def m008_site_last_outage(conn: sqlite_utils.Database) -> None:
    run_script(
        conn,
        """
-- Each site's last outage as it reported it in a heartbeat (the fleet page shows it).
ALTER TABLE sites ADD COLUMN last_outage_started_at TEXT;
ALTER TABLE sites ADD COLUMN last_outage_ended_at TEXT;
""",
    )


@migrations()
def m009_change_log_lighter(conn: sqlite_utils.Database) -> None:
    run_script(
        conn,
        """
-- The feed reads change_log by seq (its rowid) only. The planner walked the (tbl, pk) index over
-- the whole log for every feed page, and each index made every logged change (a balance per
-- merged account) dearer to write; pruning walks the oldest rows by seq.
DROP INDEX IF EXISTS change_log_row;
DROP INDEX IF EXISTS change_log_at;

-- A balance moved by the ledger (the only writer of last_seq) is logged by store.ledger.apply in
-- one statement per batch: a trigger program per updated account cost four times as much.
DROP TRIGGER change_log_accounts_update;
CREATE TRIGGER change_log_accounts_update AFTER UPDATE ON accounts WHEN NEW.last_seq IS OLD.last_seq
BEGIN
  INSERT INTO change_log (tbl, pk) VALUES ('accounts', json_array(NEW.id));
  INSERT INTO change_log (tbl, pk) SELECT 'accounts', json_array(OLD.id) WHERE OLD.id IS NOT NEW.id;
END;
""",
    )
