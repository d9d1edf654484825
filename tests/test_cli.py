"""The command line as an admin uses it: clear errors (the demo has tests/test_demo.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "siteserver", *args], capture_output=True, text=True, timeout=timeout
    )


def test_config_error_exits_2_with_one_clear_paragraph(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('role = "primary"\ndata_dir = "/tmp/x"\nsurprise = true\n')
    r = run("primary", "run", "--config", str(cfg))
    assert r.returncode == 2
    assert "surprise: unknown key" in r.stderr
    assert "database: Field required" in r.stderr
    assert "Traceback" not in r.stderr


def test_primary_run_refuses_a_site_config(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('role = "site"\nsite_id = "b1"\ndata_dir = "/tmp/x"\nprimary = ["http://127.0.0.1:1"]\n')
    r = run("primary", "run", "--config", str(cfg))
    assert r.returncode == 2 and 'needs role = "primary"' in r.stderr


def test_usage_errors_name_the_commands() -> None:
    r = run("frobnicate")
    assert r.returncode == 2 and "primary" in r.stderr and "demo" in r.stderr
