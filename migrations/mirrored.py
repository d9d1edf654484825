"""What a site mirrors from the primary: these tables, with the same columns on both sides.

Ordered parents first, so a site applying rows in this order satisfies every foreign key. The
primary's change log (triggers made from this list) names a changed row by table and primary key;
the feed then carries that row as it is now, or its deletion.
"""

from __future__ import annotations

MIRRORED_TABLES: dict[str, tuple[str, ...]] = {
    "accounts": ("id",),
    "users": ("username",),
    "user_cards": ("card_hash",),
    "shared_account_members": ("account_id", "username"),
    "printers": ("name",),
    "findme_queues": ("site_id", "name"),
    "findme_members": ("site_id", "queue_name", "printer"),
    "devices": ("device_id",),
    "providers": ("provider_id",),
    "provider_printers": ("provider_id", "printer"),
    "settings": ("key",),
}


def change_log_triggers(table: str, pk: tuple[str, ...]) -> str:
    """SQL for the three triggers that record every change of `table` in `change_log`."""

    def key(alias: str) -> str:
        return "json_array(" + ", ".join(f"{alias}.{c}" for c in pk) + ")"

    moved = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in pk)
    return f"""
CREATE TRIGGER change_log_{table}_insert AFTER INSERT ON {table}
BEGIN INSERT INTO change_log (tbl, pk) VALUES ('{table}', {key("NEW")}); END;
CREATE TRIGGER change_log_{table}_update AFTER UPDATE ON {table}
BEGIN
  INSERT INTO change_log (tbl, pk) VALUES ('{table}', {key("NEW")});
  INSERT INTO change_log (tbl, pk) SELECT '{table}', {key("OLD")} WHERE {moved};
END;
CREATE TRIGGER change_log_{table}_delete AFTER DELETE ON {table}
BEGIN INSERT INTO change_log (tbl, pk) VALUES ('{table}', {key("OLD")}); END;
"""
