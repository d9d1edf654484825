"""`siteserver site run` and `siteserver status` as an admin runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from siteserver.launch import write_config
from tests.kit.primary import Primary
from tests.kit.site import SITE, configure_site


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "siteserver", *args], capture_output=True, text=True, timeout=timeout
    )


def test_site_run_needs_enrollment(primary: Primary, tmp_path: Path) -> None:
    site = configure_site(primary, tmp_path, enroll=False)
    r = _cli("site", "run", "--config", str(site.config))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "run `siteserver site enroll` first" in r.stderr
    assert not (tmp_path / "site" / "site.db").exists()


def test_status_of_a_running_and_a_stopped_site(primary: Primary, tmp_path: Path) -> None:
    site = configure_site(primary, tmp_path).start()
    try:
        r = _cli("status", "--config", str(site.config))
        assert r.returncode == 0, r.stderr
        assert SITE in r.stdout and "online" in r.stdout
        assert primary.url in r.stdout and "journal" in r.stdout
    finally:
        site.process.stop()
    stopped = _cli("status", "--config", str(site.config))
    assert stopped.returncode == 1
    assert "not running" in stopped.stderr


def test_status_and_run_config_errors(tmp_path: Path) -> None:
    not_site = write_config(tmp_path / "p.toml", {"role": "primary", "data_dir": "x", "database": "y"})
    for args in (["status"], ["site", "run"]):
        r = _cli(*args, "--config", str(not_site))
        assert r.returncode == 2 and "role" in r.stderr, r.stderr
    missing = _cli("status", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "no such configuration file" in missing.stderr
