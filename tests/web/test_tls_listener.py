"""TLS on the gateway's own port, through `gateway run` (uvloop): both sides of the front see
the connection as https: the api request it serves itself, and the sign-in page it hands to
aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.factories import api_key, free_port, gateway_files, recording_backend


def write_certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@contextlib.asynccontextmanager
async def tls_gateway(root: Path, upstream: str) -> AsyncIterator[tuple[str, ssl.SSLContext]]:
    cert, key = write_certificate(root.parent)
    files = gateway_files(
        root,
        api_upstream=upstream,
        dashboard_upstream=upstream,
        extra_config={"tls": {"cert": str(cert), "key": str(key)}},
    )
    trust = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "run",
        "--config",
        str(files.config_file),
        "--port",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"https://localhost:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                if proc.returncode is not None:
                    err = await proc.stderr.read() if proc.stderr else b""
                    raise RuntimeError(f"gateway exited: {err.decode()[-2000:]}")
                try:
                    async with http.get(f"{url}/_gateway/readyz", ssl=trust) as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("gateway did not become ready in 20 s")
        yield url, trust
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)


async def test_both_sides_of_the_front_see_https(tmp_path):
    async with (
        recording_backend() as (backend, seen),
        tls_gateway(tmp_path / "gw", backend) as (url, trust),
        aiohttp.ClientSession() as http,
    ):
        # served by the front: the upstream hears that the client used https
        key = {"Authorization": f"Bearer {api_key('sync')}"}
        async with http.get(f"{url}/api/items", headers=key, ssl=trust) as r:
            assert r.status == 200 and await r.text() == "ok"
            assert r.headers["Server"] == "gateway"
        assert seen[-1].headers["x-forwarded-proto"] == "https"
        # handed to aiohttp: its cookies get the names and attributes only TLS allows
        async with http.get(f"{url}/_gateway/login", ssl=trust) as r:
            assert r.status == 200
            cookies = r.headers.getall("Set-Cookie")
        assert any(c.startswith("__Host-gateway_csrf=") and "Secure" in c for c in cookies)
