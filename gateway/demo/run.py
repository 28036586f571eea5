"""`gateway demo`: the gateway in front of a demo dashboard and a demo API, ready to click through.

Everything lives in ./.demo (config, policies, state, audit): delete the folder to start afresh.
The demo users' passwords and the service account's key are printed at start and kept in
.demo/credentials.txt — demo data only, never a pattern for production.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import socket
from pathlib import Path

from aiohttp import web

from gateway.demo.backends import api_app, dashboard_app
from gateway.services.passwords import hash_password

DEMO_DIR = Path(".demo")
PASSWORDS = {"alice": "alice-demo-Passphrase-42", "bob": "bob-demo-Passphrase-42"}

CONFIG = """# Written by `gateway demo`.
listen: {{host: 127.0.0.1, port: {port}}}
prefix: /_gateway
state: sqlite:///state/gateway.db
secret_key_file: state/gateway.key
audit: {{path: audit/audit.jsonl}}
sessions: {{idle_timeout: 30m, max_age: 12h}}
policies: policies
apps:
  console:
    surface: dashboard
    match: {{path: /}}
    upstream: http://127.0.0.1:{dash_port}
  protection-api:
    surface: api
    match: {{path: /api/}}
    upstream: http://127.0.0.1:{api_port}
"""

ACCESS = """protection: {enabled: true, mode: {dashboard: enforce, api: enforce}}
allowlists:
  dashboard:
    enabled: true
    entries:
      - {ip: 127.0.0.0/8, description: This machine}
      - {ip: "::1", description: This machine (IPv6)}
  api:
    enabled: true
    entries:
      - {ip: 127.0.0.1, description: This machine}
"""

SECURITY = """two_factor: {enforce: admins, issuer: Gateway Demo}
password_policy: {min_length: 12, min_strength: 3, max_age_days: 0, history: 5}
login_regulation: {max_failures: 5, window: 10m, ban: 15m}
roles:
  viewer: {allow: [{methods: [GET, HEAD]}]}
  editor: {allow: [{methods: ["*"]}], deny: [{path: /settings/}]}
  admin: {allow: [{methods: ["*"]}]}
  writer: {allow: [{methods: ["*"]}]}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _people(api_key: str) -> str:
    alice, bob = (hash_password(PASSWORDS[n]) for n in ("alice", "bob"))
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    return f"""users:
  alice:
    email: alice@example.com
    password_hash: "{alice}"
    admin: true
    grants: {{console: admin}}
  bob:
    email: bob@example.com
    password_hash: "{bob}"
    grants: {{console: viewer}}
service_accounts:
  demo-sync:
    key_sha256: "{digest}"
    grants: {{protection-api: writer}}
"""


def write_demo_files(base: Path, port: int, dash_port: int, api_port: int) -> str:
    """(Re)write the demo's config; keeps people and state from an earlier run. -> the API key."""
    (base / "policies").mkdir(parents=True, exist_ok=True)
    (base / "gateway.yaml").write_text(
        CONFIG.format(port=port, dash_port=dash_port, api_port=api_port)
    )
    (base / "policies" / "access.yaml").write_text(ACCESS)
    (base / "policies" / "security.yaml").write_text(SECURITY)
    credentials = base / "credentials.txt"
    people = base / "policies" / "people.yaml"
    if people.exists() and credentials.exists():
        return credentials.read_text().split("api key: ", 1)[1].split()[0]
    api_key = "gwk_demo_" + secrets.token_urlsafe(24)
    people.write_text(_people(api_key))
    credentials.write_text(
        "".join(f"{u}: {p}\n" for u, p in PASSWORDS.items()) + f"api key: {api_key}\n"
    )
    credentials.chmod(0o600)
    return api_key


async def _serve(port: int, shown_dir: str) -> None:
    from gateway.app import build_app, initial_holder
    from gateway.policy.source import load

    dash_port, api_port = _free_port(), _free_port()
    api_key = write_demo_files(DEMO_DIR, port, dash_port, api_port)
    config = DEMO_DIR / "gateway.yaml"
    result = load(config)
    if result.snapshot is None:
        for problem in result.report.errors:
            print(problem)
        raise SystemExit(1)
    base = f"http://127.0.0.1:{port}"
    runners = []
    for app, p in (
        (dashboard_app(f"{base}/_gateway/jwks.json"), dash_port),
        (api_app(), api_port),
        (build_app(initial_holder(config, result)), port),
    ):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", p).start()
        runners.append(runner)
    print(
        f"""
Access gateway demo
  Dashboard     {base}/
     alice / {PASSWORDS["alice"]}   (gateway admin: must enroll 2FA, role admin)
     bob   / {PASSWORDS["bob"]}     (role viewer, no 2FA required)
  API           curl -H 'Authorization: Bearer {api_key}' {base}/api/status
  Your account  {base}/_gateway/account
  Health        {base}/_gateway/readyz    Metrics {base}/_gateway/metrics
  Files         {shown_dir} (edit policies/ and watch them reload)
Press Ctrl-C to stop.
""",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def run_demo(port: int) -> int:
    from gateway.logs import configure_logging

    configure_logging()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(port, os.path.abspath(DEMO_DIR)))
    return 0
