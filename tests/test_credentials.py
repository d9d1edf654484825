"""Credentials: slow salted hashes, keyed card hashes, token digests and the lockout.

Argon2 with the production parameters takes ~35 ms, so most tests use a cheap hasher (same code,
tiny memory cost) and only one test pays for the real parameters.
"""

from __future__ import annotations

import hashlib
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siteserver.domain import Lockout, SecretHasher, new_token, same_secret, token_digest
from siteserver.domain.credentials import ARGON2_ITERATIONS, ARGON2_MEMORY_KIB
from tests.kit.primary import FakeClock

PEPPER = b"pepper-one-0123456789abcdef-0123"
OTHER_PEPPER = b"pepper-two-0123456789abcdef-0123"
FAST = SecretHasher(PEPPER, memory_kib=64, iterations=1)


# -- SecretHasher ----------------------------------------------------------------------------


def test_default_parameters_round_trip() -> None:
    hasher = SecretHasher(PEPPER)
    encoded = hasher.hash("s3cret-pass")
    assert encoded.startswith("$argon2id$")
    assert f"m={ARGON2_MEMORY_KIB},t={ARGON2_ITERATIONS},p=1" in encoded
    assert hasher.verify("s3cret-pass", encoded)


def test_round_trip_and_wrong_secret() -> None:
    encoded = FAST.hash("1234")
    assert FAST.verify("1234", encoded) is True
    assert FAST.verify("1235", encoded) is False
    assert FAST.verify("", encoded) is False
    assert FAST.verify("1234 ", encoded) is False


def test_hashes_are_salted() -> None:
    a, b = FAST.hash("same"), FAST.hash("same")
    assert a != b
    assert FAST.verify("same", a)
    assert FAST.verify("same", b)


def test_pepper_matters() -> None:
    encoded = FAST.hash("correct horse")
    other = SecretHasher(OTHER_PEPPER, memory_kib=64, iterations=1)
    assert other.verify("correct horse", encoded) is False


def test_encoded_hash_does_not_contain_the_secret() -> None:
    secret = "correct-horse-battery-staple"
    encoded = FAST.hash(secret)
    assert secret not in encoded
    assert secret.encode().hex() not in encoded
    assert PEPPER.decode() not in encoded


def test_malformed_stored_hash_is_false_not_an_error() -> None:
    for stored in ("", "garbage", "$argon2id$v=19$m=64,t=1,p=1$bad$bad", "plaintext-1234"):
        assert FAST.verify("1234", stored) is False


def test_verify_none_is_false_and_still_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown user (no stored hash) costs the same work as a wrong password."""
    calls: list[str] = []
    original = SecretHasher.hash

    def counting(self: SecretHasher, secret: str) -> str:
        calls.append(secret)
        return original(self, secret)

    monkeypatch.setattr(SecretHasher, "hash", counting)
    assert FAST.verify("whatever", None) is False
    assert calls == ["whatever"]


# -- card numbers and tokens -----------------------------------------------------------------


def test_card_hash_deterministic_and_normalized() -> None:
    h = FAST.card_hash("ab12cd34")
    assert h == FAST.card_hash("ab12cd34")
    assert h == FAST.card_hash("AB12CD34")
    assert h == FAST.card_hash("  Ab12cD34 \n")
    assert h != FAST.card_hash("ab12cd35")
    assert len(h) == 64 and int(h, 16) >= 0
    assert "ab12cd34" not in h.lower()


def test_card_hash_depends_on_pepper() -> None:
    other = SecretHasher(OTHER_PEPPER)
    assert FAST.card_hash("12345678") != other.card_hash("12345678")
    # the memory/iteration settings are irrelevant to the keyed hash
    assert FAST.card_hash("12345678") == SecretHasher(PEPPER).card_hash("12345678")


def test_card_hash_is_keyed_not_plain_sha256() -> None:
    assert FAST.card_hash("12345678") != hashlib.sha256(b"12345678").hexdigest()


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_card_hash_distinguishes_distinct_normalized_numbers(a: str, b: str) -> None:
    same = a.strip().upper() == b.strip().upper()
    assert (FAST.card_hash(a) == FAST.card_hash(b)) == same


def test_token_digest() -> None:
    token = new_token("dev")
    assert token_digest(token) == hashlib.sha256(token.encode()).hexdigest()
    assert token_digest(token) == token_digest(token)
    assert token_digest(token) != token_digest(token + "x")
    assert token not in token_digest(token)


def test_new_token_prefix_and_entropy() -> None:
    tokens = {new_token("adm") for _ in range(50)}
    assert len(tokens) == 50
    for t in tokens:
        assert t.startswith("adm_")
        assert len(t) >= 4 + 43  # 32 random bytes, url-safe base64


def test_same_secret() -> None:
    assert same_secret("abc", "abc")
    assert not same_secret("abc", "abd")
    assert not same_secret("abc", "abcd")
    assert same_secret("", "")


# -- Lockout ---------------------------------------------------------------------------------


def _lockout(clock: FakeClock, **kw: object) -> Lockout:
    return Lockout(clock=clock, **kw)  # type: ignore[arg-type]


def test_five_failures_lock_for_lock_secs() -> None:
    clock = FakeClock()
    lo = _lockout(clock)
    keys = ["user:alice"]
    for _ in range(4):
        lo.failure(keys)
        assert lo.retry_after(keys) is None
    lo.failure(keys)
    assert lo.retry_after(keys) == pytest.approx(60.0)
    clock.advance(59.5)
    assert lo.retry_after(keys) == pytest.approx(0.5)
    clock.advance(0.5)
    assert lo.retry_after(keys) is None  # exactly lock_secs later it is open again


def test_lock_expires_and_count_starts_over() -> None:
    clock = FakeClock()
    lo = _lockout(clock, lock_secs=30.0)
    keys = ["user:bob"]
    for _ in range(5):
        lo.failure(keys)
    assert lo.retry_after(keys) == pytest.approx(30.0)
    clock.advance(31)
    assert lo.retry_after(keys) is None
    for _ in range(4):
        lo.failure(keys)
    assert lo.retry_after(keys) is None
    lo.failure(keys)
    assert lo.retry_after(keys) == pytest.approx(30.0)


def test_success_resets_the_count() -> None:
    clock = FakeClock()
    lo = _lockout(clock)
    keys = ["user:carol"]
    for _ in range(4):
        lo.failure(keys)
    lo.success(keys)
    for _ in range(4):
        lo.failure(keys)
    assert lo.retry_after(keys) is None  # 4 + 4 failures, but never 5 in a row
    lo.failure(keys)
    assert lo.retry_after(keys) is not None


def test_keys_are_independent() -> None:
    clock = FakeClock()
    lo = _lockout(clock)
    for _ in range(5):
        lo.failure(["user:dave"])
    assert lo.retry_after(["user:dave"]) is not None
    assert lo.retry_after(["user:erin"]) is None
    assert lo.retry_after([]) is None


def test_device_lock_affects_every_login_at_that_device() -> None:
    clock = FakeClock()
    lo = _lockout(clock)
    # five different usernames fail at one device: no user is locked, the device is
    for i in range(5):
        lo.failure([f"user:guess{i}", "device:mfd-1"])
    assert lo.retry_after(["user:guess0"]) is None
    assert lo.retry_after(["device:mfd-1", "user:alice"]) == pytest.approx(60.0)
    assert lo.retry_after(["user:alice", "device:mfd-1"]) == pytest.approx(60.0)
    assert lo.retry_after(["device:mfd-2", "user:alice"]) is None


def test_retry_after_reports_the_longest_remaining_lock() -> None:
    clock = FakeClock()
    lo = _lockout(clock)
    for _ in range(5):
        lo.failure(["user:frank"])
    clock.advance(10)
    for _ in range(5):
        lo.failure(["device:mfd-9"])
    assert lo.retry_after(["user:frank"]) == pytest.approx(50.0)
    assert lo.retry_after(["device:mfd-9"]) == pytest.approx(60.0)
    assert lo.retry_after(["user:frank", "device:mfd-9"]) == pytest.approx(60.0)
    clock.advance(55)
    assert lo.retry_after(["user:frank", "device:mfd-9"]) == pytest.approx(5.0)


def test_failures_from_many_threads_are_counted() -> None:
    lo = Lockout(max_failures=200, clock=FakeClock())
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(25):
            lo.failure(["device:shared"])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert lo.retry_after(["device:shared"]) is not None  # exactly 200 failures: locked


def test_memory_stays_bounded_under_a_username_spray() -> None:
    clock = FakeClock()
    lo = _lockout(clock, max_tracked=100)
    for _ in range(5):
        lo.failure(["user:victim"])
    for i in range(5_000):
        lo.failure([f"user:spray{i}"])
        assert len(lo._failures) <= 101
    assert lo.retry_after(["user:victim"]) is not None  # an active lock is never forgotten
    # the most recent counts survive pruning
    for _ in range(4):
        lo.failure(["user:spray4999"])
    assert lo.retry_after(["user:spray4999"]) is not None
