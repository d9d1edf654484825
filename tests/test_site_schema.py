"""The site's mirrored tables have exactly the primary's columns, in the same order."""

from __future__ import annotations

from pathlib import Path

from migrations.primary import migrations as primary_migrations
from migrations.site import migrations as site_migrations
from siteserver.store import Database
from sync.mirrored import MIRRORED_TABLES


def _columns(path: Path, migrations: object) -> dict[str, list[tuple[object, ...]]]:
    db = Database(path)
    db.open(migrations)
    try:
        return db.read_sync(
            lambda d: {
                t: [tuple(r) for r in d.execute(f"PRAGMA table_info({t})").fetchall()]
                for t in MIRRORED_TABLES
            }
        )
    finally:
        db.close()


def test_mirrored_columns_equal_the_primarys(tmp_path: Path) -> None:
    primary = _columns(tmp_path / "primary.db", primary_migrations)
    site = _columns(tmp_path / "site.db", site_migrations)
    for table in MIRRORED_TABLES:
        assert primary[table], table
        # position, name, declared type, NOT NULL, default and primary-key position: all equal.
        assert site[table] == primary[table], table


def test_site_tables(tmp_path: Path) -> None:
    db = Database(tmp_path / "site.db")
    db.open(site_migrations)
    try:
        names = db.read_sync(lambda d: set(d.table_names()))
    finally:
        db.close()
    assert {"sync_state", "journal", "mode_changes"} <= names
    assert not {"ledger", "sites", "change_log", "ha_lease"} & names
