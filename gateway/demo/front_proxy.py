"""The shipped forward-auth configurations (deploy/forward-auth/), rendered for a local run.

Used by `gateway demo --forward-auth`, the tests (tests/forward_auth/) and the benchmark
(bench/forward_auth.py), so what they run is the very file the docs include, with only the
example addresses replaced. Each replacement must find its example text: a
configuration edited so that the rendering no longer applies fails loudly instead of silently
running something else.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "forward-auth"
CACHE_MARK = "#cache "


class RenderError(RuntimeError):
    pass


def _replace(text: str, replacements: dict[str, str], source: str) -> str:
    for old, new in replacements.items():
        if old not in text:
            raise RenderError(f"{source}: the example text {old!r} is gone")
        text = text.replace(old, new)
    return text


def nginx_installed() -> bool:
    return (shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")) is not None


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found is None:
        raise FileNotFoundError("nginx is not installed (Debian: apt-get install nginx-light)")
    return found


def render_nginx(
    folder: Path,
    *,
    listen: str,
    gateway: str,
    console: str,
    api: str,
    cache: bool = False,
    workers: int = 1,
) -> Path:
    """Write a complete nginx main configuration around deploy/forward-auth/nginx.conf into
    `folder`; returns its path. Addresses are host:port."""
    folder.mkdir(parents=True, exist_ok=True)
    site = _replace(
        (DEPLOY / "nginx.conf").read_text(),
        {
            "server 127.0.0.1:8080;": f"server {gateway};",
            "server 127.0.0.1:3000;": f"server {console};",
            "server 127.0.0.1:4000;": f"server {api};",
            "listen 80;": f"listen {listen};",
            "/var/cache/nginx/gateway-auth": str(folder / "auth-cache"),
        },
        "nginx.conf",
    )
    if cache:
        site = site.replace(CACHE_MARK, "")
    (folder / "gateway.conf").write_text(site)
    shutil.copyfile(DEPLOY / "gateway-identity.conf", folder / "gateway-identity.conf")
    # Running as root, workers would switch to `nobody` and could not use these folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = f"""{user}daemon off;
master_process on;
worker_processes {workers};
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy_temp;
    fastcgi_temp_path {folder}/fastcgi_temp;
    uwsgi_temp_path {folder}/uwsgi_temp;
    scgi_temp_path {folder}/scgi_temp;
    include {folder}/gateway.conf;
}}
"""
    path = folder / "nginx-main.conf"
    path.write_text(main)
    return path


def nginx_argv(config: Path) -> list[str]:
    return [nginx_binary(), "-p", str(config.parent), "-e", "stderr", "-c", str(config)]


def render_caddyfile(folder: Path, *, listen: str, gateway: str, console: str, api: str) -> Path:
    """deploy/forward-auth/Caddyfile with the example addresses replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    text = _replace(
        (DEPLOY / "Caddyfile").read_text(),
        {
            # Only the given address: a site address alone binds every interface.
            "dash.example.com {": f"http://{listen} {{\n\tbind {listen.rsplit(':', 1)[0]}",
            "gateway:8080": gateway,
            "console:3000": console,
            "protection-api:4000": api,
        },
        "Caddyfile",
    )
    # Local runs: no admin endpoint (several Caddys at once), no certificates, own storage.
    text = f"{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {folder}\n}}\n\n" + text
    path = folder / "Caddyfile"
    path.write_text(text)
    return path


def caddy_argv(config: Path) -> list[str]:
    found = shutil.which("caddy")
    if found is None:
        raise FileNotFoundError("caddy is not installed (Debian: apt-get install caddy)")
    return [found, "run", "--config", str(config), "--adapter", "caddyfile"]
