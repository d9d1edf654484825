"""The primary's fleet health URL for monitoring tools, with a real site heard through the fault
proxy: 200 while every enrolled, enabled site was heard from within three of its heartbeats, 503
naming the site once the WAN to it is cut, 200 again when it is back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from siteserver.faultproxy import FaultProxyProcess
from tests.kit.primary import Primary
from tests.kit.site import SITE, eventually, start_branch

HEARTBEAT_SECS = 0.5
FLEET = "/api/health/site-servers/status"


def fleet(primary: Primary, key: str | None = None) -> httpx.Response:
    return httpx.get(primary.url + FLEET, params={"Authorization": key or primary.health_key}, timeout=5)


def test_fleet_health_follows_the_sites_heartbeats(
    proxied: tuple[Primary, FaultProxyProcess], tmp_path: Path
) -> None:
    primary, proxy = proxied
    assert fleet(primary, "wrong-key-0123456789").status_code == 401
    r = fleet(primary)
    assert r.status_code == 200 and r.json() == {"status": "OK", "sites": 0, "late": []}
    # An enrolled site that has not been heard from yet counts as late.
    branch = start_branch(
        primary, tmp_path, primary_urls=[proxy.url], sync={"heartbeat_secs": HEARTBEAT_SECS}
    )
    try:
        eventually(lambda: fleet(primary).status_code == 200, 10, "the site heard from")
        assert fleet(primary).json() == {"status": "OK", "sites": 1, "late": []}

        proxy.set("blackhole")  # the WAN to the branch is cut
        eventually(lambda: fleet(primary).status_code == 503, 10, "the site reported late")
        body: dict[str, Any] = fleet(primary).json()
        assert body["status"] == "SITES_LATE" and body["sites"] == 1
        (late,) = body["late"]
        assert late["site_id"] == SITE and late["allowed_secs"] == 3 * HEARTBEAT_SECS
        assert (
            late["last_contact_at"] is not None and late["age_secs"] >= 3 * HEARTBEAT_SECS
        )  # rounded to 0.1 s

        proxy.set("pass")
        eventually(lambda: fleet(primary).status_code == 200, 15, "the site heard from again")
        # A disabled site is not expected to call.
        proxy.set("blackhole")
        eventually(lambda: fleet(primary).status_code == 503, 10, "late again")
        with primary.admin() as c:
            assert c.patch(f"/api/admin/v1/sites/{SITE}", json={"disabled": True}).status_code == 200
        assert fleet(primary).json() == {"status": "OK", "sites": 0, "late": []}
    finally:
        proxy.set("pass")
        branch.process.stop()
