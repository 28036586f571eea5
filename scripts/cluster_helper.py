"""Helpers for scripts/cluster.sh: free ports, the cluster's config files, the demo backends.

cluster_helper.py free-port
cluster_helper.py write-config DIR --state URL --sessions URL --dash-port P --api-port P
cluster_helper.py backends DASH_PORT API_PORT JWKS_URL
cluster_helper.py secret-key FILE
cluster_helper.py wait-ready URL [SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from pathlib import Path

CONFIG = """# Written by scripts/cluster.sh: one config shared by every instance.
listen: {{host: 127.0.0.1, port: 8080}}   # each instance gets its own port with --port
trusted_proxies: [127.0.0.1/32]          # nginx in front writes X-Forwarded-For
prefix: /_gateway
state: {state}
sessions: {{store: {sessions}, key_prefix: "cluster:", idle_timeout: 30m, max_age: 12h}}
secret_key_file: ../state/gateway.key    # one key for all instances
audit: {{path: ../audit/audit.jsonl}}      # each instance writes its own chain into it
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(args: argparse.Namespace) -> None:
    from gateway.demo.run import write_demo_files

    config_dir = Path(args.dir)
    # The demo's people, policies and credentials.txt (passwords printed by cluster.sh).
    write_demo_files(config_dir, 8080, args.dash_port, args.api_port)
    (config_dir / "gateway.yaml").write_text(
        CONFIG.format(
            state=args.state,
            sessions=args.sessions,
            dash_port=args.dash_port,
            api_port=args.api_port,
        )
    )


async def backends(dash_port: int, api_port: int, jwks_url: str) -> None:
    from aiohttp import web

    from gateway.demo.backends import api_app, dashboard_app

    for app, port in ((dashboard_app(jwks_url), dash_port), (api_app(), api_port)):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def wait_ready(url: str, seconds: float) -> int:
    """0 once `url` answers 200 within `seconds`, else 1."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310 - our own URL
                if reply.status == 200:
                    return 0
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    return 1


def main() -> None:
    parser = argparse.ArgumentParser()
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("free-port")
    config = verbs.add_parser("write-config")
    config.add_argument("dir")
    config.add_argument("--state", required=True)
    config.add_argument("--sessions", required=True)
    config.add_argument("--dash-port", type=int, required=True)
    config.add_argument("--api-port", type=int, required=True)
    serve = verbs.add_parser("backends")
    serve.add_argument("dash_port", type=int)
    serve.add_argument("api_port", type=int)
    serve.add_argument("jwks_url")
    key = verbs.add_parser("secret-key")
    key.add_argument("file")
    ready = verbs.add_parser("wait-ready")
    ready.add_argument("url")
    ready.add_argument("seconds", type=float, nargs="?", default=30.0)
    args = parser.parse_args()
    if args.verb == "free-port":
        print(free_port())
    elif args.verb == "write-config":
        write_config(args)
    elif args.verb == "backends":
        asyncio.run(backends(args.dash_port, args.api_port, args.jwks_url))
    elif args.verb == "secret-key":
        from gateway.services.secret_key import load_secret_key

        load_secret_key(Path(args.file))  # creates it (0600) if absent, before any instance
    elif args.verb == "wait-ready":
        raise SystemExit(wait_ready(args.url, args.seconds))


if __name__ == "__main__":
    main()
