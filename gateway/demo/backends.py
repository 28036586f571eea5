"""The demo's backends: a small dashboard (HTML) and a small API (JSON), both behind the gateway.

The dashboard verifies `X-Gateway-Assertion` with the project's own helper (gateway.backend), the
way a real backend should, and shows the identity it received.
"""

from __future__ import annotations

from html import escape

from aiohttp import web

from gateway.backend import GatewayVerifier, InvalidAssertion

VERIFIER = web.AppKey("verifier", GatewayVerifier)


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
<p><a href="/_gateway/account">Your account</a> · <a href="/settings/">Settings</a> ·
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


def dashboard_app(jwks_url: str) -> web.Application:
    app = web.Application()
    app[VERIFIER] = GatewayVerifier(jwks_url, audience="console")
    app.router.add_route("*", "/{tail:.*}", dashboard)
    return app


def api_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api)
    return app
