"""Users, their credentials (hashes only), personal and shared accounts, memberships."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from siteserver.domain import Conflict, Invalid, NotFound
from siteserver.domain.merge import NamedAccount


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user as the device API needs it (hashes included: never sent anywhere)."""

    username: str
    full_name: str
    email: str | None
    account_id: int
    balance_cents: int
    restricted: bool
    overdraft_cents: int
    disabled: bool
    password_hash: str | None
    pin_hash: str | None
    home_sites: tuple[str, ...] = ()

    def public(self) -> dict[str, object]:
        return {
            "username": self.username,
            "full_name": self.full_name,
            "email": self.email,
            "balance_cents": self.balance_cents,
            "restricted": self.restricted,
            "overdraft_cents": self.overdraft_cents,
            "disabled": self.disabled,
            "home_sites": list(self.home_sites),
        }


_USER_SELECT = (
    "SELECT u.username, u.full_name, u.email, u.account_id, a.balance_cents, a.restricted,"
    " a.overdraft_cents, u.disabled, u.password_hash, u.pin_hash, u.home_sites"
    " FROM users u JOIN accounts a ON a.id = u.account_id"
)


def _user(row: Any) -> UserRecord | None:
    if row is None:
        return None
    u, full, email, acc, bal, restricted, overdraft, disabled, pw, pin, home = row
    sites = tuple(json.loads(home)) if home else ()
    return UserRecord(u, full, email, acc, bal, bool(restricted), overdraft, bool(disabled), pw, pin, sites)


_UNIT_SEP = "\x1f"  # names cannot hold control characters (siteserver.contract.NAME_PATTERN)
_LOGIN_SELECT = _USER_SELECT.replace(
    "SELECT u.username,",
    "SELECT (SELECT group_concat(sa.name, char(31)) FROM shared_account_members m"
    " JOIN accounts sa ON sa.id = m.account_id"
    " WHERE m.username = u.username AND sa.closed_at IS NULL), u.username,",
)
_LOGIN_WHERE = {
    "card": " JOIN user_cards c ON c.username = u.username WHERE c.card_hash = ?",
    "id_number": " WHERE u.id_number_hash = ?",
    "username": " WHERE u.username = ?",
}


def login_lookup(conn: sqlite_utils.Database, by: str, value: str) -> tuple[UserRecord | None, list[str]]:
    """A login's whole read in one statement: the user found by card hash, ID number hash or
    username, and the shared accounts they may charge (sorted)."""
    row = conn.execute(_LOGIN_SELECT + _LOGIN_WHERE[by], [value]).fetchone()
    if row is None:
        return None, []
    shared = sorted(row[0].split(_UNIT_SEP)) if row[0] else []
    return _user(row[1:]), shared


def get_user(conn: sqlite_utils.Database, username: str) -> UserRecord | None:
    return _user(conn.execute(_USER_SELECT + " WHERE u.username = ?", [username]).fetchone())


def require_user(conn: sqlite_utils.Database, username: str) -> UserRecord:
    user = get_user(conn, username)
    if user is None:
        raise NotFound(f"no user named {username!r}")
    return user


def user_by_card(conn: sqlite_utils.Database, card_hash: str) -> UserRecord | None:
    return _user(
        conn.execute(
            _USER_SELECT + " JOIN user_cards c ON c.username = u.username WHERE c.card_hash = ?",
            [card_hash],
        ).fetchone()
    )


def user_by_id_number(conn: sqlite_utils.Database, id_number_hash: str) -> UserRecord | None:
    return _user(conn.execute(_USER_SELECT + " WHERE u.id_number_hash = ?", [id_number_hash]).fetchone())


@dataclass(frozen=True, slots=True)
class UserChanges:
    """Fields to set; `None` means leave alone. Secrets arrive already hashed."""

    full_name: str | None = None
    email: str | None = None
    clear_email: bool = False
    password_hash: str | None = None
    clear_password: bool = False
    pin_hash: str | None = None
    clear_pin: bool = False
    card_hashes: Sequence[str] | None = None
    id_number_hash: str | None = None
    clear_id_number: bool = False
    restricted: bool | None = None
    overdraft_cents: int | None = None
    disabled: bool | None = None
    home_sites: Sequence[str] | None = None


def create_user(conn: sqlite_utils.Database, username: str, changes: UserChanges, *, now: str) -> int:
    """Insert a user with a personal account at balance 0; returns the account id."""
    if get_user(conn, username) is not None:
        raise Conflict(f"a user named {username!r} already exists")
    cur = conn.execute(
        "INSERT INTO accounts (kind, name, balance_cents, restricted, overdraft_cents, created_at)"
        " VALUES ('personal', ?, 0, ?, ?, ?)",
        [
            username,
            int(changes.restricted if changes.restricted is not None else True),
            changes.overdraft_cents or 0,
            now,
        ],
    )
    account_id = int(cur.lastrowid or 0)
    conn.execute(
        "INSERT INTO users (username, account_id, full_name, created_at, updated_at) VALUES (?, ?, '', ?, ?)",
        [username, account_id, now, now],
    )
    update_user(conn, username, changes, now=now)
    return account_id


def update_user(conn: sqlite_utils.Database, username: str, c: UserChanges, *, now: str) -> None:
    user = require_user(conn, username)
    sets: dict[str, object] = {}
    if c.full_name is not None:
        sets["full_name"] = c.full_name
    if c.email is not None or c.clear_email:
        sets["email"] = c.email
    if c.password_hash is not None or c.clear_password:
        sets["password_hash"] = c.password_hash
    if c.pin_hash is not None or c.clear_pin:
        sets["pin_hash"] = c.pin_hash
    if c.disabled is not None:
        sets["disabled"] = int(c.disabled)
    if c.home_sites is not None:
        sets["home_sites"] = json.dumps(sorted(set(c.home_sites)))
    if c.id_number_hash is not None or c.clear_id_number:
        if c.id_number_hash is not None:
            other = user_by_id_number(conn, c.id_number_hash)
            if other is not None and other.username != username:
                raise Conflict("that ID number already belongs to another user")
        sets["id_number_hash"] = c.id_number_hash
    sets["updated_at"] = now
    assignments = ", ".join(f"{k} = ?" for k in sets)
    conn.execute(f"UPDATE users SET {assignments} WHERE username = ?", [*sets.values(), username])
    acc_sets: dict[str, object] = {}
    if c.restricted is not None:
        acc_sets["restricted"] = int(c.restricted)
    if c.overdraft_cents is not None:
        acc_sets["overdraft_cents"] = c.overdraft_cents
    if acc_sets:
        assignments = ", ".join(f"{k} = ?" for k in acc_sets)
        conn.execute(f"UPDATE accounts SET {assignments} WHERE id = ?", [*acc_sets.values(), user.account_id])
    if c.card_hashes is not None:
        conn.execute("DELETE FROM user_cards WHERE username = ?", [username])
        for h in dict.fromkeys(c.card_hashes):
            owner = conn.execute("SELECT username FROM user_cards WHERE card_hash = ?", [h]).fetchone()
            if owner is not None:
                raise Conflict("a card number already belongs to another user")
            conn.execute("INSERT INTO user_cards (card_hash, username) VALUES (?, ?)", [h, username])


def delete_user(conn: sqlite_utils.Database, username: str, *, now: str) -> None:
    """The user and credentials go; the account closes but keeps its ledger for reports."""
    user = require_user(conn, username)
    conn.execute("DELETE FROM users WHERE username = ?", [username])
    conn.execute("UPDATE accounts SET closed_at = ? WHERE id = ?", [now, user.account_id])


# -- shared accounts ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SharedAccountRecord:
    account_id: int
    name: str
    balance_cents: int
    restricted: bool
    overdraft_cents: int
    members: tuple[str, ...]

    def public(self) -> dict[str, object]:
        return {
            "name": self.name,
            "balance_cents": self.balance_cents,
            "restricted": self.restricted,
            "overdraft_cents": self.overdraft_cents,
            "members": list(self.members),
        }


def get_shared_account(conn: sqlite_utils.Database, name: str) -> SharedAccountRecord | None:
    row = conn.execute(
        "SELECT id, name, balance_cents, restricted, overdraft_cents FROM accounts"
        " WHERE kind = 'shared' AND name = ? AND closed_at IS NULL",
        [name],
    ).fetchone()
    if row is None:
        return None
    members = tuple(
        r[0]
        for r in conn.execute(
            "SELECT username FROM shared_account_members WHERE account_id = ? ORDER BY username",
            [row[0]],
        )
    )
    return SharedAccountRecord(row[0], row[1], row[2], bool(row[3]), row[4], members)


def create_shared_account(
    conn: sqlite_utils.Database,
    name: str,
    *,
    restricted: bool,
    overdraft_cents: int,
    members: Sequence[str],
    now: str,
) -> int:
    if get_shared_account(conn, name) is not None:
        raise Conflict(f"a shared account named {name!r} already exists")
    cur = conn.execute(
        "INSERT INTO accounts (kind, name, balance_cents, restricted, overdraft_cents, created_at)"
        " VALUES ('shared', ?, 0, ?, ?, ?)",
        [name, int(restricted), overdraft_cents, now],
    )
    account_id = int(cur.lastrowid or 0)
    _set_members(conn, account_id, members)
    return account_id


def _set_members(conn: sqlite_utils.Database, account_id: int, members: Sequence[str]) -> None:
    """The account's members are exactly these users from now on."""
    conn.execute("DELETE FROM shared_account_members WHERE account_id = ?", [account_id])
    for username in dict.fromkeys(members):
        if get_user(conn, username) is None:
            raise Invalid(f"member {username!r} is not a user")
        conn.execute(
            "INSERT INTO shared_account_members (account_id, username) VALUES (?, ?)",
            [account_id, username],
        )


def require_shared_account(conn: sqlite_utils.Database, name: str) -> SharedAccountRecord:
    account = get_shared_account(conn, name)
    if account is None:
        raise NotFound(f"no shared account named {name!r}")
    return account


def update_shared_account(
    conn: sqlite_utils.Database,
    name: str,
    *,
    new_name: str | None = None,
    restricted: bool | None = None,
    overdraft_cents: int | None = None,
    members: Sequence[str] | None = None,
) -> int:
    """Change what is given (`members` replaces the list); returns the account's id."""
    account = require_shared_account(conn, name)
    if new_name is not None and new_name != name:
        if get_shared_account(conn, new_name) is not None:
            raise Conflict(f"a shared account named {new_name!r} already exists")
        conn.execute("UPDATE accounts SET name = ? WHERE id = ?", [new_name, account.account_id])
    if restricted is not None:
        conn.execute("UPDATE accounts SET restricted = ? WHERE id = ?", [int(restricted), account.account_id])
    if overdraft_cents is not None:
        conn.execute(
            "UPDATE accounts SET overdraft_cents = ? WHERE id = ?", [overdraft_cents, account.account_id]
        )
    if members is not None:
        _set_members(conn, account.account_id, members)
    return account.account_id


def close_shared_account(conn: sqlite_utils.Database, name: str, *, now: str) -> None:
    """The account closes (no more charges, its name free again) but keeps its ledger for reports."""
    account = require_shared_account(conn, name)
    conn.execute("DELETE FROM shared_account_members WHERE account_id = ?", [account.account_id])
    conn.execute("UPDATE accounts SET closed_at = ? WHERE id = ?", [now, account.account_id])


def shared_accounts_of(conn: sqlite_utils.Database, username: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT a.name FROM shared_account_members m JOIN accounts a ON a.id = m.account_id"
            " WHERE m.username = ? AND a.closed_at IS NULL ORDER BY a.name",
            [username],
        )
    ]


def account_by_label(conn: sqlite_utils.Database, label: str) -> int | None:
    """The open account an account label names (`user:<username>` / `shared:<name>`, as
    store.ledger.account_label writes them), or None."""
    prefix, _, name = label.partition(":")
    kind = {"user": "personal", "shared": "shared"}.get(prefix)
    if kind is None:
        return None
    row = conn.execute(
        "SELECT id FROM accounts WHERE kind = ? AND name = ? AND closed_at IS NULL", [kind, name]
    ).fetchone()
    return None if row is None else int(row[0])


def named_account(conn: sqlite_utils.Database, label: str, spender: str | None) -> NamedAccount:
    """What the primary knows now of the account `label` names and of `spender` (None: the
    personal account's user), for booking a merged charge (siteserver.domain.merge.book)."""
    prefix, _, name = label.partition(":")
    kind = "personal" if prefix == "user" else "shared"
    open_id = account_by_label(conn, label)
    closed = open_id is None and (
        conn.execute(
            "SELECT 1 FROM accounts WHERE kind = ? AND name = ? AND closed_at IS NOT NULL LIMIT 1",
            [kind, name],
        ).fetchone()
        is not None
    )
    if kind == "personal":
        spender = name
        disabled = conn.execute("SELECT disabled FROM users WHERE username = ?", [name]).fetchone()
        return NamedAccount(
            label, open_id is not None, closed, bool(disabled and disabled[0]), spender, disabled is not None
        )
    known = spender is not None and (
        conn.execute("SELECT 1 FROM users WHERE username = ?", [spender]).fetchone() is not None
    )
    # Only a user of the primary can have stopped being a member (a charge by an unknown user went
    # to a shared account by policy; a deleted user's is judged by the account alone).
    member = (
        not known
        or open_id is None
        or conn.execute(
            "SELECT 1 FROM shared_account_members WHERE account_id = ? AND username = ?", [open_id, spender]
        ).fetchone()
        is not None
    )
    return NamedAccount(label, open_id is not None, closed, False, spender, known, member)


def open_fallback_account(conn: sqlite_utils.Database, name: str, *, now: str) -> int:
    """The shared account `name` that takes charges whose account is gone; created (unrestricted,
    no members) when missing, so that a merged charge is never dropped for want of it."""
    account_id = account_by_label(conn, f"shared:{name}")
    if account_id is not None:
        return account_id
    return create_shared_account(conn, name, restricted=False, overdraft_cents=0, members=(), now=now)


def charge_account(
    conn: sqlite_utils.Database, user: UserRecord, account: str | None
) -> tuple[int | None, str | None]:
    """The account a charge goes to: the personal one, or a shared one the user is a member of;
    (None, why) when the user may not charge the named one."""
    if account is None:
        return user.account_id, None
    shared = get_shared_account(conn, account)
    if shared is None or user.username not in shared.members:
        return None, f"{account!r} is not a shared account this user may charge"
    return shared.account_id, None


def balance_of(conn: sqlite_utils.Database, account_id: int) -> int:
    return int(conn.execute("SELECT balance_cents FROM accounts WHERE id = ?", [account_id]).fetchone()[0])
