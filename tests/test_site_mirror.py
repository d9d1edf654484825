"""The site's mirror: applying hand-made snapshot streams and change pages (no server), then a real
primary and a real `siteserver site run` process over loopback."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from migrations.site import migrations as site_migrations
from siteserver.domain import SecretHasher
from siteserver.site.identity import Identity
from siteserver.store import Database, sync_state
from sync import wire
from sync.client import SyncClient
from sync.endpoints import Endpoints
from sync.errors import SyncFailed
from sync.pull import Mirror, bootstrap
from sync.pull import apply_page as apply_changes
from tests.kit.model import Handler, model_client, model_endpoint
from tests.kit.primary import Primary, expect_error, open_database, site_row
from tests.kit.site import SITE, Branch, configure_site, eventually, query_site_db

# -- unit: hand-made snapshot streams and pages --------------------------------------------------

NOW = "2026-01-01T00:00:00.000Z"


def account(id_: int, name: str, balance: int = 0) -> dict[str, Any]:
    return {
        "id": id_,
        "kind": "personal",
        "name": name,
        "balance_cents": balance,
        "restricted": 1,
        "overdraft_cents": 0,
        "created_at": NOW,
        "closed_at": None,
        "last_seq": 0,
    }


def user(name: str, account_id: int, **kw: Any) -> dict[str, Any]:
    return {
        "username": name,
        "account_id": account_id,
        "full_name": name.title(),
        "email": None,
        "password_hash": None,
        "pin_hash": kw.get("pin_hash"),
        "id_number_hash": None,
        "disabled": kw.get("disabled", 0),
        "created_at": NOW,
        "updated_at": NOW,
    }


def snapshot_lines(cursor: int, rows: list[tuple[str, dict[str, Any]]], *, end: bool = True) -> bytes:
    lines = [{"type": "begin", "cursor": cursor, "tables": ["accounts", "users", "user_cards"]}]
    lines += [{"type": "row", "table": t, "row": r} for t, r in rows]
    if end:
        lines.append({"type": "end", "cursor": cursor, "rows": len(rows)})
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def snapshot_client(cursor: int, rows: list[tuple[str, dict[str, Any]]], *, end: bool = True) -> SyncClient:
    """A client whose primary answers every request with this snapshot stream."""
    body = snapshot_lines(cursor, rows, end=end)
    return model_client(lambda r: httpx.Response(200, content=body))


@pytest.fixture
def site_db(tmp_path: Path) -> Iterator[Database]:
    with open_database(tmp_path / "site.db", site_migrations) as db:
        yield db


def stored_cursor(db: Database) -> int | None:
    return db.read_sync(sync_state.bootstrapped_cursor)


def read_state(db: Database) -> dict[str, str]:
    """The site's `sync_state` table as it is stored."""
    return db.read_sync(lambda conn: dict(conn.execute("SELECT key, value FROM sync_state").fetchall()))


def apply_page(db: Database, after: int, page: dict[str, Any]) -> bool:
    """A page of changes as the primary sends it (parsed as the site's pull parses it)."""
    return apply_changes(db, after, wire.ChangesOut.model_validate(page))


def rows(db: Database, sql: str) -> list[tuple[Any, ...]]:
    return db.read_sync(lambda d: [tuple(r) for r in d.execute(sql).fetchall()])


def world_rows(n_users: int = 3) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(1, n_users + 1):
        out.append(("accounts", account(i, f"u{i}")))
    for i in range(1, n_users + 1):
        out.append(("users", user(f"u{i}", i, pin_hash=f"pin{i}")))
        out.append(("user_cards", {"card_hash": f"card{i}", "username": f"u{i}"}))
    return out


def test_bootstrap_in_batches_replaces_the_mirror(site_db: Database) -> None:
    client = snapshot_client(7, world_rows(5))  # 15 rows
    writes: list[int] = []
    real_write = site_db.write_sync

    def counting_write(fn: Any, **kw: Any) -> Any:
        writes.append(1)
        return real_write(fn, **kw)

    site_db.write_sync = counting_write  # type: ignore[method-assign]
    assert bootstrap(client, site_db, batch_rows=4) == 7
    site_db.write_sync = real_write  # type: ignore[method-assign]
    assert len(writes) == 4  # batches of 4, 4, 4, then 3 with the cursor: never all at once
    assert stored_cursor(site_db) == 7
    assert rows(site_db, "SELECT count(*) FROM users") == [(5,)]
    assert rows(site_db, "SELECT count(*) FROM user_cards") == [(5,)]
    first = read_state(site_db)["bootstrapped_at"]

    # A second bootstrap replaces everything: rows gone on the primary are gone here too.
    assert bootstrap(snapshot_client(9, world_rows(2)), site_db) == 9
    assert rows(site_db, "SELECT username FROM users ORDER BY 1") == [("u1",), ("u2",)]
    assert rows(site_db, "SELECT count(*) FROM accounts") == [(2,)]
    assert read_state(site_db)["bootstrapped_at"] >= first


def test_bootstrap_cut_short_is_not_a_bootstrap(site_db: Database) -> None:
    bootstrap(snapshot_client(3, world_rows(2)), site_db)
    cut = snapshot_client(8, world_rows(6), end=False)
    with pytest.raises(SyncFailed, match="end line"):
        bootstrap(cut, site_db, batch_rows=3)
    assert stored_cursor(site_db) is None  # retried on the next pull
    state = read_state(site_db)
    assert "cursor" not in state and "bootstrapped_at" not in state
    refused = model_client(lambda r: httpx.Response(503, json={"error": "not_active", "detail": "x"}))
    with pytest.raises(SyncFailed) as e:
        bootstrap(refused, site_db)
    assert e.value.status == 503


def test_pages_upsert_delete_and_keep_children(site_db: Database) -> None:
    bootstrap(snapshot_client(5, world_rows(2)), site_db)
    # An update of a parent (users) must not cascade to its children (user_cards).
    page = {
        "cursor": 8,
        "reset": False,
        "changes": [
            {"seq": 6, "table": "users", "pk": ["u1"], "row": user("u1", 1, pin_hash="new", disabled=1)},
            # A child before its parent in the same page: foreign keys are checked at commit.
            {
                "seq": 7,
                "table": "user_cards",
                "pk": ["card3"],
                "row": {"card_hash": "card3", "username": "u3"},
            },
            {"seq": 7, "table": "users", "pk": ["u3"], "row": user("u3", 3)},
            {"seq": 7, "table": "accounts", "pk": [3], "row": account(3, "u3", 500)},
            {"seq": 8, "table": "users", "pk": ["u2"], "row": None},
            {"seq": 8, "table": "user_cards", "pk": ["card2"], "row": None},
            {"seq": 8, "table": "no_such_table", "pk": ["x"], "row": {"x": 1}},
        ],
    }
    assert apply_page(site_db, 5, page) is True
    assert rows(site_db, "SELECT username, pin_hash, disabled FROM users ORDER BY 1") == [
        ("u1", "new", 1),
        ("u3", None, 0),
    ]
    assert rows(site_db, "SELECT card_hash, username FROM user_cards ORDER BY 1") == [
        ("card1", "u1"),
        ("card3", "u3"),
    ]
    assert rows(site_db, "SELECT balance_cents FROM accounts WHERE id = 3") == [(500,)]
    assert stored_cursor(site_db) == 8
    # A page asked after an older cursor (a racing pull) is not applied.
    stale = {
        "cursor": 9,
        "reset": False,
        "changes": [{"seq": 9, "table": "users", "pk": ["u1"], "row": None}],
    }
    assert apply_page(site_db, 5, stale) is False
    assert rows(site_db, "SELECT count(*) FROM users") == [(2,)]
    assert stored_cursor(site_db) == 8


def test_a_page_that_breaks_a_foreign_key_changes_nothing(site_db: Database) -> None:
    bootstrap(snapshot_client(5, world_rows(1)), site_db)
    bad = {
        "cursor": 6,
        "reset": False,
        "changes": [
            {"seq": 6, "table": "user_cards", "pk": ["c9"], "row": {"card_hash": "c9", "username": "ghost"}}
        ],
    }
    with pytest.raises(sqlite3.IntegrityError):
        apply_page(site_db, 5, bad)
    assert stored_cursor(site_db) == 5
    assert rows(site_db, "SELECT count(*) FROM user_cards") == [(1,)]


class FakePrimary:
    """Answers snapshot and changes from lists; fails on demand."""

    def __init__(self) -> None:
        self.snapshot = snapshot_lines(5, world_rows(1))
        self.pages: list[dict[str, Any]] = []
        self.fail = 0
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.fail:
            self.fail -= 1
            raise httpx.ConnectError("refused")
        self.calls.append(request.url.path)  # answered calls only
        if request.url.path.endswith("/snapshot"):
            return httpx.Response(200, content=self.snapshot)
        if self.pages:
            return httpx.Response(200, json=self.pages.pop(0))
        after = int(request.url.params["after"])
        return httpx.Response(200, json={"cursor": after, "reset": False, "changes": []})


def test_follower_backs_off_resets_and_never_dies(site_db: Database) -> None:
    fake = FakePrimary()
    fake.fail = 2
    endpoints = Endpoints([model_endpoint(fake)])
    stop = threading.Event()
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)

    mirror = Mirror(site_db, endpoints, wait_secs=0.01, stop=stop, sleep=sleep)
    fake.pages = [
        {"cursor": 6, "reset": False, "changes": [{"seq": 6, "table": "users", "pk": ["u1"], "row": None}]},
        {"cursor": 0, "reset": True, "changes": []},
    ]
    t = threading.Thread(target=mirror.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and fake.calls.count("/api/sync/v1/snapshot") < 2:
        time.sleep(0.01)
    stop.set()
    t.join(5)
    assert not t.is_alive()
    assert sleeps[:2] == [0.5, 1.0]  # backed off after the two refused connections
    assert fake.calls.count("/api/sync/v1/snapshot") == 2  # the first, and after the reset
    assert rows(site_db, "SELECT username FROM users") == [("u1",)]  # the snapshot again
    assert endpoints.view().active == "http://primary.test"


# -- integration: a real primary and a real site process -----------------------------------------


@pytest.fixture
def site_setup(primary: Primary, tmp_path: Path) -> Iterator[Branch]:
    """A bare site on the primary, configured and enrolled (not started)."""
    site = configure_site(primary, tmp_path)
    yield site
    site.process.stop()


def site_query(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if not (data_dir / "site.db").exists():
        return []
    return query_site_db(data_dir, sql, params)


def test_site_mirrors_the_primary(primary: Primary, site_setup: Branch) -> None:
    data = site_setup.data_dir
    with primary.admin() as c:
        r = c.post(
            "/api/admin/v1/users",
            json={"username": "alice", "pin": "1234", "card_numbers": ["CARD-0001"], "balance_cents": 500},
        )
        assert r.status_code == 201, r.text
    site = site_setup.start().process
    health = httpx.get(site.url + "/api/health/site-server/status", timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "OK", "mode": "online"}

    card = SecretHasher(Identity(data).load_pepper()).card_hash("CARD-0001")
    eventually(
        lambda: (
            site_query(data, "SELECT username FROM user_cards WHERE card_hash = ?", (card,)) == [("alice",)]
        ),
        what="alice's card in the mirror",
    )
    pin_before = site_query(data, "SELECT pin_hash FROM users WHERE username = 'alice'")[0][0]
    assert pin_before

    admin = {"Authorization": f"Bearer {site_setup.admin_token}"}
    with primary.admin() as c:
        assert c.patch("/api/admin/v1/users/alice", json={"pin": "9876"}).status_code == 200
        eventually(
            lambda: (
                site_query(data, "SELECT pin_hash FROM users WHERE username = 'alice'")[0][0] != pin_before
            ),
            what="new PIN hash mirrored",
        )
        assert c.patch("/api/admin/v1/users/alice", json={"disabled": True}).status_code == 200
        eventually(
            lambda: site_query(data, "SELECT disabled FROM users WHERE username = 'alice'") == [(1,)],
            what="disabled mirrored",
        )
        # The card stays through the user's updates (no REPLACE cascading to children).
        assert site_query(data, "SELECT count(*) FROM user_cards WHERE username = 'alice'") == [(1,)]

        st = httpx.get(site.url + "/api/admin/v1/status", headers=admin, timeout=5)
        assert st.status_code == 200, st.text
        body = st.json()
        assert set(body) == {
            "site_id",
            "mode",
            "since",
            "mode_cause",
            "primary",
            "sync",
            "journal",
            "merge",
            "outages",
            "offline_exposure",
            "tls",
        }
        assert body["tls"] == {
            "serving": "http",
            "certificate": None,
            "fingerprint": None,
            "generated": False,
        }
        assert body["site_id"] == SITE and body["mode"] == "online" and body["since"]
        assert body["mode_cause"] is None  # a new site starts online, with no change of mode
        assert body["primary"]["active"] == primary.url
        assert body["primary"]["endpoints"] == [
            {
                "url": primary.url,
                "state": "active",
                "last_ok_at": body["primary"]["endpoints"][0]["last_ok_at"],
                "note": None,  # no balancer sending it to the passive member
            }
        ]
        assert body["primary"]["endpoints"][0]["last_ok_at"]
        assert set(body["sync"]) == {"cursor", "last_sync_at", "lag_secs"}
        assert body["sync"]["cursor"] > 0 and body["sync"]["last_sync_at"]
        assert body["journal"] == {
            **dict.fromkeys(
                ("pending", "merged", "rejected", "applied", "applied_with_conflict", "duplicate"), 0
            ),
            "oldest_pending_at": None,
        }
        assert body["merge"] == {
            "running": False,
            "started_at": None,
            "finished_at": None,
            "done": 0,
            "total": 0,
            "rate_per_sec": None,
        }
        assert body["outages"] == []
        expect_error(httpx.get(site.url + "/api/admin/v1/status", timeout=5), 401)
        expect_error(
            httpx.get(site.url + "/api/admin/v1/status", headers={"Authorization": "Bearer nope"}, timeout=5),
            401,
        )

        pulled = httpx.post(site.url + "/api/admin/v1/sync", headers=admin, timeout=30)
        assert pulled.status_code == 200, pulled.text
        assert pulled.json()["cursor"] >= body["sync"]["cursor"]

        # The heartbeat reached the primary.
        row = site_row(primary, SITE)
        assert row["last_contact_at"] and row["mode"] == "online" and row["journal_backlog"] == 0

        assert c.delete("/api/admin/v1/users/alice").status_code == 204
        eventually(
            lambda: site_query(data, "SELECT count(*) FROM users WHERE username = 'alice'") == [(0,)],
            what="deleted user gone",
        )
        assert site_query(data, "SELECT count(*) FROM user_cards WHERE card_hash = ?", (card,)) == [(0,)]

        # SIGKILL, a change meanwhile, restart: it catches up from its stored cursor.
        boot = site_query(data, "SELECT value FROM sync_state WHERE key = 'bootstrapped_at'")
        assert boot
        site.kill()
        r = c.post("/api/admin/v1/users", json={"username": "bob", "card_numbers": ["CARD-0002"]})
        assert r.status_code == 201, r.text
        site = site_setup.start().process
        eventually(
            lambda: site_query(data, "SELECT count(*) FROM users WHERE username = 'bob'") == [(1,)],
            what="bob after the restart",
        )
        assert site_query(data, "SELECT value FROM sync_state WHERE key = 'bootstrapped_at'") == boot

    # SIGTERM stops it cleanly.
    site.signal(signal.SIGTERM)
    assert site.wait(timeout=20) == 0


def test_endpoints_rotate_past_down_and_passive_members(site_db: Database) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    def passive(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": "not_active", "detail": "passive"})

    fake = FakePrimary()
    urls = ["http://a.test", "http://b.test", "http://c.test"]
    handlers: list[Handler] = [down, passive, fake]
    endpoints = Endpoints([model_endpoint(h, url=u) for u, h in zip(urls, handlers, strict=True)])
    stop = threading.Event()
    mirror = Mirror(site_db, endpoints, wait_secs=0.01, stop=stop, sleep=lambda s: None)
    with pytest.raises(httpx.ConnectError):
        mirror.pull_now()
    with pytest.raises(SyncFailed):
        mirror.pull_now()
    assert mirror.pull_now() == 5  # the third answers: bootstrapped
    view = endpoints.view()
    assert view.active == "http://c.test"
    assert [(e.url, e.state) for e in view.endpoints] == [
        ("http://a.test", "down"),
        ("http://b.test", "passive"),
        ("http://c.test", "active"),
    ]
    assert view.endpoints[2].last_ok_at and view.endpoints[0].last_ok_at is None
