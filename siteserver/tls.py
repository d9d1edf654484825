"""TLS for both roles (CONTRACT v1.1 `[tls]`): the files a server serves HTTPS with (a site may
make its own self-signed ECDSA P-256 certificate on first start), the SHA-256 fingerprint an admin
compares, and the context a site verifies the primary with."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from siteserver.config import Tls
from siteserver.keys import write_private

GENERATED_DAYS = 3650  # a branch's own certificate: pinned by fingerprint, not by expiry


def generated_paths(data_dir: Path) -> tuple[Path, Path]:
    return data_dir / "tls" / "cert.pem", data_dir / "tls" / "key.pem"


def server_files(tls: Tls, data_dir: Path, host: str) -> tuple[Path, Path] | None:
    """(certificate, private key) to serve HTTPS with, or None for plain HTTP; with `generate`,
    made in data_dir/tls on first start (the key 0600) and kept."""
    if tls.certificate is not None and tls.private_key is not None:
        return tls.certificate, tls.private_key
    if not tls.generate:
        return None
    cert, key = generated_paths(data_dir)
    if not cert.exists():
        generate(cert, key, names=_own_names(host))
    return cert, key


def _own_names(host: str) -> list[str]:
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()]
    if host not in ("", "0.0.0.0", "::"):
        names.append(host)
    return list(dict.fromkeys(n for n in names if n))


def generate(cert_path: Path, key_path: Path, *, names: list[str]) -> None:
    """A self-signed ECDSA P-256 certificate whose SANs are `names` (addresses as IP SANs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-1] if names else "siteserver")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=GENERATED_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(key_path, pem_key.decode())
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def fingerprint(cert_path: Path) -> str:
    """`SHA256:AB:CD:…` of the (first) certificate in the file, as an admin compares it."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return "SHA256:" + cert.fingerprint(hashes.SHA256()).hex(":").upper()


def pinned_context(certificate: Path) -> ssl.SSLContext:
    """A context that accepts exactly this certificate (the one a process on this machine serves,
    reached at whatever local address): a leaf trusted as itself, so no name is checked."""
    context = ssl.create_default_context(cafile=str(certificate))
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a CA-signed leaf is its own anchor
    return context


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """What a site verifies the primary with: `ca_file`, else the system's trust store."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)


def tls_failure(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a failed call (httpx wraps it), else None."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def refused_certificate(error: BaseException) -> str | None:
    """Why a certificate was refused, when that is what failed the call."""
    failure = tls_failure(error)
    if isinstance(failure, ssl.SSLCertVerificationError):
        return str(failure.verify_message or failure.reason)
    return None


def refused_reason(error: BaseException) -> str | None:
    """The sentence for a TLS handshake the site refused (a wrong certificate), else None."""
    refused = refused_certificate(error)
    if refused is not None:
        return f"the primary's TLS certificate was refused: {refused}"
    failure = tls_failure(error)
    if failure is not None:
        return f"TLS with the primary failed: {failure.reason or failure}"
    text = str(error)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return f"the primary's TLS certificate was refused: {text}"
    return None
