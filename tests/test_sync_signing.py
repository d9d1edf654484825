"""Signed sync requests: sync.signing as pure functions, and the primary's checks over real HTTP
(SyncClient against a real primary process)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from siteserver import sample
from sync import signing, wire
from sync.client import SyncClient, enroll
from tests.kit.journal import entry
from tests.kit.primary import Primary, expect_error, new_site, site_row
from tests.kit.site import EnrolledSite, enrolled_site, heartbeat

HEARTBEAT_PATH = wire.url_path(wire.HEARTBEAT_PATH)

NOW = 1_767_225_600.0
PATH = "/api/sync/v1/heartbeat"
BODY = b'{"mode":"online","journal_backlog":0,"version":"1"}'

# -- pure ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return signing.generate_key()


def _signed(key: Ed25519PrivateKey, **over: Any) -> dict[str, str]:
    args: dict[str, Any] = {
        "method": "POST",
        "path": PATH,
        "query": "a=1",
        "body": BODY,
        "site_id": "branch-01",
        "now": NOW,
    }
    args.update(over)
    return signing.sign(key, **args)


def _verify(key: Ed25519PrivateKey, headers: dict[str, str], **over: Any) -> None:
    args: dict[str, Any] = {
        "method": "POST",
        "path": PATH,
        "query": "a=1",
        "body": BODY,
        "headers": headers,
        "now": NOW,
    }
    args.update(over)
    signing.verify(key.public_key(), **args)


def test_round_trip(key: Ed25519PrivateKey) -> None:
    headers = _signed(key)
    assert set(headers) == {"X-Site-Id", "X-Sync-Timestamp", "X-Sync-Nonce", "Content-Digest", "Signature"}
    assert headers["X-Sync-Timestamp"] == str(int(NOW))
    assert signing.NONCE_RE.fullmatch(headers["X-Sync-Nonce"])
    assert headers["Content-Digest"].startswith("sha-256=:") and headers["Content-Digest"].endswith(":")
    assert headers["Signature"].startswith("sig1=:")
    _verify(key, headers)
    # Header names are case-insensitive on the wire.
    _verify(key, {k.lower(): v for k, v in headers.items()})
    # Empty body and empty query work too.
    empty = _signed(key, body=b"", query="")
    _verify(key, empty, body=b"", query="")


def test_signature_base_is_documented_form() -> None:
    base = signing.signature_base("post", "/p", "", "sha-256=:x:", "s", "1", "n")
    assert base == (
        b'"@method": POST\n"@path": /p\n"@query": ?\n"content-digest": sha-256=:x:\n'
        b'"x-site-id": s\n"x-sync-timestamp": 1\n"x-sync-nonce": n'
    )


def test_tampered_body_is_a_bad_digest(key: Ed25519PrivateKey) -> None:
    with pytest.raises(signing.BadDigest):
        _verify(key, _signed(key), body=BODY.replace(b"0", b"9"))


@pytest.mark.parametrize(
    "over",
    [{"method": "PUT"}, {"path": "/api/sync/v1/other"}, {"query": "a=2"}, {"query": ""}],
    ids=["method", "path", "query", "query-dropped"],
)
def test_tampered_request_line_is_a_bad_signature(key: Ed25519PrivateKey, over: dict[str, Any]) -> None:
    with pytest.raises(signing.BadSignature):
        _verify(key, _signed(key), **over)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Site-Id", "branch-02"),
        ("X-Sync-Timestamp", str(int(NOW) + 1)),
        ("X-Sync-Nonce", "B" * 32),
    ],
)
def test_tampered_headers_are_a_bad_signature(key: Ed25519PrivateKey, header: str, value: str) -> None:
    headers = _signed(key)
    headers[header] = value
    with pytest.raises(signing.BadSignature):
        _verify(key, headers)


def test_tampered_digest_header_is_refused(key: Ed25519PrivateKey) -> None:
    """A digest header changed to match another body: the signature no longer matches."""
    headers = _signed(key)
    other = b"{}"
    headers["Content-Digest"] = signing.content_digest(other)
    with pytest.raises(signing.BadSignature):
        _verify(key, headers, body=other)


def test_wrong_key(key: Ed25519PrivateKey) -> None:
    with pytest.raises(signing.BadSignature):
        _verify(signing.generate_key(), _signed(key))


@pytest.mark.parametrize("skew", [-301, 301, -3600, 3600])
def test_stale_either_way(key: Ed25519PrivateKey, skew: int) -> None:
    with pytest.raises(signing.StaleRequest):
        _verify(key, _signed(key, now=NOW + skew))
    _verify(key, _signed(key, now=NOW + (299 if skew > 0 else -299)))


@pytest.mark.parametrize(
    "missing", ["X-Site-Id", "X-Sync-Timestamp", "X-Sync-Nonce", "Content-Digest", "Signature"]
)
def test_missing_headers(key: Ed25519PrivateKey, missing: str) -> None:
    headers = _signed(key)
    del headers[missing]
    with pytest.raises(signing.MissingHeaders):
        _verify(key, headers)


@pytest.mark.parametrize(
    ("header", "value", "error"),
    [
        ("X-Sync-Timestamp", "soon", signing.BadSignature),
        ("X-Sync-Nonce", "short", signing.BadSignature),
        ("X-Sync-Nonce", "x" * 65, signing.BadSignature),
        ("Signature", "sig1=:not base64!:", signing.BadSignature),
        ("Content-Digest", "md5=:abc:", signing.BadDigest),
    ],
)
def test_malformed_headers(
    key: Ed25519PrivateKey, header: str, value: str, error: type[signing.SignatureError]
) -> None:
    headers = _signed(key)
    headers[header] = value
    with pytest.raises(error):
        _verify(key, headers)


def test_key_files(tmp_path: Any, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "site.key"
    signing.save_private_key(path, key)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = signing.load_private_key(path)
    assert signing.public_key_text(loaded) == signing.public_key_text(key)
    with pytest.raises(FileExistsError):
        signing.save_private_key(path, signing.generate_key())
    text = signing.public_key_text(key)
    assert len(text) == 43 and "=" not in text
    assert signing.parse_public_key(text) is not None
    for bad in ("", "A" * 42, "A" * 44, "!" * 43):
        with pytest.raises(ValueError):
            signing.parse_public_key(bad)


# -- over HTTP against the real primary ------------------------------------------------------------


def _site(primary: Primary, site_id: str = "branch-01") -> EnrolledSite:
    site = enrolled_site(primary, site_id)
    assert set(site.answer) == {"site_id", "pepper", "health_key"}
    assert site.answer["health_key"] == primary.health_key  # the site's WAN monitor probes with it
    return site


def _sig_headers(req: httpx.Request) -> dict[str, str]:
    """The signature headers of a built request (to resend them with another body or URL)."""
    return {h: req.headers[h] for h in (*signing.SIGNED_HEADERS, "Content-Type")}


HB = {"mode": "offline", "journal_backlog": 7, "version": "0.1"}


def test_signed_heartbeat_over_http(primary: Primary) -> None:
    site = _site(primary)
    with site.client() as c:
        r = heartbeat(c, "offline", 7, "0.1")
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"primary_time", "server_uuid", "epoch"}
        assert isinstance(body["epoch"], int) and body["epoch"] >= 1
        row = site_row(primary, site.site_id)
        assert row["enrolled"] is True and row["enrolled_at"]
        assert row["mode"] == "offline" and row["journal_backlog"] == 7
        assert row["last_contact_at"] == body["primary_time"]
        # A query string is part of what is signed, too.
        r = c.request("POST", HEARTBEAT_PATH, json_body={**HB, "mode": "online"}, params={"x": "1 2"})
        assert r.status_code == 200, r.text
        assert site_row(primary, site.site_id)["mode"] == "online"
        # Strict body: an unknown field is 422 (after the signature was accepted).
        expect_error(c.request("POST", HEARTBEAT_PATH, json_body={**HB, "extra": 1}), 422)
        expect_error(c.request("POST", HEARTBEAT_PATH, json_body={**HB, "journal_backlog": -1}), 422)


def test_refused_requests_over_http(primary: Primary) -> None:
    site = _site(primary)
    url = primary.url + HEARTBEAT_PATH
    # Unsigned.
    expect_error(httpx.post(url, json=HB, timeout=30), 401, "missing_signature")
    with site.client() as c:
        # Tampered body: the signed headers sent with another body.
        req = c.build("POST", HEARTBEAT_PATH, json_body=HB)
        tampered = httpx.post(
            url,
            content=b'{"mode":"online","journal_backlog":0,"version":"x"}',
            headers=_sig_headers(req),
            timeout=30,
        )
        expect_error(tampered, 401, "bad_digest")
        # Replayed: the exact same signed request twice.
        req = c.build("POST", HEARTBEAT_PATH, json_body=HB)
        assert c.send(req).status_code == 200
        expect_error(c.send(req), 401, "replayed_request")
        # Tampered query: the signed query string changed in transit.
        req = c.build("POST", HEARTBEAT_PATH, json_body=HB, params={"a": "1"})
        moved = httpx.post(url + "?a=2", content=req.content, headers=_sig_headers(req), timeout=30)
        expect_error(moved, 401, "bad_signature")
    # A correctly signed body that is not JSON: past authentication, so a validation problem.
    for raw, status in ((b"{nope", 422), (b"\x92\x04Z\x1e", 400)):
        headers = signing.sign(site.key, "POST", HEARTBEAT_PATH, "", raw, site.site_id, time.time())
        r = httpx.post(url, content=raw, headers={**headers, "Content-Type": "application/json"}, timeout=30)
        expect_error(r, status)
    # Stale, both ways.
    for skew in (-3600, 3600):
        with site.client(clock=lambda skew=skew: time.time() + skew) as c:  # type: ignore[misc]
            expect_error(heartbeat(c, "online", 0, "1"), 401, "stale_request")
    # Unknown site, and a known site with the wrong key.
    with SyncClient(primary.url, "nowhere", site.key) as c:
        expect_error(heartbeat(c, "online", 0, "1"), 401, "unknown_site")
    with SyncClient(primary.url, site.site_id, signing.generate_key()) as c:
        expect_error(heartbeat(c, "online", 0, "1"), 401, "bad_signature")


def test_disabled_site_over_http(primary: Primary) -> None:
    site = _site(primary)
    with primary.admin() as admin, site.client() as c:
        r = admin.patch(f"/api/admin/v1/sites/{site.site_id}", json={"disabled": True})
        assert r.status_code == 200, r.text
        assert r.json()["disabled"] is True and r.json()["site_id"] == site.site_id
        expect_error(heartbeat(c, "online", 0, "1"), 403, "site_disabled")
        r = admin.patch(f"/api/admin/v1/sites/{site.site_id}", json={"disabled": False, "name": "Renamed"})
        assert r.status_code == 200, r.text
        assert r.json()["name"] == "Renamed" and r.json()["disabled"] is False
        assert heartbeat(c, "online", 0, "1").status_code == 200
        expect_error(admin.patch("/api/admin/v1/sites/nowhere", json={"disabled": True}), 404)
        expect_error(admin.patch(f"/api/admin/v1/sites/{site.site_id}", json={"bogus": 1}), 422)


def test_realms_stay_separate(primary: Primary, world: sample.World) -> None:
    site = _site(primary)
    url = primary.url + HEARTBEAT_PATH
    for token in (primary.admin_token, world.mono_device, world.provider):
        r = httpx.post(url, json=HB, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        expect_error(r, 401)
    # A valid site signature opens nothing outside the sync API.
    with site.client() as c:
        for method, path in (
            ("GET", "/api/admin/v1/sites"),
            ("POST", "/api/device/v1/login"),
            ("POST", "/api/provider/v1/jobs"),
        ):
            body = None if method == "GET" else {"card_number": "1"}
            expect_error(c.request(method, path, json_body=body), 401)


def test_enroll_token_works_once(primary: Primary) -> None:
    token = new_site(primary, "b2")
    pub = signing.public_key_text(signing.generate_key())
    # Wrong token, unknown site, empty body, malformed: one answer, and the token survives them.
    expect_error(
        enroll(primary.url, wire.EnrollIn(site_id="b2", enrollment_token=token + "x", public_key=pub)),
        401,
        "invalid_enrollment_token",
    )
    expect_error(
        enroll(primary.url, wire.EnrollIn(site_id="nope", enrollment_token=token, public_key=pub)),
        401,
        "invalid_enrollment_token",
    )
    enroll_url = primary.url + "/api/sync/v1/enroll"
    expect_error(httpx.post(enroll_url, json={}, timeout=30), 401, "invalid_enrollment_token")
    expect_error(httpx.post(enroll_url, content=b"{nope", timeout=30), 401, "invalid_enrollment_token")
    # A valid token with a bad body is a validation problem, and does not use the token up.
    body = {"site_id": "b2", "enrollment_token": token, "public_key": pub}
    expect_error(httpx.post(enroll_url, json={**body, "extra": 1}, timeout=30), 422)
    expect_error(httpx.post(enroll_url, json={**body, "public_key": "x"}, timeout=30), 422)
    r = enroll(primary.url, wire.EnrollIn(site_id="b2", enrollment_token=token, public_key=pub))
    assert r.status_code == 200, r.text
    assert len(bytes.fromhex(r.json()["pepper"])) >= 16
    expect_error(
        enroll(primary.url, wire.EnrollIn(site_id="b2", enrollment_token=token, public_key=pub)),
        401,
        "invalid_enrollment_token",
    )


def test_a_signed_merge_body_that_does_not_fit_is_a_clear_422(primary: Primary) -> None:
    """The merge route parses its body itself (in one pass, after the signature): whatever is
    wrong with it is a 422 naming where, like every other body, and nothing is applied."""
    site = _site(primary)
    path = wire.url_path(wire.MERGE_PATH)
    url = primary.url + path
    good = entry("user:nobody", -25)
    half_a_cent = json.dumps({"entries": [{**good, "amount_cents": 2.5}]}).encode()
    bodies: list[tuple[bytes, str, str]] = [
        (b"{nope", "application/json", "body"),
        (b"\x92\x04Z\x1e", "application/json", "body"),
        (b'{"entries": []}', "application/json", "body.entries"),
        (half_a_cent, "application/json", "amount_cents"),
        (json.dumps({"entries": [{**good, "extra": 1}]}).encode(), "application/json", "unknown field"),
        (json.dumps({"entries": [good]}).encode(), "text/plain", "application/json"),
    ]
    for raw, kind, said in bodies:
        headers = signing.sign(site.key, "POST", path, "", raw, site.site_id, time.time())
        r = httpx.post(url, content=raw, headers={**headers, "Content-Type": kind}, timeout=30)
        assert said in expect_error(r, 422, "invalid_request")["detail"], (raw, r.text)
    # The same body unsigned: the signature is asked first.
    expect_error(httpx.post(url, content=b"{nope", timeout=30), 401, "missing_signature")
    with site.client() as c:  # and a body that fits is merged (the entry's account is unknown here)
        r = c.request("POST", path, json_body=wire.MergeIn.model_validate({"entries": [good]}))
        assert r.status_code == 200, r.text
        assert r.json()["receipt"]["entries"] == 1
