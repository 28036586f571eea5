"""TOTP second factor (RFC 6238), its QR code, and one-time recovery codes.

Pure functions: the callers keep the state. A TOTP secret is sealed with
``SecretKey.sealer("totp")`` before it is stored, the last accepted time step is kept per user
(``totp_claim_step``), and only hashes of recovery codes are stored.

The parameters are the ones every authenticator app understands without being told: 6 digits,
a 30 second period, HMAC-SHA-1. They are therefore left out of the provisioning URI.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import re
import secrets
import unicodedata
from collections.abc import Sequence

import pyotp
import segno

DIGITS = 6
PERIOD = 30
SECRET_BYTES = 20  # 160 bits, the HMAC-SHA-1 block-size recommendation of RFC 4226 section 4

# Recovery codes: ten symbols from an alphabet without look-alikes (no 0/o, 1/l/i), shown as
# xxxxx-xxxxx. 31 symbols ** 10 = about 49.5 bits of entropy per code.
RECOVERY_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
RECOVERY_LENGTH = 10
RECOVERY_COUNT = 10

# Recovery code hashes: scrypt with a random salt per code and a low cost (4 MiB, ~15 ms).
# A code has ~50 random bits, so it needs no slow password hash against guessing; the salt stops
# precomputed tables and the memory cost makes an offline search over 2**49 codes hopeless.
# A sign-in with a recovery code checks the user's unused codes (at most 10, ~150 ms), which is
# in line with one argon2 password check. Parameters are stored in the hash, so they can change.
_SCRYPT_LOG2_N = 12
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_SALT_BYTES = 16
_SCRYPT_DKLEN = 32
_SCRYPT_PREFIX = "$scrypt$"

_CODE_RE = re.compile(r"[0-9]{6}")
_MAX_INPUT_CHARS = 64  # anything longer is neither a TOTP code nor a recovery code


def new_secret() -> str:
    """A new random TOTP secret: 160 bits as 32 base32 characters (no padding)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The ``otpauth://totp/Issuer:account?secret=...&issuer=...`` URI authenticator apps import.

    Raises ValueError when issuer or account contains a colon: the Key URI format splits the
    label at the colon, so apps would show the wrong names.
    """
    for what, value in (("issuer", issuer), ("account", account)):
        if ":" in value:
            raise ValueError(f"the TOTP {what} must not contain ':' (got {value!r})")
        if not value:
            raise ValueError(f"the TOTP {what} must not be empty")
    return _totp(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(uri: str, title: str = "QR code to add this account to an authenticator app") -> str:
    """The URI as an inline SVG QR code, ready to embed in HTML.

    No XML declaration and no fixed width/height (a viewBox only, so CSS sizes it), a ``<title>``
    as its accessible name, dark modules on an opaque white background and the standard quiet
    zone of 4 modules, so phone cameras read it on dark pages too. segno escapes the title.
    """
    qr = segno.make(uri, micro=False)
    out = io.BytesIO()
    # svg_inline() would drop the SVG namespace; keeping it makes the markup valid standalone
    # XML as well (and it is harmless in HTML).
    qr.save(
        out,
        kind="svg",
        xmldecl=False,
        svgns=True,
        nl=False,
        encoding="utf-8",
        scale=4,
        border=4,
        dark="#000",
        light="#fff",
        title=title,
        omitsize=True,
    )
    return out.getvalue().decode("utf-8")


def normalise_code(code: str) -> str | None:
    """The code as 6 ASCII digits, or None if it is anything else.

    Spaces are dropped, and decimal digits of other scripts (fullwidth, Arabic-Indic,
    Devanagari...), which some phone keyboards type, become their ASCII digit.
    """
    if len(code) > _MAX_INPUT_CHARS:
        return None
    compact = "".join(code.split())
    ascii_digits = "".join(
        str(value) if (value := unicodedata.decimal(ch, None)) is not None else ch for ch in compact
    )
    return ascii_digits if _CODE_RE.fullmatch(ascii_digits) else None


def matching_step(secret: str, code: str, now: float, drift_steps: int = 1) -> int | None:
    """The time step (``floor(t / 30)``) whose code is ``code``, or None.

    Spaces are ignored ("123 456"); anything but exactly 6 digits is refused (see
    normalise_code). The code is compared in constant time with the codes of the current step and
    of ``drift_steps`` steps before and after it (clock drift of the phone), the current step
    first. The step is the HOTP counter of RFC 4226, an integer.

    A match alone must not let the user in: a TOTP code stays valid for up to 90 seconds, so
    whoever watched it being typed could replay it. The caller claims the returned step atomically
    in the state store, ``totp_claim_step(user, step)``, which succeeds only if the step is greater
    than the last step claimed for that user, and accepts the code only then. That way every code
    is accepted at most once, and never a code older than one already used.
    """
    if drift_steps < 0:
        raise ValueError(f"drift_steps must be 0 or more (got {drift_steps})")
    normalised = normalise_code(code)
    if normalised is None:
        return None
    totp = _totp(secret)
    current = int(now // PERIOD)
    offsets = [0]
    for distance in range(1, drift_steps + 1):
        offsets += [-distance, distance]
    matched: int | None = None
    for offset in offsets:  # no early exit: the time taken does not depend on which step matched
        step = current + offset
        if step < 0:
            continue
        if hmac.compare_digest(totp.generate_otp(step), normalised) and matched is None:
            matched = step
    return matched


def new_recovery_codes(n: int = RECOVERY_COUNT) -> list[str]:
    """``n`` distinct random recovery codes, formatted ``xxxxx-xxxxx``, to show the user once."""
    codes: set[str] = set()
    while len(codes) < n:
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
        codes.add(f"{raw[:5]}-{raw[5:]}")
    return sorted(codes)


def normalise_recovery_code(text: str) -> str:
    """Lower-case, without spaces and dashes: ``"ABCDE FGHJK"`` and ``"abcde-fghjk"`` are equal."""
    return "".join(text.split()).replace("-", "").lower()


def looks_like_recovery_code(text: str) -> bool:
    """True if ``text`` is meant as a recovery code rather than a TOTP code.

    The 2FA form has one field for both. Ten letters and digits after normalising count as a
    recovery attempt (a mistyped one is then refused as a wrong code, not as malformed input).
    """
    if len(text) > _MAX_INPUT_CHARS:
        return False
    normalised = normalise_recovery_code(text)
    return len(normalised) == RECOVERY_LENGTH and normalised.isascii() and normalised.isalnum()


def hash_recovery_code(code: str) -> str:
    """``$scrypt$ln=12,r=8,p=1$<salt>$<hash>`` of the normalised code; only this is stored."""
    salt = secrets.token_bytes(_SCRYPT_SALT_BYTES)
    derived = _scrypt(normalise_recovery_code(code), salt, _SCRYPT_LOG2_N, _SCRYPT_R, _SCRYPT_P)
    params = f"ln={_SCRYPT_LOG2_N},r={_SCRYPT_R},p={_SCRYPT_P}"
    return f"{_SCRYPT_PREFIX}{params}${_b64(salt)}${_b64(derived)}"


def recovery_code_matches(code: str, code_hash: str) -> bool:
    """True if ``code`` is the code behind ``code_hash``; never raises on a malformed hash."""
    if len(code) > _MAX_INPUT_CHARS:
        return False
    parsed = _parse_hash(code_hash)
    if parsed is None:
        return False
    log2_n, r, p, salt, expected = parsed
    derived = _scrypt(normalise_recovery_code(code), salt, log2_n, r, p, len(expected))
    return hmac.compare_digest(derived, expected)


def matching_recovery_code(code: str, code_hashes: Sequence[str]) -> int | None:
    """The index of the hash in ``code_hashes`` that ``code`` matches, or None.

    The caller then removes that hash atomically (a recovery code works once) and treats a
    failed removal as a wrong code.
    """
    if not looks_like_recovery_code(code):
        return None
    for index, code_hash in enumerate(code_hashes):
        if recovery_code_matches(code, code_hash):
            return index
    return None


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, digest=hashlib.sha1, interval=PERIOD)


def _scrypt(normalised: str, salt: bytes, log2_n: int, r: int, p: int, dklen: int = 32) -> bytes:
    return hashlib.scrypt(
        normalised.encode("utf-8"), salt=salt, n=1 << log2_n, r=r, p=p, dklen=dklen, maxmem=0
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _parse_hash(code_hash: str) -> tuple[int, int, int, bytes, bytes] | None:
    """(log2_n, r, p, salt, derived) or None when the hash is not one of ours or out of bounds."""
    if not code_hash.startswith(_SCRYPT_PREFIX):
        return None
    parts = code_hash[len(_SCRYPT_PREFIX) :].split("$")
    if len(parts) != 3:
        return None
    params_text, salt_text, derived_text = parts
    try:
        params = dict(item.split("=", 1) for item in params_text.split(","))
        log2_n, r, p = int(params["ln"]), int(params["r"]), int(params["p"])
        salt, derived = _unb64(salt_text), _unb64(derived_text)
    except (KeyError, ValueError):  # binascii.Error is a ValueError
        return None
    # Bounds keep a corrupted or hostile stored value from costing gigabytes of memory.
    if not (1 <= log2_n <= 16 and 1 <= r <= 16 and 1 <= p <= 4):
        return None
    if len(salt) < 8 or not 16 <= len(derived) <= 64:
        return None
    return log2_n, r, p, salt, derived
