"""Only same-origin relative `next` values are ever followed (no open redirects)."""

from __future__ import annotations

from urllib.parse import unquote


def safe_next(value: str | None, prefix: str, default: str = "/") -> str:
    """A path-absolute reference on this site, or `default`.

    Refused: scheme-relative (`//evil`), backslash tricks (`/\\evil`, which browsers read as
    `//evil`), any scheme (`javascript:`), control characters, the same after one round of
    percent-decoding, and the gateway's own sign-in pages (a loop).
    """
    if not value or len(value) > 2048:
        return default
    for candidate in (value, unquote(value)):
        if not candidate.startswith("/") or candidate.startswith(("//", "/\\")):
            return default
        if "\\" in candidate or any(ord(c) < 0x20 or ord(c) == 0x7F for c in candidate):
            return default
    path = value.split("?", 1)[0]
    if path.startswith(f"{prefix}/login") or path.startswith(f"{prefix}/logout"):
        return default
    return value
