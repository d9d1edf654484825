"""What only the primary does: the HA guard and the authoritative ledger's flows."""

from .app import PrimaryServer, run
from .guard import DuplicateServer, Guard, Role

__all__ = ["DuplicateServer", "Guard", "PrimaryServer", "Role", "run"]
