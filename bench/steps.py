"""The gateway's per-request steps, one at a time, in-process (us per call, best of 7).

Run: .venv/bin/python bench/steps.py [CONFIG] [--json]   (bench/run.py runs it during start-up)

Without CONFIG, writes the same configuration bench/run.py benchmarks (api app, both allowlists
at BENCH_ENTRIES entries, a service account) into a temporary folder and loads it. Each step is
called the way gate.entry / observe / Forwarder.forward call it, on an aiohttp mocked request
carrying the benchmark's headers, so the figures add up to the gateway's own Python work per
request; what is left between that sum and the measured CPU per request is aiohttp and the event
loop. These functions belong to code other people are changing: a step that no longer fits is
reported as skipped, never as an error.
"""

from __future__ import annotations

import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPEAT = 7


def _best(fn: Callable[[], Any], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=REPEAT)) / number * 1e6


def step_costs(config_file: Path, api_key: str, path: str) -> dict[str, float | str]:
    """{step: us per call, or 'skipped: why'} for the authenticated, proxied request."""
    out: dict[str, float | str] = {}
    try:
        import hashlib
        import uuid

        import structlog
        from aiohttp.test_utils import make_mocked_request
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from multidict import CIMultiDict, CIMultiDictProxy

        from gateway.context import RequestContext
        from gateway.policy import decide
        from gateway.policy.source import load
        from gateway.services.audit import AuditLog
        from gateway.services.metrics import Metrics
        from gateway.services.signing import Signer, mint, public_jwk
        from gateway.web import forward_headers, gate, proxy
        from gateway.web.client_ip import resolve_client
        from gateway.web.hosts import canonical_host
        from gateway.web.identity import identity_headers
        from gateway.web.paths import normalize_path
        from gateway.web.request_ids import new_request_id
    except Exception as exc:
        return {"all steps": f"skipped: {exc!r}"}

    t0 = time.perf_counter()
    result = load(config_file)
    out["(start-up) load + validate + compile the policy"] = (time.perf_counter() - t0) * 1e6
    snapshot = result.snapshot
    if snapshot is None:
        return {"all steps": "skipped: the configuration does not load"}
    headers = CIMultiDict({"Host": "127.0.0.1:8080", "Authorization": f"Bearer {api_key}"})
    request = make_mocked_request("GET", path, headers=headers)
    key = Ed25519PrivateKey.generate()
    jwk = public_jwk(key.public_key())
    signer = Signer(jwk["kid"], key, (jwk,))

    def new_ctx() -> RequestContext:
        client = resolve_client("127.0.0.1", request.headers, snapshot.trusted_proxies)
        return RequestContext(
            request_id=new_request_id(),
            started=time.perf_counter(),
            snapshot=snapshot,
            client_ip=client.text,
            client_addr=client.parsed,
            secure=False,
        )

    view = gate.described(request)
    ctx = new_ctx()
    ctx.path = normalize_path(path)
    host_name = canonical_host(view.host).name if view.host else None
    app = decide.match_route(snapshot, host_name, ctx.path)
    ctx.app, ctx.surface = app, app.surface if app else None

    def authed() -> RequestContext:
        c = new_ctx()
        c.path, c.app, c.surface = ctx.path, ctx.app, ctx.surface
        gate.authenticate_api(c, view)
        grants = snapshot.accounts[c.principal].grants  # type: ignore[index]
        _, c.role = decide.authorize(snapshot, grants, c.app, "GET", c.path)  # type: ignore[arg-type]
        return c

    steps: list[tuple[str, Callable[[], Any], int]] = [
        ("observe: uuid4 request id (before)", lambda: str(uuid.uuid4()), 20000),
        ("observe: new_request_id (now)", new_request_id, 20000),
        (
            "observe: resolve_client",
            lambda: resolve_client("127.0.0.1", request.headers, snapshot.trusted_proxies),
            20000,
        ),
        ("observe: RequestContext (with uuid4, resolve_client)", new_ctx, 20000),
        (
            "observe: structlog contextvars clear + bind",
            lambda: (
                structlog.contextvars.clear_contextvars(),
                structlog.contextvars.bind_contextvars(request_id="x", client_ip="127.0.0.1"),
            ),
            20000,
        ),
        ("gate: normalize_path", lambda: normalize_path(path), 20000),
        (
            "gate: match_route",
            lambda: decide.match_route(snapshot, host_name, ctx.path),
            20000,
        ),
        ("gate: check_surface (allowlist lookup)", lambda: gate.check_surface(ctx), 20000),
        (
            "gate: API key (sha256, lookup, check_account)",
            lambda: gate.authenticate_api(ctx, view),
            20000,
        ),
        (
            "gate: authorize (grant, role rules)",
            lambda: decide.authorize(
                snapshot, snapshot.accounts["bench"].grants, app, "GET", ctx.path
            ),
            20000,
        ),
    ]
    c = authed()
    identity: dict[str, str] = {}
    steps += [
        (
            "identity_headers (assertion reused: the usual case)",
            lambda: identity_headers(c, signer, time.time()),
            2000,
        ),
        (
            "  of which mint() alone",
            lambda: mint(
                signer,
                sub="bench",
                email=None,
                role=c.role or "",
                app=app.name,
                auth="api-key",
                now=time.time(),
            ),
            2000,
        ),
        ("  of which the Ed25519 signature alone", lambda: key.sign(b"x" * 300), 2000),
        (
            "  of which sha256 of the key (authenticate_api)",
            lambda: hashlib.sha256(api_key.encode()).digest(),
            20000,
        ),
    ]
    try:
        identity = identity_headers(c, signer, time.time())
    except Exception as exc:
        out["identity_headers"] = f"skipped: {exc!r}"
    upstream_headers = CIMultiDictProxy(
        CIMultiDict(
            {
                "Content-Type": "text/plain",
                "Content-Length": "100",
                "Date": "Sun, 22 Nov 2026 14:07:43 GMT",
                "Server": "Python/3.11 aiohttp/3.14.5",
            }
        )
    )
    steps += [
        (
            "forward: upstream_request_headers",
            lambda: proxy.upstream_request_headers(
                request, c, identity, snapshot.config.sessions.cookie_name
            ),
            20000,
        ),
        (
            "forward: response_headers",
            lambda: forward_headers.response_headers(
                upstream_headers.items(), forward_headers.own_cookie_names("gateway_session")
            ),
            20000,
        ),
    ]
    from gateway.services.security.requests import RequestCounter

    counter = RequestCounter(store=None)  # type: ignore[arg-type]  # never flushed here
    steps.append(
        (
            "  dashboard only: RequestCounter.add (requests per user and hour)",
            lambda: counter.add("alice"),
            20000,
        )
    )
    metrics = Metrics()
    steps.append(
        (
            "observe: Metrics.observe_request",
            lambda: metrics.observe_request("api", "api", "allow", 0.001),
            20000,
        )
    )
    for name, fn, number in steps:
        try:
            fn()
            out[name] = _best(fn, number)
        except Exception as exc:
            out[name] = f"skipped: {exc!r}"
    with tempfile.TemporaryDirectory() as d:
        audit = AuditLog(Path(d) / "a.jsonl", b"k" * 32)

        def record() -> None:
            audit.record(
                "request",
                request_id=c.request_id,
                client_ip="127.0.0.1",
                surface="api",
                app="api",
                principal="bench",
                auth="api-key",
                decision="allow",
                method="GET",
                path=path,
                status=200,
                duration_ms=1.23,
                reasons=list(c.reasons) or None,
                monitor=None,
            )

        try:
            record()
            out["observe: AuditLog.record('request')"] = _best(record, 2000)
        except Exception as exc:
            out["observe: AuditLog.record('request')"] = f"skipped: {exc!r}"
        audit._buffer.lines.clear()
    return out


def total(costs: dict[str, float | str]) -> float:
    """Sum of the top-level per-request steps (not the 'of which' lines, not start-up)."""
    skip = (
        "(start-up)",
        "  of which",
        "  dashboard only",
        "observe: uuid4",
        "observe: resolve_client",
    )
    return sum(v for k, v in costs.items() if isinstance(v, float) and not k.startswith(skip))


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run  # the benchmark's own configuration writer and key

    args = [a for a in sys.argv[1:] if a != "--json"]
    if args:
        costs = step_costs(Path(args[0]), run.API_KEY, run.PATH)
    else:
        with tempfile.TemporaryDirectory() as d:
            config = run.write_gateway_config(Path(d) / "gw", 8080, 8081)
            costs = step_costs(config, run.API_KEY, run.PATH)
    if "--json" in sys.argv:
        import json

        print(json.dumps(costs))
        return 0
    for name, value in costs.items():
        print(f"{name:<60} {value:10.1f} us" if isinstance(value, float) else f"{name:<60} {value}")
    print(f"{'sum of per-request steps':<60} {total(costs):10.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
