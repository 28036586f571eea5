"""healthz (the process answers), readyz (it can serve: policy loaded, store reachable; with the
details, including a rejected policy's errors, for `ops_allow` clients only), metrics
(Prometheus) and jwks.json (the assertion's public keys)."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import web

from gateway.context import context_of
from gateway.services.notify.runtime import status as notify_status
from gateway.services.session_store import StateSessionStore
from gateway.web.resources import SERVICES


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_INDENT_2),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    snapshot = services.holder.current
    problems = list(services.problems)
    try:
        await asyncio.wait_for(services.store.ping(), timeout=2)
    except Exception as exc:
        problems.append(f"state store unreachable ({type(exc).__name__})")
    if not isinstance(services.sessions, StateSessionStore):  # else the same database
        try:
            await asyncio.wait_for(services.sessions.ping(), timeout=2)
        except Exception as exc:
            problems.append(f"session store unreachable ({type(exc).__name__})")
    rejected = services.holder.rejected
    policy: dict[str, object] = {
        "generation": snapshot.generation,
        "fingerprint": snapshot.fingerprint[:16],
        "files": list(services.holder.last_result.files) if services.holder.last_result else [],
        "warnings": list(snapshot.warnings),
    }
    if rejected is not None:
        # The last good policy stays in force; the rejection is visible here until fixed.
        policy["rejected"] = [str(p) for p in rejected.report.errors]
    status = "ready" if services.ready and not problems else "not ready"
    code = 200 if status == "ready" else 503
    ctx = context_of(request)
    ip = ctx.client_addr
    if ip is None or not snapshot.ops_allow.contains(ip[1], ip[0]):
        # readyz is open to load balancers anywhere; the details (file names, key paths, values
        # of a rejected policy) are for operators only.
        return _json({"status": status, "policy_rejected": rejected is not None}, code)
    body = {
        "status": status,
        "problems": problems,
        "policy": policy,
        "uptime_s": round(time.time() - services.started_at, 1),
        **await notify_status(services),  # system messages (section 7.3) and the outbox
    }
    return _json(body, code)


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[SERVICES].metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


async def jwks(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[SERVICES].keyring.signer.jwks_json,
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=60"},
    )
