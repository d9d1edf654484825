"""The journal upload of the sync API against a real primary process: each txn_id applied at most
once, one result per entry in request order, a receipt, and strict bodies (invariant 1)."""

from __future__ import annotations

from typing import Any

import httpx

from sync.client import SyncClient
from tests.kit.journal import JOURNAL, OCCURRED, add_payers, balances, entry
from tests.kit.primary import Primary, expect_error
from tests.kit.site import enrolled_site


def upload(c: SyncClient, entries: list[dict[str, Any]]) -> dict[str, Any]:
    r = c.request("POST", JOURNAL, json_body={"entries": entries})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"results", "receipt"}
    assert [x["txn_id"] for x in body["results"]] == [e["txn_id"] for e in entries]
    for x in body["results"]:
        assert set(x) == {
            "txn_id",
            "status",
            "seq",
            "balance_cents",
            "reason",
            "conflict",
            "account",
            "amount_cents",
        }
    return body


def test_upload_applies_once(primary: Primary) -> None:
    site = enrolled_site(primary)
    add_payers(primary)
    entries = [
        entry("user:alice", -150),
        entry("shared:Team", -40, kind="copy", flags=[], ref=None),
        entry("user:bob", 25, kind="refund", enforcement="authorize"),
    ]
    with site.client() as c:
        first = upload(c, entries)
        assert [x["status"] for x in first["results"]] == ["applied"] * 3
        assert [x["balance_cents"] for x in first["results"]] == [850, -40, 125]
        assert all(x["reason"] is None for x in first["results"])
        seqs = [x["seq"] for x in first["results"]]
        assert seqs == sorted(seqs)
        assert first["receipt"] == {
            "entries": 3,
            "applied": 3,
            "applied_with_conflict": 0,
            "duplicate": 0,
            "rejected": 0,
            "applied_cents": -165,
        }
        assert balances(primary) == {"alice": 850, "bob": 125, "team": -40}
        with primary.admin() as a:
            rows = a.get("/api/admin/v1/transactions", params={"origin_site": site.site_id}).json()[
                "transactions"
            ]
        by_txn = {r["txn_id"]: r for r in rows}
        assert set(by_txn) == {e["txn_id"] for e in entries}
        t = by_txn[entries[0]["txn_id"]]
        assert t["origin_site"] == site.site_id and t["occurred_at"] == OCCURRED
        assert t["account"] == "user:alice" and t["amount_cents"] == -150 and t["kind"] == "print"
        assert t["flags"] == ["offline"] and t["ref"] == "job-1" and t["seq"] == seqs[0]
        assert by_txn[entries[1]["txn_id"]]["account"] == "shared:Team"

        # The same batch again (a lost answer, a retry): one effect, the same answers.
        second = upload(c, entries)
        assert [x["status"] for x in second["results"]] == ["duplicate"] * 3
        for a, b in zip(first["results"], second["results"], strict=True):
            assert (b["seq"], b["balance_cents"]) == (a["seq"], a["balance_cents"])
        assert second["receipt"] == {
            "entries": 3,
            "applied": 0,
            "applied_with_conflict": 0,
            "duplicate": 3,
            "rejected": 0,
            "applied_cents": 0,
        }
        assert balances(primary) == {"alice": 850, "bob": 125, "team": -40}

        # The same txn_id twice within one batch is applied once, too.
        twice = entry("user:alice", -10)
        body = upload(c, [twice, dict(twice)])
        assert [x["status"] for x in body["results"]] == ["applied", "duplicate"]
        assert body["results"][0]["seq"] == body["results"][1]["seq"]
        assert balances(primary)["alice"] == 840


def test_rejections(primary: Primary) -> None:
    site = enrolled_site(primary)
    add_payers(primary)
    with site.client() as c:
        done = entry("user:alice", -100)
        upload(c, [done])
        entries = [
            {**done, "amount_cents": -99, "ref": "job-2"},  # same txn_id, different amount
            {**done, "account": "user:bob", "ref": "job-2"},  # same txn_id, different account
            entry("user:nobody", -5),
            entry("shared:Nope", -5),
            entry("user:bob", -500, enforcement="authorize"),  # past a restricted user's limit
            entry("user:bob", -500, enforcement="fact"),  # it happened: always charged
            entry("user:alice", 7),
        ]
        body = upload(c, entries)
        statuses = [x["status"] for x in body["results"]]
        assert statuses == ["rejected"] * 2 + ["applied_with_conflict"] * 2 + ["rejected"] + [
            "applied_with_conflict",
            "applied",
        ]
        reasons = [x["reason"] for x in body["results"]]
        assert "different account or amount" in reasons[0] and "different account or amount" in reasons[1]
        assert reasons[4] and reasons[2] is None and reasons[5] is None
        for i in (0, 1, 4):
            x = body["results"][i]
            assert x["seq"] is None and x["balance_cents"] is None and x["conflict"] is None
        # Money never goes unbilled: an unknown user's or account's charge goes to the fallback.
        kinds = [(x["conflict"] or {}).get("kind") for x in body["results"]]
        assert kinds[2:4] == ["unknown_user", "shared_account_gone"] and kinds[5] == "over_limit"
        assert body["results"][2]["account"] == body["results"][3]["account"] == "shared:Offline Account"
        assert body["results"][5]["balance_cents"] == -400 and body["results"][5]["account"] is None
        assert body["receipt"] == {
            "entries": 7,
            "applied": 1,
            "applied_with_conflict": 3,
            "duplicate": 0,
            "rejected": 3,
            "applied_cents": -503,
        }
        assert balances(primary) == {"alice": 907, "bob": -400, "team": 0}
        # The same job released again at the site with another price while an upload of its
        # first release was on its way: the first billing stands, and the answer says so.
        again = upload(c, [{**done, "amount_cents": -80, "account": "user:bob"}])["results"][0]
        assert again["status"] == "duplicate" and again["conflict"]["kind"] == "earlier_release_billed"
        assert (again["account"], again["amount_cents"]) == ("user:alice", -100)
        # A denied authorize leaves no trace: the same txn_id may apply later as a fact.
        retry = {**entries[4], "enforcement": "fact"}
        late = upload(c, [retry])["results"][0]
        assert late["status"] == "applied_with_conflict" and late["conflict"]["kind"] == "over_limit"
        assert "900 cents past its limit" in late["conflict"]["action"]


def test_deleted_user_still_answers_duplicate(primary: Primary) -> None:
    site = enrolled_site(primary)
    add_payers(primary)
    with site.client() as c, primary.admin() as a:
        e = entry("user:bob", -30)
        first = upload(c, [e])["results"][0]
        a.delete("/api/admin/v1/users/bob").raise_for_status()
        again = upload(c, [e])["results"][0]
        assert again["status"] == "duplicate" and again["seq"] == first["seq"]
        assert again["balance_cents"] == first["balance_cents"]
        # A new charge of the deleted user is billed to the fallback account, the username kept.
        late = upload(c, [entry("user:bob", -1)])["results"][0]
        assert late["status"] == "applied_with_conflict" and late["conflict"]["kind"] == "user_deleted"
        assert late["account"] == "shared:Offline Account"
        rows = a.get("/api/admin/v1/transactions", params={"origin_site": site.site_id}).json()
        row = next(t for t in rows["transactions"] if t["txn_id"] == str(late["txn_id"]))
        assert row["account"] == "shared:Offline Account" and "by:bob" in row["flags"]
        assert "conflict:user_deleted" in row["flags"]


def test_strict_bodies(primary: Primary) -> None:
    site = enrolled_site(primary)
    add_payers(primary)
    with site.client() as c:

        def status(body: Any) -> int:
            return c.request("POST", JOURNAL, json_body=body).status_code

        assert status({"entries": [entry("user:alice", -1) for _ in range(5001)]}) == 422
        assert status({"entries": []}) == 422
        for bad in (
            {"amount_cents": 1.5},
            {"amount_cents": "10"},
            {"amount_cents": 10.0},
            {"amount_cents": 2**62},
            {"txn_id": "not-a-uuid"},
            {"account": "alice"},
            {"account": "group:x"},
            {"enforcement": "maybe"},
            {"occurred_at": "yesterday"},
            {"kind": ""},
            {"kind": "k" * 33},
            {"extra": 1},
        ):
            r = c.request("POST", JOURNAL, json_body={"entries": [{**entry("user:alice", -1), **bad}]})
            expect_error(r, 422, "invalid_request")
        assert status({"entries": [entry("user:alice", -1)], "extra": True}) == 422
        assert balances(primary)["alice"] == 1000
        # 5000 entries is the limit, and fine.
        body = upload(c, [entry("user:alice", 1) for _ in range(5000)])
        assert body["receipt"]["applied"] == 5000 and body["receipt"]["applied_cents"] == 5000
    # Unsigned: 401 before the body is looked at.
    r = httpx.post(primary.url + JOURNAL, json={"entries": []}, timeout=30)
    expect_error(r, 401, "missing_signature")
