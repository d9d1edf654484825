"""Card-login throughput and latency of a real primary, next to a bare FastAPI app on the same stack.

It starts a primary the way an admin does (`siteserver primary run --config …`, through
siteserver.launch and bench/_common.py), seeds it through the admin API (siteserver.sample's
world: printers, devices, a provider, and --users users with cards C000001…), starts
bench/bare_app.py on the primary's own serving stack (siteserver.serving.serve: one uvicorn
process, httptools/uvloop as uvicorn picks them, the same GC tuning, access log off), then drives
each with wrk (-t2 -c32 --latency, bench/login.lua: POST /api/device/v1/login {"card_number":
<random seeded card>} with the device's bearer token) after a short warm-up, and finally measures
unloaded latency with --sequential one-at-a-time requests on a keep-alive httpx client. Every
non-2xx answer or socket error is reported as a failure. All processes it starts are stopped at
the end.
site_login.py runs the same measurement (and prints the same tables) with this module's pieces, and
wan_outage.py uses its wrk runner and bare app.

    python bench/primary_login.py [--duration 10] [--users 1000] [--threads 2] [--connections 32]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _common import (  # first: puts this checkout on sys.path
    ROOT,
    cpu_seconds,
    exited,
    keep_or_remove,
    ok,
    report_failures,
    run_main,
    start_primary,
    stop_server,
    wrk_missing,
)

from siteserver import sample
from siteserver.launch import free_port

BENCH = Path(__file__).resolve().parent
LOGIN_PATH = "/api/device/v1/login"
LUA = BENCH / "login.lua"
BARE = "bare FastAPI"  # the bare app's row in the login tables
FLOOR_RPS = 3_000  # the floor for card login on the 2-core reference machine
FLOOR_P99_MS = 18.0


# -- processes ----------------------------------------------------------------------------------


@dataclass
class BareProcess:
    """bench/bare_app.py served by `siteserver.serving.serve`, exactly as the primary is."""

    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BareProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(BENCH / "bare_app.py"), "--port", str(self.port)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"bare app exited with {self.proc.returncode}: {tail(self.log_path)}")
            try:
                httpx.get(self.url + "/openapi.json", timeout=0.5)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(f"bare app did not listen: {tail(self.log_path)}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_bytes()[-n:].decode(errors="replace")
    except OSError:
        return ""


# -- seeding ------------------------------------------------------------------------------------


#: The sample world as the login benchmarks name it (site_login.py puts it at its own site).
BENCH_NAMES = sample.Names(
    site_id="head-office",
    site="Head office",
    mono="bench-mono",
    color="bench-color",
    direct="bench-direct",
    findme="bench-findme",
    mono_device="bench-mfd",
    color_device="bench-mfd-2",
    provider="bench-ps",
)


def seed(base: str, admin_token: str, users: int, names: sample.Names = BENCH_NAMES) -> sample.World:
    """The sample world (siteserver.sample) with `users` users bench000001… with one card each
    (C000001…), created 8 at a time (the primary's writer commits concurrent creates together).
    The logins use the device at its mono printer (`world.mono_device`). site_login.py seeds its
    site through this too."""
    with sample.admin_client(base, admin_token) as c:
        return sample.build(c, names, users=sample.numbered_users(users, prefix="bench"), workers=8)


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int
    cpu_per_req_us: float  # server CPU (all threads) per request
    server_cpu_pct: float  # of one core
    raw: str


def run_wrk(
    url: str, lua: Path, wrk_args: list[str], *, threads: int, connections: int, duration: float, pid: int
) -> WrkResult:
    """wrk --latency with one of the BENCH-JSON Lua scripts (bench/login.lua, bench/usage.lua) and
    `wrk_args` after `--`; `pid` is the server whose CPU time is counted."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(lua)]
    cmd += [url, "--", *wrk_args]
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    cpu1, t1 = cpu_seconds(pid), time.perf_counter()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH-JSON ")), None)
    if line is None:
        raise RuntimeError(f"no BENCH-JSON line in wrk's output:\n{proc.stdout}\n{proc.stderr}")
    d = json.loads(line.removeprefix("BENCH-JSON "))
    secs = d["duration_us"] / 1e6
    n = d["requests"]
    return WrkResult(
        rps=n / secs,
        requests=n,
        p50_ms=d["p50_us"] / 1000,
        p90_ms=d["p90_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        max_ms=d["max_us"] / 1000,
        non2xx=d["status_errors"],
        socket_errors=d["connect_errors"] + d["read_errors"] + d["write_errors"] + d["timeouts"],
        cpu_per_req_us=1e6 * (cpu1 - cpu0) / n if n else float("nan"),
        server_cpu_pct=100 * (cpu1 - cpu0) / (t1 - t0),
        raw=proc.stdout,
    )


@dataclass
class SeqResult:
    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    failures: int


def sequential(url: str, token: str, users: int, n: int, warmup: int = 50) -> SeqResult:
    """One request at a time on a keep-alive connection: latency without queueing."""
    rnd = random.Random(7)
    times: list[float] = []
    failures = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
        for i in range(warmup + n):
            body = {"card_number": sample.card_number(rnd.randint(1, users))}
            t = time.perf_counter()
            r = c.post(LOGIN_PATH, json=body)
            dt = time.perf_counter() - t
            if r.status_code != 200:
                failures += 1
            if i >= warmup:
                times.append(dt * 1000)
    times.sort()
    return SeqResult(
        n=n,
        p50_ms=statistics.median(times),
        p99_ms=times[min(len(times) - 1, round(0.99 * (len(times) - 1)))],
        mean_ms=statistics.fmean(times),
        failures=failures,
    )


# -- the login benchmark, shared with site_login.py -----------------------------------------------


def login_args(argv: list[str] | None, description: str, keep_help: str) -> argparse.Namespace:
    """The command line of primary_login.py and site_login.py."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--duration", type=float, default=10, help="seconds of wrk load per server")
    ap.add_argument("--warmup", type=float, default=2, help="seconds of wrk load before each measurement")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--users", type=int, default=1000, help="seeded users, one card each")
    ap.add_argument("--sequential", type=int, default=500, help="requests for the unloaded latency")
    ap.add_argument("--show-wrk", action="store_true", help="print wrk's own report too")
    ap.add_argument("--keep", action="store_true", help=keep_help)
    args = ap.parse_args(argv)
    if args.users < 1 or args.users > 999_999:
        ap.error("--users must be between 1 and 999999")
    return args


def check_login(url: str, token: str, what: str) -> None:
    """One card login with card C000001 at `url`; raises unless it logs bench000001 in."""
    check = ok(
        httpx.post(
            url + LOGIN_PATH,
            json={"card_number": sample.card_number(1)},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
    )
    if check.get("username") != "bench000001":
        raise RuntimeError(f"{what} answered {check}")


def measure_logins(
    servers: list[tuple[str, str, int]], token: str, args: argparse.Namespace, failures: list[str]
) -> tuple[dict[str, WrkResult], dict[str, SeqResult]]:
    """Card logins at each (name, url, pid) in turn: --warmup s of wrk load, then --duration s measured
    with bench/login.lua; then --sequential one-at-a-time requests at each. Returns the wrk results
    and the sequential ones. Non-2xx answers and socket errors are added to `failures`."""
    results: dict[str, WrkResult] = {}
    wrk_args = [token, str(args.users)]
    for name, url, pid in servers:
        kw = {"threads": args.threads, "connections": args.connections, "pid": pid}
        if args.warmup > 0:
            run_wrk(url + LOGIN_PATH, LUA, wrk_args, duration=args.warmup, **kw)
        print(
            f"  wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s against {name} …",
            flush=True,
        )
        r = run_wrk(url + LOGIN_PATH, LUA, wrk_args, duration=args.duration, **kw)
        results[name] = r
        if args.show_wrk:
            print(r.raw)
        if r.non2xx or r.socket_errors:
            failures.append(f"{name}: {r.non2xx} non-2xx answers, {r.socket_errors} socket errors")

    seq = {name: sequential(url, token, args.users, args.sequential) for name, url, _ in servers}
    for name, s in seq.items():
        if s.failures:
            failures.append(f"{name} (sequential): {s.failures} non-200 answers")
    return results, seq


def print_login_tables(
    args: argparse.Namespace,
    results: dict[str, WrkResult],
    seq: dict[str, SeqResult],
    login: str,
    ratio_label: str,
) -> None:
    """The wrk table (a row per server, then `login` / bare as `ratio_label`) and the unloaded one."""
    bare_r, login_r = results[BARE], results[login]
    print()
    print(
        f"wrk -t{args.threads} -c{args.connections}, {args.duration:g} s, {args.users:,} cards; "
        f"latency in ms; CPU = server process CPU per request / share of one core"
    )
    print(
        f"{'':<16}{'req/s':>9}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'non-2xx':>9}{'sock err':>9}"
        f"{'CPU us/req':>11}{'CPU %':>7}"
    )
    for name, r in results.items():
        print(
            f"{name:<16}{r.rps:>9,.0f}{r.p50_ms:>8.2f}{r.p90_ms:>8.2f}{r.p99_ms:>8.2f}{r.max_ms:>8.1f}"
            f"{r.non2xx:>9}{r.socket_errors:>9}{r.cpu_per_req_us:>11,.0f}{r.server_cpu_pct:>7.0f}"
        )
    print(
        f"{ratio_label:<16}{login_r.rps / bare_r.rps:>9.0%}{login_r.p50_ms / bare_r.p50_ms:>7.1f}x"
        f"{'':>8}{login_r.p99_ms / bare_r.p99_ms:>7.1f}x{'':>8}{'':>9}{'':>9}"
        f"{login_r.cpu_per_req_us / bare_r.cpu_per_req_us:>10.1f}x"
    )
    print()
    print(f"unloaded, {args.sequential} sequential requests on one keep-alive httpx client (ms):")
    print(f"{'':<16}{'p50':>8}{'p99':>8}{'mean':>8}")
    for name, s in seq.items():
        print(f"{name:<16}{s.p50_ms:>8.2f}{s.p99_ms:>8.2f}{s.mean_ms:>8.2f}")
    print()


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = login_args(argv, __doc__.split("\n\n")[0], "keep the temp dir (configs, logs, database)")
    if wrk_missing():
        return 1

    root = Path(tempfile.mkdtemp(prefix="bench-login-"))
    primary = None
    bare = BareProcess(free_port(), root / "bare.log")
    failures: list[str] = []
    try:
        print(f"primary_login: files in {root}", flush=True)
        bare.start()  # starts up while the primary does
        primary = start_primary(root)
        bare.wait_listening()

        t = time.perf_counter()
        token = seed(primary.url, primary.admin_token, args.users).mono_device
        print(
            f"  seeded the sample world with {args.users:,} users with cards "
            f"in {time.perf_counter() - t:.1f} s",
            flush=True,
        )
        check_login(primary.url, token, "card login")

        assert primary.process.proc is not None and bare.proc is not None
        results, seq = measure_logins(
            [(BARE, bare.url, bare.proc.pid), ("card login", primary.url, primary.process.proc.pid)],
            token,
            args,
            failures,
        )
        failures += exited(("primary", primary.process.proc), ("bare app", bare.proc))
    finally:
        bare.stop()
        stop_server(primary, "primary")
        keep_or_remove(root, args.keep)

    print_login_tables(args, results, seq, "card login", "login / bare")
    login_r = results["card login"]
    rps_ok = login_r.rps >= FLOOR_RPS
    p99_ok = login_r.p99_ms <= FLOOR_P99_MS
    print(
        f"card login vs the issue's floor: {login_r.rps:,.0f} req/s ({'ok' if rps_ok else 'BELOW'} "
        f">= {FLOOR_RPS:,}), p99 {login_r.p99_ms:.1f} ms "
        f"({'ok' if p99_ok else 'ABOVE'} <= {FLOOR_P99_MS:g})"
    )
    return report_failures(failures, "no errors: every answer was 2xx")


if __name__ == "__main__":
    run_main(main)
