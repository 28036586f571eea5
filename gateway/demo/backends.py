"""The demo's backends: a small dashboard (HTML) and a small API (JSON), both behind the gateway.

The dashboard verifies `X-Gateway-Assertion` with the project's own helper (gateway.backend), the
way a real backend should, and shows the identity it received.
"""

from __future__ import annotations

import time
from html import escape

from aiohttp import web

from gateway.backend import GatewayVerifier, InvalidAssertion
from gateway.demo.mailsink import MailSink

VERIFIER = web.AppKey("verifier", GatewayVerifier)
MAILBOX = web.AppKey("mailbox", MailSink)
_STYLE = """body{font:16px/1.5 system-ui,sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem}
.ok{color:#067647}.bad{color:#b42318}th{text-align:left;padding-right:1rem}
code{word-break:break-all}pre{white-space:pre-wrap;background:#f4f4f5;padding:.5rem}"""


async def mailbox(request: web.Request) -> web.Response:
    """The mails the gateway sent to the demo's local SMTP sink, newest first."""
    sink = request.app.get(MAILBOX)
    mails = list(reversed(sink.received)) if sink is not None else []
    items = "".join(
        f"<article><h2>{escape(m.subject)}</h2><p>To {escape(', '.join(m.rcpt_tos))}, "
        f"received {escape(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(m.at)))}, "
        f"<code>{escape(m.message_id)}</code></p><pre>{escape(m.part('plain'))}</pre></article>"
        for m in mails
    )
    empty = (
        "<p>No mail yet. Edit <code>.demo/policies/access.yaml</code> (for instance "
        "<code>protection: {enabled: false}</code>), save, and reload this page; or fail a "
        "sign-in as bob.</p>"
    )
    body = f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1"><title>Demo mailbox</title>
<style>{_STYLE}</style></head><body><h1>Demo mailbox</h1>
<p>Every mail the gateway sent in this demo (its <code>smtp:</code> points at a small local
SMTP sink). <a href="/">Back to the dashboard</a></p>{items or empty}</body></html>"""
    return web.Response(text=body, content_type="text/html")


async def dashboard(request: web.Request) -> web.Response:
    token = request.headers.get("X-Gateway-Assertion", "")
    try:
        identity = await request.app[VERIFIER].verify_async(token)
        verified = (
            f"<p class=ok>✔ Assertion verified with the gateway's JWKS: "
            f"<strong>{escape(identity.user)}</strong> is <strong>"
            f"{escape(identity.role)}</strong> of <strong>{escape(identity.app)}</strong> "
            f"(auth: {escape(identity.auth)}).</p>"
        )
    except InvalidAssertion as exc:
        verified = f"<p class=bad>✘ Assertion not valid: {escape(exc.reason)}</p>"
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td><code>{escape(v if len(v) < 90 else v[:87] + '...')}"
        f"</code></td></tr>"
        for k, v in sorted(request.headers.items())
        if k.lower().startswith(("x-gateway-", "x-forwarded-"))
    )
    body = f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1"><title>Demo dashboard</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem}}
.ok{{color:#067647}}.bad{{color:#b42318}}th{{text-align:left;padding-right:1rem}}
code{{word-break:break-all}}</style></head><body>
<h1>Demo dashboard</h1><p id=whoami>Signed in as <strong>{
        escape(request.headers.get("X-Gateway-User", "?"))
    }</strong></p>{verified}
<h2>What the gateway sent</h2><table>{rows}</table>
<p><a href="/_gateway/account">Your account</a> · <a href="/mail">Mailbox</a> ·
<a href="/settings/">Settings</a> ·
<a href="/_gateway/logout">Sign out</a></p></body></html>"""
    return web.Response(text=body, content_type="text/html")


async def api(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "service": "demo-api",
            "path": request.path,
            "method": request.method,
            "caller": request.headers.get("X-Gateway-User"),
            "role": request.headers.get("X-Gateway-Role"),
            "auth": request.headers.get("X-Gateway-Auth"),
        }
    )


def dashboard_app(jwks_url: str, mail: MailSink | None = None) -> web.Application:
    app = web.Application()
    app[VERIFIER] = GatewayVerifier(jwks_url, audience="console")
    if mail is not None:
        app[MAILBOX] = mail
    app.router.add_get("/mail", mailbox)
    app.router.add_route("*", "/{tail:.*}", dashboard)
    return app


def api_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api)
    return app
