"""The benchmark's backend: a raw asyncio protocol that answers every request with 100 bytes.

Run: .venv/bin/python bench/backend.py --port 9001 [--host 127.0.0.1]

It is deliberately as cheap as a Python server can be (no aiohttp, no header parsing beyond
finding the end of the head and a Content-Length), so that it costs little next to the proxy
under test. HTTP/1.1 keep-alive, pipelining and request bodies with Content-Length are handled;
`Connection: close` closes after the answer; anything else it does not understand (chunked
request bodies) is answered 400 and the connection closed. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal

BODY = b"0123456789" * 10  # 100 bytes
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"\r\n" + BODY
)
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_HEAD = 64 * 1024


class Backend(asyncio.Protocol):
    __slots__ = ("buf", "skip", "transport")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = b""
        self.skip = 0  # body bytes still to discard

    def data_received(self, data: bytes) -> None:
        if self.skip:
            if len(data) <= self.skip:
                self.skip -= len(data)
                return
            data = data[self.skip :]
            self.skip = 0
        buf = self.buf + data if self.buf else data
        answers = 0
        close = False
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            buf = buf[end + 4 :]
            answers += 1
            lower = head.lower()
            if b"\ncontent-length:" in lower or b"\ntransfer-encoding:" in lower:
                length = _content_length(lower)
                if length is None:
                    self.transport.write(RESPONSE * (answers - 1) + BAD)  # type: ignore[attr-defined]
                    self.transport.close()
                    return
                if length >= len(buf):
                    self.skip = length - len(buf)
                    buf = b""
                else:
                    buf = buf[length:]
            if b"\nconnection: close" in lower:
                close = True
                break
        if len(buf) > MAX_HEAD:
            self.transport.close()
            return
        self.buf = buf
        if answers:
            self.transport.write(RESPONSE * answers if answers > 1 else RESPONSE)  # type: ignore[attr-defined]
        if close:
            self.transport.close()


def _content_length(lower_head: bytes) -> int | None:
    if b"\ntransfer-encoding:" in lower_head:
        return None
    for line in lower_head.split(b"\r\n")[1:]:
        if line.startswith(b"content-length:"):
            try:
                return int(line.split(b":", 1)[1].strip())
            except ValueError:
                return None
    return 0


async def main(host: str, port: int) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit("the benchmark backend listens on loopback addresses only")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Backend, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"backend listening on {host}:{port}", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
