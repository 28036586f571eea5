"""Slow clients and header floods against a real `gateway run`: its memory, and the latency a
legitimate client sees meanwhile (docs/security.md; issue: 500 connections each sending
120 headers of 16 KB without ever finishing the head took the process from 300 MB to 2.2 GB).

    .venv/bin/python bench/slow_clients.py [--connections 500] [--rounds 3]

Loads, each from 5 loopback source addresses (127.0.0.2-6, so the per-IP connection cap is not
what stops them), while a legitimate client on 127.0.0.1 sends one request every 50 ms:

- idle:      no attack (the reference)
- slowloris: every connection sends one header line per second and never ends the head
- flood-16k: 120 headers of 16 KB each, never ending the head (over the 8 KiB line limit)
- flood-8k:  120 headers of 8,000 bytes each (under the line limit, over the 64 KiB head limit)
- stall-60k: 60 KiB of headers (just under the head limit), then silence

Each load runs `--rounds` times, interleaved with the idle reference; medians are printed: the
gateway's RSS growth (peak VmRSS sampled every 50 ms, minus the RSS before; "max growth" is the
largest over the rounds, usually the first, before the heap has grown), and the legitimate
client's p50/p99/max latency and failures.

The load functions are also used by tests/web/test_limits.py (memory bound of a real process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _open(
    host: str, port: int, source: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    try:
        return await asyncio.open_connection(host, port, local_addr=(source, 0))
    except OSError:
        return None


async def _answered(reader: asyncio.StreamReader, flag: list[bool], i: int) -> None:
    """Sets flag[i] once the gateway writes anything (its 431) or closes its side: it never
    writes to a connection whose head is still coming unless it refuses it. A refused head
    lingers (the gateway discards what follows for a while), so writes alone would not tell."""
    with contextlib.suppress(OSError):
        await reader.read(1)
    flag[i] = True


async def _send(writer: asyncio.StreamWriter, data: bytes) -> bool:
    """False once the gateway has closed the connection."""
    if writer.is_closing():
        return False
    try:
        writer.write(data)
        await asyncio.wait_for(writer.drain(), 5)
    except (OSError, TimeoutError):
        return False
    return True


async def header_load(
    host: str,
    port: int,
    *,
    connections: int,
    headers: int,
    header_size: int,
    pause: float = 0.0,
    total: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, int]:
    """`connections` connections each send a request line, then up to `headers` header lines of
    `header_size` bytes (at most `total` bytes of them), one line per connection per round with
    `pause` seconds between rounds, and never the blank line that ends the head. Bounded: stops
    after the last round, or when `should_stop()` says so (a memory guard)."""
    pairs = await asyncio.gather(
        *(_open(host, port, SOURCES[i % len(SOURCES)]) for i in range(connections))
    )
    writers = [p[1] if p is not None else None for p in pairs]
    answered = [False] * connections
    watchers = [asyncio.create_task(_answered(p[0], answered, i)) for i, p in enumerate(pairs) if p]
    sent = [0] * connections
    open_ = [w is not None for w in writers]
    stats = {"opened": sum(open_), "closed_by_gateway": 0, "bytes_sent": 0}
    value = b"v" * max(1, header_size - 16)
    try:
        for i, writer in enumerate(writers):
            if writer is not None and not await _send(writer, b"GET / HTTP/1.1\r\nHost: gw\r\n"):
                open_[i] = False
        for n in range(headers):
            if should_stop():
                break
            line = b"X-Flood-%05d: " % n + value + b"\r\n"
            for i, writer in enumerate(writers):
                if not open_[i] or writer is None:
                    continue
                if total is not None and sent[i] + len(line) > total:
                    continue
                if not answered[i] and await _send(writer, line):
                    sent[i] += len(line)
                else:
                    open_[i] = False
                    stats["closed_by_gateway"] += 1
            if pause:
                await asyncio.sleep(pause)
            else:
                await asyncio.sleep(0)
        stats["bytes_sent"] = sum(sent)
        stats["still_open"] = sum(open_)
        return stats
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        for writer in writers:
            if writer is not None:
                writer.close()


async def legitimate_latencies(url: str, stop: asyncio.Event, every: float = 0.05) -> list[float]:
    """One GET of {url} every `every` seconds until `stop`; seconds each, inf for a failure."""
    import aiohttp

    out: list[float] = []
    timeout = aiohttp.ClientTimeout(total=15)
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                async with http.get(url) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            out.append(time.perf_counter() - started if ok else float("inf"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    return out


async def measure(
    pid: int, url: str, load: Callable[[], Awaitable[object]] | None, settle: float = 1.0
) -> dict[str, float]:
    """Run `load` (or just wait `settle` seconds) while sampling RSS and legitimate latency."""
    before = rss_mib(pid)
    peak = before
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_mib(pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    client = asyncio.create_task(legitimate_latencies(url, stop))
    await (load() if load is not None else asyncio.sleep(settle))
    await asyncio.sleep(0.2)
    stop.set()
    await sampler
    latencies = await client
    ok = sorted(x for x in latencies if x != float("inf"))
    return {
        "rss_before": before,
        "rss_growth": peak - before,
        "requests": len(latencies),
        "failed": len(latencies) - len(ok),
        "p50_ms": statistics.median(ok) * 1000 if ok else float("nan"),
        "p99_ms": ok[min(len(ok) - 1, int(len(ok) * 0.99))] * 1000 if ok else float("nan"),
        "max_ms": ok[-1] * 1000 if ok else float("nan"),
    }


LOADS: dict[str, dict[str, object]] = {
    "slowloris": {"headers": 12, "header_size": 40, "pause": 1.0},
    "flood-16k": {"headers": 120, "header_size": 16_000},
    "flood-8k": {"headers": 120, "header_size": 8_000},
    "stall-60k": {"headers": 120, "header_size": 4_000, "total": 60 * 1024},
}


@contextlib.asynccontextmanager
async def gateway(root: Path) -> AsyncIterator[tuple[str, int]]:
    """`gateway run` in a child process with the test suite's typical policy."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.factories import gateway_files, gateway_process

    files = gateway_files(root)
    async with gateway_process(files) as (url, proc):
        yield url, proc.pid


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with gateway(Path(tmp)) as (url, pid):
            health = f"{url}/_gateway/healthz"
            await measure(pid, health, None)  # warm up
            for _ in range(args.rounds):
                for name, shape in [("idle", {}), *LOADS.items()]:
                    if name == "idle":
                        load = None
                    else:
                        host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])

                        def load(shape=shape, host=host, port=port):  # type: ignore[no-untyped-def]
                            return header_load(host, port, connections=args.connections, **shape)

                    results.setdefault(name, []).append(
                        await measure(pid, health, load, settle=3.0)
                    )
                    await asyncio.sleep(0.5)
    print(
        f"{args.connections} attacking connections from {len(SOURCES)} addresses; medians of "
        f"{args.rounds} rounds; legitimate client: GET /_gateway/healthz every 50 ms"
    )
    columns = ("RSS before", "growth", "max growth", "p50", "p99", "max", "failed")
    print(f"{'load':<10} " + " ".join(f"{c:>10}" for c in columns))
    for name, runs in results.items():

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        print(
            f"{name:<10} {med('rss_before'):>6.0f} MiB {med('rss_growth'):>6.1f} MiB "
            f"{max(r['rss_growth'] for r in runs):>6.1f} MiB "
            f"{med('p50_ms'):>7.1f} ms {med('p99_ms'):>7.1f} ms {med('max_ms'):>7.0f} ms "
            f"{med('failed'):>10.0f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
