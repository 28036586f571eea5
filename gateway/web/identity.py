"""Identity headers for backends (PRODUCT.md section 5). Added after every inbound claim is gone."""

from __future__ import annotations

from gateway.context import RequestContext
from gateway.services.signing import Signer, mint


def identity_headers(ctx: RequestContext, signer: Signer, now: float) -> dict[str, str]:
    assert ctx.principal is not None and ctx.app is not None and ctx.auth is not None
    role = ctx.role or ""
    headers = {
        "X-Gateway-User": ctx.principal,
        "X-Gateway-Role": role,
        "X-Gateway-Auth": ctx.auth,
        "X-Gateway-Assertion": mint(
            signer,
            sub=ctx.principal,
            email=ctx.email,
            role=role,
            app=ctx.app.name,
            auth=ctx.auth,
            request_id=ctx.request_id,
            now=now,
        ),
    }
    if ctx.email:
        headers["X-Gateway-Email"] = ctx.email
    return headers
