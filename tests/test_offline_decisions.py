"""The site's one local decision (siteserver.domain.offline), online and offline: pure tests."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from siteserver.domain import AccountState, Enforcement, OfflinePolicies, authorize
from siteserver.domain.offline import Caps, ChargeQuestion, decide, target_of

A, F = Enforcement.AUTHORIZE, Enforcement.FACT


def pol(**kw: object) -> OfflinePolicies:
    return OfflinePolicies.model_validate(kw)


def ask(cost: int = 100, enf: Enforcement = A, **kw: object) -> ChargeQuestion:
    base: dict[str, object] = {
        "username": "alice",
        "cost_cents": cost,
        "enforcement": enf,
        "user_known": True,
    }
    base.update(kw)
    return ChargeQuestion(**base)  # type: ignore[arg-type]


RICH = AccountState(10_000, True, 0)
POOR = AccountState(50, True, 20)
OPEN = AccountState(-500, False, 0)


def test_online_is_the_plain_rule() -> None:
    d = decide(ask(), pol(), {None: POOR}, offline=False)
    assert not d.allowed and d.reason == "insufficient balance" and d.flags == ()
    d = decide(ask(cost=70), pol(), {None: POOR}, offline=False)
    assert d.allowed and d.enforcement is A and d.flags == ()
    d = decide(ask(named_account="Mkt"), pol(), {None: RICH}, offline=False)
    assert not d.allowed and "not a shared account" in (d.reason or "")
    d = decide(
        ask(user_known=False),
        pol(unauthenticated_users={"mode": "shared_account", "shared_account": "U"}),
        {"U": RICH},
        offline=False,
    )
    assert not d.allowed


def test_restricted_credit_modes() -> None:
    # cached_balance: down to -overdraft of the effective balance
    assert decide(ask(cost=70), pol(), {None: POOR}, offline=True).allowed
    d = decide(ask(cost=71), pol(), {None: POOR}, offline=True)
    assert not d.allowed and d.reason == "insufficient balance (offline policy: cached_balance)"
    assert "policy:cached_balance" in d.flags and "offline" in d.flags
    # allowance: that plus offline_credit_cents
    p = pol(restricted_credit={"mode": "allowance", "offline_credit_cents": 30})
    d = decide(ask(cost=100), p, {None: POOR}, offline=True)
    assert d.allowed and d.flags == ("offline", "policy:allowance") and d.enforcement is F
    assert not decide(ask(cost=101), p, {None: POOR}, offline=True).allowed
    # deny: no offline spending by restricted accounts; unrestricted ones are not affected
    p = pol(restricted_credit={"mode": "deny"})
    d = decide(ask(cost=1), p, {None: RICH}, offline=True)
    assert not d.allowed and "offline policy: deny" in (d.reason or "")
    assert decide(ask(cost=1), p, {None: OPEN}, offline=True).allowed
    # ... but a fact (usage) is recorded
    d = decide(ask(cost=1, enf=F), p, {None: RICH}, offline=True)
    assert d.allowed and "policy:deny" in d.flags
    # unlimited: everything
    p = pol(restricted_credit={"mode": "unlimited"})
    d = decide(ask(cost=10**6), p, {None: POOR}, offline=True)
    assert d.allowed and "policy:unlimited" in d.flags


def test_account_selection_modes() -> None:
    q = ask(named_account="Marketing", named_allowed=False)
    d = decide(q, pol(), {"Offline Account": RICH}, offline=True)
    assert d.allowed and d.shared_account == "Offline Account" and "account:shared_fallback" in d.flags
    d = decide(
        q, pol(account_selection={"mode": "personal", "shared_account": None}), {None: RICH}, offline=True
    )
    assert d.allowed and d.shared_account is None and "account:personal_fallback" in d.flags
    d = decide(
        q, pol(account_selection={"mode": "cancel", "shared_account": None}), {None: RICH}, offline=True
    )
    assert not d.allowed and "account:cancel" in d.flags and "cancel" in (d.reason or "")
    # a member of a mirrored shared account charges it, offline as online
    d = decide(ask(named_account="Marketing", named_allowed=True), pol(), {"Marketing": RICH}, offline=True)
    assert d.allowed and d.shared_account == "Marketing"
    # the fallback account is not in the mirror: refused, with the reason
    d = decide(q, pol(), {None: RICH}, offline=True)
    assert not d.allowed and "not known at this site" in (d.reason or "")


def test_unauthenticated_users_modes() -> None:
    q = ask(user_known=False, username="ghost")
    d = decide(q, pol(), {}, offline=True)
    assert not d.allowed and "unauthenticated:deny" in d.flags
    p = pol(unauthenticated_users={"mode": "shared_account", "shared_account": "Guests"})
    d = decide(q, p, {"Guests": OPEN}, offline=True)
    assert d.allowed and d.shared_account == "Guests" and "unauthenticated:shared_account" in d.flags
    assert target_of(q, p, offline=False).allowed is False


def test_caps() -> None:
    caps = Caps(per_user_cents=150, user_spent_cents=100)
    d = decide(ask(cost=60), pol(), {None: RICH}, offline=True, caps=caps)
    assert not d.allowed and "cap:exceeded" in d.flags and "per user" in (d.reason or "")
    assert decide(ask(cost=50), pol(), {None: RICH}, offline=True, caps=caps).allowed
    d = decide(ask(cost=60, enf=F), pol(), {None: RICH}, offline=True, caps=caps)
    assert d.allowed and "cap:exceeded" in d.flags
    site = Caps(site_cents=10, site_spent_cents=10)
    d = decide(ask(cost=1), pol(), {None: OPEN}, offline=True, caps=site)
    assert not d.allowed and "of this site" in (d.reason or "")
    # caps do not apply online
    assert decide(ask(cost=60), pol(), {None: RICH}, offline=False, caps=caps).allowed


policies = st.builds(
    lambda credit, extra, sel, unauth: OfflinePolicies.model_validate(
        {
            "restricted_credit": {"mode": credit, "offline_credit_cents": extra},
            "account_selection": {"mode": sel, "shared_account": "Offline Account"},
            "unauthenticated_users": {"mode": unauth, "shared_account": "Guests"},
        }
    ),
    st.sampled_from(["cached_balance", "allowance", "deny", "unlimited"]),
    st.integers(0, 10_000),
    st.sampled_from(["shared_account", "personal", "cancel"]),
    st.sampled_from(["deny", "shared_account"]),
)
states = st.builds(AccountState, st.integers(-10_000, 10_000), st.booleans(), st.integers(0, 5_000))
asks = st.builds(
    ChargeQuestion,
    username=st.just("u"),
    cost_cents=st.integers(0, 20_000),
    enforcement=st.sampled_from([A, F]),
    user_known=st.booleans(),
    named_account=st.sampled_from([None, "Marketing"]),
    named_allowed=st.booleans(),
)
caps = st.builds(
    Caps,
    st.none() | st.integers(0, 10_000),
    st.none() | st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
)


@given(asks, policies, states, caps)
def test_offline_decisions_hold_their_promises(
    q: ChargeQuestion, p: OfflinePolicies, s: AccountState, c: Caps
) -> None:
    accounts = {None: s, "Marketing": s, "Offline Account": s, "Guests": s}
    d = decide(q, p, accounts, offline=True, caps=c)
    assert "offline" in d.flags
    assert d.allowed == (d.reason is None)
    if d.allowed:
        assert d.enforcement is F  # settled on merge, not re-decided
        assert (q.cost_cents == 0 or "cap:exceeded" not in d.flags) or q.enforcement is F
    if q.enforcement is F and q.user_known and (q.named_account is None or q.named_allowed):
        assert d.allowed  # usage is a fact: always recorded
    if q.enforcement is A and q.cost_cents > 0 and d.allowed and s.restricted:
        credit = p.restricted_credit
        assert credit.mode != "deny"
        if credit.mode == "cached_balance":
            assert s.balance_cents + s.overdraft_cents - q.cost_cents >= 0
        if credit.mode == "allowance":
            assert s.balance_cents + s.overdraft_cents + credit.offline_credit_cents - q.cost_cents >= 0
    if d.allowed and q.enforcement is A and q.cost_cents > 0:
        if c.per_user_cents is not None:
            assert c.user_spent_cents + q.cost_cents <= c.per_user_cents
        if c.site_cents is not None:
            assert c.site_spent_cents + q.cost_cents <= c.site_cents
    if not q.user_known:
        assert d.allowed is False or d.shared_account == "Guests"


@given(asks, policies, states, caps)
def test_online_decisions_are_the_primary_rule(
    q: ChargeQuestion, p: OfflinePolicies, s: AccountState, c: Caps
) -> None:
    d = decide(q, p, {None: s, "Marketing": s}, offline=False, caps=c)
    assert d.flags == ()
    if d.allowed:
        assert d.enforcement is q.enforcement  # the primary decides again: not a fact
    if not q.user_known or (q.named_account is not None and not q.named_allowed):
        assert not d.allowed
    else:
        assert d.allowed == authorize(s, -q.cost_cents, q.enforcement).allowed
