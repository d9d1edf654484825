"""The primary pair's shared state: the lease row (`ha_lease`: holder, epoch, beat) and one row per
member (`ha_members`: its instance, host, pid and beat, to tell a restart from a live clone).
The HA guard (siteserver.primary.guard) decides; these only read and write, in its transactions."""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

#: why a member whose lease was taken over refuses to write
REPLACED = "this application server was replaced by another active member"


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str | None  # the active member's server uuid; None: free
    epoch: int  # the fencing token, one more with every takeover
    beat: int  # moves with every renewal: a passive member watches it

    def held_by(self, server_uuid: str, epoch: int) -> bool:
        """The lease is still this member's, at this epoch: its writes may go on."""
        return self.holder == server_uuid and self.epoch == epoch


@dataclass(frozen=True, slots=True)
class Member:
    instance_id: str
    host_id: str
    pid: int
    beat: int


def read_lease(conn: sqlite_utils.Database) -> Lease:
    holder, epoch, beat = conn.execute(
        "SELECT holder_uuid, epoch, beat FROM ha_lease WHERE id = 1"
    ).fetchone()
    return Lease(holder, int(epoch), int(beat))


def take_lease(conn: sqlite_utils.Database, server_uuid: str, now: str) -> int:
    """Hold the lease from now, with a new epoch; returns that epoch."""
    conn.execute(
        "UPDATE ha_lease SET holder_uuid = ?, epoch = epoch + 1, beat = beat + 1, renewed_at = ?"
        " WHERE id = 1",
        [server_uuid, now],
    )
    return read_lease(conn).epoch


def renew_lease(conn: sqlite_utils.Database, now: str) -> None:
    conn.execute("UPDATE ha_lease SET beat = beat + 1, renewed_at = ? WHERE id = 1", [now])


def free_lease(conn: sqlite_utils.Database, server_uuid: str, epoch: int) -> None:
    """Give the lease back, if this member still holds it at this epoch."""
    conn.execute(
        "UPDATE ha_lease SET holder_uuid = NULL WHERE id = 1 AND holder_uuid = ? AND epoch = ?",
        [server_uuid, epoch],
    )


def read_member(conn: sqlite_utils.Database, server_uuid: str) -> Member | None:
    row = conn.execute(
        "SELECT instance_id, host_id, pid, beat FROM ha_members WHERE server_uuid = ?", [server_uuid]
    ).fetchone()
    return None if row is None else Member(row[0], row[1], int(row[2]), int(row[3]))


def claim_member(
    conn: sqlite_utils.Database, server_uuid: str, member: Member, *, role: str, now: str
) -> None:
    """This process is the member with this server uuid from now on (its beat starts again)."""
    conn.execute(
        "INSERT INTO ha_members (server_uuid, instance_id, host_id, pid, role, started_at, seen_at, beat)"
        " VALUES (?,?,?,?,?,?,?,0) ON CONFLICT(server_uuid) DO UPDATE SET"
        " instance_id = excluded.instance_id, host_id = excluded.host_id, pid = excluded.pid,"
        " role = excluded.role, started_at = excluded.started_at, seen_at = excluded.seen_at, beat = 0",
        [server_uuid, member.instance_id, member.host_id, member.pid, role, now, now],
    )


def beat_member(
    conn: sqlite_utils.Database, server_uuid: str, instance_id: str, *, role: str, now: str
) -> bool:
    """One beat of this member; False when another instance has claimed its server uuid."""
    cur = conn.execute(
        "UPDATE ha_members SET beat = beat + 1, seen_at = ?, role = ?"
        " WHERE server_uuid = ? AND instance_id = ?",
        [now, role, server_uuid, instance_id],
    )
    return bool(cur.rowcount)


def forget_member(conn: sqlite_utils.Database, server_uuid: str, instance_id: str) -> None:
    conn.execute(
        "DELETE FROM ha_members WHERE server_uuid = ? AND instance_id = ?", [server_uuid, instance_id]
    )
