"""A small local SMTP server that keeps what it receives: the demo's mailbox (aiosmtpd).

`gateway demo` points `smtp:` at it and shows the mails on the demo dashboard, so a newcomer
toggles protection in the demo's YAML and sees the notification arrive. The test suite uses
it (with STARTTLS, AUTH and scripted refusals) as a real SMTP server on loopback.
It listens on 127.0.0.1 only and accepts any sender and recipient: never expose it.
"""

from __future__ import annotations

import email
import email.policy
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

MAX_KEPT = 500


@dataclass(frozen=True, slots=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    at: float

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        return "" if body is None else str(body.get_content())


class SinkHandler:
    """Keeps every accepted message; subclasses may refuse (the tests' faults)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.lock = threading.Lock()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[arg-type]
        item = Received(envelope.mail_from or "", tuple(envelope.rcpt_tos), message, time.time())  # type: ignore[arg-type]
        with self.lock:
            self.received.append(item)
            del self.received[:-MAX_KEPT]
        return "250 Message accepted"


class _Authenticator:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            login, password = data.login.decode(), data.password.decode()
            if self.users.get(login) == password:
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


class MailSink:
    """aiosmtpd on 127.0.0.1:`port` in its own thread; `.received` lists what arrived."""

    def __init__(
        self,
        port: int,
        *,
        handler: SinkHandler | None = None,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        self.port = port
        self.handler = handler or SinkHandler()
        kwargs: dict[str, Any] = {}
        if starttls is not None:
            kwargs.update(tls_context=starttls, require_starttls=True)
        if implicit_tls is not None:
            kwargs.update(ssl_context=implicit_tls)
        if users is not None:
            kwargs.update(
                authenticator=_Authenticator(users),
                auth_required=True,
                auth_require_tls=starttls is not None or implicit_tls is not None,
            )
        self.controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=port,
            server_hostname="localhost",
            ready_timeout=10,
            **kwargs,
        )
        self.running = False

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def start(self) -> MailSink:
        self.controller.start()
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            self.controller.stop()
            self.running = False

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
