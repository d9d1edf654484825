"""Start role processes the way an admin does (`siteserver … run --config`), wait for them, stop
them politely or with SIGKILL. Used by the demo, the tests and the benchmarks alike."""

from __future__ import annotations

import functools
import os
import random
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

#: where free_port looks first: below Linux's ephemeral range (32768-60999 by default), so a port
#: it picks is not handed to some outgoing connection before its server binds it
LISTEN_PORTS = range(20_000, 32_768)


def free_port(preferred: int | None = None) -> int:
    """A loopback port nothing listens on: `preferred` if it is free, else a random one outside
    the kernel's ephemeral range (a port bind(0) gives may be taken by a client's connection
    between this check and the server's bind), else whatever bind(0) gives."""
    ports = range(LISTEN_PORTS.start, min(LISTEN_PORTS.stop, ephemeral_start()))
    candidates = ([preferred] if preferred else []) + random.sample(ports, k=min(20, len(ports)))
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range, where its outgoing connections get theirs."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return LISTEN_PORTS.stop  # not Linux: the range is an assumption, bind still checks


def wait_until(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> float:
    """Poll `check()` until it holds; the seconds that took (TimeoutError naming `what` if never)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(poll)
    raise TimeoutError(f"not within {timeout:g} s: {what}")


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """A polite stop: SIGTERM, then SIGKILL if it is still running after `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, values: dict[str, Any]) -> Path:
    """A TOML file from a dict whose dict values are sections."""
    lines = [f"{k} = {toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
    for k, v in values.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {toml_value(vv)}" for kk, vv in v.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)  # it holds tokens
    return path


@dataclass
class RoleProcess:
    """One `siteserver <role> run --config FILE` process with its log file."""

    role: str
    config: Path
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    # What wait_listening polls; None: the role's own health URL.
    health_path: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @functools.cached_property
    def url(self) -> str:
        # Read once: polled in loops, and a role's scheme does not change while it runs.
        tls = tomllib.loads(self.config.read_text()).get("tls", {})
        scheme = "https" if tls.get("certificate") or tls.get("generate") else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> RoleProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "siteserver", self.role, "run", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        return self

    @property
    def health_probe_path(self) -> str:
        if self.health_path is not None:
            return self.health_path
        if self.role == "site":
            return "/api/health/site-server/status"
        return "/api/health/application-server/status"

    def wait_listening(self, timeout: float = 30.0) -> None:
        """Until the port answers HTTP at all (a passive member answers too, with 503)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.role} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                # Any answer will do, over a certificate of any kind: it listens.
                httpx.get(self.url + self.health_probe_path, timeout=0.5, verify=False)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(f"{self.role} on port {self.port} did not listen: {self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no lease released — the way machines really die."""
        self.signal(signal.SIGKILL)
        self.wait()

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        terminate(self.proc, timeout)
        return self.wait()

    def wait(self, timeout: float | None = 10.0) -> int | None:
        if self.proc is None:
            return None
        code = self.proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code


def primary_config(
    directory: Path,
    *,
    name: str,
    database: Path,
    port: int,
    admin_token: str,
    health_key: str,
    guard: bool = False,
    fail_over_interval_secs: float = 30,
    extra: dict[str, Any] | None = None,
) -> Path:
    values: dict[str, Any] = {
        "role": "primary",
        "data_dir": str(directory / name),
        "database": str(database),
        "listen": f"127.0.0.1:{port}",
        "admin_token": admin_token,
        "health_key": health_key,
        **(extra or {}),
        "high-availability-guard": {
            "enabled": guard,
            "fail-over-interval-secs": fail_over_interval_secs,
        },
    }
    return write_config(directory / f"{name}.toml", values)


def health_url(base: str, key: str, threshold_mb: int = 1) -> str:
    return f"{base}/api/health/application-server/status?disk-threshold-mb={threshold_mb}&Authorization={key}"


def site_config(
    directory: Path,
    *,
    site_id: str,
    port: int,
    primary_urls: list[str],
    admin_token: str,
    name: str = "site",
    extra: dict[str, Any] | None = None,
) -> Path:
    values: dict[str, Any] = {
        "role": "site",
        "site_id": site_id,
        "data_dir": str(directory / name),
        "listen": f"127.0.0.1:{port}",
        "primary": primary_urls,
        "admin_token": admin_token,
        **(extra or {}),
    }
    return write_config(directory / f"{name}.toml", values)


def enroll_site(config: Path, token: str, timeout: float = 60) -> None:
    """`siteserver site enroll --config … --token …`, as an admin runs it on the branch machine."""
    done = subprocess.run(
        [sys.executable, "-m", "siteserver", "site", "enroll", "--config", str(config), "--token", token],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"site enroll failed ({done.returncode}): {done.stderr.strip()}")
