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
import signal
import socket
from pathlib import Path

from aiohttp import web

from gateway.demo import front_proxy
from gateway.demo.backends import api_app, dashboard_app
from gateway.demo.mailsink import MailSink
from gateway.demo.seed import seed_incident
from gateway.services.passwords import hash_password
from gateway.web.listener import ListenError, start_gateway

DEMO_DIR = Path(".demo")
PASSWORDS = {"alice": "alice-demo-Passphrase-42", "bob": "bob-demo-Passphrase-42"}

CONFIG = """# Written by `gateway demo`.
listen: {{host: 127.0.0.1, port: {port}}}
{trusted}prefix: /_gateway
state: sqlite:///state/gateway.db
secret_key_file: state/gateway.key
audit: {{path: audit/audit.jsonl}}
sessions: {{idle_timeout: 30m, max_age: 12h}}
policies: policies
public_url: {public_url}
# the demo's own mailbox (a local SMTP sink): see the mails at {public_url}/mail
smtp: {{host: 127.0.0.1, port: {smtp_port}, from: gateway@demo.localhost, security: none}}
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
      # bob's seeded sign-ins from two countries (see the incident in the admin console)
      - {ip: 193.0.6.139, description: "Demo: a sign-in from the Netherlands"}
      - {ip: 202.12.29.205, description: "Demo: a sign-in from Australia"}
  api:
    enabled: true
    entries:
      - {ip: 127.0.0.1, description: This machine}
"""

SECURITY = """two_factor: {enforce: admins, issuer: Gateway Demo}
password_policy: {min_length: 12, min_strength: 3, max_age_days: 0, history: 5}
login_regulation: {max_failures: 5, window: 10m, ban: 15m}
# Admins get a mail for every policy change (try protection.enabled: false in access.yaml),
# failed sign-ins of known users (repeats within `coalesce` in one digest) and incidents.
notifications: {enabled: true, recipients: admins, coalesce: 1m}
retention: {login_history_days: 90, audit_days: 365, incidents_days: 180}
legal_contacts:
  - {name: Dana Ops, email: dpo@demo.localhost, role: Data Protection Officer}
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


def write_demo_files(
    base: Path,
    port: int,
    dash_port: int,
    api_port: int,
    *,
    behind_proxy: bool = False,
    smtp_port: int = 2525,
    front_port: int | None = None,
) -> str:
    """(Re)write the demo's config (its ports change); the policies, people and state of an
    earlier run are kept: the README invites editing them. -> the API key.

    behind_proxy: nginx on this machine is in front (forward-auth mode)."""
    (base / "policies").mkdir(parents=True, exist_ok=True)
    # This machine is a trusted proxy: nginx in front (forward-auth), and the demo's seeded
    # sign-ins, which name their public address in X-Forwarded-For (demo/seed.py).
    trusted = "trusted_proxies: [127.0.0.1/32]   # this machine (nginx, seeded sign-ins)\n"
    (base / "gateway.yaml").write_text(
        CONFIG.format(
            port=port,
            dash_port=dash_port,
            api_port=api_port,
            trusted=trusted,
            smtp_port=smtp_port,
            public_url=f"http://127.0.0.1:{front_port or port}",
        )
    )
    for name, text in (("access.yaml", ACCESS), ("security.yaml", SECURITY)):
        if not (base / "policies" / name).exists():
            (base / "policies" / name).write_text(text)
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


async def _serve(port: int, shown_dir: str, forward_auth: bool) -> None:
    from gateway.app import build_app, initial_holder
    from gateway.policy.source import load

    dash_port, api_port = _free_port(), _free_port()
    if forward_auth and not front_proxy.nginx_installed():
        print("nginx is not installed (Debian: apt-get install nginx-light): running without it.")
        forward_auth = False
    front_port, port = (port, _free_port()) if forward_auth else (port, port)
    mailbox = MailSink(_free_port()).start()  # the demo's mail: shown at /mail
    api_key = write_demo_files(
        DEMO_DIR,
        port,
        dash_port,
        api_port,
        behind_proxy=forward_auth,
        smtp_port=mailbox.port,
        front_port=front_port,
    )
    config = DEMO_DIR / "gateway.yaml"
    result = load(config)
    if result.snapshot is None:
        for problem in result.report.errors:
            print(problem)
        raise SystemExit(1)
    base = f"http://127.0.0.1:{front_port}"
    runners = []
    for app, p in (
        (dashboard_app(f"{base}/_gateway/jwks.json", mailbox), dash_port),
        (api_app(), api_port),
    ):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", p).start()
        runners.append(runner)
    try:
        gateway, _site = await start_gateway(
            build_app(initial_holder(config, result)), "127.0.0.1", port
        )
    except ListenError as exc:
        for runner in runners:
            await runner.cleanup()
        # one line for the person at the terminal, no traceback
        raise SystemExit(f"gateway demo: {exc}") from None
    runners.append(gateway)
    # Before nginx starts: a SIGTERM from now on stops nginx too instead of orphaning it.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    nginx = None
    if forward_auth:
        nginx = await _start_nginx(front_port, port, dash_port, api_port)
    mode = (
        f"  Mode          forward-auth: nginx on :{front_port} asks the gateway on :{port}\n"
        f"                (config: {shown_dir}/nginx/gateway.conf; docs/forward-auth.md)\n"
        if forward_auth
        else ""
    )
    print(
        f"""
Access gateway demo
{mode}  Dashboard     {base}/
     alice / {PASSWORDS["alice"]}   (gateway admin: must enroll 2FA, role admin)
     bob   / {PASSWORDS["bob"]}     (role viewer, no 2FA required)
  API           curl -H 'Authorization: Bearer {api_key}' {base}/api/status
  Your account  {base}/_gateway/account
  Incidents     {base}/_gateway/admin/ (as alice): bob signs in from two countries
                when the demo folder is new (CLI: gateway incidents --config .demo/gateway.yaml)
  Mailbox       {base}/mail    (mail the gateway sent: toggle protection in
                policies/access.yaml and watch the notice arrive)
  Health        {base}/_gateway/readyz    Metrics {base}/_gateway/metrics
  Files         {shown_dir} (edit policies/ and watch them reload)
Press Ctrl-C to stop.
""",
        flush=True,
    )
    seeding = asyncio.create_task(_seed(f"http://127.0.0.1:{port}"))
    try:
        await stop.wait()
    finally:
        seeding.cancel()
        if nginx is not None and nginx.returncode is None:
            nginx.terminate()
            await nginx.wait()
        for runner in reversed(runners):
            await runner.cleanup()
        mailbox.stop()


async def _seed(gateway_url: str) -> None:
    """bob's two sign-ins from two countries (demo/seed.py), after the banner is out."""
    try:
        if await seed_incident(gateway_url, DEMO_DIR / "state", PASSWORDS["bob"]):
            print("Demo incident: bob signed in from the Netherlands and Australia.", flush=True)
    except Exception as exc:
        print(f"Demo incident not seeded: {exc}", flush=True)


def _nginx_config(listen_port: int, gateway_port: int, dash_port: int, api_port: int) -> Path:
    """The shipped forward-auth configuration (deploy/forward-auth/) for the demo's ports."""
    return front_proxy.render_nginx(
        DEMO_DIR.resolve() / "nginx",
        listen=f"127.0.0.1:{listen_port}",
        gateway=f"127.0.0.1:{gateway_port}",
        console=f"127.0.0.1:{dash_port}",
        api=f"127.0.0.1:{api_port}",
    )


async def _start_nginx(
    listen_port: int, gateway_port: int, dash_port: int, api_port: int
) -> asyncio.subprocess.Process:
    """nginx in front, asking the gateway (auth_request); ready once it accepts connections."""
    config = _nginx_config(listen_port, gateway_port, dash_port, api_port)
    folder = config.parent
    log = open(folder / "nginx.log", "wb")  # noqa: ASYNC230, SIM115 -- once, at start
    proc = await asyncio.create_subprocess_exec(
        *front_proxy.nginx_argv(config), stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL
    )
    log.close()
    for _ in range(100):
        if proc.returncode is not None:
            raise SystemExit(f"nginx exited: see {folder / 'nginx.log'}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", listen_port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return proc
    proc.terminate()
    raise SystemExit(f"nginx did not start: see {folder / 'nginx.log'}")


def run_demo(port: int, forward_auth: bool = False) -> int:
    from gateway.logs import configure_logging

    configure_logging()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(port, os.path.abspath(DEMO_DIR), forward_auth))
    return 0
