"""The site's mirrored tables have exactly the primary's columns, in the same order."""

from __future__ import annotations

from pathlib import Path

from migrations.mirrored import MIRRORED_TABLES
from migrations.primary import migrations as primary_migrations
from migrations.site import migrations as site_migrations
from tests.kit.primary import open_database


def _columns(path: Path, migrations: object) -> dict[str, list[tuple[object, ...]]]:
    with open_database(path, migrations) as db:
        return db.read_sync(
            lambda d: {
                t: [tuple(r) for r in d.execute(f"PRAGMA table_info({t})").fetchall()]
                for t in MIRRORED_TABLES
            }
        )


def test_mirrored_columns_equal_the_primarys(tmp_path: Path) -> None:
    primary = _columns(tmp_path / "primary.db", primary_migrations)
    site = _columns(tmp_path / "site.db", site_migrations)
    for table in MIRRORED_TABLES:
        assert primary[table], table
        # position, name, declared type, NOT NULL, default and primary-key position: all equal.
        assert site[table] == primary[table], table


def test_site_tables(tmp_path: Path) -> None:
    with open_database(tmp_path / "site.db", site_migrations) as db:
        names = db.read_sync(lambda d: set(d.table_names()))
    assert {"sync_state", "journal", "mode_changes"} <= names
    assert not {"ledger", "sites", "change_log", "ha_lease"} & names
