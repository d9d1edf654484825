"""SQLite access for both roles. One module per aggregate; `Database` owns every connection."""

from .db import Database, connect, read_transaction

__all__ = ["Database", "connect", "read_transaction"]
