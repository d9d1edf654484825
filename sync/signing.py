"""Ed25519 request signatures for the sync API, modelled on HTTP Message Signatures (RFC 9421).

Pure functions, no HTTP framework: the primary's FastAPI dependency and the site's httpx client
both call them. A signed request carries five headers:

    X-Site-Id:         the site's identifier (as enrolled)
    X-Sync-Timestamp:  integer unix seconds when the request was signed
    X-Sync-Nonce:      22-64 url-safe characters ([A-Za-z0-9_-]), random, never reused
    Content-Digest:    sha-256=:<base64 of the SHA-256 of the body>:      (RFC 9530 form)
    Signature:         sig1=:<base64 of the Ed25519 signature of the signature base>:

The signature base (the signed bytes, UTF-8) is exactly these seven lines joined by "\\n", with no
trailing newline; names are lower case, each followed by `: ` and the value as sent:

    "@method": POST
    "@path": /api/sync/v1/heartbeat
    "@query": ?<raw query string, as sent, or just ? when there is none>
    "content-digest": sha-256=:…:
    "x-site-id": branch-01
    "x-sync-timestamp": 1767225600
    "x-sync-nonce": 3q2-7w…

`@method` is upper case; `@path` is the path as sent (percent-encoded), without the query. The
verifier checks, in order: all headers present (`MissingHeaders`), the body against a well-formed
Content-Digest (`BadDigest`), the other headers well formed and the signature (`BadSignature`),
then the timestamp within `window_secs` of its own clock either way (`StaleRequest`). Refusing a
reused nonce needs storage and is the caller's job (the primary keeps them for twice the window).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SITE_ID = "X-Site-Id"
TIMESTAMP = "X-Sync-Timestamp"
NONCE = "X-Sync-Nonce"
CONTENT_DIGEST = "Content-Digest"
SIGNATURE = "Signature"
SIGNED_HEADERS = (SITE_ID, TIMESTAMP, NONCE, CONTENT_DIGEST, SIGNATURE)

DEFAULT_WINDOW_SECS = 300
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{22,64}$")
SITE_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_DIGEST_RE = re.compile(r"^sha-256=:([A-Za-z0-9+/]+={0,2}):$")
_SIGNATURE_RE = re.compile(r"^sig1=:([A-Za-z0-9+/]+={0,2}):$")


class SignatureError(Exception):
    """A signed request that must be refused; `code` is the API's error code."""

    code = "bad_signature"


class MissingHeaders(SignatureError):
    code = "missing_signature"


class BadDigest(SignatureError):
    code = "bad_digest"


class BadSignature(SignatureError):
    code = "bad_signature"


class StaleRequest(SignatureError):
    code = "stale_request"


# -- keys ----------------------------------------------------------------------------------------


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def save_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write the key as PEM PKCS8 into a new file created with mode 0600 (never over an old one)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as base64url (no padding) of its raw 32 bytes: what enrollment sends."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """The inverse of `public_key_text`; ValueError for anything that is not 32 raw key bytes."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError("public key is not base64url") from e
    if len(raw) != 32 or not re.fullmatch(r"[A-Za-z0-9_-]{43}", text):
        raise ValueError("public key must be the 32 raw bytes of an Ed25519 key, base64url")
    return Ed25519PublicKey.from_public_bytes(raw)


# -- signing -------------------------------------------------------------------------------------


def content_digest(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def signature_base(
    method: str, path: str, query: str, digest: str, site_id: str, timestamp: str, nonce: str
) -> bytes:
    """The exact bytes that are signed (see the module documentation)."""
    lines = [
        f'"@method": {method.upper()}',
        f'"@path": {path}',
        f'"@query": ?{query}',
        f'"content-digest": {digest}',
        f'"x-site-id": {site_id}',
        f'"x-sync-timestamp": {timestamp}',
        f'"x-sync-nonce": {nonce}',
    ]
    return "\n".join(lines).encode()


def new_nonce() -> str:
    return secrets.token_urlsafe(24)  # 32 characters


def sign(
    private_key: Ed25519PrivateKey,
    method: str,
    path: str,
    query: str,
    body: bytes,
    site_id: str,
    now: float,
    *,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers that sign this request (`query` is the raw query string without `?`)."""
    timestamp = str(int(now))
    nonce = nonce or new_nonce()
    digest = content_digest(body)
    base = signature_base(method, path, query, digest, site_id, timestamp, nonce)
    signature = base64.b64encode(private_key.sign(base)).decode()
    return {
        SITE_ID: site_id,
        TIMESTAMP: timestamp,
        NONCE: nonce,
        CONTENT_DIGEST: digest,
        SIGNATURE: f"sig1=:{signature}:",
    }


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name from a case-insensitive mapping or a plain dict."""
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def signed_site_id(headers: Mapping[str, str]) -> str:
    """The site a request claims to come from, checked for form only (MissingHeaders/BadSignature)."""
    missing = [n for n in SIGNED_HEADERS if not header_value(headers, n)]
    if missing:
        raise MissingHeaders(f"unsigned request: missing header(s) {', '.join(missing)}")
    site_id = header_value(headers, SITE_ID) or ""
    if not SITE_ID_RE.fullmatch(site_id):
        raise BadSignature("malformed X-Site-Id header")
    return site_id


def verify(
    public_key: Ed25519PublicKey,
    method: str,
    path: str,
    query: str,
    body: bytes,
    headers: Mapping[str, str],
    now: float,
    window_secs: float = DEFAULT_WINDOW_SECS,
) -> None:
    """Raise a `SignatureError` subclass unless the headers sign exactly this request, recently."""
    site_id = signed_site_id(headers)
    timestamp = header_value(headers, TIMESTAMP) or ""
    nonce = header_value(headers, NONCE) or ""
    digest = header_value(headers, CONTENT_DIGEST) or ""
    signature = header_value(headers, SIGNATURE) or ""
    if not _DIGEST_RE.fullmatch(digest):
        raise BadDigest("malformed Content-Digest header: sha-256=:<base64>: expected")
    if not secrets.compare_digest(digest, content_digest(body)):
        raise BadDigest("the body does not match its Content-Digest")
    if not re.fullmatch(r"[0-9]{1,12}", timestamp):
        raise BadSignature("malformed X-Sync-Timestamp header: integer unix seconds expected")
    if not NONCE_RE.fullmatch(nonce):
        raise BadSignature("malformed X-Sync-Nonce header: 22-64 url-safe characters expected")
    m = _SIGNATURE_RE.fullmatch(signature)
    if m is None:
        raise BadSignature("malformed Signature header: sig1=:<base64>: expected")
    try:
        raw = base64.b64decode(m.group(1), validate=True)
        public_key.verify(raw, signature_base(method, path, query, digest, site_id, timestamp, nonce))
    except (binascii.Error, ValueError, InvalidSignature) as e:
        raise BadSignature("the signature does not match this request and the site's key") from e
    if abs(now - int(timestamp)) > window_secs:
        raise StaleRequest(
            f"X-Sync-Timestamp is more than {int(window_secs)} s away from the primary's clock"
        )


__all__ = [
    "CONTENT_DIGEST",
    "DEFAULT_WINDOW_SECS",
    "NONCE",
    "SIGNATURE",
    "SITE_ID",
    "TIMESTAMP",
    "BadDigest",
    "BadSignature",
    "MissingHeaders",
    "SignatureError",
    "StaleRequest",
    "content_digest",
    "generate_key",
    "header_value",
    "load_private_key",
    "parse_public_key",
    "public_key_text",
    "save_private_key",
    "sign",
    "signature_base",
    "signed_site_id",
    "verify",
]
