"""Request-target normalisation: exact outputs and exact reasons.

The tables include the path classes behind published proxy bypasses: Envoy CVE-2019-9901
(dot-segments not normalised), CVE-2021-29492 and Istio CVE-2021-31920 (escaped slashes and
backslashes, merged slashes), Envoy CVE-2021-32779 and Traefik CVE-2023-47106 (fragments),
Traefik CVE-2025-32431 ("/../"), GHSA-vrch-868g-9jx5 ("%2e%2e"), CVE-2025-66490 (encoded "/",
"\\", NUL, ";", "?", "#"), CVE-2026-40912 ("/api%2e/" becoming a dot-segment after a prefix
strip), oauth2-proxy GHSA-7rh7-c77v-6434 (the query matched as if it were the path) and
GHSA-pxq7-h93f-9jrg ("#" read as a fragment by the backend only). Pomerium enforces on paths
Envoy hands it, so Envoy's classes are its classes.
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from gateway.web import paths
from gateway.web.paths import REASONS, AmbiguousPath, normalize_path, path_has_prefix


def reason_of(raw: str) -> str:
    with pytest.raises(AmbiguousPath) as caught:
        normalize_path(raw)
    return caught.value.reason


class TestUnchanged:
    """Paths that are already normal come back exactly as given."""

    @pytest.mark.parametrize(
        "raw",
        [
            "/",
            "/a",
            "/a/",
            "/api/v1/users/12345/orders",
            "/static/app.3f2a9c.js",
            "/api..",
            "/api../x",
            "/a.b/c..d/e.",
            "/...",
            "/~user/_x-y",
            "/a=b/c=d/d:e@f!$&'()*+,",
            "/api/..x",
        ],
    )
    def test_unchanged(self, raw: str) -> None:
        assert normalize_path(raw) == raw


class TestSlashes:
    """Repeated slashes are merged; a trailing slash is kept (Istio CVE-2021-31920)."""

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("//", "/"),
            ("///", "/"),
            ("//admin", "/admin"),
            ("/api//admin", "/api/admin"),
            ("/api///admin//", "/api/admin/"),
            ("/a/b//", "/a/b/"),
            ("//evil.example/x", "/evil.example/x"),
            ("/a//../b", "/b"),
        ],
    )
    def test_merged(self, raw: str, expected: str) -> None:
        assert normalize_path(raw) == expected


class TestDotSegments:
    """Literal "." and ".." are removed as in RFC 3986 5.2.4 (Envoy CVE-2019-9901)."""

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("/.", "/"),
            ("/./", "/"),
            ("/./admin", "/admin"),
            ("/a/./b", "/a/b"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a/../", "/"),
            ("/a/b/..", "/a/"),
            ("/a/b/../c", "/a/c"),
            ("/info/../private", "/private"),
            ("/a/b/../../c", "/c"),
            ("/a/./b/./../c/.", "/a/c/"),
            ("/a/.//b", "/a/b"),
            ("/public/../admin/", "/admin/"),
            ("/a/b/c/../../..", "/"),
        ],
    )
    def test_removed(self, raw: str, expected: str) -> None:
        assert normalize_path(raw) == expected

    @pytest.mark.parametrize(
        "raw",
        ["/..", "/../", "/../admin", "/a/../..", "/a/b/../../..", "/./..", "/a/../../b", "//../x"],
    )
    def test_above_root_rejected(self, raw: str) -> None:
        assert reason_of(raw) == "dot_segment_above_root"


class TestEncodedDots:
    """An encoded dot that makes up a dot-segment is rejected; inside a name it is decoded."""

    @pytest.mark.parametrize(
        "raw",
        [
            "/%2e",
            "/%2E/",
            "/%2e%2e",
            "/%2E%2E/admin",
            "/api/.%2e/admin",
            "/api/%2e./admin",
            "/api/%2E./admin",
            "/api/%2e/admin",
            "/myprefix/%2e%2e/some/non/exposed/path",
            "/a/b/%2e%2e/%2e%2e/c",
        ],
    )
    def test_dot_segment_rejected(self, raw: str) -> None:
        assert reason_of(raw) == "encoded_dot_segment"

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("/api%2e/admin/secret", "/api./admin/secret"),
            ("/api%2e%2e/", "/api../"),
            ("/%2e%2e%2e", "/..."),
            ("/%2eenv", "/.env"),
            ("/a%2E", "/a."),
            ("/.well-known/x", "/.well-known/x"),
            ("/.hidden/..", "/"),
        ],
    )
    def test_inside_name_decoded(self, raw: str, expected: str) -> None:
        assert normalize_path(raw) == expected

    def test_decoded_name_is_not_the_prefix(self) -> None:
        """The decoded "/api%2e/" is its own segment "api.", so an app at "/api" does not own it."""
        assert not path_has_prefix(normalize_path("/api%2e/admin"), "/api")


class TestEncodedSeparators:
    """Encoded slashes and backslashes are rejected, never decoded (Envoy CVE-2021-29492)."""

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            ("/api%2fadmin", "encoded_slash"),
            ("/api%2Fadmin", "encoded_slash"),
            ("/admin%2F", "encoded_slash"),
            ("/%2f%2fadmin", "encoded_slash"),
            ("/..%2f..%2fetc/passwd", "encoded_slash"),
            ("/api%5cadmin", "encoded_backslash"),
            ("/api%5Cadmin", "encoded_backslash"),
            ("/%2e%2e%5c", "encoded_backslash"),
        ],
    )
    def test_rejected(self, raw: str, reason: str) -> None:
        assert reason_of(raw) == reason


class TestRawCharacters:
    """Backslash, NUL, control characters, "#" and "?" are rejected raw (CVE-2025-66490)."""

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            ("/api\\admin", "backslash"),
            ("\\admin", "not_origin_form"),
            ("/\\\\evil.example", "backslash"),
            ("/a\x00b", "nul"),
            ("/admin\x00.png", "nul"),
            ("/a\tb", "control_char"),
            ("/a\nb", "control_char"),
            ("/a\rb", "control_char"),
            ("/a\x1fb", "control_char"),
            ("/a\x7fb", "control_char"),
            ("/admin#", "fragment"),
            ("/public#/../admin", "fragment"),
            ("/foo/#/bar", "fragment"),
            ("/a?b", "query"),
        ],
    )
    def test_rejected(self, raw: str, reason: str) -> None:
        assert reason_of(raw) == reason

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("/a b", "/a%20b"),
            ('/a"b', "/a%22b"),
            ("/a<b>", "/a%3Cb%3E"),
            ("/a{b}|^`", "/a%7Bb%7D%7C%5E%60"),
            ("/[x]", "/%5Bx%5D"),
        ],
    )
    def test_not_allowed_raw_is_encoded(self, raw: str, expected: str) -> None:
        assert normalize_path(raw) == expected


class TestEncodedControls:
    """NUL and control characters are rejected when percent-encoded too."""

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            ("/a%00", "nul"),
            ("/..%00/", "nul"),
            ("/admin%00.png", "nul"),
            ("/a%0a", "control_char"),
            ("/a%0D%0AX-Injected:%201", "control_char"),
            ("/a%09", "control_char"),
            ("/a%1F", "control_char"),
            ("/a%7f", "control_char"),
        ],
    )
    def test_rejected(self, raw: str, reason: str) -> None:
        assert reason_of(raw) == reason


class TestPercentEncoding:
    """Unreserved escapes are decoded, every other escape is kept with upper-case hex."""

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("/%41", "/A"),
            ("/%61%62%63", "/abc"),
            ("/%30%39", "/09"),
            ("/%2D%5F%7E%7e", "/-_~~"),
            ("/%7Euser", "/~user"),
            ("/%61dmin", "/admin"),
            ("/a%20b", "/a%20b"),
            ("/a%3a", "/a%3A"),
            ("/a%3Fb", "/a%3Fb"),
            ("/a%3fb", "/a%3Fb"),
            ("/a%25", "/a%25"),
            ("/%40%3a%2c", "/%40%3A%2C"),
            ("/a%2B", "/a%2B"),
            ("/a%ff", "/a%FF"),
            ("/%aA%Aa", "/%AA%AA"),
        ],
    )
    def test_normalised(self, raw: str, expected: str) -> None:
        assert normalize_path(raw) == expected

    def test_decoded_admin_matches_prefix(self) -> None:
        """The escaped "/%61dmin" is "/admin" for matching and forwarding alike."""
        assert path_has_prefix(normalize_path("/%61dmin/users"), "/admin")

    @pytest.mark.parametrize(
        "raw", ["/%", "/%zz", "/%4", "/a%4/b", "/%g0", "/%%41", "/%u002e", "/%2", "/x%"]
    )
    def test_malformed_rejected(self, raw: str) -> None:
        assert reason_of(raw) == "bad_percent_encoding"


class TestDoubleEncoding:
    """Decoding happens once: an escaped "%" stays escaped and the text after it is text."""

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("/%252e", "/%252e"),
            ("/%252E", "/%252E"),
            ("/%252e%252e/admin", "/%252e%252e/admin"),
            ("/%252f", "/%252f"),
            ("/%25%32%65", "/%252e"),
            ("/%2525", "/%2525"),
        ],
    )
    def test_decoded_once(self, raw: str, expected: str) -> None:
        assert normalize_path(raw) == expected


class TestFragmentEscape:
    """An escaped "#" (%23) is a literal inside a segment and stays encoded everywhere."""

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [("/a%23b", "/a%23b"), ("/admin%23", "/admin%23"), ("/%23/../x", "/x")],
    )
    def test_kept(self, raw: str, expected: str) -> None:
        assert normalize_path(raw) == expected

    def test_not_the_prefix(self) -> None:
        """The segment "admin%23" is a segment of its own, not "admin"."""
        assert not path_has_prefix(normalize_path("/admin%23"), "/admin")


class TestPathParameters:
    """Any ";" path parameter is rejected, raw or encoded: Tomcat, Jetty and Spring strip
    ";params" before routing, so "/admin;x" is their "/admin" and "/..;/admin" their "/../admin"."""

    @pytest.mark.parametrize(
        "raw",
        [
            "/settings;x/y",
            "/admin;jsessionid=1",
            "/api/x;y/z",
            "/api;/admin",
            "/..;/admin",
            "/api/..;/admin",
            "/api/..;jsessionid=1/admin",
            "/.;/admin",
            "/api/.;x/admin",
            "/api/%2e%2e;/admin",
            "/api/a..;/b",
            "/api/x;/../admin",
            "/api/..%3B/admin",
            "/api/x%3by/z",
            "/%3B",
        ],
    )
    def test_rejected(self, raw: str) -> None:
        assert reason_of(raw) == "path_params"


class TestUnicode:
    """Non-ASCII is percent-encoded as UTF-8; overlong UTF-8 for "." "/" "\\" is rejected."""

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("/caf\u00e9", "/caf%C3%A9"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/\u65e5\u672c", "/%E6%97%A5%E6%9C%AC"),
            ("/\U0001f600", "/%F0%9F%98%80"),
            ("/\uff0e\uff0e/admin", "/%EF%BC%8E%EF%BC%8E/admin"),
            ("/%ef%bc%8f", "/%EF%BC%8F"),
            ("/a\u0085b", "/a%C2%85b"),
            ("/latin1-%e9", "/latin1-%E9"),
            ("/raw-\udce9", "/raw-%E9"),
        ],
    )
    def test_encoded(self, raw: str, expected: str) -> None:
        assert normalize_path(raw) == expected

    @pytest.mark.parametrize(
        "raw",
        [
            "/%c0%ae",
            "/%C0%AE%C0%AE/admin",
            "/%c0%af",
            "/%c1%9c",
            "/%e0%80%ae",
            "/%f0%80%80%ae",
            "/\udcc0\udcae",
        ],
    )
    def test_overlong_rejected(self, raw: str) -> None:
        assert reason_of(raw) == "overlong_utf8"

    def test_lone_surrogate_rejected(self) -> None:
        """A surrogate that no UTF-8 decoder produces cannot be forwarded."""
        assert reason_of("/\ud800") == "bad_encoding"


class TestOriginForm:
    """Only origin-form is accepted here; absolute-form and "*" are the caller's business."""

    @pytest.mark.parametrize(
        "raw", ["", "*", "admin", "http://example.com/", "https://h/x", "%2F", "./a", " /a"]
    )
    def test_rejected(self, raw: str) -> None:
        assert reason_of(raw) == "not_origin_form"


class TestAmbiguousPath:
    """The exception carries a machine-usable reason and is a ValueError."""

    def test_reason_and_message(self) -> None:
        error = AmbiguousPath("nul")
        assert error.reason == "nul"
        assert str(error) == "nul"
        assert isinstance(error, ValueError)


class TestProperties:
    """Seeded random paths: the result is stable, canonical, and agrees with the slow path."""

    ALPHABET = ["a", "b", "/", "//", ".", "..", "%2e", "%2E", "%41", "%c3%a9", ";", "~", "%25"]

    def random_paths(self, count: int) -> list[str]:
        rng = random.Random(20240601)
        return [
            "/" + "".join(rng.choice(self.ALPHABET) for _ in range(rng.randint(0, 12)))
            for _ in range(count)
        ]

    def test_idempotent(self) -> None:
        """Normalising a normalised path changes nothing."""
        accepted = 0
        for raw in self.random_paths(5000):
            try:
                once = normalize_path(raw)
            except AmbiguousPath as error:
                assert error.reason in REASONS
                continue
            accepted += 1
            assert normalize_path(once) == once, raw
            assert "//" not in once and "/./" not in once and "/../" not in once
        assert accepted > 1000

    def test_fast_path_agrees_with_slow_path(self) -> None:
        """Whatever the fast path accepts unchanged, the full rules also leave unchanged."""
        rng = random.Random(7)
        alphabet = [*"abcXYZ019-._~!$&'()*+,;=:@/", ".", ".", ";", "/", "..", ".;"]
        checked = 0
        for _ in range(20000):
            raw = "/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
            if paths._FAST.fullmatch(raw):
                checked += 1
                assert paths._normalize_slow(raw) == raw
        assert checked > 5000


class TestPathHasPrefix:
    """Prefixes match whole segments; a trailing slash on the prefix also matches its bare name."""

    @pytest.mark.parametrize(
        ("path", "prefix", "expected"),
        [
            ("/api", "/api", True),
            ("/api/", "/api", True),
            ("/api/x", "/api", True),
            ("/apix", "/api", False),
            ("/ap", "/api", False),
            ("/", "/api", False),
            ("/anything", "/", True),
            ("/", "/", True),
            ("/x", "", True),
            ("/protection/", "/protection/", True),
            ("/protection/keys", "/protection/", True),
            ("/protection", "/protection/", True),
            ("/protectionist", "/protection/", False),
            ("/a/b/c", "/a/b", True),
            ("/a/bc", "/a/b", False),
            ("/api./admin", "/api", False),
        ],
    )
    def test_prefix(self, path: str, prefix: str, expected: bool) -> None:
        assert path_has_prefix(path, prefix) is expected


class TestPurity:
    """The module never imports aiohttp (docs/architecture.md: pure, testable without a server)."""

    def test_no_aiohttp(self) -> None:
        code = "import sys, gateway.web.paths; assert 'aiohttp' not in sys.modules"
        subprocess.run([sys.executable, "-c", code], check=True)
