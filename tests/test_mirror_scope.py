"""A branch with `mirror_scope = "home"` mirrors only its own people (users whose `home_sites` name
it: their cards, memberships and personal accounts); the feed and the snapshot carry nothing of
anyone else to it, a user who moves in or away is added or removed whole, and a change of scope
bootstraps the mirror again (docs/security.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from siteserver import sample
from siteserver.store import Database, accounts, feed, read_transaction
from siteserver.timeutil import now_iso
from tests.kit.primary import Primary
from tests.kit.site import BRANCH, SITE, Branch, configure_site, eventually

STAFF = {
    "homer": {"home_sites": [SITE], "card_numbers": ["7001"]},
    "roamer": {"card_numbers": ["7002"]},
    "visitor": {"home_sites": ["head-office"], "card_numbers": ["7003"]},
}


def people(branch: Branch) -> dict[str, Any]:
    """What the site's mirror holds of people: users, card owners, personal accounts, members."""
    return {
        "users": {u for (u,) in branch.query("SELECT username FROM users")},
        "cards": {u for (u,) in branch.query("SELECT username FROM user_cards")},
        "personal": {n for (n,) in branch.query("SELECT name FROM accounts WHERE kind = 'personal'")},
        "members": {u for (u,) in branch.query("SELECT username FROM shared_account_members")},
    }


def only(*names: str) -> dict[str, Any]:
    s = set(names)
    return {"users": s, "cards": s, "personal": s, "members": s}


def test_a_home_scope_branch_mirrors_only_its_own_people(primary: Primary, tmp_path: Path) -> None:
    with primary.admin() as c:
        world = sample.build(c, BRANCH)
        for username, body in STAFF.items():
            assert c.post("/api/admin/v1/users", json={"username": username, **body}).status_code == 201
        r = c.post("/api/admin/v1/shared-accounts", json={"name": "Projects", "members": list(STAFF)})
        assert r.status_code == 201, r.text
        assert c.get("/api/admin/v1/users/homer").json()["home_sites"] == [SITE]
        # Bad input is refused with a clear error.
        bad = c.patch("/api/admin/v1/users/homer", json={"home_sites": SITE})
        assert bad.status_code == 422

    branch = configure_site(primary, tmp_path, world=world, sync={"mirror_scope": "home"}).start()
    try:
        eventually(lambda: people(branch) == only("homer"), 15, "only homer mirrored")
        # Shared accounts go to every site.
        assert branch.query("SELECT 1 FROM accounts WHERE kind = 'shared' AND name = 'Projects'")
        # The branch's MFD knows homer's card and not the visitor's, with the WAN up.
        with branch.client(branch.mono_device) as c:
            assert c.post("/api/device/v1/login", json={"card_number": "7001"}).status_code == 200
            assert c.post("/api/device/v1/login", json={"card_number": "7003"}).status_code == 401
        with primary.admin() as c:
            # roamer moves in, homer moves away: added and removed whole, cards and all.
            assert c.patch("/api/admin/v1/users/roamer", json={"home_sites": [SITE]}).status_code == 200
            assert c.patch("/api/admin/v1/users/homer", json={"home_sites": None}).status_code == 200
            eventually(lambda: people(branch) == only("roamer"), 15, "roamer in, homer out")
            # A new card for roamer follows; a new card for the visitor does not arrive.
            r = c.patch("/api/admin/v1/users/roamer", json={"card_numbers": ["7002", "7004"]})
            assert r.status_code == 200
            assert c.patch("/api/admin/v1/users/visitor", json={"card_numbers": ["7005"]}).status_code == 200
            eventually(lambda: len(branch.query("SELECT 1 FROM user_cards")) == 2, 15, "roamer's new card")
            # Deleting a home user at the primary removes them at the branch.
            assert c.delete("/api/admin/v1/users/roamer").status_code == 204
            eventually(lambda: people(branch)["users"] == set(), 15, "roamer deleted")
            assert people(branch) == {**only()}
            assert c.patch("/api/admin/v1/users/homer", json={"home_sites": [SITE]}).status_code == 200
            eventually(lambda: people(branch) == only("homer"), 15, "homer back")
        branch.process.stop()

        # A change of scope bootstraps the mirror again: everyone, then only homer again.
        branch.config.write_text(
            branch.config.read_text().replace('mirror_scope = "home"', 'mirror_scope = "all"')
        )
        branch.start()
        eventually(lambda: people(branch)["users"] >= {"homer", "visitor"}, 15, "everyone mirrored")
        branch.process.stop()
        branch.config.write_text(
            branch.config.read_text().replace('mirror_scope = "all"', 'mirror_scope = "home"')
        )
        branch.start()
        eventually(lambda: people(branch) == only("homer"), 15, "only homer again")
    finally:
        branch.process.stop()


def test_the_feed_tells_a_home_site_nothing_of_anyone_else(fresh_db: Database) -> None:
    """Every change of a stranger (created, carded, moved between other sites, deleted) leaves no
    trace in a home-scope site's pages: not the username, not a card hash."""

    def write(fn: Any) -> None:
        fresh_db.write_sync(fn)

    def page(after: int) -> dict[str, Any]:
        with read_transaction(fresh_db.path) as conn:
            return feed.changes_page(conn, after, 1000, "branch-01")

    def stranger(conn: Any) -> None:
        now = now_iso()
        changes = accounts.UserChanges(card_hashes=["hash-of-stranger"], home_sites=["head-office"])
        accounts.create_user(conn, "stranger", changes, now=now)
        accounts.update_user(conn, "stranger", accounts.UserChanges(home_sites=["branch-02"]), now=now)
        accounts.update_user(conn, "stranger", accounts.UserChanges(card_hashes=["hash-2"]), now=now)
        accounts.delete_user(conn, "stranger", now=now)

    write(stranger)
    text = json.dumps(page(0))
    assert "stranger" not in text and "hash-" not in text, text

    # Someone at home is sent with their card; once moved away, deleted by name only.
    def local(conn: Any) -> None:
        changes = accounts.UserChanges(card_hashes=["hash-local"], home_sites=["branch-01"])
        accounts.create_user(conn, "local", changes, now=now_iso())

    with read_transaction(fresh_db.path) as conn:
        cursor = feed.max_seq(conn)
    write(local)
    got = page(cursor)
    rows = {(c["table"], c["row"] is not None) for c in got["changes"]}
    assert {("users", True), ("user_cards", True), ("accounts", True)} <= rows
    write(
        lambda conn: accounts.update_user(conn, "local", accounts.UserChanges(home_sites=[]), now=now_iso())
    )
    moved = page(got["cursor"])
    assert [(c["table"], c["pk"], c["row"]) for c in moved["changes"] if c["table"] == "users"] == [
        ("users", ["local"], None)
    ]
    assert "hash-local" not in json.dumps(moved)
