"""`GET /metrics` on both roles, with real processes: the admin token or the role's `metrics_token`
opens it and nothing else does; the names an operator's dashboards rely on are there; HTTP timings
are labelled by route template, never by a user; the site's gauges follow a WAN cut through the
fault proxy (mode, endpoint, backlog, mode changes) and the primary sees the site fall silent."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from siteserver import sample
from siteserver.faultproxy import FaultProxyProcess
from tests.kit.primary import Primary
from tests.kit.site import BRANCH, SITE, Branch, configure_site, eventually

METRICS_TOKEN = "metrics-token-0123456789"
SITE_NAMES = (
    "siteserver_mode",
    "siteserver_primary_endpoint_up",
    "siteserver_probe_duration_seconds_bucket",
    "siteserver_journal_pending_entries",
    "siteserver_journal_oldest_pending_age_seconds",
    "siteserver_merge_entries_total",
    "siteserver_mode_changes_total",
    "siteserver_sync_lag_seconds",
    "siteserver_http_request_duration_seconds_bucket",
)
PRIMARY_NAMES = (
    "siteserver_ha_role",
    "siteserver_ha_epoch",
    "siteserver_site_last_contact_age_seconds",
    "siteserver_site_backlog_entries",
    "siteserver_http_request_duration_seconds_bucket",
)


def scrape(url: str, token: str) -> str:
    r = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def value(text: str, name: str, labels: str = "") -> float:
    """One sample's value: `name{labels}` exactly as exposed (labels without braces)."""
    key = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {key} in:\n{text}")


def test_both_roles_expose_metrics_to_their_tokens_only(
    proxied: tuple[Primary, FaultProxyProcess], tmp_path: Path
) -> None:
    primary, proxy = proxied
    with primary.admin() as c:
        world = sample.build(c, BRANCH)
    branch: Branch = configure_site(
        primary, tmp_path, world=world, primary_urls=[proxy.url], wan={"probe_interval_secs": 0.2}
    )
    branch.config.write_text(f'metrics_token = "{METRICS_TOKEN}"\n' + branch.config.read_text())
    branch.start()
    try:
        for url in (primary.url, branch.url):
            assert httpx.get(url + "/metrics", timeout=5).status_code == 401
            wrong = httpx.get(url + "/metrics", headers={"Authorization": "Bearer nope-nope-nope"}, timeout=5)
            assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
        # The metrics token opens /metrics and nothing else.
        assert scrape(branch.url, METRICS_TOKEN)
        with branch.client(METRICS_TOKEN) as c:
            assert c.get("/api/admin/v1/status").status_code == 401

        with primary.admin() as c:
            assert c.get("/api/admin/v1/users/nobody-here").status_code == 404
        text = scrape(primary.url, primary.admin_token)
        for name in PRIMARY_NAMES:
            assert name in text, name
        assert value(text, "siteserver_ha_role", 'role="active"') == 1.0
        assert value(text, "siteserver_ha_epoch") >= 1
        assert re.search(r'route="/api/admin/v1/users/\{username\}",status="404"', text), text
        assert "nobody-here" not in text
        eventually(
            lambda: (
                value(
                    scrape(primary.url, primary.admin_token),
                    "siteserver_site_last_contact_age_seconds",
                    f'site_id="{SITE}"',
                )
                < 30
            ),
            15,
            "the primary heard from the site",
        )

        text = scrape(branch.url, branch.admin_token)
        for name in SITE_NAMES:
            assert name in text, name
        assert value(text, "siteserver_mode", 'mode="online"') == 1.0
        assert value(text, "siteserver_primary_endpoint_up", f'url="{proxy.url}"') == 1.0
        assert value(text, "siteserver_journal_pending_entries") == 0
        assert value(text, "siteserver_merge_entries_total", 'status="applied_with_conflict"') == 0

        proxy.set("blackhole")  # the WAN is cut: the site takes over and says so
        eventually(
            lambda: value(scrape(branch.url, branch.admin_token), "siteserver_mode", 'mode="offline"') == 1.0,
            20,
            "the site offline in its metrics",
        )
        text = scrape(branch.url, branch.admin_token)
        assert value(text, "siteserver_primary_endpoint_up", f'url="{proxy.url}"') == 0.0
        assert value(text, "siteserver_mode_changes_total", 'to="offline"') >= 1
    finally:
        proxy.set("pass")
        branch.process.stop()
