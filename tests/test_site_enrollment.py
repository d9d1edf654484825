"""`siteserver site enroll` as an admin runs it, against a real primary process."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import httpx

from siteserver.launch import free_port, site_config, write_config
from siteserver.site.identity import Identity
from sync import signing
from sync.client import SyncClient
from tests.kit.primary import Primary, expect_error, new_site, site_row
from tests.kit.site import SITE, heartbeat


def _site_config(tmp: Path, name: str, primary_urls: list[str], site_id: str = SITE) -> Path:
    return site_config(
        tmp,
        site_id=site_id,
        port=free_port(),
        primary_urls=primary_urls,
        admin_token=secrets.token_urlsafe(24),
        name=name,
    )


def _enroll(config: Path, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "siteserver", "site", "enroll", "--config", str(config), "--token", token],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_clear_line(out: str) -> str:
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    return lines[0]


def test_enroll_then_heartbeat(primary: Primary, tmp_path: Path) -> None:
    token = new_site(primary, SITE)
    assert site_row(primary, SITE)["enrolled"] is False
    # An unreachable first URL is skipped: the next one answers.
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = _site_config(tmp_path, "site", [dead, primary.url])
    r = _enroll(cfg, token)
    assert r.returncode == 0, r.stderr
    line = _one_clear_line(r.stdout)
    assert "enrolled" in line and primary.url in line
    data = tmp_path / "site"
    ident = Identity(data)
    assert ident.key_path.stat().st_mode & 0o777 == 0o600
    assert ident.secrets_path.stat().st_mode & 0o777 == 0o600
    pepper = ident.load_pepper()
    assert len(pepper) >= 16
    # Never printed: neither the token nor the pepper.
    for secret in (token, pepper.hex()):
        assert secret not in r.stdout + r.stderr
    enrollment = json.loads(ident.enrollment_path.read_text())
    assert enrollment["site_id"] == SITE and enrollment["primary"] == primary.url
    assert enrollment["enrolled_at"]
    assert ident.pub_path.read_text().strip() == signing.public_key_text(ident.load_key())
    row = site_row(primary, SITE)
    assert row["enrolled"] is True and row["enrolled_at"]
    # The key it made signs requests the primary accepts.
    with SyncClient(primary.url, SITE, ident.load_key()) as c:
        assert heartbeat(c, "online", 0, "1").status_code == 200

    # The same token again (another machine, another data_dir): refused, exit 2, one sentence.
    again = _enroll(_site_config(tmp_path, "site-again", [primary.url]), token)
    assert again.returncode == 2, again.stdout + again.stderr
    msg = _one_clear_line(again.stderr)
    assert "refused the enrollment token" in msg and token not in msg
    # The first enrollment still holds.
    with SyncClient(primary.url, SITE, ident.load_key()) as c:
        assert heartbeat(c, "online", 0, "1").status_code == 200


def test_wrong_token_and_unreachable_primary(primary: Primary, tmp_path: Path) -> None:
    token = new_site(primary, SITE)
    wrong = _enroll(_site_config(tmp_path, "wrong", [primary.url]), token[:-2] + "zz")
    assert wrong.returncode == 2
    assert "refused the enrollment token" in _one_clear_line(wrong.stderr)
    assert not (tmp_path / "wrong" / "secrets").exists()

    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    unreachable = _enroll(_site_config(tmp_path, "dead", dead), token)
    assert unreachable.returncode == 2
    msg = _one_clear_line(unreachable.stderr)
    assert "no primary reachable" in msg and dead[0] in msg and dead[1] in msg

    # A config error (a primary's config) is exit 2 too; the token still works afterwards.
    not_site = write_config(tmp_path / "p.toml", {"role": "primary", "data_dir": "x", "database": "y"})
    bad = _enroll(not_site, token)
    assert bad.returncode == 2 and "site enroll" in bad.stderr
    assert _enroll(_site_config(tmp_path, "ok", [primary.url]), token).returncode == 0


def test_reissued_token_and_old_key(primary: Primary, tmp_path: Path) -> None:
    token = new_site(primary, SITE)
    assert _enroll(_site_config(tmp_path, "old", [primary.url]), token).returncode == 0
    old_key = Identity(tmp_path / "old").load_key()

    with primary.admin() as c:
        r = c.post(f"/api/admin/v1/sites/{SITE}/enrollment-token")
        assert r.status_code == 201, r.text
        assert set(r.json()) == {"site_id", "enrollment_token"}
        new_token = r.json()["enrollment_token"]
        assert new_token != token
        expect_error(c.post("/api/admin/v1/sites/nowhere/enrollment-token"), 404)
    # The old key stops working at once; the site shows as not enrolled until it re-enrolls.
    with SyncClient(primary.url, SITE, old_key) as c:
        expect_error(heartbeat(c, "online", 0, "1"), 401, "unknown_site")
    assert site_row(primary, SITE)["enrolled"] is False

    # The replacement machine enrolls with the new token and a new key.
    r2 = _enroll(_site_config(tmp_path, "new", [primary.url]), new_token)
    assert r2.returncode == 0, r2.stderr
    new_key = Identity(tmp_path / "new").load_key()
    with SyncClient(primary.url, SITE, new_key) as c:
        assert heartbeat(c, "online", 0, "1").status_code == 200
    with SyncClient(primary.url, SITE, old_key) as c:
        expect_error(heartbeat(c, "online", 0, "1"), 401, "bad_signature")
    # The enrollment token endpoint needs the admin token.
    r3 = httpx.post(f"{primary.url}/api/admin/v1/sites/{SITE}/enrollment-token", timeout=30)
    expect_error(r3, 401)
