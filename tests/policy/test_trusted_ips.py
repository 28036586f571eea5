"""The "mark as safe" rules (docs/incidents.md), shared by the policy, console and CLI."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.policy.source import load
from gateway.policy.trusted_ips import (
    check_description,
    check_scope,
    check_trusted_network,
    email_domain,
)


class TestTrustedNetwork:
    """Addresses, /31../22 and /17 for IPv4, /64../48 for IPv6; nothing else, never widened."""

    @pytest.mark.parametrize(
        ("given", "canonical"),
        [
            ("203.0.113.7", "203.0.113.7"),
            ("203.0.113.7/32", "203.0.113.7"),
            (" 198.51.100.0/31 ", "198.51.100.0/31"),
            ("198.51.100.0/24", "198.51.100.0/24"),
            ("198.51.100.0/22", "198.51.100.0/22"),
            ("66.249.0.0/17", "66.249.0.0/17"),
            ("2001:DB8::1", "2001:db8::1"),
            ("2001:db8::1/128", "2001:db8::1"),
            ("2001:db8:0:1::/64", "2001:db8:0:1::/64"),
            ("2001:db8::/48", "2001:db8::/48"),
        ],
    )
    def test_accepted(self, given: str, canonical: str) -> None:
        assert check_trusted_network(given) == canonical

    @pytest.mark.parametrize(
        ("given", "message"),
        [
            ("10.0.0.1/24", "'10.0.0.1/24' has host bits set; did you mean 10.0.0.0/24?"),
            ("2001:db8::1/48", "'2001:db8::1/48' has host bits set; did you mean 2001:db8::/48?"),
            ("10.0.0.0/21", "'10.0.0.0/21': /21 is not allowed; for IPv4 mark the address alone"),
            ("10.0.0.0/18", "/18 is not allowed"),
            ("10.0.0.0/16", "/16 is not allowed"),
            ("0.0.0.0/0", "/0 is not allowed"),
            ("2001:db8::/47", "/47 is not allowed; for IPv6 mark the address alone or a network"),
            ("2001:db8::/96", "/96 is not allowed"),
            ("::ffff:198.51.100.7", "IPv4-mapped address; write the IPv4 address"),
            ("example.com", "'example.com' is not an IP address or network"),
            ("10.0.0.0/8x", "is not an IP address or network"),
            ("1.2.3.4/33", "prefix length /33 is too long for IPv4"),
        ],
    )
    def test_refused(self, given: str, message: str) -> None:
        with pytest.raises(ValueError) as caught:
            check_trusted_network(given)
        assert message in str(caught.value)


class TestScopeAndDescription:
    """A scope is an email domain; a description is mandatory, one line, bounded."""

    def test_scope_is_lower_case_without_at(self) -> None:
        assert check_scope(" @Example.COM ") == "example.com"
        assert check_scope("xn--bcher-kva.example") == "xn--bcher-kva.example"

    @pytest.mark.parametrize("bad", ["", "exa mple.com", "-x.com", "a..b", "x@y.com", "ü.de"])
    def test_bad_scopes(self, bad: str) -> None:
        with pytest.raises(ValueError, match="is not an email domain"):
            check_scope(bad)

    def test_description(self) -> None:
        assert check_description("  Google   mail\nfetcher ") == "Google mail fetcher"
        with pytest.raises(ValueError, match="a description is required"):
            check_description("   ")
        with pytest.raises(ValueError, match="longer than 200"):
            check_description("x" * 201)

    def test_email_domain(self) -> None:
        assert email_domain("Alice@Example.COM") == "example.com"
        assert email_domain(None) is None
        assert email_domain("no-at-sign") is None


class TestPolicyEntries:
    """`trusted_login_ips` in a policy file: the same rules, with file:line errors."""

    def _load(self, tmp_path: Path, body: str) -> list[str]:
        (tmp_path / "policies").mkdir()
        (tmp_path / "gateway.yaml").write_text("policies: policies\n")
        (tmp_path / "policies" / "trusted.yaml").write_text(textwrap.dedent(body))
        result = load(tmp_path / "gateway.yaml")
        return [str(p).replace(str(tmp_path) + "/", "") for p in result.report.errors]

    def test_every_bad_entry_is_reported_with_its_line(self, tmp_path: Path) -> None:
        problems = self._load(
            tmp_path,
            """\
            trusted_login_ips:
              - {cidr: 66.249.0.0/17, scope: example.com, description: Google mail fetcher}
              - {cidr: 10.0.0.1/24, scope: example.com, description: Office}
              - {cidr: 2001:db8::/40, scope: Example.org, description: VPN}
              - {cidr: 198.51.100.7, scope: "not a domain", description: Partner}
            """,
        )
        assert problems == [
            "policies/trusted.yaml:3 trusted_login_ips[1].cidr: '10.0.0.1/24' has host bits "
            "set; did you mean 10.0.0.0/24?",
            "policies/trusted.yaml:4 trusted_login_ips[2].cidr: '2001:db8::/40': /40 is not "
            "allowed; for IPv6 mark the address alone or a network from /64 to /48",
            "policies/trusted.yaml:5 trusted_login_ips[3].scope: 'not a domain' is not an "
            "email domain (like example.com; internationalised names in their xn-- form)",
        ]

    def test_valid_entries_are_canonical(self, tmp_path: Path) -> None:
        (tmp_path / "policies").mkdir()
        (tmp_path / "gateway.yaml").write_text("policies: policies\n")
        (tmp_path / "policies" / "trusted.yaml").write_text(
            "trusted_login_ips:\n"
            "  - {cidr: 2001:DB8::/48, scope: '@Example.org', description: ' VPN '}\n"
        )
        result = load(tmp_path / "gateway.yaml")
        assert result.snapshot is not None
        (entry,) = result.snapshot.policy.trusted_login_ips
        assert (entry.cidr, entry.scope, entry.description) == (
            "2001:db8::/48",
            "example.org",
            "VPN",
        )
