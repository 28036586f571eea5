"""The process-wide services the request path uses, reachable as request.app[SERVICES]."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.policy.source import PolicyHolder
from gateway.services.metrics import Metrics
from gateway.services.regulation import SignInGuard
from gateway.services.secret_key import SecretKey
from gateway.services.session_store import SessionStore
from gateway.services.signing import KeyRing
from gateway.services.store import StateStore

if TYPE_CHECKING:
    from gateway.services.audit import AuditLog
    from gateway.services.notify import Notifier, Sender, SystemMessages
    from gateway.services.security import SecurityOps
    from gateway.web.csrf import Csrf
    from gateway.web.pages import Pages
    from gateway.web.proxy import Forwarder


@dataclass
class Services:
    holder: PolicyHolder
    secret_key: SecretKey
    metrics: Metrics
    audit: AuditLog
    store: StateStore
    sessions: SessionStore  # the state store's sessions, or Redis
    keyring: KeyRing
    forwarder: Forwarder
    csrf: Csrf
    pages: Pages
    started_at: float
    security: SecurityOps
    signin: SignInGuard = field(default_factory=SignInGuard)  # attempts in flight, hashing
    ready: bool = False
    problems: list[str] = field(default_factory=list)  # why not ready, for readyz
    notifier: Notifier | None = None  # the outbox's door (section 7)
    sender: Sender | None = None
    system_messages: SystemMessages | None = None


SERVICES = web.AppKey("gateway.services", Services)
