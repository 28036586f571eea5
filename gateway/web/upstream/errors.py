"""What can go wrong talking to an upstream, as the proxy answers it: 502 or 504."""

from __future__ import annotations

from gateway.policy.decide import UPSTREAM_TIMEOUT, UPSTREAM_UNAVAILABLE


class UpstreamError(Exception):
    """The upstream could not give a response; `code` is the denial code the client gets."""

    code = UPSTREAM_UNAVAILABLE

    def __init__(self, message: str = "", code: str | None = None) -> None:
        super().__init__(message or self.code)
        if code is not None:
            self.code = code


class UpstreamUnavailable(UpstreamError):
    """Refused, reset, closed early or spoke something that is not HTTP/1.x: 502."""

    code = UPSTREAM_UNAVAILABLE


class UpstreamTimeout(UpstreamError):
    """No connection within the connect timeout, or no data within the read timeout: 504."""

    code = UPSTREAM_TIMEOUT
