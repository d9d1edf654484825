"""`siteserver demo`: the product's story on loopback, in well under a minute, one line a step.

A primary with the sample print world (seeded through the admin API an administrator uses) and a
branch site server behind the project's fault proxy as its WAN. The branch's print server and
MFDs work online; the WAN is cut and the site takes over; head office deletes a user meanwhile;
the WAN returns, the journal merges, and a reconciliation report shows the conflict and checks the
books against the primary. Then it stays up for exploring until Ctrl-C or SIGTERM, and stops
every process it started either way. `--check` tells the same story and exits 0 only when the
books agree."""

from __future__ import annotations

import contextlib
import secrets
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from siteserver import sample
from siteserver.faultproxy import FaultProxyProcess
from siteserver.launch import (
    RoleProcess,
    enroll_site,
    free_port,
    health_url,
    primary_config,
    site_config,
    wait_until,
)

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

#: quick to notice the cut and to hand back, so the story takes seconds, not minutes
DEMO_WAN = {"probe_interval_secs": 0.5, "offline_after_failures": 3, "online_after_successes": 3}


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


class Stopped(Exception):
    """SIGTERM or SIGHUP (`timeout`, systemd, a closed terminal): stop everything, like Ctrl-C."""


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into `Stopped`, so the demo's `finally` stops every child (they
    run in their own sessions and would otherwise outlive it, holding their ports)."""

    def stop(sig: int, frame: object) -> None:
        raise Stopped(signal.Signals(sig).name)

    handled = (signal.SIGTERM, signal.SIGHUP)
    original = {s: signal.signal(s, stop) for s in handled}
    try:
        yield
    finally:
        for s, h in original.items():
            signal.signal(s, h)


class Story:
    """The demo's steps, each one line of progress."""

    STEPS = 10

    def __init__(self) -> None:
        self.step = 0
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        self.step += 1
        clock = time.monotonic() - self.started
        print(f"[{self.step:2}/{self.STEPS}] {clock:5.1f}s  {text}", flush=True)


class Mfd:
    """One MFD at the branch: a user's session and what they do at the device."""

    def __init__(self, base: str, device_token: str, card_number: str) -> None:
        self.http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {device_token}"}, timeout=30
        )
        self.login = dict(
            sample.ok(self.http.post("/api/device/v1/login", json={"card_number": card_number}))
        )
        self.session = f"/api/device/v1/sessions/{self.login['session_id']}"

    def release(self, document_name: str) -> dict[str, Any]:
        jobs = sample.ok(self.http.get(f"{self.session}/jobs"))["jobs"]
        job = next(j for j in jobs if j["document_name"] == document_name)
        results = sample.ok(self.http.post(f"{self.session}/release", json={"job_ids": [job["job_id"]]}))
        return dict(results["results"][0])

    def copy(self, pages: int) -> dict[str, Any]:
        body = {"txn_id": str(uuid.uuid4()), "kind": "copy", "pages": pages, "color": False, "duplex": False}
        return dict(sample.ok(self.http.post(f"{self.session}/usage", json=body)))

    def __enter__(self) -> Mfd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.post(f"{self.session}/logout")
        self.http.close()


class SiteAdmin:
    """The site's admin API, as the branch's admin uses it."""

    def __init__(self, base: str, token: str) -> None:
        self.http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def status(self) -> dict[str, Any]:
        return dict(sample.ok(self.http.get("/api/admin/v1/status")))

    def report(self, root: Path) -> tuple[dict[str, Any], dict[str, Path]]:
        """A reconciliation report of the last 30 days: its JSON, and where its HTML and CSV went."""
        made = sample.ok(self.http.post("/api/admin/v1/reports/reconciliation", json={}))
        path = f"/api/admin/v1/reports/reconciliation/{made['report_id']}"
        body = dict(sample.ok(self.http.get(path)))
        files = {}
        for form in ("html", "csv"):
            files[form] = root / f"reconciliation.{form}"
            files[form].write_bytes(self.http.get(path, params={"format": form}).content)
        return body, files


def run_demo(*, directory: str | None, port: int, check: bool) -> int:
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="siteserver-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    children = contextlib.ExitStack()
    with _stop_on_signals():
        try:
            return 0 if _tell(root, port, check, children) else 1
        except (KeyboardInterrupt, Stopped):
            print("\nstopping the demo's primary, fault proxy and site", flush=True)
            return 0
        finally:
            # a second signal must not cut the stopping short and leave a child behind
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(s, signal.SIG_IGN)
            children.close()


def _tell(root: Path, port: int, check: bool, children: contextlib.ExitStack) -> bool:
    """The outage story; True when the books agree. With `check` it ends there, else it stays up
    until Ctrl-C or SIGTERM (the caller stops every child either way)."""
    story = Story()
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
    children.callback(primary.stop)
    primary.wait_listening()
    wait_until(
        lambda: httpx.get(health_url(primary.url, health_key), timeout=2).status_code == 200,
        60,
        "the primary to become active",
    )
    story.say(f"Head office: the primary application server is active at {primary.url}")

    world = seed(primary.url, admin_token)
    story.say(
        f"Sample print world on the primary: users {', '.join(world.users)}; printers "
        f"{BRANCH.mono}, {BRANCH.color}, {BRANCH.direct} at {BRANCH.site_id}; Find-Me queue "
        f"{BRANCH.findme}; 2 MFDs, 1 print server"
    )

    wan = FaultProxyProcess.in_front_of(primary.url).start()
    children.callback(wan.stop)
    site_port = free_port(port + 1)
    site_token = secrets.token_urlsafe(24)
    scfg = site_config(
        root,
        site_id=BRANCH.site_id,
        port=site_port,
        primary_urls=[wan.url],
        admin_token=site_token,
        extra={"sync": {"changes_wait_secs": 5}, "wan": DEMO_WAN},
    )
    enroll_site(scfg, world.enrollment_token)
    site = RoleProcess("site", scfg, site_port, root / "site.log").start()
    children.callback(site.stop)
    site.wait_listening()
    admin = SiteAdmin(site.url, site_token)
    children.callback(admin.http.close)
    wait_until(lambda: bool(admin.status()["sync"]["cursor"]), 60, "the site's mirror to bootstrap")
    status = admin.status()
    story.say(
        f"Branch: site server {BRANCH.site_id} enrolled at {site.url}, mirroring head office over the "
        f"WAN (the fault proxy at {wan.url}); mode {status['mode']}"
    )

    hold_jobs(site.url, world.provider)
    story.say(
        f"The branch's print server sent alice's 2 documents to Find-Me queue {BRANCH.findme}: "
        "held at the site"
    )

    with Mfd(site.url, world.mono_device, "1001") as alice, Mfd(site.url, world.mono_device, "1002") as bob:
        released = alice.release("Boarding pass.pdf")
        copied = bob.copy(3)
    story.say(
        f"MFD {BRANCH.mono_device}: alice (card 1001) released 'Boarding pass.pdf' ({released['status']}, "
        f"{released['cost_cents']} c); bob copied 3 pages ({copied['cost_cents']} c): online, "
        "the primary's answers"
    )

    wan.set("blackhole")
    took = wait_until(lambda: admin.status()["mode"] == "offline", 60, "the site to take over")
    story.say(f"The WAN is cut (blackholed). The site noticed in {took:.1f} s and took over: mode offline")

    with (
        Mfd(site.url, world.color_device, "1001") as alice,
        Mfd(site.url, world.mono_device, "1003") as carol,
    ):
        released = alice.release("Quarterly report.pdf")
        copied = carol.copy(5)
        mode = carol.login["mode"]
    story.say(
        f"Work goes on at the branch (mode {mode}): alice released 'Quarterly report.pdf' at "
        f"{BRANCH.color} ({released['status']}, {released['cost_cents']} c); carol copied 5 pages "
        f"({copied['cost_cents']} c), journalled at the site"
    )

    with sample.admin_client(primary.url, admin_token) as head_office:
        sample.ok(head_office.delete("/api/admin/v1/users/carol"))
    story.say("Meanwhile head office deleted user carol: her offline copy must still be paid by someone")

    wan.set("pass")
    took = wait_until(
        lambda: (s := admin.status())["mode"] == "online" and s["journal"]["pending"] == 0,
        60,
        "the journal to merge",
    )
    story.say(f"The WAN is back. The site merged its journal and is online again {took:.1f} s later")

    body, files = admin.report(root)
    agree = body["check"]["books_agree"] is True
    conflicts = "; ".join(f"{c['kind']}: {c['action']}" for c in body["conflicts"]) or "none"
    story.say(f"Reconciliation report: {body['check']['summary']} Conflicts: {conflicts}")
    print(f"          HTML {files['html']}\n          CSV  {files['csv']}", flush=True)

    _print_guide(root, primary.url, admin_token, health_key, world, site.url, site_token, wan.control_url)
    if check:
        return agree
    print("The demo stays up for exploring. Press Ctrl-C (or send SIGTERM) to stop it.", flush=True)
    while all(p.proc is not None and p.proc.poll() is None for p in (primary, site)):
        time.sleep(0.5)
    print("a process exited:\n" + primary.log_tail() + "\n" + site.log_tail(), file=sys.stderr)
    return False


def _print_guide(
    root: Path,
    url: str,
    admin: str,
    health: str,
    world: sample.World,
    site_url: str,
    site_admin: str,
    wan_control: str,
) -> None:
    dev = world.mono_device
    print(
        f"""
Where to look:

  Fleet page (browser)   {url}/admin        (log in with the primary admin token below)
  Site page (browser)    {site_url}/admin   (log in with the site admin token below)
  Primary (active)       {url}
  API documentation      {url}/docs
  Health (load balancer) {health_url(url, health)}
  Site server branch-01  {site_url}
  Site documentation     {site_url}/docs
  The WAN (fault proxy)  curl -X PUT -d '{{"mode": "blackhole"}}' {wan_control}/mode   (or "pass")
  Files and logs         {root}

  Primary admin token    {admin}
  Site admin token       {site_admin}
  MFD device token       {dev}   (device {BRANCH.mono_device} at printer {BRANCH.mono})
  Print provider token   {world.provider}

  Sample users: alice (card 1001, PIN 1234, password alice-pass, ID number E-1001),
  bob (card 1002, PIN 2345); alice and bob share the Marketing account. carol (card 1003)
  was deleted on the primary during the outage.

Try:
  curl -s -H 'Authorization: Bearer {dev}' -H 'Content-Type: application/json' \\
       -d '{{"card_number": "1001"}}' {site_url}/api/device/v1/login
  curl -s -H 'Authorization: Bearer {site_admin}' {site_url}/api/admin/v1/status
  curl -s -H 'Authorization: Bearer {admin}' '{url}/api/admin/v1/transactions?origin_site=branch-01'
  siteserver status --config {root / "site.toml"}
  siteserver report reconcile --config {root / "site.toml"} --format html --output report.html
""",
        flush=True,
    )
