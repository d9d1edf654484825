"""Schema of a site server's database (data_dir/site.db): the mirror and the site's own tables.

The mirrored tables (migrations.mirrored.MIRRORED_TABLES) have exactly the primary's columns, in the same
order (tests/test_site_schema.py keeps them from drifting), with these deliberate differences in
constraints: no foreign key to the primary-only `sites` table, and no UNIQUE constraint beyond the
primary key. The primary enforces uniqueness; the mirror applies a page of the change feed (rows
as they are now) in one transaction, and an intermediate state inside that transaction may
briefly hold two rows with a value that is unique on the primary at every commit.
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils import Migrations

from ._sql import run_script

migrations = Migrations("siteserver-site")


@migrations()
def m001_initial(conn: sqlite_utils.Database) -> None:
    run_script(
        conn,
        """
-- Mirrored from the primary (see migrations/primary.py for the meaning of every column).
CREATE TABLE accounts (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('personal', 'shared')),
  name TEXT NOT NULL,
  balance_cents INTEGER NOT NULL DEFAULT 0,
  restricted INTEGER NOT NULL CHECK (restricted IN (0, 1)),
  overdraft_cents INTEGER NOT NULL DEFAULT 0 CHECK (overdraft_cents >= 0),
  created_at TEXT NOT NULL,
  closed_at TEXT,
  last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX accounts_name ON accounts(kind, name);

CREATE TABLE users (
  username TEXT PRIMARY KEY,
  account_id INTEGER NOT NULL REFERENCES accounts(id),
  full_name TEXT NOT NULL DEFAULT '',
  email TEXT,
  password_hash TEXT,
  pin_hash TEXT,
  id_number_hash TEXT,
  disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX users_account ON users(account_id);
CREATE INDEX users_id_number ON users(id_number_hash);

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

CREATE TABLE findme_queues (
  site_id TEXT NOT NULL,
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

CREATE TABLE devices (
  device_id TEXT PRIMARY KEY,
  printer TEXT NOT NULL REFERENCES printers(name),
  token_hash TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX devices_token ON devices(token_hash);
CREATE TABLE providers (
  provider_id TEXT PRIMARY KEY,
  token_hash TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX providers_token ON providers(token_hash);
CREATE TABLE provider_printers (
  provider_id TEXT NOT NULL REFERENCES providers(provider_id) ON DELETE CASCADE,
  printer TEXT NOT NULL REFERENCES printers(name),
  PRIMARY KEY (provider_id, printer)
);

CREATE TABLE settings (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

-- The site's own state: sync cursor, bootstrapped_at, last_sync_at, mode, mode_since.
CREATE TABLE sync_state (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

-- The outbox: every money-moving event at this site, until the primary has seen it.
CREATE TABLE journal (
  txn_id TEXT PRIMARY KEY,
  seq INTEGER UNIQUE,
  account TEXT NOT NULL,
  amount_cents INTEGER NOT NULL,
  kind TEXT NOT NULL,
  enforcement TEXT NOT NULL,
  occurred_at TEXT NOT NULL,
  flags TEXT NOT NULL DEFAULT '[]',
  ref TEXT,
  status TEXT NOT NULL CHECK (status IN ('pending', 'applied', 'duplicate', 'rejected')),
  primary_seq INTEGER,
  primary_balance_cents INTEGER,
  reason TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_attempt_at TEXT
);
CREATE INDEX journal_status ON journal(status, seq);

-- Every change of mode, with its time and cause (outages are read from here).
CREATE TABLE mode_changes (
  id INTEGER PRIMARY KEY,
  at TEXT NOT NULL,
  mode TEXT NOT NULL,
  cause TEXT NOT NULL
);
""",
    )


@migrations()
def m002_jobs(conn: sqlite_utils.Database) -> None:
    run_script(
        conn,
        """
-- Print jobs submitted at this site (the primary's columns: store.jobs works on both). A job a
-- device releases is 'releasing' until the primary's verdict (or the request budget) is in.
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
  account_id INTEGER,
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

-- The effective balance sums an account's journal entries the primary has not shown the mirror.
CREATE INDEX journal_account ON journal(account, status);
""",
    )


# What one journal row adds to the running totals while it is pending (`R` is NEW or OLD):
# its amount to its account's unmerged total, and, if it is an offline charge, its cost to the
# site's offline exposure ('' row) and to its spender (the `by:<user>` flag, else the user whose
# personal account it is).
_SPENDER = (
    "COALESCE((SELECT substr(f.value, 4) FROM json_each(R.flags) f WHERE substr(f.value, 1, 3) = 'by:'"
    " LIMIT 1), CASE WHEN substr(R.account, 1, 5) = 'user:' THEN substr(R.account, 6) END)"
)
_OFFLINE_CHARGE = (
    "R.status = 'pending' AND R.amount_cents < 0"
    " AND EXISTS (SELECT 1 FROM json_each(R.flags) f WHERE f.value = 'offline')"
)


def _totals(row: str, sign: str) -> str:
    """The statements adding (sign '+') or removing ('-') `row`'s share of the running totals."""
    sql = f"""
  INSERT INTO journal_unmerged (account, pending_cents, entries)
    SELECT R.account, {sign}R.amount_cents, {sign}1 WHERE R.status = 'pending'
    ON CONFLICT(account) DO UPDATE SET pending_cents = pending_cents + excluded.pending_cents,
      entries = entries + excluded.entries;
  INSERT INTO offline_exposure (spender, cents)
    SELECT '', {sign}(-R.amount_cents) WHERE {_OFFLINE_CHARGE}
    ON CONFLICT(spender) DO UPDATE SET cents = cents + excluded.cents;
  INSERT INTO offline_exposure (spender, cents)
    SELECT {_SPENDER}, {sign}(-R.amount_cents) WHERE {_OFFLINE_CHARGE} AND {_SPENDER} IS NOT NULL
    ON CONFLICT(spender) DO UPDATE SET cents = cents + excluded.cents;"""
    if sign == "-":  # what no longer counts leaves no row behind
        sql += """
  DELETE FROM journal_unmerged WHERE account = R.account AND entries = 0;
  DELETE FROM offline_exposure WHERE cents = 0;"""
    return sql.replace("R.", f"{row}.")


@migrations()
def m003_journal_totals(conn: sqlite_utils.Database) -> None:
    """Running totals of what the primary has not yet seen, kept by triggers in the same
    transaction as each journal write: a charge reads its account's pending total in one lookup
    instead of summing every pending entry (which made an outage slower the longer it lasted)."""
    run_script(
        conn,
        f"""
-- Per account: the sum and count of its pending journal entries.
CREATE TABLE journal_unmerged (
  account TEXT PRIMARY KEY,
  pending_cents INTEGER NOT NULL,
  entries INTEGER NOT NULL
);
-- Offline charges not yet merged (the exposure the [offline] caps bound): spender '' is the
-- whole site, any other the username who spent them.
CREATE TABLE offline_exposure (
  spender TEXT PRIMARY KEY,
  cents INTEGER NOT NULL
);
CREATE INDEX offline_exposure_top ON offline_exposure(cents DESC, spender);

CREATE TRIGGER journal_totals_insert AFTER INSERT ON journal BEGIN{_totals("NEW", "+")}
END;
CREATE TRIGGER journal_totals_update AFTER UPDATE OF status, account, amount_cents, flags ON journal
BEGIN{_totals("OLD", "-")}{_totals("NEW", "+")}
END;
CREATE TRIGGER journal_totals_delete AFTER DELETE ON journal BEGIN{_totals("OLD", "-")}
END;

-- Entries the primary applied, by account and primary seq: the effective balance adds those
-- beyond the account's mirrored last_seq (normally the last few hundred milliseconds' worth).
CREATE INDEX journal_merged ON journal(account, primary_seq) WHERE status IN ('applied', 'duplicate');
DROP INDEX journal_account;
""",
    )
    # Totals for the entries already there (a site upgraded in the middle of an outage).
    run_script(
        conn,
        f"""
INSERT INTO journal_unmerged (account, pending_cents, entries)
  SELECT R.account, SUM(R.amount_cents), count(*) FROM journal R WHERE R.status = 'pending'
  GROUP BY R.account;
INSERT INTO offline_exposure (spender, cents)
  SELECT '', cost FROM
    (SELECT SUM(-R.amount_cents) AS cost, count(*) AS n FROM journal R WHERE {_OFFLINE_CHARGE})
  WHERE n > 0;
INSERT INTO offline_exposure (spender, cents)
  SELECT spender, SUM(cost) FROM
    (SELECT {_SPENDER} AS spender, -R.amount_cents AS cost FROM journal R WHERE {_OFFLINE_CHARGE})
  WHERE spender IS NOT NULL GROUP BY spender;
""",
    )


@migrations()
def m004_journal_sent(conn: sqlite_utils.Database) -> None:
    """`sent`: the entry may have reached the primary (set before its first upload, in the same
    transaction as the entry when a request merges it at once). A pending entry that was sent is
    *in doubt*: the primary may have applied it without its answer reaching the site. The mirror
    settles the entries in doubt of an account before it applies that account's row from the
    feed, so no charge is in the mirrored balance and pending at once (invariant 3)."""
    run_script(
        conn,
        """
ALTER TABLE journal ADD COLUMN sent INTEGER NOT NULL DEFAULT 0 CHECK (sent IN (0, 1));
-- Pending entries written before this column existed may have left the site: in doubt.
UPDATE journal SET sent = 1 WHERE status = 'pending';
CREATE INDEX journal_in_doubt ON journal(account) WHERE status = 'pending' AND sent = 1;
""",
    )


@migrations()
def m005_conflicts_and_reports(conn: sqlite_utils.Database) -> None:
    """The primary's verdict kept whole: the conflict it settled and what it booked when that is
    not the entry (a fallback account, an earlier release's amount); when the site noticed an
    outage; and the reconciliation reports, each a snapshot of its window."""
    run_script(
        conn,
        f"""
ALTER TABLE journal ADD COLUMN conflict_kind TEXT;
ALTER TABLE journal ADD COLUMN conflict_action TEXT;
ALTER TABLE journal ADD COLUMN primary_account TEXT;
ALTER TABLE journal ADD COLUMN primary_amount_cents INTEGER;
-- What a report says of the charge: the printer and the pages (copies included).
ALTER TABLE journal ADD COLUMN printer TEXT;
ALTER TABLE journal ADD COLUMN pages INTEGER;
-- Where the primary booked a merged entry: the effective balance of that account holds it
-- until the mirror has seen it (invariant 3), wherever the site had put it.
ALTER TABLE journal ADD COLUMN booked_account TEXT
  GENERATED ALWAYS AS (COALESCE(primary_account, account)) VIRTUAL;
ALTER TABLE journal ADD COLUMN booked_cents INTEGER
  GENERATED ALWAYS AS (COALESCE(primary_amount_cents, amount_cents)) VIRTUAL;
DROP INDEX journal_merged;
CREATE INDEX journal_booked ON journal(booked_account, primary_seq) WHERE status IN ('applied', 'duplicate');
CREATE INDEX journal_occurred ON journal(occurred_at);
-- The status counts the answers with a conflict apart.
CREATE INDEX journal_conflicts ON journal(status) WHERE conflict_kind IS NOT NULL;

-- The running totals change only with a pending entry: one trigger for the entry that leaves
-- pending and one for the entry that is pending now, each run only when it has work (recording a
-- merge's verdicts no longer runs the half that would add nothing).
DROP TRIGGER journal_totals_update;
CREATE TRIGGER journal_totals_update_old AFTER UPDATE OF status, account, amount_cents, flags ON journal
WHEN OLD.status = 'pending' BEGIN{_totals("OLD", "-")}
END;
CREATE TRIGGER journal_totals_update_new AFTER UPDATE OF status, account, amount_cents, flags ON journal
WHEN NEW.status = 'pending' BEGIN{_totals("NEW", "+")}
END;

-- Seconds from the last good contact with the primary to a change to offline.
ALTER TABLE mode_changes ADD COLUMN detection_secs REAL;

CREATE TABLE reports (
  report_id TEXT PRIMARY KEY,
  since TEXT NOT NULL,
  until TEXT NOT NULL,
  generated_at TEXT NOT NULL,
  summary TEXT NOT NULL            -- JSON: outages, totals, conflicts, check
);
-- One row per journal entry of a report's window, as both sides saw it when it was made (written
-- before its report's row, which is written last: lines without one are an unfinished report).
CREATE TABLE report_entries (
  report_id TEXT NOT NULL,
  n INTEGER NOT NULL,
  entry TEXT NOT NULL,             -- JSON: the report's entry object
  conflict TEXT,                   -- JSON (txn_id, kind, action) when the primary settled a conflict
  mismatch TEXT,                   -- JSON (txn_id, why) when the check found one
  PRIMARY KEY (report_id, n)
) WITHOUT ROWID;
""",
    )


@migrations()
def m006_journal_use(conn: sqlite_utils.Database) -> None:
    run_script(
        conn,
        """
-- What a txn_id was first used for (siteserver.domain.use_of), bound as on the primary.
ALTER TABLE journal ADD COLUMN use TEXT;
""",
    )


@migrations()
def m007_home_sites(conn: sqlite_utils.Database) -> None:
    run_script(
        conn,
        """
-- Mirrored as the primary has it (which sites a user belongs to).
ALTER TABLE users ADD COLUMN home_sites TEXT NOT NULL DEFAULT '[]';
""",
    )
