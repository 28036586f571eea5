"""What the security operations service hands out: who acts, the errors it raises with a
message to show, and read-only views that combine store records with the policy."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from gateway.services.store import IncidentRecord, SignInRecord

INCIDENT_STATES = ("open", "acknowledged", "resolved")
SIGN_IN_RESULTS = ("success", "failure", "banned")
MAX_NOTE = 2000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with control characters replaced: what a client sent
    (a User-Agent) is shown in terminals and pages, where escape sequences must not act."""
    return _CONTROL.sub("\ufffd", text[:limit])


class AuditSink(Protocol):
    """What the service needs of the audit trail (services/audit.py AuditLog)."""

    def record(self, event: str, /, *, flush: bool = False, **fields: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class Actor:
    """Who changes something: a gateway admin in the console, or the command line.

    Audit records carry the admin as `principal` (with the request's id and client IP); the
    command line has no principal and says `by: "cli"`.
    """

    name: str
    kind: Literal["admin", "cli"] = "admin"
    client_ip: str | None = None
    request_id: str | None = None

    @classmethod
    def cli(cls) -> Actor:
        return cls("cli", "cli")

    def audit_fields(self) -> dict[str, object]:
        return {
            "principal": self.name if self.kind == "admin" else None,
            "by": self.name,
            "client_ip": self.client_ip,
            "request_id": self.request_id,
            "surface": "dashboard" if self.kind == "admin" else None,
        }


class SecurityError(ValueError):
    """A request the service refuses; `message` is plain text to show to the admin as it is,
    `field` names the form field at fault when there is one (cidr, scope, description, note)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(SecurityError):
    """No incident or trusted IP with that id."""


class InvalidTrustedIp(SecurityError):
    """The entry breaks a rule of docs/incidents.md (prefix, host bits, scope, description)
    or exists already."""


class IncidentStateError(SecurityError):
    """The incident is not in a state that allows this (acknowledge a resolved one...), or the
    resolution note is missing."""


@dataclass(frozen=True, slots=True)
class TrustedIp:
    """One trusted login IP entry; policy entries (`source="policy"`) have no id and are
    read-only, run-time entries (`source="runtime"`) can be removed by id."""

    id: int | None
    cidr: str
    scope: str
    description: str
    source: Literal["policy", "runtime"]
    created_at: float | None = None
    created_by: str | None = None

    @property
    def removable(self) -> bool:
        return self.id is not None


@dataclass(frozen=True, slots=True)
class SignInView:
    """A sign-in as an admin sees it: `trusted` when its address is trusted for the user's
    email domain now; `counts` when it can count toward an incident (a success, with a
    country, from an address that is not trusted)."""

    record: SignInRecord
    trusted: bool
    counts: bool


@dataclass(frozen=True, slots=True)
class IncidentDetail:
    incident: IncidentRecord
    sign_ins: list[SignInView]  # the evidence, oldest first
    scope: str | None  # the user's email domain: where "Mark as safe" entries go


@dataclass(frozen=True, slots=True)
class UserActivity:
    """The admin console's view of one user (docs/http.md, admin/users/{name})."""

    user: str
    known: bool  # the user is in the policy in force
    email: str | None
    scope: str | None  # email domain, None without an email (no trusted IPs then)
    logins_24h: int  # successful sign-ins
    failures_24h: int  # attempts past the password step that did not finish
    requests_24h: int
    countries_24h: tuple[str, ...]  # of successful sign-ins, sorted
    sign_ins: list[SignInView] = field(default_factory=list)  # newest first
    incident: IncidentRecord | None = None  # the active (open or acknowledged) one
