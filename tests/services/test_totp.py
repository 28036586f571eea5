"""TOTP codes, provisioning URI, QR code and recovery codes."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest

from gateway.services import totp

RFC_KEY = b"12345678901234567890"
RFC_SECRET = base64.b32encode(RFC_KEY).decode()  # GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ

# RFC 6238 Appendix B, SHA-1 column: (T, 8-digit TOTP).
RFC_6238_SHA1 = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]

OATHTOOL = shutil.which("oathtool")

SVG_NS = "{http://www.w3.org/2000/svg}"


def oathtool(secret: str, *extra: str) -> str:
    # Never a skip: scripts/system-packages.sh installs it, and a missing one fails the test.
    if OATHTOOL is None:
        pytest.fail("oathtool is not installed: run scripts/system-packages.sh")
    result = subprocess.run(
        [OATHTOOL, "--totp", "-b", secret, *extra],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return result.stdout.strip()


class TestRfc6238Vectors:
    """The RFC 6238 Appendix B SHA-1 vectors hold for pyotp and for our own verification path."""

    def test_secret_is_the_rfc_key(self) -> None:
        """The base32 secret decodes to the 20-byte ASCII key of the RFC."""
        assert RFC_SECRET == "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"

    @pytest.mark.parametrize(("t", "expected"), RFC_6238_SHA1)
    def test_pyotp_eight_digits(self, t: int, expected: str) -> None:
        """pyotp with 8 digits reproduces the published values."""
        assert pyotp.TOTP(RFC_SECRET, digits=8).at(t) == expected

    @pytest.mark.parametrize(("t", "expected"), RFC_6238_SHA1)
    def test_matching_step_accepts_six_digit_truncation(self, t: int, expected: str) -> None:
        """The last 6 digits of each vector match at its own step, without any drift."""
        assert totp.matching_step(RFC_SECRET, expected[-6:], t, drift_steps=0) == t // 30
        assert totp.matching_step(RFC_SECRET, expected[-6:], float(t)) == t // 30

    @pytest.mark.parametrize(("t", "expected"), RFC_6238_SHA1)
    def test_other_digits_refused(self, t: int, expected: str) -> None:
        """Changing one digit of a vector makes it a wrong code."""
        code = expected[-6:]
        wrong = code[:-1] + str((int(code[-1]) + 1) % 10)
        assert totp.matching_step(RFC_SECRET, wrong, t, drift_steps=0) is None


class TestOathtoolInterop:
    """Codes from an independent implementation (oathtool) are accepted by matching_step."""

    @pytest.mark.parametrize("t", [59, 1111111109, 1234567890, 1_700_000_000, 2000000000])
    def test_fixed_time(self, t: int) -> None:
        """oathtool --now at a fixed time and matching_step agree on code and step."""
        secret = totp.new_secret()
        code = oathtool(secret, f"--now=@{t}")
        assert re.fullmatch(r"[0-9]{6}", code)
        assert totp.matching_step(secret, code, t, drift_steps=0) == t // 30

    def test_rfc_vector_via_date_string(self) -> None:
        """oathtool given a calendar date reproduces an RFC vector that matching_step accepts."""
        code = oathtool(RFC_SECRET, "--now=2009-02-13 23:31:30 UTC")
        assert code == "005924"
        assert totp.matching_step(RFC_SECRET, code, 1234567890) == 1234567890 // 30

    def test_current_time(self) -> None:
        """A code oathtool makes now is accepted now (a step boundary in between is drift)."""
        secret = totp.new_secret()
        code = oathtool(secret)
        now = time.time()
        step = totp.matching_step(secret, code, now)
        assert step is not None
        assert step in (int(now // 30), int(now // 30) - 1)


class TestMatchingStep:
    """Drift window, malformed input and the returned step."""

    SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    NOW = 1_700_000_015.5  # mid-step
    STEP = int(NOW // 30)

    def code_at(self, step: int) -> str:
        return pyotp.TOTP(self.SECRET).generate_otp(step)

    @pytest.mark.parametrize("offset", [-1, 0, 1])
    def test_one_step_drift_accepted(self, offset: int) -> None:
        """Codes of the previous, current and next step match and return their own step."""
        step = self.STEP + offset
        assert totp.matching_step(self.SECRET, self.code_at(step), self.NOW) == step

    @pytest.mark.parametrize("offset", [-3, -2, 2, 3])
    def test_two_steps_refused(self, offset: int) -> None:
        """Codes two or more steps away are refused with the default drift."""
        code = self.code_at(self.STEP + offset)
        assert totp.matching_step(self.SECRET, code, self.NOW) is None

    def test_wider_drift_on_request(self) -> None:
        """drift_steps=2 accepts ±2; drift_steps=0 accepts only the current step."""
        assert totp.matching_step(self.SECRET, self.code_at(self.STEP - 2), self.NOW, 2) == (
            self.STEP - 2
        )
        assert totp.matching_step(self.SECRET, self.code_at(self.STEP + 1), self.NOW, 0) is None
        assert totp.matching_step(self.SECRET, self.code_at(self.STEP), self.NOW, 0) == self.STEP

    def test_negative_drift_is_an_error(self) -> None:
        """A negative drift is a programming error, not a refusal."""
        with pytest.raises(ValueError, match="drift_steps"):
            totp.matching_step(self.SECRET, "123456", self.NOW, -1)

    def test_step_boundaries(self) -> None:
        """t=30k is the first second of step k, t=30k-0.001 the last of step k-1."""
        code = self.code_at(self.STEP)
        boundary = self.STEP * 30
        assert totp.matching_step(self.SECRET, code, boundary, 0) == self.STEP
        assert totp.matching_step(self.SECRET, code, boundary - 0.001, 0) is None

    def test_near_epoch_no_negative_steps(self) -> None:
        """At t=0 the previous step does not exist; the current code still matches."""
        assert totp.matching_step(self.SECRET, self.code_at(0), 0.0) == 0
        assert totp.matching_step(self.SECRET, self.code_at(1), 0.0) == 1

    @pytest.mark.parametrize("spaced", ["{a} {b}", " {a}{b} ", "{a}\t{b}", "{a}\u00a0{b}"])
    def test_spaces_ignored(self, spaced: str) -> None:
        """Authenticators show '123 456'; spaces and tabs around and inside are ignored."""
        code = self.code_at(self.STEP)
        typed = spaced.format(a=code[:3], b=code[3:])
        assert totp.matching_step(self.SECRET, typed, self.NOW) == self.STEP

    @pytest.mark.parametrize(
        "code",
        [
            "",
            "      ",
            "12345",
            "1234567",
            "12a456",
            "123-456",
            "+12345",
            "-12345",
            "12345.",
            "\u00b9\u00b2\u00b3456",  # superscripts: isdigit() but not decimal digits
            "\u2460\u2461\u2462456",  # circled digits
            "1" * 10_000,
        ],
    )
    def test_malformed_refused(self, code: str) -> None:
        """Anything but exactly 6 ASCII digits is refused without raising."""
        assert totp.matching_step(self.SECRET, code, self.NOW) is None

    @pytest.mark.parametrize(
        ("zero", "label"),
        [
            (0xFF10, "fullwidth"),
            (0x0660, "Arabic-Indic"),
            (0x06F0, "Persian"),
            (0x0966, "Devanagari"),
        ],
    )
    def test_other_decimal_digits_accepted(self, zero: int, label: str) -> None:
        """Phone keyboards in other scripts type their own digits; they mean the same code."""
        code = self.code_at(self.STEP)
        typed = "".join(chr(zero + int(d)) for d in code)
        assert totp.matching_step(self.SECRET, typed, self.NOW) == self.STEP, label

    def test_lower_case_secret(self) -> None:
        """A lower-case base32 secret gives the same codes."""
        code = self.code_at(self.STEP)
        assert totp.matching_step(self.SECRET.lower(), code, self.NOW) == self.STEP


class TestNewSecret:
    """Fresh secrets are 160 random bits in base32."""

    def test_shape(self) -> None:
        """32 base32 characters without padding that decode to 20 bytes."""
        secret = totp.new_secret()
        assert re.fullmatch(r"[A-Z2-7]{32}", secret)
        assert len(base64.b32decode(secret)) == 20

    def test_unique(self) -> None:
        """No two secrets are the same."""
        assert len({totp.new_secret() for _ in range(100)}) == 100


class TestProvisioningUri:
    """The otpauth URI carries issuer, account and secret where authenticator apps look."""

    def test_parses(self) -> None:
        """Label is 'Issuer:account', query has secret and issuer, scheme otpauth, type totp."""
        secret = totp.new_secret()
        uri = totp.provisioning_uri(secret, "alice@example.com", "Acme Dashboard")
        parts = urlsplit(uri)
        assert parts.scheme == "otpauth"
        assert parts.netloc == "totp"
        assert unquote(parts.path) == "/Acme Dashboard:alice@example.com"
        query = parse_qs(parts.query)
        assert query["secret"] == [secret]
        assert query["issuer"] == ["Acme Dashboard"]
        assert uri.startswith("otpauth://totp/Acme%20Dashboard:alice%40example.com?")

    def test_codes_from_the_uri_verify(self) -> None:
        """An app that imports the URI produces codes that matching_step accepts."""
        secret = totp.new_secret()
        app = pyotp.parse_uri(totp.provisioning_uri(secret, "alice", "Acme"))
        now = 1_700_000_000
        assert totp.matching_step(secret, app.at(now), now) == now // 30

    @pytest.mark.parametrize(
        ("account", "issuer", "what"),
        [("al:ice", "Acme", "account"), ("alice", "Acme:Corp", "issuer"), ("", "Acme", "account")],
    )
    def test_colons_and_empty_refused(self, account: str, issuer: str, what: str) -> None:
        """A colon would split the label in the wrong place; the error names the field."""
        with pytest.raises(ValueError, match=what):
            totp.provisioning_uri(totp.new_secret(), account, issuer)


class TestQrSvg:
    """The QR code is inline SVG: valid XML, titled, scalable, dark on white, quiet zone."""

    URI = "otpauth://totp/Acme%20Dashboard:alice?secret=JBSWY3DPEHPK3PXP&issuer=Acme%20Dashboard"

    def test_valid_xml_with_title(self) -> None:
        """It parses as XML, its root is <svg> and its first child a non-empty <title>."""
        svg = totp.qr_svg(self.URI)
        root = ET.fromstring(svg)
        assert root.tag == f"{SVG_NS}svg"
        title = root.find(f"{SVG_NS}title")
        assert title is not None
        assert title.text
        assert root[0] is title

    def test_inline_ready(self) -> None:
        """No XML declaration or doctype, one line, and no script."""
        svg = totp.qr_svg(self.URI)
        assert svg.startswith("<svg")
        assert "<?xml" not in svg
        assert "<!DOCTYPE" not in svg
        assert "<script" not in svg
        assert "\n" not in svg

    def test_scalable_with_quiet_zone(self) -> None:
        """viewBox only (no width/height); the size is a QR version plus a 4-module border."""
        root = ET.fromstring(totp.qr_svg(self.URI))
        assert "width" not in root.attrib
        assert "height" not in root.attrib
        x, y, w, h = (float(v) for v in root.attrib["viewBox"].split())
        assert (x, y) == (0, 0)
        assert w == h
        modules = w / 4  # scale 4
        symbol = modules - 2 * 4
        assert symbol >= 21
        assert (symbol - 17) % 4 == 0  # version n has 17 + 4n modules

    def test_dark_on_white(self) -> None:
        """An opaque white background and black modules."""
        svg = totp.qr_svg(self.URI)
        assert 'fill="#fff"' in svg
        assert 'stroke="#000"' in svg

    def test_title_is_escaped(self) -> None:
        """A custom title with markup stays text."""
        svg = totp.qr_svg(self.URI, title='Scan <b>me</b> & "go"')
        root = ET.fromstring(svg)
        title = root.find(f"{SVG_NS}title")
        assert title is not None
        assert title.text == 'Scan <b>me</b> & "go"'
        assert "<b>" not in svg


class TestRecoveryCodes:
    """Recovery codes: readable, unique, stored only as salted hashes, normalised on input."""

    def test_shape_and_uniqueness(self) -> None:
        """Ten distinct codes xxxxx-xxxxx from the unambiguous alphabet."""
        codes = totp.new_recovery_codes()
        assert len(codes) == 10
        assert len(set(codes)) == 10
        alphabet = re.escape(totp.RECOVERY_ALPHABET)
        for code in codes:
            assert re.fullmatch(rf"[{alphabet}]{{5}}-[{alphabet}]{{5}}", code)
        assert not set("01ilo") & set(totp.RECOVERY_ALPHABET)

    def test_count(self) -> None:
        """n chooses how many; different batches differ."""
        assert len(totp.new_recovery_codes(3)) == 3
        assert set(totp.new_recovery_codes()).isdisjoint(totp.new_recovery_codes())

    def test_round_trip(self) -> None:
        """A code matches its own hash; the hash does not contain the code."""
        code = totp.new_recovery_codes(1)[0]
        code_hash = totp.hash_recovery_code(code)
        assert code_hash.startswith("$scrypt$ln=12,r=8,p=1$")
        assert code.replace("-", "") not in code_hash
        assert totp.recovery_code_matches(code, code_hash)

    def test_salted(self) -> None:
        """The same code hashed twice gives two different hashes that both match."""
        first, second = (
            totp.hash_recovery_code("abcde-fghjk"),
            totp.hash_recovery_code("abcdefghjk"),
        )
        assert first != second
        assert totp.recovery_code_matches("abcde-fghjk", second)
        assert totp.recovery_code_matches("abcdefghjk", first)

    @pytest.mark.parametrize(
        "typed", ["ABCDE-FGHJK", "abcde fghjk", " AbCdE FgHjK ", "abcdefghjk", "ab-cde-fg hjk"]
    )
    def test_normalisation_accepted(self, typed: str) -> None:
        """Upper case, spaces and dashes anywhere do not matter."""
        code_hash = totp.hash_recovery_code("abcde-fghjk")
        assert totp.recovery_code_matches(typed, code_hash)
        assert totp.looks_like_recovery_code(typed)

    @pytest.mark.parametrize("typed", ["abcde-fghjm", "abcde-fghj", "abcde-fghjkk", "", "x" * 100])
    def test_wrong_code_refused(self, typed: str) -> None:
        """A different, shorter, longer or empty code does not match."""
        code_hash = totp.hash_recovery_code("abcde-fghjk")
        assert not totp.recovery_code_matches(typed, code_hash)

    @pytest.mark.parametrize(
        "bad_hash",
        [
            "",
            "abcde-fghjk",
            "$scrypt$",
            "$scrypt$ln=12,r=8,p=1$$",
            "$scrypt$ln=12,r=8,p=1$not base64!$AAAA",
            "$scrypt$ln=12,r=8$c2FsdHNhbHRzYWx0$" + "A" * 43,
            "$scrypt$ln=30,r=8,p=1$c2FsdHNhbHRzYWx0$" + "A" * 43,  # 2**30: would need 1 GiB
            "$scrypt$ln=x,r=8,p=1$c2FsdHNhbHRzYWx0$" + "A" * 43,
            "$scrypt$ln12r8p1$c2FsdHNhbHRzYWx0$" + "A" * 43,
            "$argon2id$v=19$m=65536,t=3,p=4$abc$def",
        ],
    )
    def test_malformed_hash_never_raises(self, bad_hash: str) -> None:
        """A damaged stored hash is a non-match, never an exception or a huge allocation."""
        assert not totp.recovery_code_matches("abcde-fghjk", bad_hash)

    def test_matching_recovery_code(self) -> None:
        """Finds which stored hash a code belongs to, or None."""
        codes = totp.new_recovery_codes(4)
        hashes = [totp.hash_recovery_code(c) for c in codes]
        assert totp.matching_recovery_code(codes[2].upper(), hashes) == 2
        assert totp.matching_recovery_code("zzzzz-zzzzz", hashes) is None
        assert totp.matching_recovery_code("123456", hashes) is None
        assert totp.matching_recovery_code(codes[0], []) is None

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("abcde-fghjk", True),
            ("ABCDE FGHJK", True),
            ("123456", False),
            ("123 456", False),
            ("", False),
            ("abcde-fghj", False),
            ("abcde-fghjk-x", False),
            ("abcde_fghjk", False),
            ("äbcde-fghjk", False),
            ("a" * 200, False),
        ],
    )
    def test_looks_like_recovery_code(self, text: str, expected: bool) -> None:
        """One form field takes both kinds: 6 digits are TOTP, 10 letters/digits recovery."""
        assert totp.looks_like_recovery_code(text) is expected
