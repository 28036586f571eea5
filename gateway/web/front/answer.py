"""Response heads the front writes itself, framed the way aiohttp frames the gateway's other
responses (so a client cannot tell which part of the gateway answered):

- no body for HEAD, 1xx, 204 and 304; Content-Length dropped for 1xx, 204 and 304;
- the upstream's Content-Length kept; without one, chunked for HTTP/1.1 clients, and for
  HTTP/1.0 clients the body runs to the end of the connection;
- `Content-Type: application/octet-stream` for a body without a type (RFC 9110 8.3), a `Date`,
  `Server: gateway` unless the upstream named itself, `Connection` as the version needs.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final, NamedTuple

from aiohttp.helpers import rfc822_formatted_time

SERVER_NAME: Final = "gateway"
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUS: Final = frozenset({204, 304})


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class Framed(NamedTuple):
    head: bytes
    chunked: bool  # the body goes out in chunks
    keep_alive: bool  # the connection stays open after this response
    empty: bool  # no body may be sent


def frame(
    method: str,
    version: str,
    status: int,
    reason: str | None,
    headers: list[tuple[str, str]],
    *,
    keep_alive: bool,
    body_length: int | None = None,
) -> Framed:
    """The encoded head of a response and how its body goes out. `headers` are the response's
    own (hop-by-hop ones already removed); the framing and defaults are added here.
    `body_length` is the length of a body the caller already holds (no Content-Length needed)."""
    empty = method == "HEAD" or status in _NO_BODY_STATUS or status < 200
    present = {name.lower(): value for name, value in headers}
    chunked = False
    if status in _NO_BODY_STATUS or status < 200:
        if "content-length" in present:
            headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
    elif body_length is not None and "content-length" not in present:
        headers.append(("Content-Length", str(body_length)))  # also for HEAD, as aiohttp
        present["content-length"] = str(body_length)
    if not empty:
        length = present.get("content-length")
        if length is None or not length.isdigit():
            if version == "1.1":
                chunked = True
                headers.append(("Transfer-Encoding", "chunked"))
            else:
                keep_alive = False  # HTTP/1.0 without a length: the end of the body is EOF
        if length != "0" and "content-type" not in present:
            headers.append(("Content-Type", "application/octet-stream"))
    if "date" not in present:
        headers.append(("Date", rfc822_formatted_time()))
    if "server" not in present:
        headers.append(("Server", SERVER_NAME))
    if "connection" not in present:
        if not keep_alive and version == "1.1":
            headers.append(("Connection", "close"))
        elif keep_alive and version == "1.0":
            headers.append(("Connection", "keep-alive"))
    if reason is None:
        reason = reason_phrase(status)
    text = "\r\n".join([f"HTTP/{version} {status} {reason}", *map(": ".join, headers)])
    head = (text + "\r\n\r\n").encode("utf-8", "surrogateescape")
    return Framed(head, chunked, keep_alive, empty)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK: Final = b"0\r\n\r\n"
