"""A site's identity on disk, in its data_dir, and `siteserver site enroll`.

    site.key         the Ed25519 private key, PEM PKCS8, mode 0600 (made once, never overwritten)
    site.pub         the public key, base64url of its raw 32 bytes (what the primary stores)
    secrets          mode 0600: line 1 the primary's hashing pepper (hex), which verifies mirrored
                     Argon2 hashes and computes card hashes offline; line 2 (absent in files
                     written before it existed) the primary's health key, for the WAN monitor
    enrollment.json  {site_id, primary, enrolled_at}: which primary URL accepted the enrollment

Neither the enrollment token, the pepper nor the health key is ever printed or logged.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from siteserver import tls
from siteserver.config import SiteConfig
from siteserver.store.db import private_dir
from siteserver.timeutil import now_iso
from sync import signing, wire
from sync.client import enroll as enroll_request

from .errors import EnrollmentError

KEY_FILE = "site.key"
PUB_FILE = "site.pub"
SECRETS_FILE = "secrets"
ENROLLMENT_FILE = "enrollment.json"

CONNECT_TIMEOUT_SECS = 3.0
REQUEST_TIMEOUT_SECS = 10.0


@dataclass(frozen=True)
class Identity:
    data_dir: Path

    @property
    def key_path(self) -> Path:
        return self.data_dir / KEY_FILE

    @property
    def pub_path(self) -> Path:
        return self.data_dir / PUB_FILE

    @property
    def secrets_path(self) -> Path:
        return self.data_dir / SECRETS_FILE

    @property
    def enrollment_path(self) -> Path:
        return self.data_dir / ENROLLMENT_FILE

    def load_or_create_key(self) -> Ed25519PrivateKey:
        """The site's key pair, made on first use (0600, created exclusively)."""
        private_dir(self.data_dir)
        if not self.key_path.exists():
            # Another process may have made it first: then use theirs.
            with contextlib.suppress(FileExistsError):
                signing.save_private_key(self.key_path, signing.generate_key())
        key = signing.load_private_key(self.key_path)
        _replace_file(self.pub_path, signing.public_key_text(key) + "\n", mode=0o644)
        return key

    def load_key(self) -> Ed25519PrivateKey:
        return signing.load_private_key(self.key_path)

    def save_enrollment(
        self, *, site_id: str, primary: str, pepper_hex: str, health_key: str | None = None
    ) -> None:
        content = pepper_hex + "\n" + (health_key + "\n" if health_key else "")
        _replace_file(self.secrets_path, content, mode=0o600)
        record = {"site_id": site_id, "primary": primary, "enrolled_at": now_iso()}
        _replace_file(self.enrollment_path, json.dumps(record, indent=2) + "\n", mode=0o644)

    def _secret_lines(self) -> list[str]:
        return [line.strip() for line in self.secrets_path.read_text().splitlines() if line.strip()]

    def load_pepper(self) -> bytes:
        return bytes.fromhex(self._secret_lines()[0])

    def load_health_key(self) -> str | None:
        """The primary's health key; None for a site enrolled before enrollment handed it out."""
        lines = self._secret_lines()
        return lines[1] if len(lines) > 1 else None


def _replace_file(path: Path, content: str, *, mode: int) -> None:
    """Write beside and rename into place; the file is created with `mode` (never wider first)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, content.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def enroll(config: SiteConfig, token: str) -> str:
    """Make the key pair if absent, enroll with the first primary URL that answers, store the
    answer. Returns the URL used; raises EnrollmentError with one sentence."""
    identity = Identity(Path(config.data_dir))
    key = identity.load_or_create_key()
    public = signing.public_key_text(key)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_SECS, connect=CONNECT_TIMEOUT_SECS)
    verify = tls.client_context(config.tls.ca_file)
    try:
        body = wire.EnrollIn(site_id=config.site_id, enrollment_token=token, public_key=public)
    except ValidationError as e:
        raise EnrollmentError("the enrollment token is empty or longer than 256 characters") from e
    unreachable: list[str] = []
    for url in config.primary:
        try:
            r = enroll_request(url, body, timeout=timeout, verify=verify)
        except httpx.HTTPError as e:
            unreachable.append(f"{url} ({tls.refused_reason(e) or type(e).__name__})")
            continue
        if r.status_code == 503:  # a passive member: try the next one
            unreachable.append(f"{url} (passive)")
            continue
        if r.status_code == 401:
            raise EnrollmentError(
                f"the primary at {url} refused the enrollment token for site {config.site_id!r}: "
                "it is wrong, already used, or the site does not exist (issue a new one with "
                "POST /api/admin/v1/sites/{site_id}/enrollment-token)"
            )
        if r.status_code != 200:
            raise EnrollmentError(f"the primary at {url} refused the enrollment: {_error_of(r)}")
        try:
            answer = wire.EnrollOut.model_validate_json(r.content)
            bytes.fromhex(answer.pepper)
            if answer.health_key is not None and not answer.health_key.strip():
                raise ValueError("health_key")
        except ValueError as e:  # a ValidationError too
            raise EnrollmentError(f"the primary at {url} answered the enrollment unexpectedly") from e
        identity.save_enrollment(
            site_id=config.site_id,
            primary=url,
            pepper_hex=answer.pepper,
            health_key=answer.health_key.strip() if answer.health_key else None,
        )
        return url
    raise EnrollmentError(f"no primary reachable: {', '.join(unreachable)}")


def _error_of(r: httpx.Response) -> str:
    try:
        body = r.json()
        return f"{r.status_code} {body['error']}: {body['detail']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {r.status_code}"
