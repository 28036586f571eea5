"""Forward-auth benchmark: nginx alone, nginx + auth_request to the gateway, and the same with
nginx caching the gateway's answer for 5 s, side by side.

Run: .venv/bin/python bench/forward_auth.py          (about 3 minutes; see bench/README.md)

After the throughput rounds, a latency probe with one connection per row (5 s per row and
round) shows what the auth subrequest adds without queueing.

Rows (the same wrk load, GET /api/items/42 with an API key, 100-byte answer from bench/backend.py):
  plain    nginx as a plain keep-alive reverse proxy (bench/nginx.conf.template), 1 worker
  auth     nginx with deploy/forward-auth/nginx.conf: every request asks the gateway
           ({prefix}/authz/auth-request), then goes to the backend with the identity headers
  cached   the same configuration with its optional decision cache on (5 s, keyed by session
           cookie, API key, client address, host, method and URI)

nginx and the gateway are the system under test: both pinned on CPU 1; wrk and the backend on
CPU 0 (as bench/run.py pins). Rows are interleaved per round and the table shows medians. For
each row: requests per second and its ratio to plain nginx, p50/p99 latency, CPU per request of
nginx (master + worker) and of the gateway (from /proc accounting), and the gateway's CPU per
decision (its CPU over the decisions it counted in gateway_requests_total{mode="forward-auth"}).

Environment: BENCH_SECONDS (10), BENCH_CONNECTIONS (32), BENCH_REPEAT (3), BENCH_PIN (1),
BENCH_ENTRIES (10000 allowlist entries per surface), BENCH_KEEP=1 keeps the temporary folder.
Loopback only; every load run is bounded by BENCH_SECONDS.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("BENCH_ENTRIES", "10000")
os.environ.setdefault("BENCH_REPEAT", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import run  # bench/run.py: processes, wrk, /proc accounting

from gateway.demo import front_proxy

PATH = "/api/items/42"
PROBE_SECONDS = 5
ROWS = ("plain", "auth", "cached")
LABELS = {
    "plain": "nginx, plain reverse proxy",
    "auth": "nginx + auth_request to the gateway",
    "cached": "nginx + auth_request, 5 s decision cache",
}


@dataclass
class System:
    name: str
    url: str
    nginx_pids: list[int]
    gateway_pids: list[int]
    metrics_url: str | None = None


@dataclass
class Row:
    rps: float
    p50_ms: float
    p99_ms: float
    nginx_us: float
    gateway_us: float
    decisions: int
    requests: int
    bad: int


def start_nginx(procs: run.Procs, config: Path, log: Path, port: int) -> list[int]:
    proc = procs.start(run.pinned(run.SERVER_CPU, front_proxy.nginx_argv(config)), log)
    run.wait_http(f"http://{run.HOST}:{port}/", proc, log, 20)
    # One worker; with the cache on, also its cache manager and (for a minute) cache loader.
    return [proc.pid, *run.children_of(proc.pid)]


def cpu_ticks(pids: list[int]) -> int:
    """run.cpu_ticks, skipping a process that has ended (nginx's cache loader)."""
    return sum(run.cpu_ticks([pid]) for pid in pids if Path(f"/proc/{pid}/stat").exists())


def wrk_one(url: str, seconds: int, headers: dict[str, str]) -> run.WrkResult:
    """wrk with one connection (bench/run.py's wrk uses BENCH_CONNECTIONS)."""
    argv = ["wrk", "-t1", "-c1", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    done = subprocess.run(
        run.pinned(run.LOAD_CPU, [*argv, url]),
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return run.parse_wrk(done.stdout)


def decisions(metrics_url: str) -> int:
    """The gateway's forward-auth decisions so far (gateway_requests_total, mode=forward-auth)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("gateway_requests_total{") and 'mode="forward-auth"' in line
        )
    )


def start(tmp: Path, procs: run.Procs) -> dict[str, System]:
    backend_port = run.free_port()
    backend = procs.start(
        run.pinned(
            run.LOAD_CPU, [run.PYTHON, str(run.BENCH / "backend.py"), "--port", str(backend_port)]
        ),
        tmp / "backend.log",
    )
    run.wait_http(f"http://{run.HOST}:{backend_port}/", backend, tmp / "backend.log", 20)
    backend_addr = f"{run.HOST}:{backend_port}"

    gateway_port = run.free_port()
    root = tmp / "gateway"
    config = run.write_gateway_config(root, gateway_port, backend_port)
    with config.open("a") as f:
        f.write("trusted_proxies: [127.0.0.1/32]\n")
    argv, env = run.gateway_argv(config)
    log = tmp / "gateway.log"
    gateway = procs.start(run.pinned(run.SERVER_CPU, argv), log, env=env, cwd=str(root))
    run.wait_http(f"http://{run.HOST}:{gateway_port}/_gateway/healthz", gateway, log, 180)
    metrics = f"http://{run.HOST}:{gateway_port}/_gateway/metrics"

    systems: dict[str, System] = {}
    port = run.free_port()
    ndir = tmp / "plain"
    ndir.mkdir()
    conf = (
        (run.BENCH / "nginx.conf.template")
        .read_text()
        .replace("@@DIR@@", str(ndir))
        .replace("@@PORT@@", str(port))
        .replace("@@BACKEND_PORT@@", str(backend_port))
    )
    (ndir / "nginx.conf").write_text(conf)
    pids = start_nginx(procs, ndir / "nginx.conf", tmp / "plain.log", port)
    systems["plain"] = System("plain", f"http://{run.HOST}:{port}{PATH}", pids, [])

    for name, cache in (("auth", False), ("cached", True)):
        port = run.free_port()
        nconf = front_proxy.render_nginx(
            tmp / name,
            listen=f"{run.HOST}:{port}",
            gateway=f"{run.HOST}:{gateway_port}",
            console=backend_addr,
            api=backend_addr,
            cache=cache,
        )
        pids = start_nginx(procs, nconf, tmp / f"{name}.log", port)
        systems[name] = System(
            name, f"http://{run.HOST}:{port}{PATH}", pids, [gateway.pid], metrics
        )
    return systems


def check(system: System) -> None:
    """One request, so a misconfiguration fails loudly instead of benchmarking 401s."""
    request = urllib.request.Request(system.url, headers={"Authorization": f"Bearer {run.API_KEY}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        body = resp.read()
        if resp.status != 200 or len(body) != 100:
            raise SystemExit(f"{system.name}: {resp.status} with {len(body)} bytes")


def measure(system: System, seconds: int) -> Row:
    headers = {"Authorization": f"Bearer {run.API_KEY}"}
    before_n, before_g = cpu_ticks(system.nginx_pids), cpu_ticks(system.gateway_pids)
    before_d = decisions(system.metrics_url) if system.metrics_url else 0
    result = run.wrk(system.url, seconds, headers)
    after_n, after_g = cpu_ticks(system.nginx_pids), cpu_ticks(system.gateway_pids)
    after_d = decisions(system.metrics_url) if system.metrics_url else 0
    per = 1e6 / run.CLK_TCK / max(1, result.requests)
    return Row(
        result.rps,
        result.p50_ms,
        result.p99_ms,
        (after_n - before_n) * per,
        (after_g - before_g) * per,
        after_d - before_d,
        result.requests,
        result.non2xx + result.errors,
    )


def median(rows: list[Row], field: str) -> float:
    return statistics.median(getattr(r, field) for r in rows)


def report(
    results: dict[str, list[Row]], probes: dict[str, list[run.WrkResult]], facts: dict[str, str]
) -> str:
    plain = median(results["plain"], "rps")
    plain_p99 = median(results["plain"], "p99_ms")
    lines = [
        "# Forward-auth benchmark (bench/forward_auth.py)",
        "",
        "Medians of interleaved rounds. nginx and the gateway share CPU 1; wrk and the backend "
        "CPU 0. The machine was shared with other work while this ran: compare rows of one run, "
        "not runs. `x nginx plain` compares measured throughput; plain nginx is held back by "
        "the load side (wrk and a Python backend on one CPU), so `CPU x nginx plain` (plain "
        "nginx's CPU per request over nginx's + the gateway's) is the capacity ratio of the "
        "server CPU.",
        "",
        "| system | req/s | x nginx plain | p50 ms | p99 ms | p99 added | nginx CPU us/req | "
        "gateway CPU us/req | CPU x nginx plain | gateway CPU us/decision | decisions/req | bad |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    plain_cpu = median(results["plain"], "nginx_us")
    for name in ROWS:
        rows = results[name]
        rps = median(rows, "rps")
        decided = sum(r.decisions for r in rows)
        asked = sum(r.requests for r in rows)
        gw_total = sum(r.gateway_us * r.requests for r in rows)
        # With the cache the gateway decides a few times per 5 s; its CPU is then mostly its
        # idle work (timers, audit flushes), which per decision would read as nonsense.
        per_decision = f"{gw_total / decided:.0f}" if decided >= asked / 2 else "-"
        p99 = median(rows, "p99_ms")
        added = f"{p99 - plain_p99:+.2f}" if name != "plain" else "-"
        lines.append(
            f"| {LABELS[name]} | {rps:,.0f} | {rps / plain:.2f} | {median(rows, 'p50_ms'):.2f} | "
            f"{p99:.2f} | {added} | {median(rows, 'nginx_us'):.1f} | "
            f"{median(rows, 'gateway_us'):.1f} | "
            f"{plain_cpu / (median(rows, 'nginx_us') + median(rows, 'gateway_us')):.2f} | "
            f"{per_decision} | "
            f"{decided / max(1, asked):.4f} | {sum(r.bad for r in rows)} |"
        )
    plain_p50 = statistics.median(p.p50_ms for p in probes["plain"])
    plain_p99 = statistics.median(p.p99_ms for p in probes["plain"])
    lines += [
        "",
        f"Latency with one connection ({PROBE_SECONDS} s per row and round, medians): what the "
        "auth subrequest adds without queueing.",
        "",
        "| system | p50 ms | p99 ms | p50 added | p99 added |",
        "|---|---|---|---|---|",
    ]
    for name in ROWS:
        p50 = statistics.median(p.p50_ms for p in probes[name])
        p99 = statistics.median(p.p99_ms for p in probes[name])
        added = name != "plain"
        lines.append(
            f"| {LABELS[name]} | {p50:.3f} | {p99:.3f} | "
            f"{f'{p50 - plain_p50:+.3f}' if added else '-'} | "
            f"{f'{p99 - plain_p99:+.3f}' if added else '-'} |"
        )
    lines += ["", "Rounds:", ""]
    for name in ROWS:
        rounds = ", ".join(f"{r.rps:,.0f}" for r in results[name])
        lines.append(f"- {LABELS[name]}: {rounds} req/s")
    lines += ["", "## Machine", ""] + [f"- {k}: {v}" for k, v in facts.items()] + [""]
    return "\n".join(lines)


def main() -> int:
    for tool in ("wrk", "taskset") if run.PIN else ("wrk",):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (apt-get install -y wrk util-linux)")
    front_proxy.nginx_binary()
    facts = run.machine_facts()
    facts["load"] = (
        f"wrk -t1 -c{run.CONNECTIONS} -d{run.SECONDS}s --latency, {run.REPEAT} interleaved "
        f"round(s), GET {PATH} with an API key, 100-byte answer"
    )
    facts["pinning"] = (
        f"nginx + gateway on CPU {run.SERVER_CPU}, wrk + backend on CPU {run.LOAD_CPU}"
        if run.PIN
        else "none (BENCH_PIN=0)"
    )
    tmp = Path(tempfile.mkdtemp(prefix="gwbench-fa-"))
    procs = run.Procs()
    started = time.monotonic()
    try:
        systems = start(tmp, procs)
        for system in systems.values():
            check(system)
            run.wrk(system.url, run.WARMUP, {"Authorization": f"Bearer {run.API_KEY}"})
        results: dict[str, list[Row]] = defaultdict(list)
        for rnd in range(run.REPEAT):
            for name in ROWS:
                row = measure(systems[name], run.SECONDS)
                results[name].append(row)
                print(
                    f"  round {rnd + 1}/{run.REPEAT} {LABELS[name]:<42} {row.rps:8.0f} req/s  "
                    f"p99 {row.p99_ms:6.2f} ms  nginx {row.nginx_us:5.1f} us  "
                    f"gateway {row.gateway_us:6.1f} us/req  bad {row.bad}",
                    file=sys.stderr,
                    flush=True,
                )
        # Latency without queueing: one connection, so what the auth subrequest adds is not
        # hidden behind 32 connections waiting on a saturated CPU.
        probes: dict[str, list[run.WrkResult]] = defaultdict(list)
        for _ in range(run.REPEAT):
            for name in ROWS:
                probes[name].append(
                    wrk_one(
                        systems[name].url, PROBE_SECONDS, {"Authorization": f"Bearer {run.API_KEY}"}
                    )
                )
        log = (tmp / "gateway.log").read_text(errors="replace")
        facts["gateway log"] = f"{log.count('unhandled_error')} unhandled_error lines"
        facts["loadavg at end"] = str(Path("/proc/loadavg").read_text().split(" ")[0:3])
        facts["wall time"] = f"{time.monotonic() - started:.0f} s"
        text = report(results, probes, facts)
    finally:
        procs.stop_all()
        if os.environ.get("BENCH_KEEP") == "1":
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    (run.BENCH / "results").mkdir(exist_ok=True)
    (run.BENCH / "results" / "forward-auth-latest.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
