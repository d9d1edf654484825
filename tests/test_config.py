"""Configuration: TOML as in CONTRACT.md, environment overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from siteserver.config import ConfigError, PrimaryConfig, SiteConfig, load_config

PRIMARY = """
role = "primary"
data_dir = "/var/lib/siteserver-primary"
database = "/srv/shared/primary.db"
listen = "0.0.0.0:9191"

[high-availability-guard]
enabled = false
fail-over-interval-secs = 30
startup-timeout-secs = 300
"""

SITE = """
role = "site"
site_id = "branch-01"
data_dir = "/var/lib/siteserver"
listen = "0.0.0.0:9191"
primary = ["http://10.0.0.10:9191"]
admin_token = "0123456789abcdef0123"

[wan]
probe_interval_secs = 1.0
offline_after_failures = 3
online_after_successes = 5
request_budget_ms = 800

[sync]
changes_wait_secs = 25
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_contract_examples_load_with_their_defaults(tmp_path: Path) -> None:
    primary = load_config(write(tmp_path, PRIMARY))
    assert isinstance(primary, PrimaryConfig)
    assert primary.high_availability_guard.fail_over_interval_secs == 30
    assert primary.high_availability_guard.startup_timeout_secs == 300
    assert primary.admin_token is None and primary.health_key is None
    assert primary.secrets_path == Path("/srv/shared/primary.db.secrets")
    site = load_config(write(tmp_path, SITE))
    assert isinstance(site, SiteConfig)
    assert site.wan.request_budget_ms == 800 and site.sync.changes_wait_secs == 25
    assert (site.host, site.port) == ("0.0.0.0", 9191)
    assert site.journal.retention_days == 90
    kept = load_config(write(tmp_path, SITE + "\n[journal]\nretention_days = 30\n"))
    assert isinstance(kept, SiteConfig) and kept.journal.retention_days == 30


def test_guard_defaults_when_section_absent(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, 'role = "primary"\ndata_dir = "/d"\ndatabase = "/d/p.db"\n'))
    assert isinstance(cfg, PrimaryConfig)
    g = cfg.high_availability_guard
    assert (g.enabled, g.fail_over_interval_secs, g.startup_timeout_secs) == (False, 30, 300)
    assert cfg.listen == "0.0.0.0:9191"


def test_environment_overrides_every_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITESERVER_HIGH_AVAILABILITY_GUARD_FAIL_OVER_INTERVAL_SECS", "3")
    monkeypatch.setenv("SITESERVER_HIGH_AVAILABILITY_GUARD_ENABLED", "true")
    monkeypatch.setenv("SITESERVER_LISTEN", "127.0.0.1:7000")
    cfg = load_config(write(tmp_path, PRIMARY))
    assert isinstance(cfg, PrimaryConfig)
    assert cfg.high_availability_guard.fail_over_interval_secs == 3
    assert cfg.high_availability_guard.enabled is True
    assert cfg.port == 7000

    monkeypatch.setenv("SITESERVER_PRIMARY", '["http://a:1", "http://b:2"]')
    monkeypatch.setenv("SITESERVER_WAN_OFFLINE_AFTER_FAILURES", "7")
    site = load_config(write(tmp_path, SITE))
    assert isinstance(site, SiteConfig)
    assert site.primary == ["http://a:1", "http://b:2"]
    assert site.wan.offline_after_failures == 7
    monkeypatch.setenv("SITESERVER_PRIMARY", "http://a:1,http://b:2")
    site = load_config(write(tmp_path, SITE))
    assert isinstance(site, SiteConfig)
    assert site.primary == ["http://a:1", "http://b:2"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (PRIMARY + "\nbogus = 1\n", "bogus: unknown key"),
        (PRIMARY.replace('listen = "0.0.0.0:9191"', 'listen = "nowhere"'), "listen"),
        (
            PRIMARY.replace("fail-over-interval-secs = 30", "fail-over-interval-secs = -1"),
            "fail-over-interval-secs",
        ),
        ('role = "printer"\n', "role must be"),
        ("role = [", "not valid TOML"),
        (SITE.replace('primary = ["http://10.0.0.10:9191"]', ""), "primary"),
        (SITE + "\n[journal]\nretention_days = 0\n", "retention_days"),
    ],
)
def test_bad_configuration_is_explained(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert needle in str(e.value)


def test_missing_file_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.toml")


def test_the_shipped_example_configs_load() -> None:
    """deploy/config/ is what the install guide copies: each file is a valid config of its role."""
    from siteserver.config import PrimaryConfig, SiteConfig, load_config

    deploy = Path(__file__).parent.parent / "deploy" / "config"
    assert isinstance(load_config(deploy / "primary.toml"), PrimaryConfig)
    assert isinstance(load_config(deploy / "site.toml"), SiteConfig)
