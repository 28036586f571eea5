"""Security operations (docs/incidents.md, docs/http.md): sign-in history with GeoIP, requests per
user and hour, security incidents and trusted login IPs. No aiohttp here: the sign-in views, the
admin console (gateway/admin/) and the CLI (gateway/cli_security.py) all call `SecurityOps`.

In the gateway process one instance lives at `request.app[SERVICES].security`. Everything is
async unless marked; ids are ints; times are UNIX seconds.

Sign-in path (gateway/web/auth_views.py)
    await security.record_sign_in(user, result, client_ip, user_agent, request_id=...)
        result: "success" | "failure" (wrong second factor) | "banned" (refused by a ban at the
        second step). Looks the country up, stores the attempt, and on success judges it for an
        incident. Never raises.
    security.count_request(user_name)                 sync; a dict increment per proxied request

Incidents (admin/incidents)
    await security.list_incidents(state=None|"open"|"acknowledged"|"resolved", user=, limit=)
        -> list[IncidentRecord] newest first (id, user, state, countries, opened_at,
           updated_at, acknowledged_at/by, resolved_at/by, note)
    await security.open_incident_count() -> int       the home page banner
    await security.incident(id) -> IncidentDetail     (.incident, .sign_ins: list[SignInView]
                                                       oldest first, .scope) | raises NotFound
    await security.acknowledge(id, actor) -> IncidentRecord
    await security.resolve(id, note, actor) -> IncidentRecord
        raise NotFound, or IncidentStateError (not open / already resolved / note missing)

Users (admin/users/{name})
    await security.user_activity(name, limit=20) -> UserActivity
        .logins_24h, .failures_24h, .requests_24h, .countries_24h, .scope (email domain, the
        preset for "Mark as safe"), .incident (active one or None), .sign_ins: list[SignInView]
        newest first; SignInView = (.record: SignInRecord(id, user, result, ip, country,
        geoip_source, user_agent, at), .trusted: bool, .counts: bool)
    await security.sign_ins(name, limit=20) -> list[SignInView]

Trusted login IPs (admin/trusted-ips, "Mark as safe")
    await security.trusted_ip_scopes() -> list[str]   email domains to choose from
    await security.trusted_ips(scope=None, search=None) -> list[TrustedIp]
        policy entries first (source "policy", id None, read-only), then run-time ones
        (source "runtime", id, created_at, created_by); search: an address inside the network,
        or text in network, description or author
    await security.add_trusted_ip(cidr, scope, description, actor) -> TrustedIp
        raises InvalidTrustedIp: .message to show as is (e.g. "'10.0.0.1/24' has host bits set;
        did you mean 10.0.0.0/24?"), .field = "cidr" | "scope" | "description"
    await security.remove_trusted_ip(id, actor) -> TrustedIp      raises NotFound

Who acts: `Actor(admin_name, client_ip=ctx.client_ip, request_id=ctx.request_id)` in the
console, `Actor.cli()` on the command line. Each change is audited by the service itself
(`incident.acknowledged`, `incident.resolved`, `trusted_ip.added`, `trusted_ip.removed`, with
the admin as principal); the console adds its own `admin.*` record. All errors derive from
`SecurityError(ValueError)` with `.message` and `.field`.

Notifications: `security.on_incident_opened.append(async fn(incident, sign_ins))` is called
once per newly opened incident, after its `incident.opened` audit record (see
`IncidentDetector.open_or_extend_incident`, the one place where incidents are opened);
`security.on_sign_in.append(async fn(record))` with every recorded sign-in. A failing hook is
logged and never fails the sign-in.
"""

from __future__ import annotations

from .incidents import IncidentHook
from .models import (
    INCIDENT_STATES,
    Actor,
    IncidentDetail,
    IncidentStateError,
    InvalidTrustedIp,
    NotFound,
    SecurityError,
    SignInView,
    TrustedIp,
    UserActivity,
)
from .service import SecurityOps

__all__ = [
    "INCIDENT_STATES",
    "Actor",
    "IncidentDetail",
    "IncidentHook",
    "IncidentStateError",
    "InvalidTrustedIp",
    "NotFound",
    "SecurityError",
    "SecurityOps",
    "SignInView",
    "TrustedIp",
    "UserActivity",
]
