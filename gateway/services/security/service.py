"""`SecurityOps`: the one object the sign-in views, the admin console and the CLI talk to.

See the package docstring (`gateway/services/security/__init__.py`) for the API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog

from gateway.policy.snapshot import Snapshot, User
from gateway.services.geoip import GeoIp
from gateway.services.store import IncidentRecord, SignInRecord, StateStore

from . import trusted
from .incidents import IncidentDetector, IncidentHook, counted
from .models import (
    INCIDENT_STATES,
    MAX_NOTE,
    SIGN_IN_RESULTS,
    Actor,
    AuditSink,
    IncidentDetail,
    IncidentStateError,
    NotFound,
    SignInView,
    TrustedIp,
    UserActivity,
    printable,
)
from .requests import HOUR, RequestCounter

if TYPE_CHECKING:
    from gateway.services.metrics import Metrics

log = structlog.get_logger("gateway.security")

DAY = 86400.0
GAUGE_REFRESH_INTERVAL = 30.0
MAX_USER_AGENT = 256


class SecurityOps:
    """Sign-in history, incidents, trusted login IPs and request counts over one state store.

    `snapshot` returns the policy snapshot in force (PolicyHolder.current); `metrics` is the
    process's Metrics or None (CLI); `clock` is injectable for tests.
    """

    def __init__(
        self,
        store: StateStore,
        audit: AuditSink,
        snapshot: Callable[[], Snapshot],
        *,
        geoip: GeoIp | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._audit = audit
        self._snapshot = snapshot
        self._metrics = metrics
        self._clock = clock
        self.geoip = geoip if geoip is not None else GeoIp(None)
        self.requests = RequestCounter(store, clock)
        self._detector = IncidentDetector(store, audit, self.refresh_metrics)
        # Called with every recorded sign-in, after incident detection (the notifications
        # module mails a user who signed in from a country new for them).
        self.on_sign_in: list[Callable[[SignInRecord], Awaitable[None]]] = []
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle (the app's cleanup_ctx) ------------------------------------------------------

    async def start(self) -> None:
        """Start the background jobs: request counts flush, open-incidents gauge refresh."""
        await self.refresh_metrics()
        self._tasks = [
            asyncio.create_task(self.requests.run()),
            asyncio.create_task(self._refresh_metrics_forever()),
        ]

    async def close(self) -> None:
        """Stop the jobs and write the last request counts (before the store closes)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        try:
            await self.requests.flush()
        except Exception as exc:
            log.warning("request_counts_flush_failed", error=str(exc))
        self.geoip.close()

    @property
    def on_incident_opened(self) -> list[IncidentHook]:
        """Hooks called once per new incident: `hooks.append(async fn(incident, sign_ins))`."""
        return self._detector.on_incident_opened

    async def refresh_metrics(self) -> None:
        if self._metrics is None:
            return
        counts = await self._store.incident_counts()
        self._metrics.incidents_open.set(counts.get("open", 0))

    async def _refresh_metrics_forever(self) -> None:
        # Other processes open and resolve incidents too: re-read the count now and then.
        while True:
            await asyncio.sleep(GAUGE_REFRESH_INTERVAL)
            try:
                await self.refresh_metrics()
            except Exception as exc:
                log.warning("incident_gauge_refresh_failed", error=str(exc))

    # -- the sign-in path ---------------------------------------------------------------------

    async def record_sign_in(
        self,
        user: User,
        result: str,
        client_ip: str | None,
        user_agent: str,
        *,
        request_id: str | None = None,
    ) -> SignInRecord | None:
        """Record an attempt past the password step; on success, judge it for an incident.

        Never raises: a failure here is logged and must not fail the sign-in itself.
        """
        if result not in SIGN_IN_RESULTS:
            raise ValueError(f"unknown sign-in result {result!r}")
        try:
            verdict = self.geoip.lookup(client_ip)
            record = await self._store.sign_in_add(
                user.name,
                result,
                client_ip,
                verdict.country,
                verdict.source,
                printable(user_agent, MAX_USER_AGENT),
                self._clock(),
            )
        except Exception:
            log.exception("sign_in_record_failed", user=user.name, result=result)
            return None
        if self._metrics is not None:
            self._metrics.sign_ins.labels(result, verdict.country or "none").inc()
        if result == "success":
            try:
                await self._detector.judge(self._snapshot(), user, record, request_id=request_id)
            except Exception:
                log.exception("incident_detection_failed", user=user.name)
        for hook in list(self.on_sign_in):
            try:
                await hook(record)
            except Exception:
                log.exception("sign_in_hook_failed", hook=getattr(hook, "__qualname__", ""))
        return record

    def count_request(self, user: str) -> None:
        """One proxied request of a signed-in user (the request path: a dict increment)."""
        self.requests.add(user)

    # -- incidents ----------------------------------------------------------------------------

    async def list_incidents(
        self, state: str | None = None, *, user: str | None = None, limit: int = 100
    ) -> list[IncidentRecord]:
        """Newest first; `state` one of open, acknowledged, resolved (None: all)."""
        if state is not None and state not in INCIDENT_STATES:
            raise ValueError(f"unknown incident state {state!r}")
        return await self._store.incidents(state=state, user=user, limit=limit)

    async def open_incident_count(self) -> int:
        """For the console's "New security incidents detected" banner."""
        return (await self._store.incident_counts()).get("open", 0)

    async def incident(self, id: int) -> IncidentDetail:
        """The incident with its evidence; raises NotFound."""
        incident = await self._store.incident_get(id)
        if incident is None:
            raise NotFound(f"there is no incident {id}")
        scope = self._scope(incident.user)
        is_trusted = await trusted.matcher_for(self._store, self._snapshot(), scope)
        evidence = await self._store.incident_sign_ins(id)
        return IncidentDetail(incident, self._views(evidence, is_trusted), scope)

    async def acknowledge(self, id: int, actor: Actor) -> IncidentRecord:
        """open -> acknowledged, audited `incident.acknowledged`; raises NotFound or
        IncidentStateError."""
        incident = await self._existing(id)
        if not await self._detector.acknowledge(incident, actor, self._clock()):
            raise IncidentStateError(f"incident {id} is {incident.state}, not open")
        return await self._existing(id)

    async def resolve(self, id: int, note: str, actor: Actor) -> IncidentRecord:
        """open or acknowledged -> resolved with a note, audited `incident.resolved`; raises
        NotFound, or IncidentStateError (no note, already resolved)."""
        note = printable(" ".join(str(note or "").split()), MAX_NOTE + 1)
        if not note:
            raise IncidentStateError("a note is required: say why this is resolved", "note")
        if len(note) > MAX_NOTE:
            raise IncidentStateError(f"the note is longer than {MAX_NOTE} characters", "note")
        incident = await self._existing(id)
        if not await self._detector.resolve(incident, note, actor, self._clock()):
            raise IncidentStateError(f"incident {id} is already resolved")
        return await self._existing(id)

    async def _existing(self, id: int) -> IncidentRecord:
        incident = await self._store.incident_get(id)
        if incident is None:
            raise NotFound(f"there is no incident {id}")
        return incident

    # -- users --------------------------------------------------------------------------------

    async def sign_ins(self, user: str, *, limit: int = 20) -> list[SignInView]:
        """The user's last sign-ins, newest first, each with its trusted flag."""
        is_trusted = await trusted.matcher_for(self._store, self._snapshot(), self._scope(user))
        return self._views(await self._store.sign_ins(user, limit=limit), is_trusted)

    async def user_activity(self, user: str, *, limit: int = 20) -> UserActivity:
        """Logins and requests in the last 24 h, distinct countries, the last sign-ins."""
        now = self._clock()
        known = self._snapshot().users.get(user)
        scope = self._scope(user)
        is_trusted = await trusted.matcher_for(self._store, self._snapshot(), scope)
        day = await self._store.sign_ins(user, since=now - DAY, limit=10_000)
        since_hour = int(now) // HOUR - 23  # this hour and the 23 before it
        requests = await self._store.request_count(user, since_hour)
        countries = {s.country for s in day if s.result == "success" and s.country}
        active = [
            i for i in await self._store.incidents(user=user, limit=5) if i.state != "resolved"
        ]
        return UserActivity(
            user=user,
            known=known is not None,
            email=known.email if known else None,
            scope=scope,
            logins_24h=sum(1 for s in day if s.result == "success"),
            failures_24h=sum(1 for s in day if s.result != "success"),
            requests_24h=requests + self.requests.pending(user, since_hour),
            countries_24h=tuple(sorted(countries)),
            sign_ins=self._views(await self._store.sign_ins(user, limit=limit), is_trusted),
            incident=active[0] if active else None,
        )

    def _scope(self, user: str) -> str | None:
        known = self._snapshot().users.get(user)
        return trusted.email_domain(known.email) if known else None

    @staticmethod
    def _views(records: list[SignInRecord], is_trusted: trusted.Matcher) -> list[SignInView]:
        counting = {s.id for s in counted(records, is_trusted)}
        return [SignInView(s, is_trusted(s.ip), s.id in counting) for s in records]

    # -- trusted login IPs --------------------------------------------------------------------

    async def trusted_ips(
        self, scope: str | None = None, search: str | None = None
    ) -> list[TrustedIp]:
        """Policy entries (read-only) then run-time ones, of one email domain or all; `search`
        keeps entries containing that address or mentioning that text."""
        entries = await trusted.entries(self._store, self._snapshot(), scope)
        return trusted.search(entries, search) if search else entries

    async def trusted_ip_scopes(self) -> list[str]:
        """Email domains to choose from: those of the users, and those with entries."""
        snapshot = self._snapshot()
        domains = {trusted.email_domain(u.email) for u in snapshot.users.values()}
        domains |= {e.scope for e in await trusted.entries(self._store, snapshot)}
        return sorted(d for d in domains if d)

    async def add_trusted_ip(
        self, cidr: str, scope: str, description: str, actor: Actor
    ) -> TrustedIp:
        """Mark an address or network as safe for an email domain, audited `trusted_ip.added`.

        Raises InvalidTrustedIp (with `.message` to show and `.field`) for a prefix outside
        the rules, host bits set ("did you mean 10.0.0.0/24?"), a bad domain, no description,
        or an entry that exists already.
        """
        entry = await trusted.add(
            self._store, self._snapshot(), cidr, scope, description, actor.name, self._clock()
        )
        self._audit.record(
            "trusted_ip.added",
            flush=True,
            decision=None,
            trusted_ip_id=entry.id,
            cidr=entry.cidr,
            scope=entry.scope,
            description=entry.description,
            **actor.audit_fields(),
        )
        return entry

    async def remove_trusted_ip(self, id: int, actor: Actor) -> TrustedIp:
        """Remove a run-time entry, audited `trusted_ip.removed`; raises NotFound (policy
        entries are removed by editing the policy)."""
        record = await self._store.trusted_ip_remove(id)
        if record is None:
            raise NotFound(f"there is no trusted IP entry {id}")
        entry = trusted.runtime_entry(record)
        self._audit.record(
            "trusted_ip.removed",
            flush=True,
            decision=None,
            trusted_ip_id=entry.id,
            cidr=entry.cidr,
            scope=entry.scope,
            description=entry.description,
            **actor.audit_fields(),
        )
        return entry
