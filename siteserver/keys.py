"""Secret files a server makes for itself on first start: tokens and the hashing pepper."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def _write_new(path: Path, content: str) -> bool:
    """Create `path` (mode 0600) with `content` unless it exists; True if this call made it.

    Written beside and hard-linked into place, so two servers racing never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def write_private(path: Path, content: str) -> bool:
    """A new file only its owner may read (a private key); False if it already existed."""
    return _write_new(path, content)


def load_or_create_token(path: Path, configured: str | None) -> str:
    """The configured value if given, else the one in `path`, made on first start."""
    if configured:
        return configured
    if not path.exists():
        _write_new(path, secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def load_or_create_pepper(path: Path) -> bytes:
    if not path.exists():
        _write_new(path, secrets.token_hex(32) + "\n")
    text = path.read_text().strip()
    try:
        pepper = bytes.fromhex(text)
    except ValueError as e:
        raise RuntimeError(f"{path} is not a hex secrets file") from e
    if len(pepper) < 16:
        raise RuntimeError(f"{path} holds too short a secret")
    return pepper
