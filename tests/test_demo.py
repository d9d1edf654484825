"""`siteserver demo`, as the README promises it: the outage story told step by step with the books
checked at the end, and no process left behind when it is stopped with SIGTERM (as `timeout`,
systemd or a closed terminal stop it) or Ctrl-C."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kit.procs import children_of, processes


def demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "siteserver", "demo", *args]


def test_demo_check_tells_the_outage_story_and_the_books_agree(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    r = subprocess.run(
        demo("--check", "--dir", str(root), "--port", "0"), capture_output=True, text=True, timeout=180
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    steps = [line for line in out.splitlines() if line.startswith("[")]
    assert len(steps) == 10 and steps[-1].startswith("[10/10]"), out
    for needle in (
        "the primary application server is active",
        "held at the site",
        "online, the primary's answers",
        "The WAN is cut",
        "mode offline",
        "Work goes on at the branch (mode offline)",
        "deleted user carol",
        "merged its journal and is online again",
        "The books agree",
        "user_deleted",
        "Primary admin token",
        "Site admin token",
        "/admin   (log in with the site admin token",
        "MFD device token",
        "Print provider token",
    ):
        assert needle in out, needle
    # The report's files are where it says, with carol's offline copy charged to the fallback.
    html, csv_path = root / "reconciliation.html", root / "reconciliation.csv"
    assert str(html) in out and str(csv_path) in out
    assert "The books agree." in html.read_text()
    rows = list(csv.DictReader(csv_path.read_text().splitlines()))
    [carol] = [row for row in rows if row["username"] == "carol"]
    assert carol["conflict_kind"] == "user_deleted" and carol["offline"] == "true"
    assert (
        carol["primary_account"] == "shared:Offline Account"
        and carol["primary_status"] == "applied_with_conflict"
    )
    assert all(row["site_status"] == "merged" for row in rows) and len(rows) == 4
    # what holds tokens and keys is private to its owner
    for private in ("primary.toml", "site.toml", "site/site.key", "site/secrets"):
        assert (root / private).stat().st_mode & 0o077 == 0, private
    left = [pid for pid, (_, cmdline) in processes().items() if str(root) in cmdline]
    assert not left, "the demo left its primary or site running"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_stopped_demo_leaves_no_process_behind(tmp_path: Path, sig: signal.Signals) -> None:
    log = (tmp_path / "out.txt").open("w+")
    proc = subprocess.Popen(
        demo("--dir", str(tmp_path / "demo"), "--port", "0"), stdout=log, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 180
        while "Press Ctrl-C" not in Path(log.name).read_text():
            assert proc.poll() is None, Path(log.name).read_text()
            assert time.monotonic() < deadline, Path(log.name).read_text()
            time.sleep(0.2)
        started = children_of(proc.pid)
        assert len(started) >= 3, started  # the primary, the fault proxy and the site
        proc.send_signal(sig)
        assert proc.wait(60) == 0, Path(log.name).read_text()
        deadline = time.monotonic() + 30
        while started & processes().keys() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not started & processes().keys(), Path(log.name).read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
