"""`gateway run`: one process, or N workers sharing the port with SO_REUSEPORT.

Every worker loads, watches and reloads the policy on its own and writes its own audit chain into
the shared audit file. The parent only supervises: it forwards SIGHUP and SIGTERM, and restarts
a worker that died.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import tempfile
import time
from pathlib import Path

import structlog
from aiohttp import web

from gateway.app import build_app, initial_holder
from gateway.policy.source import LoadResult, load
from gateway.services.secret_key import load_secret_key
from gateway.settings import ServeSettings, serve_settings
from gateway.web.listener import ListenError, start_gateway

log = structlog.get_logger("gateway")

# A worker's exit code for failures a restart cannot fix (the port is taken, the policy is
# invalid): the supervisor stops instead of restarting it in a loop. 78 = EX_CONFIG.
DO_NOT_RESTART = 78


def event_loop_factory():  # type: ignore[no-untyped-def]
    """uvloop (libuv) when installed: its transports and timers are C, which the proxied path
    spends most of its time in (docs/performance.md). GATEWAY_EVENT_LOOP=asyncio opts out."""
    if os.environ.get("GATEWAY_EVENT_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_worker(
    config_file: Path,
    result: LoadResult | None = None,
    *,
    reuse_port: bool = False,
    port: int | None = None,
) -> None:
    from gateway.logs import configure_logging

    configure_logging()
    result = result or load(config_file)
    if result.snapshot is None:
        for problem in result.report.errors:
            log.error("policy_invalid", problem=str(problem))
        raise SystemExit(DO_NOT_RESTART)
    holder = initial_holder(config_file, result)
    settings = serve_settings(result.snapshot, port)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(_serve(build_app(holder), settings, reuse_port))
    except ListenError as exc:
        log.error("listen_failed", error=str(exc))  # one line, no traceback
        raise SystemExit(DO_NOT_RESTART) from None


async def _serve(app: web.Application, settings: ServeSettings, reuse_port: bool) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (requests in flight finish)."""
    runner, _site = await start_gateway(
        app,
        settings.host,
        settings.port,
        ssl_context=settings.ssl_context,
        reuse_port=reuse_port,
    )
    log.info(
        "listening",
        host=settings.host,
        port=settings.port,
        pid=os.getpid(),
        tls=settings.ssl_context is not None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(config_file: Path, workers: int, port: int | None = None) -> int:
    result = load(config_file)
    if result.snapshot is None:
        for problem in result.report.errors:
            print(problem)
        return 1
    # Created once here, so the workers do not race to generate it.
    load_secret_key(result.snapshot.paths.secret_key_file)
    if workers <= 1:
        try:
            run_worker(config_file, result, port=port)
        except SystemExit as exc:
            return 1 if exc.code == DO_NOT_RESTART else int(exc.code or 0)
        return 0
    return _supervise(config_file, workers, port)


def _supervise(config_file: Path, workers: int, port: int | None) -> int:
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    ctx = multiprocessing.get_context("spawn")
    procs: list[multiprocessing.process.BaseProcess] = []
    stopping = False

    def start() -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(
            target=run_worker,
            args=(config_file,),
            kwargs={"reuse_port": True, "port": port},
            daemon=False,
        )
        proc.start()
        return proc

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for proc in procs:
            if proc.pid and proc.is_alive():
                os.kill(proc.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    procs.extend(start() for _ in range(workers))
    while not stopping:
        time.sleep(0.5)
        for i, proc in enumerate(procs):
            if not proc.is_alive() and not stopping:
                if proc.exitcode == DO_NOT_RESTART:  # it cannot listen, or the policy is invalid
                    forward(signal.SIGTERM, None)
                    for other in procs:
                        other.join(timeout=15)
                    return 1
                log.error("worker_died", pid=proc.pid, exitcode=proc.exitcode)
                time.sleep(1)
                procs[i] = start()
    for proc in procs:
        proc.join(timeout=15)
    return 0
