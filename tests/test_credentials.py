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

from siteserver.domain import Lockout, LoginGuard, SecretHasher, new_token, same_secret, token_digest
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


def test_the_window_slides_failures_older_than_it_are_forgotten() -> None:
    clock = FakeClock()
    lo = _lockout(clock, window_secs=100.0)
    keys = ["user:bob"]
    for _ in range(4):
        lo.failure(keys)
        clock.advance(30)  # failures at 0, 30, 60, 90
    lo.failure(keys)  # at 120 the one at 0 has left the window: 30, 60, 90 and 120 are in it
    assert lo.retry_after(keys) is None
    lo.failure(keys)  # five inside the window now
    assert lo.retry_after(keys) == pytest.approx(60.0)


def test_each_repeated_lock_doubles_up_to_the_cap() -> None:
    clock = FakeClock()
    lo = _lockout(clock, lock_secs=60.0, max_lock_secs=300.0)
    keys = ["user:carol"]
    waits = []
    for _ in range(5):
        for _ in range(5):
            lo.failure(keys)
        wait = lo.retry_after(keys)
        assert wait is not None
        waits.append(wait)
        clock.advance(wait)
    assert waits == pytest.approx([60.0, 120.0, 240.0, 300.0, 300.0])
    # Quiet for max_lock_secs after the last lock ended: the next lock is short again.
    clock.advance(300.0)
    for _ in range(5):
        lo.failure(keys)
    assert lo.retry_after(keys) == pytest.approx(60.0)


def test_forgive_clears_the_window_but_not_the_level() -> None:
    clock = FakeClock()
    lo = _lockout(clock)
    keys = ["user:carol"]
    for _ in range(4):
        lo.failure(keys)
    lo.forgive(keys)
    for _ in range(4):
        lo.failure(keys)
    assert lo.retry_after(keys) is None  # 4 + 4 failures, forgiven in between
    lo.failure(keys)
    assert lo.retry_after(keys) == pytest.approx(60.0)
    clock.advance(60)
    lo.forgive(keys)
    for _ in range(5):
        lo.failure(keys)
    assert lo.retry_after(keys) == pytest.approx(120.0)  # the back-off remembers


def test_keys_are_independent() -> None:
    clock = FakeClock()
    lo = _lockout(clock)
    for _ in range(5):
        lo.failure(["user:dave"])
    assert lo.retry_after(["user:dave"]) is not None
    assert lo.retry_after(["user:erin"]) is None
    assert lo.retry_after([]) is None


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


def _guard(clock: FakeClock) -> LoginGuard:
    return LoginGuard(
        devices=Lockout(max_failures=10, window_secs=60.0, clock=clock),
        users=Lockout(clock=clock),
    )


def test_a_device_success_does_not_refill_its_budget() -> None:
    clock = FakeClock()
    guard = _guard(clock)
    # 4 wrong cards, the device's own good card, 4 more, ...: the tenth failure locks the device
    for attempt in range(1, 10):
        guard.failure("device:mfd-1")
        if attempt % 4 == 0:
            guard.success([])  # a card login: no secret, nothing to forgive
        assert guard.retry_after("device:mfd-1") is None
    guard.failure("device:mfd-1")
    assert guard.retry_after("device:mfd-1") == pytest.approx(60.0)
    assert guard.retry_after("device:mfd-2") is None


def test_a_users_lock_holds_at_every_device_and_leaves_others_open() -> None:
    clock = FakeClock()
    guard = _guard(clock)
    for i in range(5):
        guard.failure(f"device:mfd-{i}", ["username:gina", "user:gina"])
    assert guard.retry_after("device:mfd-9", ["id_number:x", "user:gina"]) == pytest.approx(60.0)
    assert guard.retry_after("device:mfd-9", []) is None  # a card login for gina still works
    assert guard.retry_after("device:mfd-0", ["username:hal", "user:hal"]) is None


@given(st.lists(st.sampled_from(["fail", "ok", "tick"]), max_size=60))
def test_no_sequence_gets_more_than_the_budget_of_guesses_in_a_window(steps: list[str]) -> None:
    """Whatever a device interleaves (failures, its own good logins, time passing), it never has
    more than 10 failures counted as open within any 60 s."""
    clock = FakeClock()
    guard = _guard(clock)
    open_failures: list[float] = []
    for step in steps:
        if step == "tick":
            clock.advance(7.0)
        elif step == "ok":
            guard.success([])
        elif guard.retry_after("device:d") is None:
            guard.failure("device:d")
            open_failures.append(clock())
            recent = [t for t in open_failures if t > clock() - 60.0]
            assert len(recent) <= 10


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
