"""The shipped HAProxy configuration (deploy/haproxy/haproxy.cfg) in front of the real pair: real
HAProxy on loopback with only the addresses and the health key filled in, two primaries on one
database with the guard on, and a site whose `primary` is the balancer's address. The active
member is SIGKILLed; the site rides the gap offline and comes back through HAProxy to the new
active member, its journal merged exactly once."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from siteserver.launch import free_port, wait_until
from tests.kit.primary import Pair, Primary
from tests.kit.site import Branch, add_user, login, start_branch

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="Debian's haproxy is not installed"),
]

SHIPPED = Path(__file__).resolve().parents[1] / "deploy" / "haproxy" / "haproxy.cfg"


def balancer_config(members: list[Primary], port: int, health_key: str) -> str:
    """The shipped file with its example addresses and key replaced, nothing else changed."""
    text = SHIPPED.read_text()
    text, binds = re.subn(r"(?m)^(\s*bind\s+)\S+", rf"\g<1>127.0.0.1:{port}", text)
    servers = iter(m.url.removeprefix("http://") for m in members)
    text, n = re.subn(r"(?m)^(\s*server\s+\S+\s+)\S+", lambda m: m.group(1) + next(servers), text)
    assert binds == 1 and n == len(members), "the shipped file has one bind and a server per member"
    assert "HEALTH_KEY" in text
    return text.replace("HEALTH_KEY", health_key)


@contextmanager
def balanced_pair(
    tmp_path: Path, config: Callable[[list[Primary], int, Pair], str]
) -> Iterator[tuple[Pair, Primary, Primary, str, Path]]:
    """A pair (a active, b passive) and real HAProxy on `config(members, port, pair)` in front of
    it; yields the pair, its members, the balancer's URL and HAProxy's log. Everything ends here."""
    pair = Pair(tmp_path)
    proc: subprocess.Popen[bytes] | None = None
    log_path = tmp_path / "haproxy.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child's output, closed below
    try:
        a = pair.start("a", wait_active=True)
        b = pair.start("b")
        port = free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(config([a, b], port, pair))
        check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
        yield pair, a, b, f"http://127.0.0.1:{port}", log_path
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        log.close()
        pair.close()


@pytest.fixture
def balanced(tmp_path: Path) -> Iterator[tuple[Pair, Primary, Primary, str]]:
    """The shipped configuration, once its check has taken the passive member out."""
    shipped = balanced_pair(
        tmp_path, lambda members, port, pair: balancer_config(members, port, pair.health_key)
    )
    with shipped as (pair, a, b, url, log):
        # HAProxy starts with every server up; its health check takes the passive one out.
        wait_until(lambda: b"primary-b is DOWN" in log.read_bytes(), 30, "the passive member taken out")
        yield pair, a, b, url


def auth(pair: Pair) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair.admin_token}"}


def mode(branch: Branch) -> str:
    try:
        return str(httpx.get(branch.url + "/api/health/site-server/status", timeout=2).json()["mode"])
    except httpx.HTTPError:
        return "unreachable"


def copy(branch: Branch, session: str, txn_id: str) -> httpx.Response:
    with branch.client(branch.mono_device) as c:
        body = {"txn_id": txn_id, "kind": "copy", "pages": 1, "color": False}
        return c.post(f"/api/device/v1/sessions/{session}/usage", json=body)


def test_the_site_rides_a_failover_behind_haproxy_and_merges_once(
    balanced: tuple[Pair, Primary, Primary, str], tmp_path: Path
) -> None:
    pair, a, b, url = balanced
    wan = {"probe_interval_secs": 0.5, "offline_after_failures": 2, "online_after_successes": 2}
    branch = start_branch(a, tmp_path / "branch", primary_urls=[url], budget_ms=1500, wan=wan)
    try:
        add_user(a, branch, "rita", card_numbers=["CARD-RITA"], balance_cents=10_000)
        session = login(branch, branch.mono_device, card_number="CARD-RITA").json()["session_id"]
        txns: list[str] = []

        def charge() -> None:
            txn = str(uuid.uuid4())
            r = copy(branch, session, txn)
            assert r.status_code == 200, r.text
            txns.append(txn)

        for _ in range(5):
            charge()
        assert mode(branch) == "online"

        a.process.kill()  # SIGKILL: no lease handed back, b takes over after the interval
        wait_until(lambda: mode(branch) == "offline", 30, "the site offline while no member answers")
        for _ in range(10):
            charge()  # answered from the journal while the balancer has no active member
        b.wait_active(30)
        wait_until(lambda: mode(branch) == "online", 60, "the site online again through HAProxy")
        wait_until(
            lambda: not branch.query("SELECT 1 FROM journal WHERE status = 'pending'"),
            60,
            "the journal merged",
        )
        for _ in range(3):
            charge()  # online again, through the balancer to b
        with httpx.Client(base_url=url, headers=auth(pair), timeout=10) as c:
            rows = c.get("/api/admin/v1/transactions", params={"limit": 10_000}).json()["transactions"]
            ours = [t["txn_id"] for t in rows if t["txn_id"] in set(txns)]
            assert sorted(ours) == sorted(txns)  # every charge once, none twice, none lost
            balance = c.get("/api/admin/v1/users/rita").json()["balance_cents"]
        assert balance == 10_000 - 10 * len(txns)  # 10 c a mono page in the sample world
    finally:
        branch.process.stop()


TCP_CHECKS = """\
# As some field guides configure it: layer-4 checks and round robin, so the passive member,
# which accepts connections, stays in the rotation.
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s

frontend print_management
    bind 127.0.0.1:{port}
    default_backend primary_pair

backend primary_pair
    balance roundrobin
    default-server inter 1s fall 2 rise 2
    server primary-a {a} check
    server primary-b {b} check
"""


def test_behind_a_tcp_check_balancer_the_site_stays_online_and_says_why(tmp_path: Path) -> None:
    """Half the site's connections reach the passive member: it asks again on a new connection
    instead of counting the primary as down, stays online for every copy, and its status says
    the balancer routes to the passive member."""

    def tcp_checks(members: list[Primary], port: int, pair: Pair) -> str:
        a, b = (m.url.removeprefix("http://") for m in members)
        return TCP_CHECKS.format(port=port, a=a, b=b)

    with balanced_pair(tmp_path, tcp_checks) as (pair, a, _, url, _log):
        wait_until(lambda: _answers(url), 30, "HAProxy listening")
        # Both members in the rotation: a new connection each, and both kinds of answer come back.
        seen = {_status(url, pair) for _ in range(10)}
        assert seen == {200, 503}, seen

        wan = {"probe_interval_secs": 0.5, "offline_after_failures": 2, "online_after_successes": 2}
        branch = start_branch(a, tmp_path / "branch", primary_urls=[url], budget_ms=1500, wan=wan)
        try:
            add_user(a, branch, "tess", card_numbers=["CARD-TESS"], balance_cents=10_000)
            session = login(branch, branch.mono_device, card_number="CARD-TESS").json()["session_id"]
            modes = []
            for _ in range(40):
                r = copy(branch, session, str(uuid.uuid4()))
                assert r.status_code == 200, r.text
                modes.append(r.json()["mode"])
                time.sleep(0.05)
            assert modes == ["online"] * 40  # every copy answered with the primary's verdict
            with branch.admin() as c:
                status = c.get("/api/admin/v1/status").json()
            assert status["mode"] == "online"
            (endpoint,) = status["primary"]["endpoints"]
            assert endpoint["state"] == "active"
            assert endpoint["note"] is not None and "passive member" in endpoint["note"]
            assert not branch.query("SELECT 1 FROM mode_changes WHERE mode = 'offline'")
            with a.admin() as c:
                assert c.get("/api/admin/v1/users/tess").json()["balance_cents"] == 10_000 - 40 * 10
        finally:
            branch.process.stop()


def _answers(url: str) -> bool:
    try:
        httpx.get(url + "/api/health/application-server/status", timeout=2)
        return True
    except httpx.HTTPError:
        return False


def _status(url: str, pair: Pair) -> int:
    return httpx.get(url + "/api/admin/v1/sites", headers=auth(pair), timeout=2).status_code
