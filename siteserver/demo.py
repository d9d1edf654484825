"""`siteserver demo`: a primary with sample users, printers, devices and a Find-Me queue on
loopback, seeded through the same admin API an administrator uses."""

from __future__ import annotations

import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from siteserver import sample
from siteserver.launch import RoleProcess, enroll_site, free_port, health_url, primary_config, site_config

#: The demo's branch: printers branch1-mono, branch1-color and branch1-direct at site branch-01, a
#: Find-Me queue over the first two, a device at each of them and the branch's print server.
BRANCH = sample.Names(
    site_id="branch-01",
    site="Branch office 1",
    mono="branch1-mono",
    color="branch1-color",
    direct="branch1-direct",
    findme="branch1-findme",
    mono_device="mfd-branch1-mono",
    color_device="mfd-branch1-color",
    provider="branch1-print-server",
)


def seed(base: str, admin_token: str) -> sample.World:
    """The sample world with the demo's names, people and shared account."""
    with sample.admin_client(base, admin_token) as c:
        return sample.build(c, BRANCH, users=sample.PEOPLE, shared_accounts=[sample.MARKETING])


def hold_jobs(base: str, provider_token: str) -> None:
    """alice prints two documents to the branch's Find-Me queue (the print provider's calls)."""
    headers = {"Authorization": f"Bearer {provider_token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
        for doc, pages, color in [("Quarterly report.pdf", 12, True), ("Boarding pass.pdf", 1, False)]:
            job = {
                "job_id": str(uuid.uuid4()),
                "username": "alice",
                "queue": BRANCH.findme,
                "document_name": doc,
                "pages": pages,
                "copies": 1,
                "color": color,
                "duplex": False,
            }
            sample.ok(c.post("/api/provider/v1/jobs", json=job))


def check_login(base: str, device_token: str) -> dict[str, Any]:
    r = httpx.post(
        f"{base}/api/device/v1/login",
        json={"card_number": "1001"},
        headers={"Authorization": f"Bearer {device_token}"},
        timeout=10,
    )
    return dict(sample.ok(r))


def wait_mirrored(site_url: str, admin_token: str, timeout: float = 60) -> dict[str, Any]:
    """Until the site's mirror has bootstrapped (its sync cursor has moved)."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(
            f"{site_url}/api/admin/v1/status", headers={"Authorization": f"Bearer {admin_token}"}, timeout=5
        )
        status = dict(sample.ok(r))
        if status["sync"]["cursor"]:
            return status
        if time.monotonic() > deadline:
            raise RuntimeError(f"site did not bootstrap its mirror: {status}")
        time.sleep(0.1)


def run_demo(*, directory: str | None, port: int, check: bool) -> int:
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="siteserver-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    port = free_port(port)
    admin_token, health_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    cfg = primary_config(
        root,
        name="primary",
        database=root / "primary.db",
        port=port,
        admin_token=admin_token,
        health_key=health_key,
    )
    primary = RoleProcess("primary", cfg, port, root / "primary.log").start()
    site: RoleProcess | None = None
    try:
        primary.wait_listening()
        deadline = time.monotonic() + 30
        while httpx.get(health_url(primary.url, health_key), timeout=2).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("primary did not become active: " + primary.log_tail())
            time.sleep(0.1)
        world = seed(primary.url, admin_token)
        site_port = free_port(port + 1)
        site_token = secrets.token_urlsafe(24)
        scfg = site_config(
            root,
            site_id=BRANCH.site_id,
            port=site_port,
            primary_urls=[primary.url],
            admin_token=site_token,
            extra={"sync": {"changes_wait_secs": 5}},
        )
        enroll_site(scfg, world.enrollment_token)
        site = RoleProcess("site", scfg, site_port, root / "site.log").start()
        site.wait_listening()
        status = wait_mirrored(site.url, site_token)
        # The branch's print server and MFDs talk to the site, as they would in production.
        hold_jobs(site.url, world.provider)
        login = check_login(site.url, world.mono_device)
        _print_guide(root, primary.url, admin_token, health_key, world, login, site.url, site_token, status)
        if check:
            return 0
        print("Press Ctrl-C to stop.", flush=True)
        while all(p.proc is not None and p.proc.poll() is None for p in (primary, site)):
            time.sleep(0.5)
        print("a process exited:\n" + primary.log_tail() + "\n" + site.log_tail(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if site is not None:
            site.stop()
        primary.stop()


def _print_guide(
    root: Path,
    url: str,
    admin: str,
    health: str,
    world: sample.World,
    login: dict[str, Any],
    site_url: str,
    site_admin: str,
    status: dict[str, Any],
) -> None:
    dev = world.mono_device
    print(
        f"""
siteserver demo is running.

  Primary (active)       {url}
  API documentation      {url}/docs
  Health (load balancer) {health_url(url, health)}
  Site server branch-01  {site_url}
                         (enrolled; mirror at cursor {status["sync"]["cursor"]}; mode {status["mode"]})
  Site documentation     {site_url}/docs
  Files and logs         {root}

  Primary admin token    {admin}
  Site admin token       {site_admin}
  MFD device token       {dev}   (device {BRANCH.mono_device} at printer {BRANCH.mono})
  Print provider token   {world.provider}

  Sample users: alice (card 1001, PIN 1234, password alice-pass, ID number E-1001),
  bob (card 1002, PIN 2345), carol (card 1003, ID number E-3003, unrestricted); alice and
  bob share the Marketing account. alice has 2 held jobs at the site in Find-Me queue
  {BRANCH.findme} (printers {BRANCH.mono}, {BRANCH.color}).
  A card login at the site just worked: {login["username"]}, balance {login["balance_cents"]} cents.

  MFDs and the print provider at branch-01 talk to the site; its charges reach the primary
  through the site's journal (see GET /api/admin/v1/transactions?origin_site=branch-01).

Try:
  curl -s -H 'Authorization: Bearer {dev}' -H 'Content-Type: application/json' \\
       -d '{{"card_number": "1001"}}' {site_url}/api/device/v1/login
  curl -s -H 'Authorization: Bearer {admin}' {url}/api/admin/v1/users/alice
  curl -s -H 'Authorization: Bearer {site_admin}' {site_url}/api/admin/v1/status
  siteserver status --config {root / "site.toml"}
""",
        flush=True,
    )
