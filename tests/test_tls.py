"""TLS with real processes (CONTRACT v1.1 `[tls]`): the primary serves HTTPS with its certificate;
a site with `generate = true` serves HTTPS with a self-signed ECDSA P-256 certificate it made on
first start (key 0600) and shows its fingerprint in its status; the site verifies the primary
against `ca_file`: with the wrong one it refuses to sync and says why in its status and its log,
with the right one it syncs."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from siteserver import sample, tls
from tests.kit.primary import Primary, start_primary
from tests.kit.site import BRANCH, Branch, configure_site, eventually


def certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    tls.generate(cert, key, names=["localhost", "127.0.0.1"])
    return cert, key


def https_primary(tmp: Path) -> tuple[Primary, ssl.SSLContext, Path]:
    cert, key = certificate(tmp / "org-ca")
    primary = start_primary(
        tmp, extra={"tls": {"certificate": str(cert), "private_key": str(key)}}, wait_active=False
    )
    trust = tls.client_context(cert)
    assert primary.url.startswith("https://")
    eventually(lambda: httpx.get(primary.health, verify=trust).status_code == 200, 30, "the primary active")
    return primary, trust, cert


def status(branch: Branch) -> dict[str, object]:
    with branch.admin() as c:
        r = c.get("/api/admin/v1/status")
        assert r.status_code == 200, r.text
        return dict(r.json())


def test_https_both_ways_and_a_wrong_ca_is_refused_with_its_reason(tmp_path: Path) -> None:
    primary, trust, org_cert = https_primary(tmp_path)
    try:
        # A client that does not know the primary's certificate is refused by its own TLS check.
        try:
            httpx.get(primary.health, timeout=5)  # the system store does not know this certificate
            raise AssertionError("an unknown certificate was accepted")
        except httpx.ConnectError as e:
            assert tls.refused_reason(e) is not None

        headers = {"Authorization": f"Bearer {primary.admin_token}"}
        with httpx.Client(base_url=primary.url, headers=headers, verify=trust, timeout=30) as c:
            world = sample.build(c, BRANCH)
        # Enrollment (which hands the site the pepper) happens over the verified HTTPS.
        branch = configure_site(primary, tmp_path, world=world, tls={"generate": True, "ca_file": org_cert})
        branch.start()
        try:
            cert, key = tls.generated_paths(branch.data_dir)
            assert key.stat().st_mode & 0o777 == 0o600
            public = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
            assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
            assert branch.url.startswith("https://")
            shown = status(branch)["tls"]
            assert shown == {
                "serving": "https",
                "certificate": str(cert),
                "fingerprint": tls.fingerprint(cert),
                "generated": True,
            }
            eventually(lambda: status(branch)["mode"] == "online", 15, "online over HTTPS")
            shown_cli = subprocess.run(
                [sys.executable, "-m", "siteserver", "status", "--config", str(branch.config)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert shown_cli.returncode == 0, shown_cli.stderr
            assert f"serves      https, {tls.fingerprint(cert)}" in shown_cli.stdout
            (ep,) = status(branch)["primary"]["endpoints"]  # type: ignore[index]
            assert ep["state"] == "active" and ep["note"] is None
            # Under TLS the admin pages' cookie is Secure: a browser never sends it in clear.
            with httpx.Client(base_url=branch.url, verify=tls.client_context(cert), timeout=30) as c:
                r = c.post("/admin/login", data={"token": branch.admin_token})
                assert r.status_code == 303
                cookie = r.headers["set-cookie"]
                assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        finally:
            branch.process.stop()

        # The wrong CA: the site refuses the primary's certificate and says so.
        wrong, _ = certificate(tmp_path / "other-ca")
        branch.config.write_text(branch.config.read_text().replace(str(org_cert), str(wrong)))
        fingerprint_before = tls.fingerprint(cert)
        branch.start()
        try:
            eventually(
                lambda: status(branch)["primary"]["endpoints"][0]["state"] == "tls_refused",  # type: ignore[index]
                15,
                "the endpoint refused",
            )
            (ep,) = status(branch)["primary"]["endpoints"]  # type: ignore[index]
            assert "TLS certificate was refused" in ep["note"] and "self-signed" in ep["note"]
            eventually(lambda: status(branch)["mode"] == "offline", 20, "the site offline")
            assert tls.fingerprint(cert) == fingerprint_before  # kept across restarts
        finally:
            branch.process.stop()
        log = branch.process.log_path.read_text()
        assert "TLS certificate was refused" in log and "does not sync with it" in log

        # The right CA again: it syncs.
        branch.config.write_text(branch.config.read_text().replace(str(wrong), str(org_cert)))
        branch.start()
        try:
            eventually(lambda: status(branch)["mode"] == "online", 30, "online again")
            with httpx.Client(base_url=primary.url, headers=headers, verify=trust, timeout=30) as c:
                r = c.post("/api/admin/v1/users", json={"username": "tls-user", "card_numbers": ["8801"]})
                assert r.status_code == 201
            eventually(
                lambda: bool(branch.query("SELECT 1 FROM users WHERE username = 'tls-user'")), 15, "synced"
            )
        finally:
            branch.process.stop()
    finally:
        primary.process.stop()


def test_the_cli_pins_a_configured_site_certificate(primary: Primary, tmp_path: Path) -> None:
    """A site serving a configured certificate: `siteserver status` trusts exactly that one (at
    127.0.0.1, whatever names it holds), and refuses, saying why, a server showing another."""
    cert, key = certificate(tmp_path / "branch-cert")
    branch = configure_site(primary, tmp_path, tls={"certificate": cert, "private_key": key})
    branch.start()

    def cli_status() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "siteserver", "status", "--config", str(branch.config)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    try:
        shown = cli_status()
        assert shown.returncode == 0, shown.stderr
        assert f"serves      https, {tls.fingerprint(cert)}" in shown.stdout
        # The configuration now names another certificate than the running site shows.
        other, _ = certificate(tmp_path / "other-cert")
        branch.config.write_text(branch.config.read_text().replace(str(cert), str(other)))
        refused = cli_status()
        assert refused.returncode == 1
        assert "is not site 'branch-01': its TLS certificate is not the one the site serves" in refused.stderr
    finally:
        branch.process.stop()
