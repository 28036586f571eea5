"""The hot path: a request to an app of the api surface, decided and forwarded by the front.

The same steps as aiohttp's side (gateway.web.gate, docs/http.md), from the same snapshot, with
the same answers: the gate (allowlist, API key, role rules), the identity headers with the
reused assertion, the upstream request through the lean client, the response streamed back;
denials and upstream failures as problem+json; one audit record and the metrics at the end.
What is left out is only aiohttp's own machinery: no request object, no router, no middleware
chain, no response object; the response head is written with its body in one send when the
upstream's answer is already whole.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final, NamedTuple

import structlog
from aiohttp.http import SERVER_SOFTWARE

from gateway.context import RequestContext
from gateway.policy import decide
from gateway.web import forward_headers, gate
from gateway.web.errors import PROBLEM_JSON, problem_json
from gateway.web.front import authz
from gateway.web.front.answer import CONTINUE, LAST_CHUNK, SERVER_NAME, chunk, frame
from gateway.web.front.body import BodyStream
from gateway.web.identity import identity_headers
from gateway.web.observe import bind_log_context, internal_error_page, record_request
from gateway.web.proxy import cut_mid_response
from gateway.web.upstream.errors import UpstreamError

if TYPE_CHECKING:
    from gateway.web.front.connection import FrontProtocol
    from gateway.web.resources import Services

log = structlog.get_logger("gateway.request")

PROXY: Final = "proxy"  # FastRequest.kind of a request forwarded to its app
CLIENT_CLOSED_REQUEST: Final = 499  # nginx's status for "the client went away first"
LINGERING_TIME: Final = 10.0  # seconds to read and drop a body nobody wants (as aiohttp)


class FastRequest(NamedTuple):
    kind: str  # PROXY, or the forward-auth endpoint asked (gateway.web.front.authz)
    method: str
    version: str  # "1.0" or "1.1"
    headers: list[tuple[str, str]]
    view: gate.Described
    ctx: RequestContext
    keep_alive: bool  # what the client asked for (version and Connection)
    body: BodyStream | None
    content_length: int | None
    expect_continue: bool


async def serve(conn: FrontProtocol, request: FastRequest, services: Services) -> bool:
    """Answer `request`; True if the connection may carry another request."""
    ctx = request.ctx
    bind_log_context(ctx)  # this task's own: a pipelined request's task inherits it otherwise
    status = 500
    answered = [False]
    try:
        if request.kind != PROXY:
            status, keep_alive = await _decide_for_proxy(conn, request, services)
            return keep_alive
        verdict = gate.decide_api(ctx, request.view)
        if not verdict.allowed:
            status, keep_alive = await _deny(conn, request, gate.denial(ctx, verdict))
            return keep_alive
        gate.settle(ctx, verdict)
        status, keep_alive = await _forward(conn, request, services, answered)
        return keep_alive
    except Exception:
        log.exception("unhandled_error", path=ctx.path)
        ctx.decision = ctx.decision or decide.deny("internal_error", "unhandled error")
        status = 500
        if not answered[0] and not conn.closed:
            body = internal_error_page(ctx.request_id).encode()
            head = [("Content-Type", "text/html; charset=utf-8")]
            _answer(conn, request, 500, head, body, keep_alive=False)
        return False
    finally:
        record_request(services, ctx, status, ctx.method or request.method, ctx.path or "/")


def _answer(
    conn: FrontProtocol,
    request: FastRequest,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    keep_alive: bool,
) -> bool:
    """A response the gateway wrote itself (never from the upstream), in one send."""
    headers.append(("X-Gateway-Request-Id", request.ctx.request_id))
    framed = frame(
        request.method,
        request.version,
        status,
        None,
        headers,
        keep_alive=keep_alive,
        body_length=len(body),
    )
    conn.write(framed.head if framed.empty else framed.head + body)
    return framed.keep_alive


async def _deny(conn: FrontProtocol, request: FastRequest, denial: gate.Denial) -> tuple[int, bool]:
    code, extra, detail, title = denial
    status, body = problem_json(code, request_id=request.ctx.request_id, detail=detail, title=title)
    headers = [("Content-Type", PROBLEM_JSON)]
    if extra:
        headers.extend(extra.items())
    unread = request.body
    # A client that waits for `100 Continue` has not sent its body, and will not now.
    keep_alive = request.keep_alive and not (
        unread is not None and request.expect_continue and not unread.started
    )
    try:
        keep_alive = _answer(conn, request, status, headers, body, keep_alive=keep_alive)
    except ConnectionResetError:
        request.ctx.reasons.append("the client closed the connection before the answer")
        return status, False
    return status, keep_alive and await _drop_rest(request)


async def _decide_for_proxy(
    conn: FrontProtocol, request: FastRequest, services: Services
) -> tuple[int, bool]:
    """A forward-auth question about an API request (gateway.web.front.authz)."""
    answered = authz.answer(request, services.keyring.signer)
    if isinstance(answered, gate.Denial):
        return await _deny(conn, request, answered)
    status, headers = answered
    try:
        keep_alive = _answer(conn, request, status, headers, b"", keep_alive=request.keep_alive)
    except ConnectionResetError:
        return status, False
    return status, keep_alive


async def _drop_rest(request: FastRequest) -> bool:
    """Read and drop what is left of the request body, so the connection can carry the next
    request; False (close) if it does not end within LINGERING_TIME."""
    body = request.body
    if body is None or body.done:
        return True
    return await body.discard(LINGERING_TIME)


def _name_server(headers: list[tuple[str, str]]) -> None:
    """As on aiohttp's side (gateway.app.name_server): an upstream that is itself aiohttp
    sends aiohttp's Server value, whose versions help only attackers."""
    for index, (name, value) in enumerate(headers):
        if value == SERVER_SOFTWARE and name.lower() == "server":
            headers[index] = (name, SERVER_NAME)


async def _forward(
    conn: FrontProtocol, request: FastRequest, services: Services, answered: list[bool]
) -> tuple[int, bool]:
    ctx = request.ctx
    app = ctx.app
    assert app is not None and ctx.path is not None
    own_cookies = forward_headers.own_cookie_names(ctx.snapshot.config.sessions.cookie_name)
    headers = forward_headers.request_headers(
        request.headers,
        host=ctx.host.header if ctx.host is not None else None,
        client_ip=ctx.client_ip,
        secure=ctx.secure,
        request_id=ctx.request_id,
        identity=identity_headers(ctx, services.keyring.signer, time.time()),
        own_cookies=own_cookies,
        api_surface=True,
        drop_expect=True,  # the front answers `100 Continue` itself, once the gate said yes
        upstream=app.upstream,
    )
    body = request.body
    if body is not None and request.expect_continue and not body.started:
        conn.write(CONTINUE)
    try:
        upstream = await services.forwarder.client.request(
            app.upstream,
            request.method,
            app.upstream_target(ctx.path) + request.view.query,
            headers,
            body.chunks(idle=app.read_timeout) if body is not None else None,
            content_length=request.content_length if body is not None else None,
            connect_timeout=app.connect_timeout,
            read_timeout=app.read_timeout,
        )
    except ConnectionResetError as exc:
        ctx.reasons.append(f"upload cut short: {exc}")
        conn.cut()
        return CLIENT_CLOSED_REQUEST, False
    except UpstreamError as exc:
        verdict = decide.deny(exc.code, f"upstream {app.upstream}: {exc}")
        return await _deny(conn, request, gate.denial(ctx, verdict))

    status = upstream.status
    try:
        out = forward_headers.response_headers(upstream.headers, own_cookies)
        out.append(("X-Gateway-Request-Id", ctx.request_id))  # the upstream's is dropped
        _name_server(out)
        framed = frame(
            request.method,
            request.version,
            status,
            upstream.reason,
            out,
            keep_alive=request.keep_alive,
        )
        answered[0] = True
        if upstream.complete:  # the usual small response: head and body in one send
            data = b"" if framed.empty else upstream.read_now()
            if framed.chunked:
                data = (chunk(data) if data else b"") + LAST_CHUNK
            conn.write(framed.head + data)
        else:
            conn.write(framed.head)
            async for piece in upstream.chunks():
                conn.write(chunk(piece) if framed.chunked else piece)
                await conn.drain(app.read_timeout)
            if framed.chunked:
                conn.write(LAST_CHUNK)
        upstream.release()
    except (ConnectionResetError, UpstreamError) as exc:
        cut_mid_response(ctx, upstream, exc)
        conn.cut()
        return status, False
    except BaseException:
        upstream.close()
        raise
    return status, framed.keep_alive and await _drop_rest(request)
