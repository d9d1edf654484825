"""Configuration files (TOML) for both roles, each key overridable by `SITESERVER_<KEY>`.

A nested key joins its path with `_` and turns `-` into `_`: `[wan] probe_interval_secs` is
`SITESERVER_WAN_PROBE_INTERVAL_SECS`, `[high-availability-guard] fail-over-interval-secs` is
`SITESERVER_HIGH_AVAILABILITY_GUARD_FAIL_OVER_INTERVAL_SECS`.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "SITESERVER_"


class ConfigError(Exception):
    """A configuration problem, worded for the admin who wrote the file."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class HighAvailabilityGuard(_Section):
    """Key names and defaults of the primary's failover documentation."""

    enabled: bool = False
    fail_over_interval_secs: float = Field(30.0, alias="fail-over-interval-secs", gt=0, le=3600)
    startup_timeout_secs: float = Field(300.0, alias="startup-timeout-secs", gt=0, le=86400)


class Wan(_Section):
    probe_interval_secs: float = Field(1.0, gt=0, le=600)
    offline_after_failures: int = Field(3, ge=1, le=1000)
    online_after_successes: int = Field(5, ge=1, le=1000)
    request_budget_ms: int = Field(800, ge=10, le=60_000)


class Offline(_Section):
    """Bounded exposure while offline (docs/offline.md); unset: no limit."""

    max_offline_spend_per_user_cents: int | None = Field(None, ge=0, le=10**12)
    max_offline_spend_site_cents: int | None = Field(None, ge=0, le=10**12)


class Sync(_Section):
    changes_wait_secs: float = Field(25.0, gt=0, le=600)
    #: how often the site tells the primary it is alive (the fleet health URL allows three)
    heartbeat_secs: float = Field(10.0, gt=0, le=3600)
    #: "home": mirror only the users whose home_sites name this site (docs/security.md); a
    #: change of scope bootstraps the mirror again
    mirror_scope: Literal["all", "home"] = "all"


class Journal(_Section):
    """How long merged journal entries stay at the site (for reports); pending and rejected
    entries are never pruned."""

    retention_days: int = Field(90, ge=1, le=36_500)


class Http(_Section):
    """What one client may hold of the server (docs/security.md): request bodies over their cap
    get 413 before they are read, a request whose headers are not complete in time loses its
    connection, and connections beyond the cap get 503."""

    max_body_bytes: int = Field(1_048_576, ge=1024, le=2**30)
    #: a site's journal upload (up to 5,000 entries) has its own cap
    max_journal_body_bytes: int = Field(16 * 1_048_576, ge=1024, le=2**31)
    header_timeout_secs: float = Field(10.0, gt=0, le=600)
    max_connections: int = Field(1000, ge=1, le=1_000_000)


class Tls(_Section):
    """HTTPS on `listen` (CONTRACT v1.1 `[tls]`; absent: plain HTTP, for MFDs that need it). A site
    with `generate = true` makes its own self-signed certificate in data_dir on first start; a
    site verifies the primary against `ca_file` (absent: the system's store)."""

    certificate: Path | None = None
    private_key: Path | None = None
    generate: bool = False
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _pairs(self) -> Tls:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("[tls] needs both certificate and private_key, or neither")
        if self.generate and self.certificate is not None:
            raise ValueError(
                "[tls] generate = true makes its own certificate: leave certificate and private_key out"
            )
        return self

    @property
    def serves(self) -> bool:
        return self.generate or self.certificate is not None


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen must be HOST:PORT, got {value!r}")
    return value


class RoleConfig(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid", populate_by_name=True)

    data_dir: Path
    listen: str = "0.0.0.0:9191"
    admin_token: str | None = Field(None, min_length=16)
    #: a bearer token that opens GET /metrics alone (the admin token always does)
    metrics_token: str | None = Field(None, min_length=16)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: "json": one JSON object a line, for log shippers
    log_format: Literal["text", "json"] = "text"
    access_log: bool = True
    http: Http = Field(default_factory=Http)
    tls: Tls = Field(default_factory=Tls)

    _check_listen = field_validator("listen")(lambda cls, v: _listen(v))

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first (it wins), then the TOML file's contents passed as init values.
        return (FlatEnvSource(settings_cls), init_settings)


class PrimaryConfig(RoleConfig):
    role: Literal["primary"]
    database: Path
    health_key: str | None = Field(None, min_length=16)
    # The Argon2 pepper and card-hash key: shared by the pair, kept out of the database.
    secrets_file: Path | None = None
    high_availability_guard: HighAvailabilityGuard = Field(
        default_factory=HighAvailabilityGuard, alias="high-availability-guard"
    )

    @model_validator(mode="after")
    def _no_generated_certificate(self) -> PrimaryConfig:
        if self.tls.generate:
            raise ValueError("[tls] generate is for a site: give the primary its certificate and private_key")
        return self

    @property
    def secrets_path(self) -> Path:
        return self.secrets_file or self.database.with_name(self.database.name + ".secrets")


class SiteConfig(RoleConfig):
    role: Literal["site"]
    site_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
    primary: list[str] = Field(min_length=1)
    wan: Wan = Field(default_factory=Wan)
    sync: Sync = Field(default_factory=Sync)
    offline: Offline = Field(default_factory=Offline)
    journal: Journal = Field(default_factory=Journal)


def _env_name(path: list[str]) -> str:
    return ENV_PREFIX + "_".join(p.replace("-", "_").upper() for p in path)


def _field_key(name: str, info: FieldInfo) -> str:
    return info.alias or name


class FlatEnvSource(PydanticBaseSettingsSource):
    """`SITESERVER_<KEY>` overrides, walking the model so nested sections work too."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ does the whole walk

    def __call__(self) -> dict[str, Any]:
        return self._walk(self.settings_cls.model_fields, [])

    def _walk(self, fields: dict[str, FieldInfo], path: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, info in fields.items():
            key = _field_key(name, info)
            ann = info.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                nested = self._walk(ann.model_fields, [*path, key])
                if nested:
                    found[key] = nested
                continue
            raw = os.environ.get(_env_name([*path, key]))
            if raw is None:
                continue
            if raw.startswith("["):
                try:
                    found[key] = json.loads(raw)
                    continue
                except json.JSONDecodeError:
                    pass
            found[key] = raw.split(",") if ann == list[str] else raw
        return found


def _explain(err: ValidationError, path: Path) -> str:
    lines = [f"{path}: invalid configuration"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {where}: {msg} (env {_env_name([str(p) for p in e['loc']])})")
    return "\n".join(lines)


def load_config(path: str | Path) -> PrimaryConfig | SiteConfig:
    """Read a TOML file, apply environment overrides, validate. Raises ConfigError, never more."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such configuration file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    role = os.environ.get(ENV_PREFIX + "ROLE", data.get("role"))
    model: type[PrimaryConfig] | type[SiteConfig]
    if role == "primary":
        model = PrimaryConfig
    elif role == "site":
        model = SiteConfig
    else:
        raise ConfigError(f'{path}: role must be "primary" or "site", got {role!r}')
    try:
        return model(**data)
    except ValidationError as e:
        raise ConfigError(_explain(e, path)) from e
