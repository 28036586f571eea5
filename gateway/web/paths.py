"""Request-target normalisation (docs/http.md, request path step 2). Pure: never imports aiohttp.

`normalize_path` turns the raw path of the request target, exactly as it came off the wire, into
the one path the gateway matches against app prefixes, applies role rules to and forwards
upstream. Because all three use the same string, matching and forwarding cannot disagree, which
is the root cause of the path-confusion CVEs in Envoy, Traefik, Pomerium and oauth2-proxy.
Anything a backend could read differently from the gateway raises `AmbiguousPath` (answered 400)
instead of being guessed.

Rules, in order:

1. The path must start with "/" (origin-form). Absolute-form ("http://h/p") and "*" are the
   caller's business and are rejected here ("not_origin_form"). The caller has already split at
   the first "?", so a "?" here is rejected too ("query").
2. Raw characters: NUL ("nul"), other control characters < 0x20 and 0x7f ("control_char"), "\\"
   ("backslash") and "#" ("fragment": clients never send fragments) are rejected. Characters
   RFC 3986 does not allow raw in a path (space, '"', "<", ">", "[", "]", "{", "}", "|", "^", "`"
   and every non-ASCII character) are percent-encoded as UTF-8 with upper-case hex, so the
   spelled-out and the encoded form are one path. aiohttp decodes the target as UTF-8 with
   "surrogateescape"; raw bytes that are not UTF-8 are restored from the lone surrogates.
3. Percent-encoding: "%" not followed by two hex digits is rejected ("bad_percent_encoding").
   Overlong UTF-8 ("%C0%AE" for ".", "%C0%AF" for "/", "%E0%80%AE"...) is rejected
   ("overlong_utf8"): it is invalid UTF-8 whose only use is to smuggle "." and "/" past
   a decoder that is lenient. Encoded unreserved characters (ALPHA DIGIT - . _ ~) are decoded,
   "%41" -> "A". Encoded "/" ("encoded_slash"), "\\" ("encoded_backslash"), NUL ("nul") and
   control characters ("control_char") are rejected. Every other escape is kept as it is with
   upper-case hex ("%c3%a9" -> "%C3%A9"); decoding happens once only, so "%252e" stays "%252e"
   (an escaped "%" followed by the literal text "2e"; the "e" is text, not hex, so it keeps its
   case). "%23" stays "%23": it is a literal "#" inside a segment and cannot start a fragment
   while it stays encoded, which it does, for matching and forwarding alike.
4. Segments: repeated slashes are merged, then "." and ".." segments are removed as in RFC 3986
   section 5.2.4. A ".." that would climb above the root is rejected ("dot_segment_above_root")
   rather than clamped: a request for "/../x" is an attack or a bug, never a real link. A segment
   that is "." or ".." only after decoding ("%2e", ".%2E", "%2e%2e") is rejected
   ("encoded_dot_segment"). A segment that merely contains dots is a name: "api.." and "api."
   (from "api%2e") stay.
5. ";" path parameters are rejected ("path_params"), raw or encoded as "%3B": RFC 3986 gives
   ";" no special meaning, but Tomcat, Jetty and Spring strip ";params" from each segment before
   routing, so "/admin;x" reaches their "/admin" and "/..;/admin" their "/../admin" (Orange
   Tsai's "Breaking Parser Logic"). A path a backend reads differently is never guessed at.
6. A trailing slash is preserved; a path ending in "/." or "/.." ends with "/" (RFC 3986).

The common case (only characters allowed raw, no "%", no "//", no dot-segment, no ";") is
answered after one precompiled regex scan and returns the input unchanged.
"""

from __future__ import annotations

import re

REASONS = frozenset(
    {
        "not_origin_form",
        "query",
        "fragment",
        "nul",
        "control_char",
        "backslash",
        "bad_encoding",
        "bad_percent_encoding",
        "overlong_utf8",
        "encoded_slash",
        "encoded_backslash",
        "encoded_dot_segment",
        "dot_segment_above_root",
        "path_params",
    }
)


class AmbiguousPath(ValueError):
    """The request path could be read two ways; `reason` is one of REASONS (answered 400)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
# RFC 3986 pchar without pct-encoded: unreserved, sub-delims, ":" and "@"; without ";", which is
# rejected (rule 5).
_PCHAR = r"A-Za-z0-9\-._~!$&'()*+,=:@"

# One scan for the common case: "/" alone, or segments made of characters allowed raw that are
# not "." or ".." (".well-known" and "..." are fine).
# Possessive quantifiers: a path that fails (a "%" near the end) fails without backtracking.
_NO_DOT = _PCHAR.replace(".", "")
_SEGMENT = rf"(?:[{_NO_DOT}]|\.[{_NO_DOT}]|\.\.[{_PCHAR}])[{_PCHAR}]*+"
_FAST = re.compile(rf"/|(?:/{_SEGMENT})++/?")
_RAW_OTHER = re.compile(rf"[^{_PCHAR}%/]")
_OVERLONG = re.compile(r"%C[01]%[89AB][0-9A-F]|%E0%[89][0-9A-F]|%F0%8[0-9A-F]", re.IGNORECASE)


def _build_escape_tables() -> tuple[dict[str, str], dict[str, str]]:
    """Every two-hex-digit spelling (any case) -> its replacement, or -> why it is rejected."""
    keep: dict[str, str] = {}
    reject: dict[str, str] = {}
    for byte in range(256):
        upper = f"{byte:02X}"
        spellings = {upper, upper.lower(), upper[0] + upper[1].lower(), upper[0].lower() + upper[1]}
        char = chr(byte)
        for spelling in spellings:
            if char in _UNRESERVED:
                keep[spelling] = char
            elif byte == 0:
                reject[spelling] = "nul"
            elif byte < 0x20 or byte == 0x7F:
                reject[spelling] = "control_char"
            elif char == "/":
                reject[spelling] = "encoded_slash"
            elif char == "\\":
                reject[spelling] = "encoded_backslash"
            elif char == ";":
                reject[spelling] = "path_params"
            else:
                keep[spelling] = "%" + upper
    return keep, reject


_ESCAPE_KEEP, _ESCAPE_REJECT = _build_escape_tables()
_RAW_REJECT = {
    "\\": "backslash",
    "#": "fragment",
    "?": "query",
    ";": "path_params",
    "\x00": "nul",
    "\x7f": "control_char",
}


def _decode_segment(segment: str) -> str:
    """Decode the unreserved escapes of one segment, upper-case the others, reject the rest."""
    parts = segment.split("%")
    decoded = [parts[0]]
    for part in parts[1:]:
        replacement = _ESCAPE_KEEP.get(part[:2])
        if replacement is None:
            raise AmbiguousPath(_ESCAPE_REJECT.get(part[:2], "bad_percent_encoding"))
        decoded.append(replacement)
        decoded.append(part[2:])
    return "".join(decoded)


def _encode_raw(match: re.Match[str]) -> str:
    char = match.group()
    reason = _RAW_REJECT.get(char)
    if reason is None and char < " ":
        reason = "control_char"
    if reason is not None:
        raise AmbiguousPath(reason)
    try:
        data = char.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no UTF-8 decoder produced
        raise AmbiguousPath("bad_encoding") from None
    return "".join(f"%{byte:02X}" for byte in data)


def normalize_path(raw: str) -> str:
    """Return the normalised path of a raw origin-form request path, or raise AmbiguousPath."""
    if _FAST.fullmatch(raw):
        return raw
    if not raw.startswith("/"):
        raise AmbiguousPath("not_origin_form")
    return _normalize_slow(raw)


def _normalize_slow(raw: str) -> str:
    """The full rules of the module docstring; `raw` starts with "/"."""
    if _RAW_OTHER.search(raw):
        raw = _RAW_OTHER.sub(_encode_raw, raw)
    if "%" in raw and _OVERLONG.search(raw):
        raise AmbiguousPath("overlong_utf8")
    segments = raw.split("/")
    out: list[str] = []
    for segment in segments:
        if not segment:
            continue  # the leading "/" and repeated slashes
        if "%" in segment:
            decoded = _decode_segment(segment)
            if decoded in (".", ".."):
                raise AmbiguousPath("encoded_dot_segment")
            segment = decoded
        if segment[0] == ".":
            if segment == ".":
                continue
            if segment == "..":
                if not out:
                    raise AmbiguousPath("dot_segment_above_root")
                out.pop()
                continue
        out.append(segment)
    if not out:
        return "/"
    path = "/" + "/".join(out)
    if segments[-1] in ("", ".", ".."):
        path += "/"
    return path


def path_has_prefix(path: str, prefix: str) -> bool:
    """Segment-aware prefix test on normalised paths.

    "/api" matches "/api", "/api/" and "/api/x" but not "/apix". A trailing slash on the prefix
    changes nothing: "/protection/" matches "/protection/..." and also "/protection" exactly, so
    an app mounted at "/protection/" owns its bare name instead of leaving it to an app at "/".
    "/" (and "") matches every path.
    """
    if prefix.endswith("/"):
        prefix = prefix[:-1]
    if not path.startswith(prefix):
        return False
    return len(path) == len(prefix) or path[len(prefix)] == "/"
