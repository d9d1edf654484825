"""Credentials: slow salted hashes for what people type, keyed hashes for what cards carry,
digests for machine tokens, and the lockout that makes guessing pointless."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

# OWASP's Argon2id baseline: 19 MiB, 2 passes, 1 lane (about 35 ms here).
ARGON2_MEMORY_KIB = 19_456
ARGON2_ITERATIONS = 2
ARGON2_LANES = 1


@dataclass(frozen=True)
class SecretHasher:
    """Hashes passwords and PINs with Argon2id and a server-side pepper (Argon2's secret input).

    The pepper never sits in the database beside the hashes, so a stolen database alone
    cannot be brute-forced offline.
    """

    pepper: bytes
    memory_kib: int = ARGON2_MEMORY_KIB
    iterations: int = ARGON2_ITERATIONS

    def hash(self, secret: str) -> str:
        kdf = Argon2id(
            salt=secrets.token_bytes(16),
            length=32,
            iterations=self.iterations,
            lanes=ARGON2_LANES,
            memory_cost=self.memory_kib,
            secret=self.pepper,
        )
        return kdf.derive_phc_encoded(secret.encode())

    def verify(self, secret: str, encoded: str | None) -> bool:
        """Constant-time check. With no stored hash (unknown user, no PIN set) it still spends
        the same time on a dummy hash, so timing does not reveal which case it was."""
        if encoded is None:
            self.hash(secret)
            return False
        try:
            Argon2id.verify_phc_encoded(secret.encode(), encoded, secret=self.pepper)
        except (InvalidKey, ValueError):
            return False
        return True

    @cached_property
    def _card_key(self) -> bytes:
        return hmac.new(self.pepper, b"siteserver/card-number/v1", hashlib.sha256).digest()

    def card_hash(self, card_number: str) -> str:
        """Keyed hash of a card or ID number: lookups stay exact, the number is not stored."""
        normalized = card_number.strip().upper()
        return hmac.new(self._card_key, normalized.encode(), hashlib.sha256).hexdigest()


def new_token(prefix: str) -> str:
    """A high-entropy bearer token; the prefix says which kind of credential it is."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def token_digest(token: str) -> str:
    """Tokens carry 256 random bits, so a plain SHA-256 is as strong as a slow hash for them."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass
class Lockout:
    """`max_failures` failures in a row for one key (a user, a device) lock it for `lock_secs`.

    In memory on purpose: a lockout slows an attacker at this server; it is not a record.
    """

    max_failures: int = 5
    lock_secs: float = 60.0
    clock: Callable[[], float] = time.monotonic
    max_tracked: int = 100_000  # keys with a failure count kept in memory at most
    _failures: dict[str, int] = field(default_factory=dict)
    _locked_until: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, keys: Iterable[str]) -> float | None:
        """Seconds until every one of `keys` is open again (the longest remaining lock), or None."""
        now = self.clock()
        with self._lock:
            waits = [until - now for k in keys if (until := self._locked_until.get(k, 0.0)) > now]
        return max(waits) if waits else None

    def failure(self, keys: Iterable[str]) -> None:
        now = self.clock()
        with self._lock:
            for k in keys:
                n = self._failures.get(k, 0) + 1
                if n >= self.max_failures:
                    self._locked_until[k] = now + self.lock_secs
                    n = 0
                self._failures[k] = n
            if len(self._failures) > self.max_tracked:  # bounded memory under a username spray
                # Forget the oldest half of the counts (dicts keep insertion order): memory stays
                # bounded and the O(n) pruning runs once per max_tracked/2 failures, not per call.
                live = [(k, v) for k, v in self._failures.items() if v]
                self._failures = dict(live[-max(1, self.max_tracked // 2) :])
            if len(self._locked_until) > self.max_tracked:
                self._locked_until = {k: t for k, t in self._locked_until.items() if t > now}

    def success(self, keys: Iterable[str]) -> None:
        with self._lock:
            for k in keys:
                self._failures.pop(k, None)
