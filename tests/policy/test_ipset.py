"""Compiled CIDR sets: edges, merging, IPv4-mapped addresses, zone ids, errors, netaddr parity."""

from __future__ import annotations

import ipaddress
import random
import re
import subprocess
import sys

import netaddr
import pytest

from gateway.policy.ipset import (
    CompiledIPSet,
    EntryProblem,
    InvalidIPEntries,
    parse_client_ip,
)


def ip(text: str) -> tuple[int, int]:
    """(int, version) of an address, in the argument order of contains() and which()."""
    parsed = parse_client_ip(text)
    assert parsed is not None, text
    version, value = parsed
    return value, version


def v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


class TestParseClientIp:
    """Address strings become (version, int); mapped IPv6 folds to IPv4; junk gives None."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("203.0.113.10", (4, v4("203.0.113.10"))),
            ("0.0.0.0", (4, 0)),
            ("255.255.255.255", (4, 2**32 - 1)),
            ("2001:db8::1", (6, int(ipaddress.IPv6Address("2001:db8::1")))),
            ("2001:DB8::1", (6, int(ipaddress.IPv6Address("2001:db8::1")))),
            ("::", (6, 0)),
            ("::1", (6, 1)),
            ("::ffff:203.0.113.10", (4, v4("203.0.113.10"))),
            ("::FFFF:cb00:710a", (4, v4("203.0.113.10"))),
            ("::ffff:0.0.0.0", (4, 0)),
            ("fe80::1%eth0", (6, int(ipaddress.IPv6Address("fe80::1")))),
            ("fe80::1%25", (6, int(ipaddress.IPv6Address("fe80::1")))),
            ("::ffff:10.0.0.1%eth0", (4, v4("10.0.0.1"))),
            ("::fffe:203.0.113.10", (6, int(ipaddress.IPv6Address("::fffe:cb00:710a")))),
            ("64:ff9b::203.0.113.10", (6, int(ipaddress.IPv6Address("64:ff9b::cb00:710a")))),
        ],
    )
    def test_parsed(self, text: str, expected: tuple[int, int]) -> None:
        assert parse_client_ip(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "localhost",
            "1.2.3",
            "1.2.3.4.5",
            "256.0.0.1",
            "010.0.0.1",
            "1.2.3.04",
            "0x7f.0.0.1",
            " 1.2.3.4",
            "1.2.3.4 ",
            "1.2.3.4:8080",
            "[::1]",
            "[::1]:443",
            "1.2.3.4%eth0",
            "fe80::1%",
            "1::2::3",
            "1.2.3.4\x00",
            "\uff11.2.3.4",
            "10.0.0.0/8",
        ],
    )
    def test_rejected(self, text: str) -> None:
        assert parse_client_ip(text) is None

    def test_not_a_string(self) -> None:
        """Anything but a string is not an address."""
        assert parse_client_ip(None) is None  # type: ignore[arg-type]


class TestEdges:
    """Hits and misses exactly at the first and last address of each interval."""

    @pytest.mark.parametrize(
        ("entries", "address", "expected"),
        [
            (["10.0.0.0/24"], "9.255.255.255", False),
            (["10.0.0.0/24"], "10.0.0.0", True),
            (["10.0.0.0/24"], "10.0.0.255", True),
            (["10.0.0.0/24"], "10.0.1.0", False),
            (["203.0.113.10/32"], "203.0.113.10", True),
            (["203.0.113.10/32"], "203.0.113.9", False),
            (["203.0.113.10/32"], "203.0.113.11", False),
            (["203.0.113.10"], "203.0.113.10", True),
            (["2001:db8::/48"], "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", False),
            (["2001:db8::/48"], "2001:db8::", True),
            (["2001:db8::/48"], "2001:db8:0:ffff:ffff:ffff:ffff:ffff", True),
            (["2001:db8::/48"], "2001:db8:1::", False),
            (["2001:db8::1/128"], "2001:db8::1", True),
            (["2001:db8::1/128"], "2001:db8::", False),
            (["2001:db8::1/128"], "2001:db8::2", False),
            (["2001:db8::1"], "2001:db8::1", True),
            (["0.0.0.0/0"], "0.0.0.0", True),
            (["0.0.0.0/0"], "255.255.255.255", True),
            (["0.0.0.0/0"], "::1", False),
            (["::/0"], "::", True),
            (["::/0"], "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", True),
            (["::/0"], "10.0.0.1", False),
            (["10.0.0.0/8", "192.168.0.0/16"], "11.0.0.0", False),
            (["10.0.0.0/8", "192.168.0.0/16"], "192.168.255.255", True),
            ([], "10.0.0.1", False),
        ],
    )
    def test_membership(self, entries: list[str], address: str, expected: bool) -> None:
        compiled = CompiledIPSet.build(entries)
        assert compiled.contains(*ip(address)) is expected
        assert compiled.contains_ip(address) is expected


class TestMerging:
    """Overlapping, nested, duplicate and adjacent entries become one interval."""

    @pytest.mark.parametrize(
        ("entries", "intervals"),
        [
            (["10.0.0.0/25", "10.0.0.128/25"], [("10.0.0.0", "10.0.0.255")]),
            (["10.0.0.128/25", "10.0.0.0/25"], [("10.0.0.0", "10.0.0.255")]),
            (["10.0.0.0/8", "10.1.2.0/24", "10.1.2.3"], [("10.0.0.0", "10.255.255.255")]),
            (["10.1.2.3", "10.1.2.3/32", "10.1.2.3"], [("10.1.2.3", "10.1.2.3")]),
            (
                ["10.0.0.0/24", "10.0.2.0/24"],
                [("10.0.0.0", "10.0.0.255"), ("10.0.2.0", "10.0.2.255")],
            ),
            (
                ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/23", "10.0.5.0/24"],
                [("10.0.0.0", "10.0.3.255"), ("10.0.5.0", "10.0.5.255")],
            ),
            (["10.0.0.1", "10.0.0.2", "10.0.0.3"], [("10.0.0.1", "10.0.0.3")]),
            (["0.0.0.0/1", "128.0.0.0/1"], [("0.0.0.0", "255.255.255.255")]),
        ],
    )
    def test_intervals(self, entries: list[str], intervals: list[tuple[str, str]]) -> None:
        compiled = CompiledIPSet.build(entries)
        assert compiled.intervals(4) == tuple((v4(a), v4(b)) for a, b in intervals)
        assert len(compiled) == len(intervals)

    def test_families_counted_together(self) -> None:
        """len() counts the merged intervals of both families."""
        compiled = CompiledIPSet.build(["10.0.0.0/8", "2001:db8::/32", "2001:db8:1::/48"])
        assert len(compiled) == 2
        assert compiled.intervals(6) == (
            (
                int(ipaddress.IPv6Address("2001:db8::")),
                int(ipaddress.IPv6Address("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")),
            ),
        )


class TestMappedAddresses:
    """IPv4-mapped IPv6 clients match IPv4 entries, and mapped entries are IPv4 entries."""

    def test_mapped_client_matches_ipv4_entry(self) -> None:
        """A dual-stack listener's ::ffff:203.0.113.10 is the office address 203.0.113.10."""
        compiled = CompiledIPSet.build(["203.0.113.10"])
        assert compiled.contains_ip("::ffff:203.0.113.10")
        assert compiled.contains_ip(netaddr.IPAddress("::ffff:203.0.113.10"))
        assert compiled.contains_ip(ipaddress.IPv6Address("::ffff:203.0.113.10"))
        assert not compiled.contains_ip("::ffff:203.0.113.11")

    def test_contains_folds_mapped_integers(self) -> None:
        """contains() folds a mapped IPv6 integer itself, whoever parsed it."""
        compiled = CompiledIPSet.build(["203.0.113.0/24"])
        assert compiled.contains(int(ipaddress.IPv6Address("::ffff:203.0.113.77")), 6)
        assert not compiled.contains(int(ipaddress.IPv6Address("::ffff:203.0.114.1")), 6)

    def test_mapped_entry_is_ipv4(self) -> None:
        """An entry written as ::ffff:192.0.2.0/120 is 192.0.2.0/24."""
        compiled = CompiledIPSet.build(["::ffff:192.0.2.0/120"])
        assert compiled.intervals(4) == ((v4("192.0.2.0"), v4("192.0.2.255")),)
        assert compiled.intervals(6) == ()
        assert compiled.contains_ip("192.0.2.9")
        assert compiled.contains_ip("::ffff:192.0.2.9")

    def test_ipv6_everything_is_not_ipv4(self) -> None:
        """::/0 means every IPv6 client; an IPv4 client on a dual-stack socket is not one."""
        compiled = CompiledIPSet.build(["::/0"])
        assert not compiled.contains_ip("::ffff:203.0.113.10")
        assert compiled.contains_ip("2001:db8::1")


class TestZoneIds:
    """A client address with a zone id matches on the address alone."""

    def test_zone_dropped(self) -> None:
        compiled = CompiledIPSet.build(["fe80::/10"])
        assert compiled.contains_ip("fe80::1%eth0")
        assert compiled.contains_ip("fe80::1%2")
        assert not compiled.contains_ip("fe00::1%eth0")

    def test_zone_in_entry_rejected(self) -> None:
        """An entry is a network, not an interface, so a zone id there is an error."""
        with pytest.raises(InvalidIPEntries) as caught:
            CompiledIPSet.build(["fe80::1%eth0"])
        assert caught.value.problems == (
            EntryProblem(0, "fe80::1%eth0", "a zone id is not allowed in an entry"),
        )


class TestWhich:
    """which() names an entry that contains the address, for `gateway explain`."""

    ENTRIES = (
        "10.0.0.0/25",  # 0
        "10.0.0.128/25",  # 1
        "192.168.0.0/16",  # 2
        "192.168.1.0/24",  # 3 nested in 2
        "198.51.100.7",  # 4
        "198.51.100.7/32",  # 5 duplicate of 4
        "2001:db8::/48",  # 6
        "::ffff:203.0.113.0/120",  # 7
    )

    @pytest.mark.parametrize(
        ("address", "expected"),
        [
            ("10.0.0.0", 0),
            ("10.0.0.127", 0),
            ("10.0.0.128", 1),
            ("10.0.0.255", 1),
            ("192.168.1.1", 2),
            ("192.168.200.1", 2),
            ("198.51.100.7", 4),
            ("2001:db8::abcd", 6),
            ("203.0.113.1", 7),
            ("::ffff:10.0.0.200", 1),
            ("10.0.1.0", None),
            ("2001:db9::", None),
        ],
    )
    def test_which(self, address: str, expected: int | None) -> None:
        compiled = CompiledIPSet.build(self.ENTRIES)
        assert compiled.which(*ip(address)) == expected
        assert compiled.contains(*ip(address)) is (expected is not None)

    def test_adjacent_entries_merge_but_keep_their_names(self) -> None:
        """Two adjacent /25s are one interval for contains() and two entries for which()."""
        compiled = CompiledIPSet.build(self.ENTRIES[:2])
        assert len(compiled) == 1
        assert compiled.which(*ip("10.0.0.127")) == 0
        assert compiled.which(*ip("10.0.0.128")) == 1


class TestInvalidEntries:
    """build() rejects bad entries with a ValueError naming each one and why."""

    @pytest.mark.parametrize(
        ("entry", "reason"),
        [
            ("nope", "not an IP address or CIDR network (like 203.0.113.10 or 2001:db8::/48)"),
            ("", "not an IP address or CIDR network (like 203.0.113.10 or 2001:db8::/48)"),
            ("10/8", "not an IP address or CIDR network (like 203.0.113.10 or 2001:db8::/48)"),
            ("1.2.3", "not an IP address or CIDR network (like 203.0.113.10 or 2001:db8::/48)"),
            ("010.0.0.1", "not an IP address or CIDR network (like 203.0.113.10 or 2001:db8::/48)"),
            (" 10.0.0.1", "not an IP address or CIDR network (like 203.0.113.10 or 2001:db8::/48)"),
            ("10.0.0.0/", "not an IP address or CIDR network (like 203.0.113.10 or 2001:db8::/48)"),
            (
                "10.0.0.0/+8",
                "not an IP address or CIDR network (like 203.0.113.10 or 2001:db8::/48)",
            ),
            (
                "10.0.0.0/ 8",
                "not an IP address or CIDR network (like 203.0.113.10 or 2001:db8::/48)",
            ),
            (
                "10.0.0.0/8\n",
                "not an IP address or CIDR network (like 203.0.113.10 or 2001:db8::/48)",
            ),
            (
                "10.0.0.0/255.0.0.0",
                "not an IP address or CIDR network (like 203.0.113.10 or 2001:db8::/48)",
            ),
            ("10.0.0.0/33", "prefix length /33 is too long for IPv4 (at most /32)"),
            ("2001:db8::/129", "prefix length /129 is too long for IPv6 (at most /128)"),
            ("10.0.0.1/24", "host bits are set; did you mean 10.0.0.0/24?"),
            ("2001:db8::1/48", "host bits are set; did you mean 2001:db8::/48?"),
            ("fe80::1%eth0", "a zone id is not allowed in an entry"),
        ],
    )
    def test_rejected(self, entry: str, reason: str) -> None:
        with pytest.raises(ValueError, match="invalid IP entries") as caught:
            CompiledIPSet.build(["192.0.2.1", entry])
        assert isinstance(caught.value, InvalidIPEntries)
        assert caught.value.problems == (EntryProblem(1, entry, reason),)

    def test_every_bad_entry_reported(self) -> None:
        """All bad entries are reported at once, each with its position, text and reason."""
        with pytest.raises(InvalidIPEntries) as caught:
            CompiledIPSet.build(["10.0.0.1/24", "192.0.2.1", "nope", 7])  # type: ignore[list-item]
        assert str(caught.value) == (
            "invalid IP entries: entry 0 '10.0.0.1/24': host bits are set; did you mean"
            " 10.0.0.0/24?; entry 2 'nope': not an IP address or CIDR network (like 203.0.113.10"
            " or 2001:db8::/48); entry 3 '7': expected a string, got int"
        )

    def test_network_object_with_host_bits_rejected(self) -> None:
        """An IPNetwork object gets the same rule as its text."""
        with pytest.raises(InvalidIPEntries, match=re.escape("did you mean 10.0.0.0/24?")):
            CompiledIPSet.build([netaddr.IPNetwork("10.0.0.1/24")])


class TestInputs:
    """build() takes strings and IPNetwork objects; contains_ip() takes strings and objects."""

    def test_network_objects(self) -> None:
        compiled = CompiledIPSet.build([netaddr.IPNetwork("10.0.0.0/8"), "2001:db8::/32"])
        assert compiled.contains_ip("10.1.2.3")
        assert compiled.contains_ip("2001:db8::1")

    def test_generator(self) -> None:
        compiled = CompiledIPSet.build(f"10.0.{n}.0/24" for n in range(4))
        assert compiled.intervals(4) == ((v4("10.0.0.0"), v4("10.0.3.255")),)

    @pytest.mark.parametrize(
        "address",
        [
            "10.1.2.3",
            netaddr.IPAddress("10.1.2.3"),
            ipaddress.IPv4Address("10.1.2.3"),
            ipaddress.IPv6Address("::ffff:10.1.2.3"),
        ],
    )
    def test_address_kinds(self, address: object) -> None:
        compiled = CompiledIPSet.build(["10.0.0.0/8"])
        assert compiled.contains_ip(address)  # type: ignore[arg-type]

    def test_bad_address_string(self) -> None:
        with pytest.raises(ValueError, match="not an IP address: 'nope'"):
            CompiledIPSet.build(["10.0.0.0/8"]).contains_ip("nope")

    def test_bad_address_type(self) -> None:
        with pytest.raises(TypeError, match="got int"):
            CompiledIPSet.build(["10.0.0.0/8"]).contains_ip(167772161)  # type: ignore[arg-type]


class TestEmpty:
    """An empty set contains nothing and says so."""

    def test_empty(self) -> None:
        compiled = CompiledIPSet.build([])
        assert compiled.empty
        assert len(compiled) == 0
        assert not compiled.contains(0, 4)
        assert not compiled.contains(0, 6)
        assert compiled.which(0, 4) is None
        assert compiled == CompiledIPSet()

    def test_not_empty(self) -> None:
        assert not CompiledIPSet.build(["::1"]).empty

    def test_repr(self) -> None:
        compiled = CompiledIPSet.build(["10.0.0.0/8", "::1"])
        assert repr(compiled) == "CompiledIPSet(v4_intervals=1, v6_intervals=1)"


def random_entries(rng: random.Random, count: int) -> list[str]:
    entries = []
    for _ in range(count):
        if rng.random() < 0.5:
            prefix = rng.randint(12, 32)
            value = rng.getrandbits(32) >> (32 - prefix) << (32 - prefix)
            entries.append(f"{netaddr.IPAddress(value, 4)}/{prefix}")
        else:
            prefix = rng.randint(24, 128)
            value = rng.getrandbits(128) >> (128 - prefix) << (128 - prefix)
            entries.append(f"{netaddr.IPAddress(value, 6)}/{prefix}")
    return entries


class TestAgainstNetaddr:
    """100,000 seeded random entries agree with netaddr.IPSet on intervals and 10,000 probes."""

    def test_parity(self) -> None:
        rng = random.Random(1234)
        entries = random_entries(rng, 100_000)
        compiled = CompiledIPSet.build(entries)
        reference = netaddr.IPSet(entries)

        expected = {4: [], 6: []}
        for address_range in reference.iter_ipranges():
            expected[address_range.version].append((address_range.first, address_range.last))
        assert compiled.intervals(4) == tuple(expected[4])
        assert compiled.intervals(6) == tuple(expected[6])

        probes: list[tuple[int, int]] = []
        for _ in range(2_500):  # near and inside entries: both edges, one step out, inside
            network = netaddr.IPNetwork(rng.choice(entries))
            top = 2**32 - 1 if network.version == 4 else 2**128 - 1
            for value in (network.first - 1, network.first, network.last, network.last + 1):
                probes.append((network.version, min(max(value, 0), top)))
        while len(probes) < 10_000:  # random addresses, mostly misses
            version = rng.choice((4, 6))
            probes.append((version, rng.getrandbits(32 if version == 4 else 128)))
        probes = probes[:10_000]

        hits = 0
        for version, value in probes:
            if version == 6 and 0xFFFF_0000_0000 <= value <= 0xFFFF_FFFF_FFFF:
                continue  # folded to IPv4 by design, netaddr keeps it IPv6
            address = netaddr.IPAddress(value, version)
            found = compiled.contains(value, version)
            assert found is (address in reference), str(address)
            source = compiled.which(value, version)
            if found:
                hits += 1
                assert source is not None and address in netaddr.IPNetwork(entries[source])
            else:
                assert source is None
        assert 2_000 < hits < 8_000


class TestPurity:
    """The module never imports aiohttp (docs/architecture.md: pure, testable without a server)."""

    def test_no_aiohttp(self) -> None:
        code = "import sys, gateway.policy.ipset; assert 'aiohttp' not in sys.modules"
        subprocess.run([sys.executable, "-c", code], check=True)
