"""The shape of config/gateway.yaml and policies/*.yaml, with their defaults.

Every model forbids unknown keys (a typo is an error, never silently ignored) and is frozen.
Values are parsed into their final types here (durations to seconds, networks to netaddr), so the
compiler never re-parses text.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

import netaddr
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from gateway.policy import trusted_ips
from gateway.policy.ipset import NOT_A_NETWORK, parse_entry

# Ten years: far beyond any sensible timeout or ban, and far below what overflows a date.
MAX_DURATION = 10 * 365 * 86400.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "*"}
)


def _duration(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, 10m, 12h or 7d, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value) if abs(value) <= MAX_DURATION else float("inf")
    else:
        match = _DURATION.match(str(value)[:64])
        if not match:
            raise ValueError(f"expected a duration like 30s, 10m, 12h or 7d, got {value!r}"[:160])
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION:
        raise ValueError("a duration can be at most 10 years (3650d)")
    return seconds


def _network(value: object) -> str:
    """An address or CIDR network, as text; host bits set (10.0.0.1/24) are refused, not widened.

    Parsed by the allowlist compiler's own strict parser (socket.inet_pton), which is several
    times faster than netaddr.IPNetwork: with 100,000 entries that is seconds of every reload.
    netaddr still writes the "did you mean" suggestion.
    """
    if isinstance(value, netaddr.IPNetwork):
        return str(value.cidr)
    text = str(value).strip()
    try:
        parse_entry(text)
    except ValueError as exc:
        reason = str(exc)
        if reason.startswith("host bits are set"):
            raise ValueError(f"{text!r} has host bits set; {reason.split('; ', 1)[1]}") from None
        if reason == NOT_A_NETWORK:
            raise ValueError(f"{text!r} is not an IP address or CIDR network") from None
        raise ValueError(f"{text!r}: {reason}") from None
    return text


def _methods(value: list[str]) -> tuple[str, ...]:
    out = []
    for method in value:
        upper = str(method).upper()
        if upper not in HTTP_METHODS:
            raise ValueError(f"{method!r} is not an HTTP method")
        out.append(upper)
    return tuple(out)


def _prefix(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"a path prefix must start with '/', got {value!r}")
    return value


def _date(value: object) -> dt.date:
    if isinstance(value, dt.datetime):
        value = value.date()
    if not isinstance(value, dt.date):
        try:
            value = dt.date.fromisoformat(str(value)[:32])
        except ValueError:
            raise ValueError(f"expected a date like 2027-06-30, got {value!r}"[:160]) from None
    # The day after must exist too (an expiry is the end of the day); 9999-12-31 has none.
    if value.year >= 9999:
        raise ValueError(f"{value.isoformat()} is too far ahead; use a date before 9999")
    return value


def _upstream(value: str) -> str:
    """An http(s) URL whose host and port parse: what the forwarder will be given."""
    try:
        url = urlsplit(value)
        port = url.port
        host = url.hostname
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid URL ({exc})") from None
    if not host:
        raise ValueError(f"{value!r} has no host")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{value!r}: the port must be 1-65535")
    if url.username is not None or url.password is not None:
        # Never echoed: the message reaches logs, the audit trail and readyz.
        raise ValueError("credentials in the URL are not supported (the value is not shown)")
    return value


# What editors see (the JSON Schema of `gateway schema`): the text forms people write in YAML.
_DURATION_JSON = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"},
    ],
    "description": "seconds, or a number with a unit: 250ms, 30s, 10m, 12h, 7d",
}
_NETWORK_JSON = {"type": "string", "description": "an IP address or CIDR network"}

Duration = Annotated[
    float, BeforeValidator(_duration), Field(ge=0, le=MAX_DURATION), WithJsonSchema(_DURATION_JSON)
]
Network = Annotated[str, BeforeValidator(_network), WithJsonSchema(_NETWORK_JSON)]
PathPrefix = Annotated[str, AfterValidator(_prefix)]
Methods = Annotated[tuple[str, ...], AfterValidator(_methods)]
Date = Annotated[
    dt.date, BeforeValidator(_date), WithJsonSchema({"type": "string", "format": "date"})
]
Surface = Literal["dashboard", "api"]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


# --- config/gateway.yaml -------------------------------------------------------------------------


class Listen(Model):
    host: str = "0.0.0.0"  # noqa: S104 - a front proxy listens on every interface by default
    port: int = Field(8080, ge=1, le=65535)


class Tls(Model):
    cert: str
    key: str


class AppMatch(Model):
    host: str | None = None
    path: PathPrefix = "/"


class Timeouts(Model):
    connect: Duration = 5.0
    read: Duration = 60.0


class AppTimeouts(Model):
    connect: Duration | None = None
    read: Duration | None = None


class AppSpec(Model):
    surface: Surface
    match: AppMatch = AppMatch()
    upstream: Annotated[
        str, Field(pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$"), AfterValidator(_upstream)
    ]
    strip_prefix: bool = False
    timeouts: AppTimeouts = AppTimeouts()


def _session_store(value: str) -> str:
    """`state`, or a redis:// / rediss:// URL with a host, an optional port and a db number."""
    if value == "state":
        return value
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - validates the port number
    except ValueError as exc:
        raise ValueError(f"not a valid redis URL: {exc}") from None
    if parts.scheme.lower() not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("expected 'state' or redis://host:6379/0 (rediss:// for TLS)")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"the path of a redis URL is a database number, got {db!r}")
    if parts.password:
        # Keep the password out of a file many people read: `password_file` instead.
        raise ValueError("put the redis password in sessions.password_file, not in the URL")
    return value


class Sessions(Model):
    # `state`: in the state store (SQLite, or PostgreSQL shared by several instances);
    # redis://host:6379/0 or rediss://...: in Redis (see docs/cluster.md).
    store: Annotated[
        str,
        AfterValidator(_session_store),
        Field(json_schema_extra={"pattern": "^(state|[Rr][Ee][Dd][Ii][Ss][Ss]?://.+)$"}),
    ] = "state"
    password_file: str | None = None  # Redis AUTH password, read at start (relative: config dir)
    ca_file: str | None = None  # rediss://: CA bundle for the server's certificate (else system)
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "gateway:"
    idle_timeout: Duration = 1800.0
    max_age: Duration = 43200.0
    cookie_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "gateway_session"


class Audit(Model):
    path: str = "audit/audit.jsonl"


class Smtp(Model):
    host: str = "localhost"
    port: int = Field(25, ge=1, le=65535)
    sender: str = Field("gateway@localhost", alias="from")
    # none: plain SMTP (a local relay); starttls: upgrade after EHLO, refuse to go on without it;
    # tls: TLS from the first byte (port 465).
    security: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    password_file: str | None = None  # relative to gateway.yaml's folder; one line, read per send
    ca_file: str | None = None  # else the system's CAs
    timeout: Duration = 30.0  # per SMTP step
    retry_max: Duration = 600.0  # the longest wait between two attempts (backoff ceiling)


class GeoIp(Model):
    database: str | None = None


class GatewayConfig(Model):
    listen: Listen = Listen()
    tls: Tls | None = None
    trusted_proxies: tuple[Network, ...] = ()
    client_ip_header: Annotated[
        Literal["x-forwarded-for", "forwarded"], BeforeValidator(lambda v: str(v).lower())
    ] = "x-forwarded-for"
    prefix: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._~-]+$")] = "/_gateway"
    # the gateway's address as people reach it: links in mail (none without it)
    public_url: Annotated[str, Field(pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")] | None = None
    ops_allow: tuple[Network, ...] = (
        "127.0.0.0/8",
        "::1/128",
    )
    state: str = "sqlite:///state/gateway.db"
    sessions: Sessions = Sessions()
    secret_key_file: str | None = "state/gateway.key"  # noqa: S105 - a path, not a secret
    audit: Audit = Audit()
    smtp: Smtp | None = None
    geoip: GeoIp = GeoIp()
    policies: str = "../policies"
    upstream_timeouts: Timeouts = Timeouts()
    apps: dict[Name, AppSpec] = {}


# --- policies/*.yaml ---------------------------------------------------------------------------


class Modes(Model):
    dashboard: Literal["enforce", "monitor"] = "enforce"
    api: Literal["enforce", "monitor"] = "enforce"


class Protection(Model):
    enabled: bool = True
    mode: Modes = Modes()


class AllowEntry(Model):
    ip: Network
    description: str = ""


class SurfaceAllowlist(Model):
    enabled: bool = False
    entries: tuple[AllowEntry, ...] = ()


class Allowlists(Model):
    dashboard: SurfaceAllowlist = SurfaceAllowlist()
    api: SurfaceAllowlist = SurfaceAllowlist()


class User(Model):
    email: str | None = None
    password_hash: Annotated[str, Field(pattern=r"^\$argon2(id|i|d)\$")]
    admin: bool = False
    grants: dict[Name, Name] = {}


class ServiceAccount(Model):
    key_sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
    grants: dict[Name, Name] = {}
    allow: tuple[Network, ...] | None = None
    expires: Date | None = None
    description: str = ""


class Rule(Model):
    methods: Methods = ("*",)
    path: PathPrefix = "/"


class Role(Model):
    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()


class TwoFactor(Model):
    # Secure by default: a policy that says nothing about 2FA asks everybody for it.
    enforce: Literal["all", "admins", "none"] = "all"
    # Authenticator apps split "Issuer:account" at the colon, so the issuer cannot contain one.
    issuer: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^:]+$")] = (
        "Access Gateway"
    )


class PasswordPolicy(Model):
    min_length: int = Field(12, ge=1, le=1024)
    min_strength: int = Field(3, ge=0, le=4)
    max_age_days: int = Field(0, ge=0)
    history: int = Field(5, ge=0, le=100)


class PasswordPolicyOverride(Model):
    min_length: int | None = Field(None, ge=1, le=1024)
    min_strength: int | None = Field(None, ge=0, le=4)
    max_age_days: int | None = Field(None, ge=0)
    history: int | None = Field(None, ge=0, le=100)


class AppPolicy(Model):
    password_policy: PasswordPolicyOverride = PasswordPolicyOverride()


class LoginRegulation(Model):
    max_failures: int = Field(5, ge=1, le=10_000)
    # Per client address; None = 4 x max_failures, so one person's typos behind an office NAT
    # do not lock out the office.
    ip_max_failures: int | None = Field(None, ge=1, le=100_000)
    window: Duration = 600.0
    ban: Duration = 900.0


class Incidents(Model):
    window: Duration = 86400.0
    distinct_countries: int = Field(2, ge=2)


class TrustedLoginIp(Model):
    # The "mark as safe" rules of docs/incidents.md, shared with the console and the CLI.
    cidr: Annotated[
        str,
        BeforeValidator(trusted_ips.check_trusted_network),
        WithJsonSchema(
            {
                "type": "string",
                "description": "an address, or a network: IPv4 /31 to /22 or /17, IPv6 /64 to /48",
            }
        ),
    ]
    scope: Annotated[
        str,
        BeforeValidator(trusted_ips.check_scope),
        WithJsonSchema({"type": "string", "description": "an email domain, like example.com"}),
    ]
    description: Annotated[
        str,
        BeforeValidator(trusted_ips.check_description),
        WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 200}),
    ]


class Notifications(Model):
    enabled: bool = True
    recipients: Literal["admins"] = "admins"
    coalesce: Duration = 600.0


class Retention(Model):
    login_history_days: int = Field(90, ge=1)
    audit_days: int = Field(365, ge=1)
    incidents_days: int = Field(180, ge=1)


class LegalContact(Model):
    name: str
    email: str
    role: str = ""


class Policy(Model):
    """The merged policies/*.yaml (each top-level key comes from exactly one file)."""

    protection: Protection = Protection()
    allowlists: Allowlists = Allowlists()
    users: dict[Name, User] = {}
    service_accounts: dict[Name, ServiceAccount] = {}
    roles: dict[Name, Role] = {}
    two_factor: TwoFactor = TwoFactor()
    password_policy: PasswordPolicy = PasswordPolicy()
    apps_policy: dict[Name, AppPolicy] = {}
    login_regulation: LoginRegulation = LoginRegulation()
    incidents: Incidents = Incidents()
    trusted_login_ips: tuple[TrustedLoginIp, ...] = ()
    notifications: Notifications = Notifications()
    retention: Retention = Retention()
    legal_contacts: tuple[LegalContact, ...] = ()
