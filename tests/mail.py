"""Real SMTP servers on loopback for the notification tests: aiosmtpd (the demo's MailSink)
with scripted faults, and a throwaway self-signed certificate made here with `cryptography`."""

from __future__ import annotations

import datetime as dt
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.demo.mailsink import MailSink, Received, SinkHandler
from gateway.services.store import StateStore
from tests.factories import free_port

__all__ = [
    "FaultyHandler",
    "MailSink",
    "Received",
    "outbox_settled",
    "self_signed",
    "wait_async",
    "wait_for",
]


def self_signed(folder: Path, *, days: int = 2) -> tuple[Path, Path]:
    """A certificate for `localhost` / 127.0.0.1 and its key; returns (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "smtp.crt", folder / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class FaultyHandler(SinkHandler):
    """Refuses on script: `refuse[address] = "550 ..."` per recipient; the first
    `temporary_data` DATA commands get 451."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: dict[str, str] = {}
        self.temporary_data = 0
        self.data_attempts = 0

    async def handle_RCPT(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
        if address in self.refuse:
            return self.refuse[address]
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.data_attempts += 1
        if self.temporary_data > 0:
            self.temporary_data -= 1
            return "451 4.3.0 Try again later"
        return await super().handle_DATA(server, session, envelope)


def sink(**kwargs) -> MailSink:  # type: ignore[no-untyped-def]
    return MailSink(free_port(), **kwargs)


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll until `condition()` holds (a bound, not a timing claim)."""
    import asyncio

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)


async def wait_async(condition: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Like wait_for, for a condition that has to ask the state store."""
    import asyncio

    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)


async def outbox_settled(store: StateStore) -> bool:
    """Nothing pending or leased any more."""
    return (await store.outbox_stats()).pending == 0
