"""The proxy's HTTP/1.1 client for upstreams (asyncio.Protocol + httptools); see client.py."""

from gateway.web.upstream.client import UpstreamClient, UpstreamResponse
from gateway.web.upstream.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable

__all__ = [
    "UpstreamClient",
    "UpstreamError",
    "UpstreamResponse",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]
