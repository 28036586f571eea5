"""Allowlist lookups: CompiledIPSet against netaddr.IPSet, at 10 to 100,000 entries.

Run: .venv/bin/python bench/ipset_bench.py   (about 30 s; seeded, so runs are comparable)

Prints, per set size, the build time and the cost of one membership test for addresses in the
set (hit) and not in it (miss), then the cost of parsing a client address string. Lookup costs
are per call with the loop overhead (printed once) subtracted; best of several repeats.
"""

from __future__ import annotations

import ipaddress
import random
import time
import timeit
from collections.abc import Callable

import netaddr

from gateway.policy.ipset import CompiledIPSet, parse_client_ip

SIZES = (10, 1_000, 10_000, 100_000)
PROBES = 2_000
SEED = 20240601


def random_entries(rng: random.Random, count: int) -> list[str]:
    """Half IPv4 (/16../32), half IPv6 (/32../128), as an admin would write them."""
    entries = []
    for _ in range(count):
        if rng.random() < 0.5:
            prefix = rng.randint(16, 32)
            value = rng.getrandbits(32) >> (32 - prefix) << (32 - prefix)
            entries.append(f"{netaddr.IPAddress(value, 4)}/{prefix}")
        else:
            prefix = rng.randint(32, 128)
            value = rng.getrandbits(128) >> (128 - prefix) << (128 - prefix)
            entries.append(f"{netaddr.IPAddress(value, 6)}/{prefix}")
    return entries


def probes(
    rng: random.Random, entries: list[str], compiled: CompiledIPSet
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(version, int) addresses inside random entries, and random addresses outside them all."""
    hits = []
    for _ in range(PROBES):
        network = netaddr.IPNetwork(rng.choice(entries))
        hits.append((network.version, rng.randint(network.first, network.last)))
    misses: list[tuple[int, int]] = []
    while len(misses) < PROBES:
        version = 4 if len(misses) % 2 else 6
        value = rng.getrandbits(32 if version == 4 else 128)
        if not compiled.contains(value, version):
            misses.append((version, value))
    return hits, misses


def best_per_call(function: Callable[[], object], calls: int, number: int = 5) -> float:
    """Nanoseconds per call of `function`, which makes `calls` calls, best of 9 repeats."""
    return min(timeit.repeat(function, number=number, repeat=9)) / (number * calls) * 1e9


def lookup_costs(
    compiled: CompiledIPSet, ipset: netaddr.IPSet, addresses: list[tuple[int, int]]
) -> tuple[float, float, float]:
    contains = compiled.contains
    texts = [str(netaddr.IPAddress(value, version)) for version, value in addresses]
    objects = [netaddr.IPAddress(value, version) for version, value in addresses]

    def compiled_ints() -> None:
        for version, value in addresses:
            contains(value, version)

    def compiled_strings() -> None:
        for text in texts:
            version, value = parse_client_ip(text)  # type: ignore[misc]
            contains(value, version)

    def netaddr_objects() -> None:
        for address in objects:
            address in ipset  # noqa: B015

    count = len(addresses)
    return (
        best_per_call(compiled_ints, count),
        best_per_call(compiled_strings, count),
        best_per_call(netaddr_objects, count, number=1),
    )


def loop_overhead(addresses: list[tuple[int, int]]) -> float:
    def empty() -> None:
        for _version, _value in addresses:
            pass

    return best_per_call(empty, len(addresses))


def main() -> None:
    rng = random.Random(SEED)
    started = time.perf_counter()
    print("Allowlist membership, per call (ns), loop overhead subtracted")
    print(
        f"{'entries':>8} {'intervals':>9} {'build ms':>9} {'IPSet ms':>9}"
        f" {'hit int':>8} {'hit str':>8} {'hit IPSet':>10}"
        f" {'miss int':>9} {'miss str':>9} {'miss IPSet':>11}"
    )
    overhead = 0.0
    for size in SIZES:
        entries = random_entries(rng, size)
        build_start = time.perf_counter()
        compiled = CompiledIPSet.build(entries)
        build_ms = (time.perf_counter() - build_start) * 1e3
        build_start = time.perf_counter()
        ipset = netaddr.IPSet(entries)
        ipset_ms = (time.perf_counter() - build_start) * 1e3
        hits, misses = probes(rng, entries, compiled)
        overhead = loop_overhead(hits)
        hit = [cost - overhead for cost in lookup_costs(compiled, ipset, hits)]
        miss = [cost - overhead for cost in lookup_costs(compiled, ipset, misses)]
        print(
            f"{size:>8} {len(compiled):>9} {build_ms:>9.1f} {ipset_ms:>9.1f}"
            f" {hit[0]:>8.0f} {hit[1]:>8.0f} {hit[2]:>10.0f}"
            f" {miss[0]:>9.0f} {miss[1]:>9.0f} {miss[2]:>11.0f}"
        )
    print(f"(loop overhead {overhead:.0f} ns per iteration, already subtracted)")
    print(
        "int = contains(int, version); str = parse_client_ip(text) + contains;"
        " IPSet = netaddr.IPAddress in netaddr.IPSet"
    )

    print("\nParsing one client address string, per call (ns)")
    samples = {"IPv4": "203.0.113.10", "IPv6": "2001:db8:1234::1", "mapped": "::ffff:203.0.113.10"}
    parsers: dict[str, Callable[[str], object]] = {
        "parse_client_ip": parse_client_ip,
        "ipaddress.ip_address": ipaddress.ip_address,
        "netaddr.IPAddress": netaddr.IPAddress,
    }
    print(f"{'parser':>22} " + " ".join(f"{name:>8}" for name in samples))
    for name, parse in parsers.items():
        costs = [
            min(timeit.repeat(lambda text=text, parse=parse: parse(text), number=20_000, repeat=5))
            / 20_000
            * 1e9
            for text in samples.values()
        ]
        print(f"{name:>22} " + " ".join(f"{cost:>8.0f}" for cost in costs))
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
