"""The snapshot and the change feed of the sync API, against a real primary process: what a site
mirrors, consistently, after a cursor, page by page, long-polled, and reset after pruning."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

import httpx

from migrations.mirrored import MIRRORED_TABLES
from siteserver import sample
from siteserver.domain import SecretHasher
from siteserver.store import Database, feed
from sync.client import SyncClient
from tests.kit.primary import Primary, expect_error, new_id, open_database
from tests.kit.site import enrolled_site

SNAPSHOT = "/api/sync/v1/snapshot"
CHANGES = "/api/sync/v1/changes"

Key = tuple[str, tuple[Any, ...]]


def snapshot(c: SyncClient) -> tuple[int, dict[Key, dict[str, Any]], list[dict[str, Any]]]:
    """(cursor, rows by (table, pk), the lines) of a full snapshot, checking its framing."""
    r = c.request("GET", SNAPSHOT)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in r.text.splitlines()]
    begin, *rows, end = lines
    assert begin == {"type": "begin", "cursor": begin["cursor"], "tables": list(MIRRORED_TABLES)}
    assert end == {"type": "end", "cursor": begin["cursor"], "rows": len(rows)}
    order = list(MIRRORED_TABLES)
    assert [order.index(x["table"]) for x in rows] == sorted(order.index(x["table"]) for x in rows)
    out: dict[Key, dict[str, Any]] = {}
    for x in rows:
        assert set(x) == {"type", "table", "row"} and x["type"] == "row"
        out[key_of(x["table"], x["row"])] = x["row"]
    return begin["cursor"], out, lines


def key_of(table: str, row: dict[str, Any]) -> Key:
    return table, tuple(row[c] for c in MIRRORED_TABLES[table])


def changes(c: SyncClient, after: int, **params: Any) -> dict[str, Any]:
    r = c.request("GET", CHANGES, params={"after": after, **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"cursor", "reset", "changes"}
    return body


def apply_changes(state: dict[Key, dict[str, Any]], page: dict[str, Any]) -> None:
    for ch in page["changes"]:
        assert set(ch) == {"seq", "table", "pk", "row"}
        k = (ch["table"], tuple(ch["pk"]))
        if ch["row"] is None:
            state.pop(k, None)
        else:
            assert key_of(ch["table"], ch["row"]) == k
            state[k] = ch["row"]


def columns(primary: Primary, table: str) -> list[str]:
    with open_database(primary.database) as db:
        return db.read_sync(lambda d: [c.name for c in d[table].columns])


#: alice has every kind of credential; the snapshot must carry none of them in clear.
ALICE = sample.User(
    "alice",
    full_name="Alice",
    password="correct horse",
    pin="86420975",  # long enough not to turn up inside a hash or a timestamp by chance
    card_numbers=("CARD-0001",),
    id_number="ID-77",
    balance_cents=500,
)


def _world(primary: Primary) -> sample.World:
    """The sample world at site branch-01 with alice and bob (100 c), and the offline policies'
    hold timeout set to 77 minutes."""
    with primary.admin() as c:
        world = sample.build(
            c, sample.Names(site_id="branch-01"), users=[ALICE, sample.User("bob", balance_cents=100)]
        )
        policies = c.get("/api/admin/v1/offline-policies").json()
        policies["hold_timeout_minutes"] = 77
        c.put("/api/admin/v1/offline-policies", json=policies).raise_for_status()
    return world


def test_snapshot_has_every_mirrored_row_and_no_secret(primary: Primary) -> None:
    site = enrolled_site(primary, token=_world(primary).enrollment_token)
    with site.client() as c:
        cursor, rows, lines = snapshot(c)
    assert cursor > 0
    for table in MIRRORED_TABLES:
        cols = columns(primary, table)
        for (t, _), row in rows.items():
            if t == table:
                assert list(row) == cols, table  # all columns, in the table's order
    alice = rows[("users", ("alice",))]
    assert alice["full_name"] == "Alice"
    assert alice["password_hash"].startswith("$argon2id$")
    assert alice["pin_hash"].startswith("$argon2id$")
    account = rows[("accounts", (alice["account_id"],))]
    assert account["balance_cents"] == 500 and account["kind"] == "personal"
    assert account["last_seq"] > 0
    hasher = SecretHasher(site.pepper)
    assert rows[("user_cards", (hasher.card_hash("CARD-0001"),))]["username"] == "alice"
    assert alice["id_number_hash"] == hasher.card_hash("ID-77")
    assert rows[("printers", ("mono-1",))]["mono_page_cents"] == 10
    assert rows[("devices", ("mfd-1",))]["printer"] == "mono-1"
    assert json.loads(rows[("settings", ("offline_policies",))]["value"])["hold_timeout_minutes"] == 77
    assert ("accounts", (1,)) in rows  # the Offline Account shared account
    text = json.dumps(lines)
    for secret in ("correct horse", "86420975", "CARD-0001", "ID-77"):
        assert secret not in text


def test_unsigned_calls_are_refused(primary: Primary) -> None:
    for path in (SNAPSHOT, CHANGES + "?after=0"):
        expect_error(httpx.get(primary.url + path, timeout=30), 401, "missing_signature")
    with primary.admin() as c:  # an admin token opens nothing here either
        expect_error(c.get(SNAPSHOT), 401)


def test_changes_after_a_snapshot(primary: Primary) -> None:
    site = enrolled_site(primary, token=_world(primary).enrollment_token)
    with site.client() as c, primary.admin() as admin:
        cursor, state, _ = snapshot(c)
        empty = changes(c, cursor)
        assert empty == {"cursor": cursor, "reset": False, "changes": []}
        bob_account = state[("users", ("bob",))]["account_id"]
        before = state[("accounts", (bob_account,))]
        admin.patch("/api/admin/v1/users/alice", json={"full_name": "Alice Liddell"}).raise_for_status()
        admin.delete("/api/admin/v1/users/bob").raise_for_status()
        r = admin.post(
            "/api/admin/v1/users/alice/adjustments", json={"txn_id": new_id(), "amount_cents": 250}
        )
        r.raise_for_status()
        page = changes(c, cursor)
        assert page["reset"] is False and page["cursor"] > cursor
        seqs = [ch["seq"] for ch in page["changes"]]
        assert seqs == sorted(seqs) and seqs[-1] == page["cursor"]
        by_key = {(ch["table"], tuple(ch["pk"])): ch for ch in page["changes"]}
        assert len(by_key) == len(page["changes"])  # each row once
        alice = by_key[("users", ("alice",))]["row"]
        assert alice["full_name"] == "Alice Liddell" and alice["password_hash"].startswith("$argon2id$")
        assert set(alice) == set(state[("users", ("alice",))])
        assert by_key[("users", ("bob",))]["row"] is None
        account = by_key[("accounts", (alice["account_id"],))]["row"]
        old = state[("accounts", (alice["account_id"],))]
        assert account["balance_cents"] == old["balance_cents"] + 250
        assert account["last_seq"] > old["last_seq"]
        closed = by_key[("accounts", (bob_account,))]["row"]  # bob's account closed, kept
        assert closed["closed_at"] is not None and before["closed_at"] is None
        # Applied on top of the snapshot, the feed gives what a fresh snapshot gives.
        apply_changes(state, page)
        cursor2, fresh, _ = snapshot(c)
        assert cursor2 == page["cursor"] and state == fresh
        assert changes(c, page["cursor"])["changes"] == []


def test_limit_pages_through_everything(primary: Primary) -> None:
    site = enrolled_site(primary)
    with site.client() as c, primary.admin() as admin:
        cursor, state, _ = snapshot(c)
        for i in range(12):
            admin.post(
                "/api/admin/v1/users", json={"username": f"u{i}", "card_numbers": [f"C{i}"]}
            ).raise_for_status()
        for i in range(0, 12, 3):
            admin.patch(f"/api/admin/v1/users/u{i}", json={"full_name": f"User {i}"}).raise_for_status()
        admin.delete("/api/admin/v1/users/u1").raise_for_status()
        pages = 0
        while True:
            page = changes(c, cursor, limit=5)
            assert len(page["changes"]) <= 5
            if not page["changes"]:
                assert page["cursor"] == cursor
                break
            assert page["cursor"] > cursor
            apply_changes(state, page)
            cursor = page["cursor"]
            pages += 1
        assert pages >= 6
        fresh_cursor, fresh, _ = snapshot(c)
        assert fresh_cursor == cursor and state == fresh
        assert ("users", ("u1",)) not in state and state[("users", ("u3",))]["full_name"] == "User 3"


def test_long_poll(primary: Primary) -> None:
    site = enrolled_site(primary)
    with site.client() as c, primary.admin() as admin:
        cursor, _, _ = snapshot(c)
        t0 = time.monotonic()
        assert changes(c, cursor, wait=0.5)["changes"] == []
        assert 0.4 <= time.monotonic() - t0 < 3

        changed_at: list[float] = []

        def change() -> None:
            time.sleep(0.7)
            changed_at.append(time.monotonic())
            admin.post("/api/admin/v1/users", json={"username": "late"}).raise_for_status()

        worker = threading.Thread(target=change)
        worker.start()
        t0 = time.monotonic()
        page = changes(c, cursor, wait=10)
        done = time.monotonic()
        worker.join()
        assert ("users", ["late"]) in [(ch["table"], ch["pk"]) for ch in page["changes"]]
        assert done - changed_at[0] < 1.5 and done - t0 < 5


def test_bad_parameters(primary: Primary) -> None:
    site = enrolled_site(primary)
    with site.client() as c:
        for params in (
            {"after": -1},
            {"after": 0, "wait": 61},
            {"after": 0, "limit": 0},
            {"after": 0, "limit": 5001},
            {},
        ):
            expect_error(c.request("GET", CHANGES, params=params), 422, "invalid_request")


def test_reset_after_pruning(primary: Primary) -> None:
    site = enrolled_site(primary)
    with site.client() as c, primary.admin() as admin:
        admin.post("/api/admin/v1/users", json={"username": "old"}).raise_for_status()
        cursor, _, _ = snapshot(c)
        time.sleep(0.01)
        with open_database(primary.database) as db:
            deleted = db.write_sync(lambda d: feed.prune(d, older_than=feed.prune_cutoff(timedelta(0))))
            floor = db.read_sync(feed.pruned_through)
        assert deleted > 0 and floor == cursor
        assert changes(c, 0) == {"cursor": 0, "reset": True, "changes": []}
        assert changes(c, cursor - 1, wait=5)["reset"] is True  # no long poll for a reset
        assert changes(c, cursor) == {"cursor": cursor, "reset": False, "changes": []}
        admin.post("/api/admin/v1/users", json={"username": "new"}).raise_for_status()
        page = changes(c, cursor)
        assert page["reset"] is False and ("users", ["new"]) in [
            (ch["table"], ch["pk"]) for ch in page["changes"]
        ]


def test_snapshot_stream_stops_when_the_client_goes_away(fresh_db: Database) -> None:
    """Closing the stream part-way ends the producer thread (and its connection) promptly, and the
    producer never runs more than a few chunks ahead of the reader."""
    import asyncio

    from sync import feed as sync_feed

    def fill(d: Any) -> None:
        for i in range(6000):
            d.execute("INSERT INTO settings (key, value) VALUES (?, ?)", [f"k{i:05}", "v" * 100])

    fresh_db.write_sync(fill)

    def producers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "sync-snapshot"]

    async def main() -> None:
        stream = sync_feed.stream_snapshot(fresh_db.path)
        first = await stream.__anext__()
        assert first.startswith(b'{"type":"begin"')
        await asyncio.sleep(0.3)
        assert producers()  # blocked on the bounded queue, not finished
        await stream.aclose()

    asyncio.run(main())
    deadline = time.monotonic() + 5
    while producers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not producers()


def test_sites_asking_for_the_same_page_share_one_read(fresh_db: Database, monkeypatch: Any) -> None:
    """Sites that follow the feed ask for the same cursor when it moves: the page is read and
    encoded once for all of them while the log stands still, and read again once it moves."""
    import asyncio

    from sync import feed as sync_feed
    from sync import wire

    reads: list[int] = []
    real = sync_feed._read_page

    def counted(*args: Any) -> sync_feed.Page:
        reads.append(args[1])
        return real(*args)

    monkeypatch.setattr(sync_feed, "_read_page", counted)

    def setting(key: str) -> None:
        fresh_db.write_sync(lambda d: d.execute("INSERT INTO settings (key, value) VALUES (?, 'v')", [key]))

    setting("first")
    shared = sync_feed.Feed(fresh_db)

    async def ten_sites() -> list[sync_feed.Page]:
        return list(await asyncio.gather(*(shared.changes(0, 0, 1000) for _ in range(10))))

    pages = asyncio.run(ten_sites())
    assert len(reads) == 1 and len({p.body for p in pages}) == 1
    answer = wire.ChangesOut.model_validate_json(pages[0].body)
    assert answer.cursor == pages[0].cursor > 0 and any(c.table == "settings" for c in answer.changes)

    setting("second")  # the log moved: the same question gets a fresh page
    again = asyncio.run(ten_sites())
    assert len(reads) == 2
    assert again[0].cursor > pages[0].cursor
    assert any(c.pk == ["second"] for c in wire.ChangesOut.model_validate_json(again[0].body).changes)
