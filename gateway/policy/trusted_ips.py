"""The rules for trusted login IPs ("mark as safe", docs/incidents.md). Pure: no aiohttp.

The same functions check the policy's `trusted_login_ips` (through the schema, so an error
names file, line and key) and what an admin enters in the console or the CLI.

- IPv4: the address alone, a network from /31 to /22, or a /17 (large providers such as a
  webmail fetcher's range); IPv6: the address alone, or a network from /64 to /48. Anything
  wider would trust whole providers for sign-ins from anywhere; anything between /32 and /31,
  or /128 and /64, is written as the address or the network instead.
- A network with host bits set (10.0.0.1/24) is refused with the network it probably meant,
  never silently widened.
- `scope` is an email domain (the users whose email is at that domain); `description` is
  mandatory, so the next admin knows why the entry is there.
"""

from __future__ import annotations

import ipaddress
import re

from gateway.policy.ipset import NOT_A_NETWORK, parse_entry

IPV4_PREFIXES = frozenset({17, *range(22, 32)}) | {32}
IPV6_PREFIXES = frozenset(range(48, 65)) | {128}
MAX_DESCRIPTION = 200
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EXAMPLES = "like 203.0.113.7, 203.0.113.0/24 or 2001:db8:1::/48"


def check_trusted_network(value: object) -> str:
    """The canonical text of a trusted address or network; ValueError says what is wrong.

    Single addresses come back without a prefix length ("203.0.113.7"), networks with it.
    """
    text = str(value).strip()
    if "/" not in text and ":" in text and text.lower().startswith("::ffff:"):
        raise ValueError(f"{text!r} is an IPv4-mapped address; write the IPv4 address")
    try:
        version, first, last = parse_entry(text)
    except ValueError as exc:
        reason = str(exc)
        if reason.startswith("host bits are set"):
            raise ValueError(f"{text!r} has host bits set; {reason.split('; ', 1)[1]}") from None
        if reason == NOT_A_NETWORK:
            raise ValueError(f"{text!r} is not an IP address or network ({_EXAMPLES})") from None
        raise ValueError(f"{text!r}: {reason}") from None
    if version == 4 and ":" in text:
        raise ValueError(f"{text!r} is an IPv4-mapped network; write the IPv4 network")
    bits = 32 if version == 4 else 128
    prefix = bits - (last - first).bit_length()
    if version == 4 and prefix not in IPV4_PREFIXES:
        raise ValueError(
            f"{text!r}: /{prefix} is not allowed; for IPv4 mark the address alone, "
            "a network from /31 to /22, or a /17 for a large provider"
        )
    if version == 6 and prefix not in IPV6_PREFIXES:
        raise ValueError(
            f"{text!r}: /{prefix} is not allowed; for IPv6 mark the address alone "
            "or a network from /64 to /48"
        )
    address = ipaddress.IPv4Address(first) if version == 4 else ipaddress.IPv6Address(first)
    return str(address) if prefix == bits else f"{address}/{prefix}"


def check_scope(value: object) -> str:
    """An email domain, lower case ("@Example.COM" -> "example.com")."""
    text = str(value).strip().lower().removeprefix("@")
    if not _DOMAIN.match(text):
        raise ValueError(
            f"{str(value)[:80]!r} is not an email domain (like example.com; "
            "internationalised names in their xn-- form)"
        )
    return text


def check_description(value: object) -> str:
    """A short, single-line reason for the entry; mandatory."""
    text = " ".join(str(value if value is not None else "").split())
    if not text:
        raise ValueError("a description is required: say why this address is safe")
    if len(text) > MAX_DESCRIPTION:
        raise ValueError(f"the description is longer than {MAX_DESCRIPTION} characters")
    if _CONTROL.search(text):
        raise ValueError("the description contains control characters")
    return text


def email_domain(email: str | None) -> str | None:
    """The scope a user's trusted IPs come from: the domain of their email, lower case."""
    if not email or "@" not in email:
        return None
    return email.rsplit("@", 1)[1].strip().lower() or None
