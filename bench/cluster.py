"""Cluster benchmark: signed-in dashboard requests through nginx to 1, 2 and 3 gateway instances
(sessions in Redis, state in PostgreSQL), and one instance with sessions in PostgreSQL.

Run: .venv/bin/python bench/cluster.py       (about 3 minutes; figures in README.md)

Every row is the same wrk load (GET / with a session cookie, through nginx, 100-byte answer
from bench/backend.py) and reports requests per second and the CPU time per request, from each
process's own accounting (/proc/PID/stat): of the gateway instances together, of each instance
(per request it served), of the session store (the Redis server, or the PostgreSQL backends the
gateway is connected to), and of nginx. Rows are interleaved round by round; tables show
medians. The machine has 2 cores shared with other work: wrk, nginx and the backend are pinned
to CPU 0 and every gateway instance to CPU 1, so throughput cannot grow with the instance
count; what must hold is that the CPU per request does not grow either.

Rows:
  state-1   1 instance, sessions.store: state (PostgreSQL)
  redis-1   1 instance, sessions.store: redis://     (the difference: the Redis lookup's cost)
  redis-2   2 instances behind nginx, round robin
  redis-3   3 instances behind nginx, round robin

Environment: BENCH_SECONDS (8), BENCH_CONNECTIONS (32), BENCH_REPEAT (3), BENCH_PIN (1),
BENCH_ROWS (all four), BENCH_SCALE (0; 1: BENCH_CONNECTIONS per instance),
GATEWAY_TEST_POSTGRES (postgresql://postgres@127.0.0.1:5432/test; a schema of its own, dropped
at the end). A redis-server of its own on a free port. Loopback only; every run is bounded.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import run as base  # bench/run.py: processes, pinning, wrk, CPU accounting
from argon2 import PasswordHasher

SECONDS = base.env_int("BENCH_SECONDS", 8)
REPEAT = max(1, base.env_int("BENCH_REPEAT", 3))
POSTGRES = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
HOST = base.HOST
USER, PASSWORD = "bench", "bench-Passphrase-42-cluster"
ROWS = [
    r.strip()
    for r in os.environ.get("BENCH_ROWS", "state-1,redis-1,redis-2,redis-3").split(",")
    if r.strip()
]
# BENCH_SCALE=1: wrk opens BENCH_CONNECTIONS per instance instead of in all, so each instance
# sees the same concurrency as the one-instance row (separates the protocol's cost from the
# batching a process loses when three share one core).
SCALE = os.environ.get("BENCH_SCALE") == "1"
APP_NAME = "gwbench"


@dataclass
class Row:
    name: str
    url: str
    gateway_pids: list[int]
    store_pids: list[int]


@dataclass
class Result:
    rps: float
    requests: int
    bad: int
    gateway_us: float  # all instances together, per request
    per_instance_us: list[float]  # each instance's CPU per request it served (~ requests / n)
    store_us: float
    nginx_us: float


def config(root: Path, sessions: str, state: str, backend_port: int) -> Path:
    root.mkdir(parents=True)
    (root / "policies").mkdir()
    (root / "gateway.yaml").write_text(
        f"listen: {{host: {HOST}, port: 8080}}\n"
        "trusted_proxies: [127.0.0.1/32]\n"
        "prefix: /_gateway\n"
        f"state: {state}\n"
        f'sessions: {{store: "{sessions}", key_prefix: "gwbench:"}}\n'
        "secret_key_file: ../gateway.key\n"
        "audit: {path: audit/audit.jsonl}\n"
        "policies: policies\n"
        "apps:\n"
        "  console:\n"
        "    surface: dashboard\n"
        "    match: {path: /}\n"
        f"    upstream: http://{HOST}:{backend_port}\n"
    )
    hashed = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    (root / "policies" / "people.yaml").write_text(
        f'users:\n  {USER}:\n    password_hash: "{hashed}"\n    grants: {{console: viewer}}\n'
        "roles:\n  viewer: {allow: [{methods: [GET, HEAD]}]}\n"
    )
    (root / "policies" / "security.yaml").write_text("two_factor: {enforce: none}\n")
    return root / "gateway.yaml"


def sign_in(url: str) -> str:
    """The session cookie of a fresh sign-in through `url`."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
    page = opener.open(f"{url}/_gateway/login", timeout=10).read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    form = urllib.parse.urlencode(
        {"username": USER, "password": PASSWORD, "next": "/", "csrf_token": token}
    ).encode()
    try:
        opener.open(f"{url}/_gateway/login", data=form, timeout=10)
    except urllib.error.HTTPError as exc:
        if exc.code != 302:
            raise
    cookie = next(c.value for c in jar if c.name == "gateway_session")
    return cookie


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


def psql(sql: str) -> str:
    done = subprocess.run(
        ["psql", POSTGRES, "-tAq", "-c", sql], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise SystemExit(f"psql failed: {done.stderr}")
    return done.stdout


def nginx_conf(ndir: Path, fronts: dict[int, list[int]]) -> Path:
    """One nginx, one listening port per row, each with its own upstream of gateway ports."""
    blocks = []
    for listen, ports in fronts.items():
        servers = "".join(f"        server {HOST}:{p};\n" for p in ports)
        blocks.append(
            f"    upstream u{listen} {{\n{servers}        keepalive 64;\n    }}\n"
            f"    server {{\n        listen {HOST}:{listen};\n        location / {{\n"
            f"            proxy_pass http://u{listen};\n            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";\n'
            "            proxy_set_header Host $http_host;\n"
            "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            "            proxy_next_upstream error timeout;\n        }\n    }\n"
        )
    conf = ndir / "nginx.conf"
    conf.write_text(
        f"daemon off;\nworker_processes 1;\npid {ndir}/nginx.pid;\n"
        f"error_log {ndir}/error.log warn;\nevents {{ worker_connections 4096; }}\n"
        f"http {{\n    access_log off;\n    client_body_temp_path {ndir}/body;\n"
        f"    proxy_temp_path {ndir}/proxy;\n    keepalive_requests 1000000;\n"
        + "".join(blocks)
        + "}\n"
    )
    return conf


def postgres_backends() -> list[int]:
    """The PostgreSQL server processes serving the gateways (their application_name)."""
    rows = psql(f"SELECT pid FROM pg_stat_activity WHERE application_name = '{APP_NAME}'")
    return [int(p) for p in rows.split()]


def measure(row: Row, nginx_pids: list[int], cookie: str) -> Result:
    pids = row.gateway_pids
    if row.name.startswith("state"):
        row.store_pids = postgres_backends()  # the pool may have opened more connections
    each_before = [base.cpu_ticks([p]) for p in pids]
    store_before = base.cpu_ticks(row.store_pids)
    nginx_before = base.cpu_ticks(nginx_pids)
    connections = base.CONNECTIONS
    if SCALE:
        base.CONNECTIONS = connections * len(pids)
    try:
        out = base.wrk(row.url, SECONDS, {"Cookie": f"gateway_session={cookie}"})
    finally:
        base.CONNECTIONS = connections
    each = [base.cpu_ticks([p]) - b for p, b in zip(pids, each_before, strict=True)]
    store = base.cpu_ticks(row.store_pids) - store_before
    nginx = base.cpu_ticks(nginx_pids) - nginx_before
    per = 1e6 / base.CLK_TCK / max(1, out.requests)
    share = max(1, out.requests) / len(pids)  # round robin: each served about this many
    return Result(
        out.rps,
        out.requests,
        out.non2xx + out.errors,
        sum(each) * per,
        [t * 1e6 / base.CLK_TCK / share for t in each],
        store * per,
        nginx * per,
    )


def main() -> int:
    for tool in ("wrk", "nginx", "psql", "redis-server"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: scripts/system-packages.sh installs it")
    tmp = Path(tempfile.mkdtemp(prefix="gw-cluster-bench-"))
    procs = base.Procs()
    schema = f"bench_{secrets.token_hex(4)}"
    psql(f"CREATE SCHEMA {schema}")
    try:
        return run(tmp, procs, schema)
    finally:
        procs.stop_all()
        psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        shutil.rmtree(tmp, ignore_errors=True)


def run(tmp: Path, procs: base.Procs, schema: str) -> int:
    facts = base.machine_facts()
    redis_port = base.free_port()
    redis_argv = ["redis-server", "--port", str(redis_port), "--bind", HOST]
    redis_argv += ["--save", "", "--appendonly", "no", "--dir", str(tmp)]
    redis = procs.start(base.pinned(base.LOAD_CPU, redis_argv), tmp / "redis.log")
    backend_port = base.free_port()
    backend = procs.start(
        base.pinned(
            base.LOAD_CPU,
            [base.PYTHON, str(base.BENCH / "backend.py"), "--port", str(backend_port)],
        ),
        tmp / "backend.log",
    )
    base.wait_http(f"http://{HOST}:{backend_port}/", backend, tmp / "backend.log", 20)
    sep = "&" if "?" in POSTGRES else "?"
    state = f"{POSTGRES}{sep}search_path={schema}&application_name={APP_NAME}"
    redis_url = f"redis://{HOST}:{redis_port}/0"
    configs = {
        "redis": config(tmp / "redis", redis_url, state, backend_port),
        "state": config(tmp / "state", "state", state, backend_port),
    }
    argv, env = base.gateway_argv(configs["redis"])
    instances: dict[str, list[tuple[int, int]]] = {"redis": [], "state": []}  # (port, pid)
    for kind, count in (("redis", 3), ("state", 1)):
        for i in range(count):
            port = base.free_port()
            log = tmp / f"gateway-{kind}-{i}.log"
            argv, env = base.gateway_argv(configs[kind])
            proc = procs.start(
                base.pinned(base.SERVER_CPU, [*argv, "--port", str(port)]), log, env=env
            )
            base.wait_http(f"http://{HOST}:{port}/_gateway/healthz", proc, log, 120)
            instances[kind].append((port, proc.pid))
    ports = {
        "state-1": [instances["state"][0]],
        "redis-1": instances["redis"][:1],
        "redis-2": instances["redis"][:2],
        "redis-3": instances["redis"][:3],
    }
    fronts = {base.free_port(): [p for p, _ in ports[name]] for name in ROWS}
    ndir = tmp / "nginx"
    ndir.mkdir()
    nginx = procs.start(
        base.pinned(base.LOAD_CPU, ["nginx", "-p", str(ndir), "-c", str(nginx_conf(ndir, fronts))]),
        tmp / "nginx.log",
    )
    listen = dict(zip(ROWS, fronts, strict=True))
    nginx_log = tmp / "nginx.log"
    base.wait_http(f"http://{HOST}:{listen[ROWS[0]]}/_gateway/healthz", nginx, nginx_log, 20)
    nginx_pids = [nginx.pid, *base.children_of(nginx.pid)]
    cookies = {}
    for name in ROWS:  # one sign-in per session store
        kind = name.split("-")[0]
        cookies.setdefault(kind, sign_in(f"http://{HOST}:{listen[name]}"))
    pg = postgres_backends()
    rows = {
        name: Row(
            name,
            f"http://{HOST}:{listen[name]}/",
            [pid for _, pid in ports[name]],
            [redis.pid] if name.startswith("redis") else pg,
        )
        for name in ROWS
    }
    results: dict[str, list[Result]] = {name: [] for name in ROWS}
    for name, row in rows.items():  # warm-up
        base.wrk(row.url, 2, {"Cookie": f"gateway_session={cookies[name.split('-')[0]]}"})
    for rnd in range(REPEAT):
        order = ROWS[rnd % len(ROWS) :] + ROWS[: rnd % len(ROWS)]  # rotate: no row always first
        for name in order:
            r = measure(rows[name], nginx_pids, cookies[name.split("-")[0]])
            results[name].append(r)
            print(
                f"  round {rnd + 1}/{REPEAT} {name:<8} {r.rps:8.0f} req/s  gateways "
                f"{r.gateway_us:6.1f} us/req  store {r.store_us:5.1f}  nginx {r.nginx_us:5.1f}"
                f"  bad {r.bad}",
                file=sys.stderr,
                flush=True,
            )
    report(results, facts)
    return 0


def report(results: dict[str, list[Result]], facts: dict[str, str]) -> None:
    def med(name: str, pick) -> float:  # type: ignore[no-untyped-def]
        return statistics.median(pick(r) for r in results[name])

    ref = med(ROWS[0], lambda r: r.gateway_us)
    lines = [
        f"Cluster benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: medians of "
        f"{REPEAT} interleaved rounds of {SECONDS} s, wrk -c{base.CONNECTIONS}"
        f"{' per instance' if SCALE else ''} through nginx, "
        "GET / signed in (session cookie). The 2 cores were shared with other work.",
        f"CPU: {facts['CPU']}, {facts['nproc']} cores; pinning: "
        + (
            "wrk, nginx, backend and Redis on CPU 0, every gateway instance on CPU 1."
            if base.PIN
            else "none (BENCH_PIN=0)."
        ),
        "",
        f"| row | req/s | gateway CPU us/req (all instances) | vs {ROWS[0]} | per instance "
        "us/req served | session store CPU us/req | nginx us/req | bad answers |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for name in ROWS:
        gw = med(name, lambda r: r.gateway_us)
        n = len(results[name][0].per_instance_us)
        each = [statistics.median(r.per_instance_us[i] for r in results[name]) for i in range(n)]
        lines.append(
            f"| {name} | {med(name, lambda r: r.rps):,.0f} | {gw:.1f} | {gw / ref:.2f} | "
            f"{', '.join(f'{e:.0f}' for e in each)} | {med(name, lambda r: r.store_us):.1f} | "
            f"{med(name, lambda r: r.nginx_us):.1f} | {sum(r.bad for r in results[name])} |"
        )
    if "state-1" in results and "redis-1" in results:
        state = med("state-1", lambda r: r.gateway_us + r.store_us)
        redis = med("redis-1", lambda r: r.gateway_us + r.store_us)
        lines += [
            "",
            f"Session lookup, gateway + store CPU per request: Redis {redis:.1f} us, PostgreSQL "
            f"{state:.1f} us (Redis minus PostgreSQL: {redis - state:+.1f} us).",
        ]
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
