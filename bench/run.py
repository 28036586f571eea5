"""Proxy benchmark: the same wrk load at the backend, a bare aiohttp proxy, the gateway and nginx.

Run: .venv/bin/python bench/run.py          (about 2-3 minutes; see bench/README.md)

Prints, and writes to bench/results/latest.md, one row per server under test: requests per
second, p50/p99 latency, and the server's CPU time per request taken from its own process
accounting (/proc/PID/stat utime+stime before and after the measured wrk run, divided by the
requests wrk completed; nginx: master + worker), with the ratio against the bare aiohttp proxy.

Environment (all optional):
  BENCH_SECONDS=10        measured wrk run per row (a 2 s warm-up run comes first)
  BENCH_CONNECTIONS=32    wrk connections (one wrk thread)
  BENCH_REPEAT=1          rounds; rows are interleaved per round, the table shows medians
  BENCH_ROWS=backend,bare,gateway-nokey,gateway,nginx    which rows, in this order
  BENCH_PIN=1             taskset: wrk + backend on CPU 0, the server under test on CPU 1
  BENCH_PROFILE=1         after the rounds, profile the gateway with py-spy (needs py-spy in
                          the venv: .venv/bin/pip install py-spy) and print where its CPU goes
  BENCH_PROFILE_SECONDS=8
  BENCH_ENTRIES=100000    entries in each allowlist (api and dashboard)
  BENCH_GATEWAY_SRC=DIR   run the gateway from another source tree (PYTHONPATH=DIR), to
                          measure a prototype fix without touching the repository
  BENCH_KEEP=1            keep the temporary folder (configs, logs, audit file, profile)

Everything listens on and targets 127.0.0.1 only; every load run is bounded by BENCH_SECONDS.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
HOST = "127.0.0.1"
SEED = 20240601
API_KEY = "gwk_bench_" + hashlib.sha256(b"bench").hexdigest()[:32]
PATH = "/items/42"


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


SECONDS = env_int("BENCH_SECONDS", 10)
WARMUP = 2
CONNECTIONS = env_int("BENCH_CONNECTIONS", 32)
REPEAT = max(1, env_int("BENCH_REPEAT", 1))
PIN = os.environ.get("BENCH_PIN", "1") != "0"
PROFILE = os.environ.get("BENCH_PROFILE", "1") != "0"
PROFILE_SECONDS = env_int("BENCH_PROFILE_SECONDS", 8)
ENTRIES = env_int("BENCH_ENTRIES", 100_000)
GATEWAY_SRC = os.environ.get("BENCH_GATEWAY_SRC")
KEEP = os.environ.get("BENCH_KEEP") == "1"
ROWS = [
    r.strip()
    for r in os.environ.get("BENCH_ROWS", "backend,bare,gateway-nokey,gateway,nginx").split(",")
    if r.strip()
]

TARGET_RATIO = 0.75  # issue 10: the whole gateway below a bare aiohttp pass-through proxy
LOAD_CPU = "0"  # wrk, the backend behind the proxies, py-spy
SERVER_CPU = "1"  # the server under test
CLK_TCK = os.sysconf("SC_CLK_TCK")

DESCRIPTIONS = {
    "backend": "(a) the backend directly (raw asyncio protocol, 100-byte body)",
    "bare": "(b) bare aiohttp pass-through proxy: the floor of our stack",
    "lean": "(b2) aiohttp server + the gateway's upstream client (gateway.web.upstream), "
    "same header handling as (b), no gate: the floor of the gateway's own stack",
    "gateway-nokey": "(c) gateway, request without an API key: normalise, match, 100k "
    "allowlist, 401 problem+json answered by the gateway, audit + metrics; nothing proxied",
    "gateway": "(c2) gateway, authenticated (Bearer key of a service account): allowlist, "
    "API key, role, signed X-Gateway-Assertion, proxied, audit + metrics. The normal case "
    "and the target row",
    "nginx": "(d) nginx, plain keep-alive reverse proxy, 1 worker",
}
LABELS = {
    "backend": "(a) backend direct",
    "bare": "(b) bare aiohttp proxy",
    "lean": "(b2) aiohttp server + lean client",
    "gateway-nokey": "(c) gateway, no key (401)",
    "gateway": "(c2) gateway, authenticated",
    "nginx": "(d) nginx",
}


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if PIN else argv


class Procs:
    """Every process this run started, ended by pid (SIGTERM, then SIGKILL) on the way out."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path, **kwargs) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
        out = open(log, "wb")  # noqa: SIM115 -- closed with the process
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs
        )
        out.close()
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in reversed(self.started):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=5)


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> float:
    """Poll until `url` answers (any HTTP status); return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(
                f"{proc.args} exited with {proc.returncode}; see {log}:\n"
                + log.read_text(errors="replace")[-3000:]
            )
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers or {}), timeout=2
            ):
                return time.monotonic() - start
        except urllib.error.HTTPError:
            return time.monotonic() - start
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s; see {log}")


def cpu_ticks(pids: list[int]) -> int:
    """utime + stime of the processes (all their threads), in clock ticks."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        total += int(rest[11]) + int(rest[12])  # fields 14 and 15 of proc(5)
    return total


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(rest[1]) == pid:
                out.append(int(entry))
    return out


# --- wrk -----------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if not m:
        raise SystemExit("cannot read wrk's output:\n" + out)
    requests = int(m.group(1))
    seconds = _ms(m.group(2) + m.group(3)) / 1000
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        requests,
        seconds,
        rps,
        p50,
        p99,
        int(non2xx.group(1)) if non2xx else 0,
        sum(map(int, errors.groups())) if errors else 0,
    )


def wrk(url: str, seconds: int, headers: dict[str, str]) -> WrkResult:
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    done = subprocess.run(
        pinned(LOAD_CPU, argv), capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


# --- servers under test --------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    pids: list[int]
    headers: dict[str, str] = field(default_factory=dict)
    backend_pids: list[int] = field(default_factory=list)  # CPU shown apart, for information
    expect_status: int = 200


def random_entries(rng: random.Random, count: int) -> list[str]:
    """Half IPv4 (/16../32), half IPv6 (/32../128), as bench/ipset_bench.py draws them."""
    import ipaddress

    out = []
    for _ in range(count):
        if rng.random() < 0.5:
            prefix = rng.randint(16, 32)
            value = rng.getrandbits(32) >> (32 - prefix) << (32 - prefix)
            out.append(f"{ipaddress.IPv4Address(value)}/{prefix}")
        else:
            prefix = rng.randint(32, 128)
            value = rng.getrandbits(128) >> (128 - prefix) << (128 - prefix)
            out.append(f"{ipaddress.IPv6Address(value)}/{prefix}")
    return out


def _yaml_entries(entries: list[str]) -> str:
    return "".join(
        f'      - {{ip: "{e}", description: "bench {i}"}}\n' for i, e in enumerate(entries)
    )


def write_gateway_config(root: Path, port: int, backend_port: int) -> Path:
    """gateway.yaml + policies/ in `root`: one api app, both allowlists at ENTRIES entries."""
    (root / "policies").mkdir(parents=True)
    (root / "gateway.yaml").write_text(
        f"listen: {{host: {HOST}, port: {port}}}\n"
        "prefix: /_gateway\n"
        "state: sqlite:///state/gateway.db\n"
        "secret_key_file: state/gateway.key\n"
        "audit: {path: audit/audit.jsonl}\n"
        "policies: policies\n"
        "upstream_timeouts: {connect: 2s, read: 10s}\n"
        "apps:\n"
        "  api:\n"
        "    surface: api\n"
        "    match: {path: /}\n"
        f"    upstream: http://{HOST}:{backend_port}\n"
    )
    rng = random.Random(SEED)
    api = random_entries(rng, ENTRIES - 1)
    api.insert(rng.randrange(len(api) + 1), "127.0.0.1")
    dashboard = random_entries(rng, ENTRIES - 1)
    dashboard.insert(rng.randrange(len(dashboard) + 1), "127.0.0.1")
    (root / "policies" / "access.yaml").write_text(
        "protection: {enabled: true, mode: {dashboard: enforce, api: enforce}}\n"
        "allowlists:\n"
        "  dashboard:\n    enabled: true\n    entries:\n"
        + _yaml_entries(dashboard)
        + "  api:\n    enabled: true\n    entries:\n"
        + _yaml_entries(api)
    )
    (root / "policies" / "people.yaml").write_text(
        "users: {}\n"
        "service_accounts:\n"
        "  bench:\n"
        f"    key_sha256: {hashlib.sha256(API_KEY.encode()).hexdigest()}\n"
        "    grants: {api: writer}\n"
        "roles:\n"
        "  writer: {allow: [{methods: ['*']}]}\n"
        "  viewer: {allow: [{methods: [GET, HEAD]}]}\n"
    )
    (root / "policies" / "security.yaml").write_text("two_factor: {enforce: none}\n")
    return root / "gateway.yaml"


def gateway_argv(config: Path) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, GATEWAY_LOG_LEVEL="warning")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if GATEWAY_SRC:
        env["PYTHONPATH"] = GATEWAY_SRC
        return [PYTHON, "-m", "gateway", "run", "--config", str(config)], env
    exe = Path(PYTHON).parent / "gateway"
    return [str(exe), "run", "--config", str(config)], env


STEPS: list[subprocess.Popen[bytes]] = []  # bench/steps.py, started with the gateway


def collect_steps() -> dict[str, float | str]:
    if not STEPS:
        return {}
    proc = STEPS[0]
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"all steps": "skipped: bench/steps.py took over 5 minutes"}
    import json

    try:
        return json.loads(out)  # type: ignore[no-any-return]
    except ValueError:
        return {"all steps": "skipped: " + err.decode(errors="replace")[-300:]}


def start_servers(tmp: Path, procs: Procs, facts: dict[str, str]) -> dict[str, Target]:
    targets: dict[str, Target] = {}
    backend_port = free_port()
    backend = procs.start(
        pinned(LOAD_CPU, [PYTHON, str(BENCH / "backend.py"), "--port", str(backend_port)]),
        tmp / "backend.log",
    )
    wait_http(f"http://{HOST}:{backend_port}/", backend, tmp / "backend.log", 20)
    backend_url = f"http://{HOST}:{backend_port}"

    if "backend" in ROWS:
        # The backend as the server under test: its own instance, on the server CPU.
        port = free_port()
        proc = procs.start(
            pinned(SERVER_CPU, [PYTHON, str(BENCH / "backend.py"), "--port", str(port)]),
            tmp / "backend-direct.log",
        )
        wait_http(f"http://{HOST}:{port}/", proc, tmp / "backend-direct.log", 20)
        targets["backend"] = Target("backend", f"http://{HOST}:{port}{PATH}", [proc.pid])

    if "bare" in ROWS:
        port = free_port()
        log = tmp / "bare.log"
        proc = procs.start(
            pinned(
                SERVER_CPU,
                [
                    PYTHON,
                    str(BENCH / "bare_proxy.py"),
                    "--port",
                    str(port),
                    "--upstream",
                    backend_url,
                ],
            ),
            log,
        )
        wait_http(f"http://{HOST}:{port}/", proc, log, 30)
        targets["bare"] = Target(
            "bare", f"http://{HOST}:{port}{PATH}", [proc.pid], backend_pids=[backend.pid]
        )

    if "lean" in ROWS:
        port = free_port()
        log = tmp / "lean.log"
        proc = procs.start(
            pinned(
                SERVER_CPU,
                [
                    PYTHON,
                    str(BENCH / "bare_proxy.py"),
                    "--lean",
                    "--port",
                    str(port),
                    "--upstream",
                    backend_url,
                ],
            ),
            log,
        )
        wait_http(f"http://{HOST}:{port}/", proc, log, 30)
        targets["lean"] = Target(
            "lean", f"http://{HOST}:{port}{PATH}", [proc.pid], backend_pids=[backend.pid]
        )

    if "gateway" in ROWS or "gateway-nokey" in ROWS:
        port = free_port()
        root = tmp / "gateway"
        t0 = time.monotonic()
        config = write_gateway_config(root, port, backend_port)
        facts["gateway config written"] = f"{time.monotonic() - t0:.1f} s"
        argv, env = gateway_argv(config)
        log = tmp / "gateway.log"
        proc = procs.start(pinned(SERVER_CPU, argv), log, env=env, cwd=str(root))
        # The in-process step costs load the same configuration: on the load CPU, which is idle
        # while the gateway starts, so the two long policy loads overlap.
        steps_env = dict(env)
        if GATEWAY_SRC:
            steps_env["PYTHONPATH"] = GATEWAY_SRC
        STEPS.append(
            subprocess.Popen(
                pinned(LOAD_CPU, [PYTHON, str(BENCH / "steps.py"), str(config), "--json"]),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=steps_env,
                cwd=str(root),
            )
        )
        took = wait_http(f"http://{HOST}:{port}/_gateway/healthz", proc, log, 180)
        facts["gateway start-up (2 x allowlist)"] = f"{took:.1f} s to the first healthz answer"
        base = f"http://{HOST}:{port}{PATH}"
        targets["gateway"] = Target(
            "gateway", base, [proc.pid], {"Authorization": f"Bearer {API_KEY}"}, [backend.pid]
        )
        targets["gateway-nokey"] = Target(
            "gateway-nokey", base, [proc.pid], {}, [], expect_status=401
        )
        check_gateway(targets["gateway"], targets["gateway-nokey"])

    if "nginx" in ROWS:
        port = free_port()
        ndir = tmp / "nginx"
        ndir.mkdir()
        conf = (BENCH / "nginx.conf.template").read_text()
        conf = (
            conf.replace("@@DIR@@", str(ndir))
            .replace("@@PORT@@", str(port))
            .replace("@@BACKEND_PORT@@", str(backend_port))
        )
        (ndir / "nginx.conf").write_text(conf)
        log = tmp / "nginx.log"
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        proc = procs.start(
            pinned(SERVER_CPU, [nginx, "-p", str(ndir), "-c", str(ndir / "nginx.conf")]), log
        )
        wait_http(f"http://{HOST}:{port}/", proc, log, 20)
        workers = children_of(proc.pid)
        if len(workers) != 1:
            raise SystemExit(f"expected one nginx worker, found {workers}")
        targets["nginx"] = Target(
            "nginx", f"http://{HOST}:{port}{PATH}", [proc.pid, *workers], backend_pids=[backend.pid]
        )
    return {name: targets[name] for name in ROWS if name in targets}


def check_gateway(ok: Target, nokey: Target) -> None:
    """One request each way, so a misconfigured gateway fails loudly instead of benchmarking 4xx."""
    try:
        with urllib.request.urlopen(
            urllib.request.Request(ok.url, headers=ok.headers), timeout=5
        ) as resp:
            body = resp.read()
            if resp.status != 200 or len(body) != 100:
                raise SystemExit(f"gateway answered {resp.status} with {len(body)} bytes")
            if not resp.headers.get("X-Gateway-Request-Id"):
                raise SystemExit("gateway answer without X-Gateway-Request-Id")
    except urllib.error.HTTPError as exc:
        raise SystemExit(
            f"authenticated request answered {exc.code}: {exc.read()[:300]!r}"
        ) from None
    try:
        urllib.request.urlopen(nokey.url, timeout=5)
        raise SystemExit("request without key was let through")
    except urllib.error.HTTPError as exc:
        if exc.code != 401:
            raise SystemExit(f"request without key answered {exc.code}, not 401") from None


# --- measuring -----------------------------------------------------------------------------------


@dataclass
class Measure:
    wrk: WrkResult
    cpu_us: float
    backend_cpu_us: float | None


def measure(target: Target, seconds: int) -> Measure:
    pids = target.pids
    before = cpu_ticks(pids)
    before_b = cpu_ticks(target.backend_pids) if target.backend_pids else 0
    result = wrk(target.url, seconds, target.headers)
    after = cpu_ticks(pids)
    after_b = cpu_ticks(target.backend_pids) if target.backend_pids else 0
    per = 1e6 / CLK_TCK / max(1, result.requests)
    return Measure(
        result, (after - before) * per, (after_b - before_b) * per if target.backend_pids else None
    )


def bad_answers(target: Target, m: Measure) -> int:
    """Answers that were not what this row expects (all 401 for the no-key row)."""
    if target.expect_status == 200:
        return m.wrk.non2xx + m.wrk.errors
    return (m.wrk.requests - m.wrk.non2xx) + m.wrk.errors


def run_rounds(targets: dict[str, Target]) -> dict[str, list[Measure]]:
    results: dict[str, list[Measure]] = defaultdict(list)
    for target in targets.values():  # warm-up: imports, connection pools, caches
        wrk(target.url, WARMUP, target.headers)
    for rnd in range(REPEAT):
        for name, target in targets.items():
            wrk(target.url, 1, target.headers)  # the previous row left it idle
            m = measure(target, SECONDS)
            results[name].append(m)
            print(
                f"  round {rnd + 1}/{REPEAT} {LABELS[name]:<30} {m.wrk.rps:9.0f} req/s  "
                f"p50 {m.wrk.p50_ms:6.2f} ms  p99 {m.wrk.p99_ms:6.2f} ms  "
                f"CPU {m.cpu_us:6.1f} us/req  bad {bad_answers(target, m)}",
                file=sys.stderr,
                flush=True,
            )
    return results


# --- profile -------------------------------------------------------------------------------------

# Buckets of the gateway's CPU: a sample goes to the bucket of the deepest frame that matches one
# of these (function, file fragment) markers, walking from the root to the leaf; samples without
# any marker are the event loop and socket I/O outside any handler.
BUCKETS: list[tuple[str, str, str]] = [
    # (bucket, function name or "*", path fragment)
    ("aiohttp server: read + parse request", "data_received", "aiohttp/web_protocol.py"),
    ("aiohttp server: handler task (request object, dispatch)", "*", "aiohttp/web_protocol.py"),
    ("aiohttp server: handler task (request object, dispatch)", "*", "aiohttp/web_app.py"),
    (
        "aiohttp server: handler task (request object, dispatch)",
        "*",
        "aiohttp/web_urldispatcher.py",
    ),
    ("aiohttp server: handler task (request object, dispatch)", "*", "aiohttp/web_request.py"),
    ("observe: request id (uuid4)", "uuid4", "uuid.py"),
    ("observe: client IP", "resolve_client", "client_ip.py"),
    ("observe: structlog contextvars", "*", "structlog/contextvars.py"),
    ("observe: other (context, bookkeeping)", "observe", "gateway/web/observe.py"),
    ("audit.record (structlog chain, HMAC, orjson)", "record", "gateway/services/audit.py"),
    ("audit writer (thread: write + fsync)", "_io", "gateway/services/audit.py"),
    ("audit writer (thread: write + fsync)", "_run", "gateway/services/audit.py"),
    ("metrics (prometheus counter + histogram)", "observe_request", "gateway/services/metrics.py"),
    ("session middleware (aiohttp-session)", "*", "aiohttp_session/"),
    ("gate: normalise, match, allowlist, API key, authorize", "*", "gateway/web/gate.py"),
    ("gate: normalise, match, allowlist, API key, authorize", "*", "gateway/web/paths.py"),
    ("gate: normalise, match, allowlist, API key, authorize", "*", "gateway/policy/decide.py"),
    ("gate: normalise, match, allowlist, API key, authorize", "*", "gateway/policy/ipset.py"),
    ("denial page (401 problem+json)", "*", "gateway/web/errors.py"),
    ("identity headers (other than signing)", "identity_headers", "gateway/web/identity.py"),
    ("JWT assertion: mint + sign (Ed25519)", "mint", "gateway/services/signing.py"),
    ("JWT assertion: mint + sign (Ed25519)", "sign", "gateway/services/signing.py"),
    ("forward: upstream request headers", "upstream_request_headers", "gateway/web/proxy.py"),
    ("forward: response headers", "response_headers", "gateway/web/proxy.py"),
    ("forward: other", "forward", "gateway/web/proxy.py"),
    ("forward: other", "proxy", "bare_proxy.py"),  # the bare proxy's whole handler
    ("forward: aiohttp client request + response", "*", "aiohttp/client"),
    ("forward: aiohttp client request + response", "*", "aiohttp/connector.py"),
    ("forward: aiohttp client request + response", "*", "aiohttp/streams.py"),
    ("forward: send response (prepare, write, write_eof)", "*", "aiohttp/web_response.py"),
    ("forward: send response (prepare, write, write_eof)", "*", "aiohttp/http_writer.py"),
    # the front (gateway/web/front): specific markers before the file-wide ones
    ("front: socket sends to the client", "write", "gateway/web/front/connection.py"),
    ("front: read + parse the request", "data_received", "gateway/web/front/connection.py"),
    ("front: queue, task, timers", "*", "gateway/web/front/connection.py"),
    ("front: response heads", "*", "gateway/web/front/answer.py"),
    ("front: serve + forward (own lines)", "*", "gateway/web/front/proxied.py"),
    ("front: request body stream", "*", "gateway/web/front/body.py"),
    ("forward: header filtering both ways", "*", "gateway/web/forward_headers.py"),
    ("forward: socket sends to the upstream", "write", "gateway/web/upstream/connection.py"),
    ("forward: lean upstream client", "*", "gateway/web/upstream/"),
    ("observe: context (request id, client IP)", "new_context", "gateway/web/observe.py"),
    ("audit.record (structlog chain, HMAC, orjson)", "_render_queued", "gateway/services/audit.py"),
]
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^():]+)(?::\d+)?\)$")
# py-spy --native does not drop idle threads here (thread pool, aiosqlite, watchfiles): a sample
# whose stack ends in one of these waits is a thread that is blocked, not using CPU.
_WAITS = (
    "PyThread_acquire_lock_timed",
    "pthread_cond_timedwait",
    "pthread_cond_wait",
    "clock_nanosleep",
    "epoll_wait",
    "sem_wait",
    "sem_timedwait",
    "nanosleep (",
    "select (",
    "poll (",
    "futex",
)


def is_idle(frames: list[str]) -> bool:
    return any(w in frame for frame in frames[-4:] for w in _WAITS)


def _func_is(frame: str, func: str, fragment: str) -> bool:
    m = _FRAME.match(frame)
    if not m or fragment not in m.group("file"):
        return False
    name = m.group("func")
    return name == func or name.endswith("." + func)


_GC_FRAMES = ("gc_collect_main", "gc_collect_with_callback", "gc_collect_generations")


def classify(stack: list[str]) -> str:
    # The collector runs at whatever allocation crosses the threshold: its own bucket, not that
    # step's.
    if any(frame.startswith(_GC_FRAMES) for frame in stack):
        return "cyclic garbage collector (any generation)"
    bucket = "event loop, selector, socket I/O (outside handlers)"
    for frame in stack:
        for name, want_func, fragment in BUCKETS:
            if want_func == "*":
                m = _FRAME.match(frame)
                hit = m is not None and fragment in m.group("file")
            else:
                hit = _func_is(frame, want_func, fragment)
            if hit:
                bucket = name
                break
    return bucket


WATCH = {
    "observe middleware (whole request below the server)": ("observe", "gateway/web/observe.py"),
    "aiohttp-session middleware (own time + below)": ("factory", "aiohttp_session/"),
    "gate.entry (gate + forward)": ("entry", "gateway/web/gate.py"),
    "Forwarder.forward (headers, upstream request, response)": ("forward", "gateway/web/proxy.py"),
    "identity_headers (JWT mint + sign + dict)": ("identity_headers", "gateway/web/identity.py"),
    "Signer.sign (orjson, base64, Ed25519)": ("sign", "gateway/services/signing.py"),
    "Ed25519 signature (cryptography, native)": ("*", "cryptography/hazmat"),
    "AuditLog.record (request path)": ("record", "gateway/services/audit.py"),
    "audit writer thread (write, fsync)": ("_io", "gateway/services/audit.py"),
    "Metrics.observe_request": ("observe_request", "gateway/services/metrics.py"),
    "cyclic garbage collector": ("*", "gc_collect_main"),
    "front: FrontProtocol.data_received (parse, classify)": (
        "data_received",
        "gateway/web/front/connection.py",
    ),
    "front: proxied.serve (gate, forward, answer, audit)": (
        "serve",
        "gateway/web/front/proxied.py",
    ),
    "audit: batched rendering (_render_queued)": ("_render_queued", "gateway/services/audit.py"),
}

Profile = tuple[dict[str, float], dict[str, float], int]


def parse_profile(raw: Path) -> Profile | None:
    """py-spy raw (collapsed) stacks -> (exclusive bucket shares, inclusive shares, samples)."""
    buckets: dict[str, float] = defaultdict(float)
    inclusive: dict[str, float] = defaultdict(float)
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack_text.split(";")
        if is_idle(frames):
            continue
        total += count
        buckets[classify(frames)] += count
        for label, (func, fragment) in WATCH.items():
            if func == "*":
                hit = any(fragment in frame for frame in frames)
            else:
                hit = any(_func_is(frame, func, fragment) for frame in frames)
            if hit:
                inclusive[label] += count
    if not total:
        return None
    return (
        {k: v / total for k, v in buckets.items()},
        {k: inclusive.get(k, 0.0) / total for k in WATCH},
        total,
    )


def profile_server(target: Target, tmp: Path) -> Profile | None:
    spy = Path(PYTHON).parent / "py-spy"
    if not spy.exists():
        print(
            "py-spy not installed in the venv: no profile (.venv/bin/pip install py-spy)",
            file=sys.stderr,
        )
        return None
    raw = tmp / f"{target.name}-profile.txt"
    # wrk drives the server for the whole sampling window; py-spy and wrk share the load CPU.
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{PROFILE_SECONDS + 2}s", "--timeout", "5s"]
    for name, value in target.headers.items():
        argv += ["-H", f"{name}: {value}"]
    load = subprocess.Popen(
        pinned(LOAD_CPU, [*argv, target.url]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(1.0)
        spy_run = subprocess.run(
            pinned(
                LOAD_CPU,
                [
                    str(spy),
                    "record",
                    "--native",
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--duration",
                    str(PROFILE_SECONDS),
                    "--output",
                    str(raw),
                    "--pid",
                    str(target.pids[0]),
                ],
            ),
            capture_output=True,
            timeout=PROFILE_SECONDS + 30,
            check=False,
        )
    finally:
        try:
            load.wait(timeout=PROFILE_SECONDS + 10)
        except subprocess.TimeoutExpired:
            load.kill()
            load.wait()
    if spy_run.returncode != 0 or not raw.exists():
        print(f"py-spy failed: {spy_run.stderr.decode(errors='replace')[-500:]}", file=sys.stderr)
        return None
    shutil.copy(raw, BENCH / "results" / raw.name)
    return parse_profile(raw)


# --- report --------------------------------------------------------------------------------------


def machine_facts() -> dict[str, str]:
    import aiohttp

    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": str(os.cpu_count()),
        "CPU": model,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "nginx": (nginx_v.stderr or nginx_v.stdout).strip().split("/")[-1],
        "wrk": (wrk_v.stdout or wrk_v.stderr).split("[")[0].replace("wrk", "").strip(),
        "load": f"wrk -t1 -c{CONNECTIONS} -d{SECONDS}s --latency (after {WARMUP} s warm-up), "
        f"{REPEAT} round(s), GET {PATH}, 100-byte answer",
        "pinning": (
            f"wrk + backend + py-spy on CPU {LOAD_CPU}, server under test on CPU "
            f"{SERVER_CPU} (taskset)"
        )
        if PIN
        else "none (BENCH_PIN=0)",
        "allowlists": f"api and dashboard, {ENTRIES:,} entries each",
        "loadavg at start": Path("/proc/loadavg").read_text().split(" ")[0:3].__str__(),
        "gateway source": GATEWAY_SRC or str(ROOT),
    }


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def profile_lines(profiles: dict[str, Profile | None], cpu: dict[str, float]) -> list[str]:
    """Side by side: the gateway (c2) and, if profiled, the bare proxy, bucket by bucket."""
    gateway = profiles["gateway"]
    assert gateway is not None
    bare = profiles.get("bare")
    g_us, b_us = cpu.get("gateway"), cpu.get("bare")
    lines = [
        f"## Where the CPU goes (py-spy --native, {gateway[2]} busy samples of the gateway"
        + (f", {bare[2]} of the bare proxy)" if bare else ")"),
        "",
    ]
    lines.append(
        "Exclusive: each busy sample goes to the deepest matching step on its stack "
        "(samples of blocked threads are left out); ~us/req = share x the measured CPU "
        "us/req of the row. Sampling error about +-2 points."
    )
    lines.append("")
    lines.append("| step | gateway (c2) share | ~us/req | bare proxy share | ~us/req |")
    lines.append("|---|---|---|---|---|")
    names = sorted(
        set(gateway[0]) | set(bare[0] if bare else ()), key=lambda n: -gateway[0].get(n, 0.0)
    )
    for name in names:
        g = gateway[0].get(name, 0.0)
        row = [name, f"{g * 100:.1f}%", fmt(g * g_us) if g_us else "-"]
        if bare:
            b = bare[0].get(name, 0.0)
            row += [f"{b * 100:.1f}%", fmt(b * b_us) if b_us else "-"]
        else:
            row += ["-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "The bare proxy's own handler function (bench/bare_proxy.py `proxy`) counts as "
        "'forward: other'."
    )
    lines.append("")
    lines.append("Gateway, inclusive (the function and everything below it):")
    lines.append("")
    lines.append("| function | share | ~us/req |")
    lines.append("|---|---|---|")
    for name, share in gateway[1].items():
        lines.append(f"| {name} | {share * 100:.1f}% | {fmt(share * g_us) if g_us else '-'} |")
    lines.append("")
    return lines


def report(
    targets: dict[str, Target],
    results: dict[str, list[Measure]],
    facts: dict[str, str],
    profiles: dict[str, Profile | None],
    micro: dict[str, float | str],
) -> str:  # type: ignore[no-untyped-def]
    med = statistics.median
    lines = ["# Proxy benchmark", ""]
    bare = med([m.cpu_us for m in results["bare"]]) if results.get("bare") else None
    cols = ["name", "req/s", "p50 ms", "p99 ms", "CPU us/req", "CPU ratio vs bare proxy"]
    extra = ["backend CPU us/req", "unexpected answers"]
    if REPEAT > 1:
        extra.insert(0, "CPU us/req min-max")
    lines.append("| " + " | ".join(cols + extra) + " |")
    lines.append("|" + "---|" * (len(cols) + len(extra)))
    for name, target in targets.items():
        ms = results[name]
        cpu = med([m.cpu_us for m in ms])
        backend = [m.backend_cpu_us for m in ms if m.backend_cpu_us is not None]
        row = [
            LABELS[name],
            fmt(med([m.wrk.rps for m in ms]), 0),
            fmt(med([m.wrk.p50_ms for m in ms]), 2),
            fmt(med([m.wrk.p99_ms for m in ms]), 2),
            fmt(cpu),
            f"{cpu / bare:.2f}x" if bare else "-",
        ]
        if REPEAT > 1:
            row.append(f"{min(m.cpu_us for m in ms):.1f}-{max(m.cpu_us for m in ms):.1f}")
        row += [fmt(med(backend)) if backend else "-", str(sum(bad_answers(target, m) for m in ms))]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if "gateway" in results and bare:
        ratio = med([m.cpu_us for m in results["gateway"]]) / bare
        verdict = "meets" if ratio <= TARGET_RATIO else "misses"
        lines.append(
            f"Target: gateway (c2) CPU per request at most {TARGET_RATIO:.2f}x the bare proxy's: "
            f"**{ratio:.2f}x, {verdict} it**."
        )
        lines.append("")
    lines.append("Rows:")
    lines += [f"- {LABELS[n]}: {DESCRIPTIONS[n]}" for n in targets]
    lines.append("")
    lines.append(
        "CPU us/req = (utime + stime of the server's process(es) after - before the "
        "measured run) / requests wrk completed; tick = "
        f"{1e6 / CLK_TCK:.0f} us. Backend CPU is the backend behind the proxy, for "
        "information. 'unexpected answers' = non-2xx answers and socket errors (for the "
        "no-key row: answers that were not 401)."
    )
    lines.append("")
    if profiles.get("gateway") is not None:
        cpu = {n: med([m.cpu_us for m in results[n]]) for n in profiles if results.get(n)}
        lines += profile_lines(profiles, cpu)
    if micro:
        import steps as steps_mod

        lines.append("## The gateway's own steps, in-process (bench/steps.py, best of 7)")
        lines.append("")
        lines.append(
            "Each step called alone in a loop with warm caches: a lower bound of what it "
            "costs inside the server, where caches are shared with aiohttp and the loop."
        )
        lines.append("")
        lines.append("| step | us per call |")
        lines.append("|---|---|")
        for k, v in micro.items():
            if isinstance(v, float) and k.startswith("(start-up)"):
                lines.append(f"| {k} | {v / 1e6:.1f} s |")
            else:
                lines.append(f"| {k} | {v:,.1f} |" if isinstance(v, float) else f"| {k} | {v} |")
        lines.append(f"| **sum of the per-request steps** | **{steps_mod.total(micro):.1f}** |")
        lines.append("")
    lines.append("## Machine")
    lines.append("")
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "--profile-report":
        # Re-read a saved profile: run.py --profile-report RAW [GATEWAY_CPU_US_PER_REQ]
        profile = parse_profile(Path(sys.argv[2]))
        if profile is None:
            raise SystemExit("no busy samples in that file")
        us = float(sys.argv[3]) if len(sys.argv) > 3 else None
        print("\n".join(profile_lines({"gateway": profile}, {"gateway": us} if us else {})))
        return 0
    (BENCH / "results").mkdir(exist_ok=True)
    for tool in ("wrk", "taskset") if PIN else ("wrk",):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (apt-get install -y wrk nginx-light util-linux)")
    if "nginx" in ROWS and not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        raise SystemExit(
            "nginx not found (apt-get install -y nginx-light), or leave it out with BENCH_ROWS"
        )
    unknown = set(ROWS) - set(LABELS)
    if unknown:
        raise SystemExit(f"unknown BENCH_ROWS {sorted(unknown)}; known: {list(LABELS)}")
    if PIN and (os.cpu_count() or 1) < 2:
        raise SystemExit("pinning needs 2 CPUs; run with BENCH_PIN=0")
    facts = machine_facts()
    tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
    procs = Procs()
    started = time.monotonic()
    try:
        print(f"starting servers in {tmp}", file=sys.stderr, flush=True)
        targets = start_servers(tmp, procs, facts)
        micro = collect_steps()  # before any load: it shares the load CPU
        results = run_rounds(targets)
        profiles: dict[str, Profile | None] = {}
        if PROFILE and "gateway" in targets:
            for name in ("bare", "gateway"):
                if name in targets:
                    print(f"  profiling {LABELS[name]} with py-spy", file=sys.stderr, flush=True)
                    profiles[name] = profile_server(targets[name], tmp)
        unhandled = (
            (tmp / "gateway.log").read_text(errors="replace").count("unhandled_error")
            if (tmp / "gateway.log").exists()
            else 0
        )
        facts["gateway log"] = f"{unhandled} unhandled_error lines (tracebacks) during the run"
        facts["loadavg at end"] = str(Path("/proc/loadavg").read_text().split(" ")[0:3])
        facts["wall time"] = f"{time.monotonic() - started:.0f} s"
        text = report(targets, results, facts, profiles, micro)
    finally:
        for proc in STEPS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        procs.stop_all()
        if KEEP:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(text)
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.md").write_text(text)
    (out / time.strftime("run-%Y%m%d-%H%M%S.md")).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
