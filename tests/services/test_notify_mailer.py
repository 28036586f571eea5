"""The SMTP mailer against a real aiosmtpd on loopback: plain, STARTTLS with AUTH, implicit TLS,
and how refusals are reported (4xx: later, 5xx: given up for that recipient)."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.policy.schema import Smtp
from gateway.services.notify import MailPermanentError, MailTemporaryError, SmtpMailer
from tests.factories import free_port
from tests.mail import FaultyHandler, self_signed, server_context, sink


def _message(subject: str = "hello") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "gateway@example.com"
    msg["To"] = "alice@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = "<m1@example.com>"
    msg.set_content("body")
    return msg


def _smtp(port: int, **extra: object) -> Smtp:
    return Smtp.model_validate(
        {"host": "127.0.0.1", "port": port, "from": "gateway@example.com", "timeout": "5s", **extra}
    )


class TestTransport:
    """Each `smtp.security` setting talks to a server configured the same way."""

    async def test_plain(self, tmp_path: Path) -> None:
        with sink() as server:
            mailer = SmtpMailer(_smtp(server.port), tmp_path)
            delivery = await mailer.send(_message(), ["alice@example.com", "bob@example.com"])
        assert delivery.accepted == ["alice@example.com", "bob@example.com"]
        [got] = server.received
        assert got.rcpt_tos == ("alice@example.com", "bob@example.com")
        assert got.message_id == "<m1@example.com>"

    async def test_starttls_with_auth_and_a_private_ca(self, tmp_path: Path) -> None:
        cert, key = self_signed(tmp_path / "tls")
        (tmp_path / "smtp-password").write_text("s3cret-pass\n")
        server = sink(starttls=server_context(cert, key), users={"gw": "s3cret-pass"})
        with server:
            mailer = SmtpMailer(
                _smtp(
                    server.port,
                    security="starttls",
                    username="gw",
                    password_file="smtp-password",
                    ca_file=str(cert),
                ),
                tmp_path,
            )
            delivery = await mailer.send(_message(), ["alice@example.com"])
        assert delivery.accepted == ["alice@example.com"]
        assert len(server.received) == 1

    async def test_a_wrong_password_is_temporary(self, tmp_path: Path) -> None:
        cert, key = self_signed(tmp_path / "tls")
        (tmp_path / "pw").write_text("wrong")
        with sink(starttls=server_context(cert, key), users={"gw": "right"}) as server:
            mailer = SmtpMailer(
                _smtp(
                    server.port,
                    security="starttls",
                    username="gw",
                    password_file="pw",
                    ca_file=str(cert),
                ),
                tmp_path,
            )
            with pytest.raises(MailTemporaryError):
                await mailer.send(_message(), ["alice@example.com"])
        assert server.received == []

    async def test_starttls_refuses_an_unknown_certificate(self, tmp_path: Path) -> None:
        cert, key = self_signed(tmp_path / "tls")
        with sink(starttls=server_context(cert, key)) as server:
            mailer = SmtpMailer(_smtp(server.port, security="starttls"), tmp_path)  # system CAs
            with pytest.raises(MailTemporaryError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
                await mailer.send(_message(), ["alice@example.com"])
        assert server.received == []

    async def test_implicit_tls(self, tmp_path: Path) -> None:
        cert, key = self_signed(tmp_path / "tls")
        with sink(implicit_tls=server_context(cert, key)) as server:
            mailer = SmtpMailer(_smtp(server.port, security="tls", ca_file=str(cert)), tmp_path)
            delivery = await mailer.send(_message(), ["alice@example.com"])
        assert delivery.accepted == ["alice@example.com"] and len(server.received) == 1


class TestRefusals:
    """What the server answers decides: later (4xx, no server) or never (5xx)."""

    async def test_no_server_is_temporary(self, tmp_path: Path) -> None:
        mailer = SmtpMailer(_smtp(free_port()), tmp_path)
        with pytest.raises(MailTemporaryError):
            await mailer.send(_message(), ["alice@example.com"])

    async def test_one_recipient_refused_for_good_others_delivered(self, tmp_path: Path) -> None:
        handler = FaultyHandler()
        handler.refuse["gone@example.com"] = "550 5.1.1 No such user"
        handler.refuse["full@example.com"] = "452 4.2.2 Mailbox full"
        with sink(handler=handler) as server:
            mailer = SmtpMailer(_smtp(server.port), tmp_path)
            delivery = await mailer.send(
                _message(), ["alice@example.com", "gone@example.com", "full@example.com"]
            )
        assert delivery.accepted == ["alice@example.com"]
        assert delivery.permanent == {"gone@example.com": "550 5.1.1 No such user"}
        assert delivery.temporary == {"full@example.com": "452 4.2.2 Mailbox full"}
        assert server.received[0].rcpt_tos == ("alice@example.com",)

    async def test_every_recipient_refused(self, tmp_path: Path) -> None:
        handler = FaultyHandler()
        handler.refuse["gone@example.com"] = "550 5.1.1 No such user"
        with sink(handler=handler) as server:
            delivery = await SmtpMailer(_smtp(server.port), tmp_path).send(
                _message(), ["gone@example.com"]
            )
        assert delivery.accepted == [] and list(delivery.permanent) == ["gone@example.com"]

    async def test_data_4xx_is_temporary_then_works(self, tmp_path: Path) -> None:
        handler = FaultyHandler()
        handler.temporary_data = 1
        with sink(handler=handler) as server:
            mailer = SmtpMailer(_smtp(server.port), tmp_path)
            with pytest.raises(MailTemporaryError, match="451"):
                await mailer.send(_message(), ["alice@example.com"])
            assert (await mailer.send(_message(), ["alice@example.com"])).accepted
        assert len(server.received) == 1

    async def test_data_5xx_is_permanent(self, tmp_path: Path) -> None:
        class Reject(FaultyHandler):
            async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
                return "554 5.6.0 Message refused"

        with sink(handler=Reject()) as server:
            with pytest.raises(MailPermanentError, match="554"):
                await SmtpMailer(_smtp(server.port), tmp_path).send(
                    _message(), ["alice@example.com"]
                )
