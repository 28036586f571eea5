"""Sending one mail: the narrow `Mailer` protocol and its SMTP implementation (aiosmtplib).

The sender (sender.py) decides what to retry; a mailer only says what happened:
- it returns a `Delivery`: who was accepted, who was refused for now (4xx) and who for good (5xx);
- it raises `MailTemporaryError` when nothing could be handed over and trying later may help
  (connection refused or lost, timeout, TLS or AUTH trouble, a 4xx to the whole mail);
- it raises `MailPermanentError` when the server refused the mail itself for good (5xx to
  MAIL FROM or DATA).
Authentication and TLS problems are temporary on purpose: they are configuration an operator
fixes, and giving up would lose notices the contract says are only ever delayed.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

import aiosmtplib

from gateway.policy.schema import Smtp


class MailTemporaryError(Exception):
    """Nothing was delivered; trying again later may work."""


class MailPermanentError(Exception):
    """The server refused the mail itself for good (5xx)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    accepted: list[str]
    temporary: dict[str, str] = field(default_factory=dict)  # recipient -> "451 ..."
    permanent: dict[str, str] = field(default_factory=dict)  # recipient -> "550 ..."


class Mailer(Protocol):
    async def send(self, message: EmailMessage, recipients: list[str]) -> Delivery:
        """Hand `message` to the mail system for `recipients` (the envelope, not the headers)."""


def _reply(code: int, message: str) -> str:
    return f"{code} {message}".strip()[:300]


def _split(refused: dict[str, tuple[int, str]]) -> tuple[dict[str, str], dict[str, str]]:
    temporary = {r: _reply(c, m) for r, (c, m) in refused.items() if 400 <= c < 500}
    permanent = {r: _reply(c, m) for r, (c, m) in refused.items() if not 400 <= c < 500}
    return temporary, permanent


class SmtpMailer:
    """`Mailer` over SMTP as configured by `smtp:` (security none | starttls | tls, AUTH)."""

    def __init__(self, config: Smtp, config_dir: Path) -> None:
        self.config = config
        self._config_dir = config_dir
        self._tls: ssl.SSLContext | None = None
        if config.security != "none":
            cafile = str(self._path(config.ca_file)) if config.ca_file else None
            self._tls = ssl.create_default_context(cafile=cafile)

    def _path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self._config_dir / path

    def _password(self) -> str | None:
        # Read at each send: a rotated secret file takes effect without a reload.
        if not self.config.password_file:
            return None
        try:
            return self._path(self.config.password_file).read_text("utf-8").strip()
        except OSError as exc:
            raise MailTemporaryError(f"cannot read smtp.password_file ({exc.strerror})") from None

    async def send(self, message: EmailMessage, recipients: list[str]) -> Delivery:
        c = self.config
        try:
            errors, _reply_text = await aiosmtplib.send(
                message,
                sender=c.sender,
                recipients=recipients,
                hostname=c.host,
                port=c.port,
                username=c.username,
                password=self._password() if c.username else None,
                use_tls=c.security == "tls",
                start_tls=c.security == "starttls",
                tls_context=self._tls,
                timeout=c.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = {r.recipient: (r.code, r.message) for r in exc.recipients}
            temporary, permanent = _split(refused)
            return Delivery([], temporary, permanent)
        except (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError) as exc:
            if 500 <= exc.code < 600:
                raise MailPermanentError(_reply(exc.code, exc.message)) from None
            raise MailTemporaryError(_reply(exc.code, exc.message)) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise MailTemporaryError(_reply(exc.code, exc.message)) from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
            raise MailTemporaryError(f"{type(exc).__name__}: {exc}"[:300]) from None
        refused = {r: (resp.code, resp.message) for r, resp in errors.items()}
        temporary, permanent = _split(refused)
        accepted = [r for r in recipients if r not in refused]
        return Delivery(accepted, temporary, permanent)
