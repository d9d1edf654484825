"""Credentials: slow salted hashes for what people type, keyed hashes for what cards carry,
digests for machine tokens, and the lockout that makes guessing pointless."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
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
    """A sliding-window failure budget per key: `max_failures` failures within `window_secs`
    lock the key. Each lock lasts twice the one before (from `lock_secs` up to `max_lock_secs`);
    a key with no lock for `max_lock_secs` starts again at `lock_secs`. A success never clears
    the window: only `forgive` does, and only where the caller proved who it is.

    In memory on purpose: a lockout slows an attacker at this server; it is not a record.
    """

    max_failures: int = 5
    window_secs: float = 900.0
    lock_secs: float = 60.0
    max_lock_secs: float = 3600.0
    clock: Callable[[], float] = time.monotonic
    max_tracked: int = 100_000  # keys with failures kept in memory at most
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _locks: dict[str, tuple[float, int]] = field(default_factory=dict)  # key: (until, level)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, keys: Iterable[str]) -> float | None:
        """Seconds until every one of `keys` is open again (the longest remaining lock), or None."""
        now = self.clock()
        with self._lock:
            waits = [lock[0] - now for k in keys if (lock := self._locks.get(k)) and lock[0] > now]
        return max(waits) if waits else None

    def failure(self, keys: Iterable[str]) -> None:
        now = self.clock()
        with self._lock:
            for k in keys:
                times = self._failures.setdefault(k, deque())
                times.append(now)
                while times and times[0] <= now - self.window_secs:
                    times.popleft()
                if len(times) >= self.max_failures:
                    until, level = self._locks.get(k, (0.0, 0))
                    level = 1 if now - until >= self.max_lock_secs else level + 1
                    wait = min(self.lock_secs * 2 ** (level - 1), self.max_lock_secs)
                    self._locks[k] = (now + wait, level)
                    times.clear()
            if len(self._failures) > self.max_tracked:  # bounded memory under a username spray
                # Forget the oldest half (dicts keep insertion order): memory stays bounded and
                # the O(n) pruning runs once per max_tracked/2 new keys, not per call.
                live = [(k, v) for k, v in self._failures.items() if v]
                self._failures = dict(live[-max(1, self.max_tracked // 2) :])
            if len(self._locks) > self.max_tracked:
                horizon = now - self.max_lock_secs
                self._locks = {k: lock for k, lock in self._locks.items() if lock[0] > horizon}

    def forgive(self, keys: Iterable[str]) -> None:
        """Forget the failures in the window (not the lock level): the owner proved who it is."""
        with self._lock:
            for k in keys:
                self._failures.pop(k, None)


@dataclass
class LoginGuard:
    """The rules for guessing at logins, in two budgets (docs/security.md has the numbers).

    - A device: 10 failures of any kind within 60 s lock every login at it. Its own good logins
      do not refill the budget, so a device cannot slip a valid card in between guesses.
    - A user: 5 wrong secrets within 15 min, over every path that takes one (username and
      password, username and PIN, ID number and PIN), lock secret logins for that user, and for
      the name or ID number typed, known or not. A card login, which guesses no secret, still
      works, so guessing at a victim cannot keep them from printing.
    Locks double with each repeat, from 60 s up to an hour.
    """

    devices: Lockout = field(default_factory=lambda: Lockout(max_failures=10, window_secs=60.0))
    users: Lockout = field(default_factory=Lockout)

    def retry_after(self, device: str, users: Iterable[str] = ()) -> float | None:
        waits = [
            w for w in (self.devices.retry_after([device]), self.users.retry_after(users)) if w is not None
        ]
        return max(waits) if waits else None

    def failure(self, device: str, users: Iterable[str] = ()) -> None:
        self.devices.failure([device])
        self.users.failure(users)

    def success(self, users: Iterable[str]) -> None:
        self.users.forgive(users)
