"""Process settings that need a restart: where to listen and with which TLS certificate."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from gateway.policy.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class ServeSettings:
    host: str
    port: int
    ssl_context: ssl.SSLContext | None


def serve_settings(snapshot: Snapshot, port: int | None = None) -> ServeSettings:
    config = snapshot.config
    context = None
    if config.tls is not None:
        base = snapshot.paths.config_dir
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(base / Path(config.tls.cert), base / Path(config.tls.key))
    return ServeSettings(config.listen.host, port or config.listen.port, context)
