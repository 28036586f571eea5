"""The gateway's secret key, the sub-keys derived from it, and sealing of data at rest.

Every feature derives its own sub-key with HKDF and a purpose label, so the audit chain, the
session cookie signature and the encryption of TOTP secrets never share key material.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ENV_VAR = "GATEWAY_SECRET_KEY"
MIN_KEY_BYTES = 32


class SecretKeyError(Exception):
    """The secret key is missing, unreadable or too short; the message says how to fix it."""


class SealError(Exception):
    """Sealed data could not be opened: wrong key, or the data was altered."""


@dataclass(frozen=True, slots=True)
class SecretKey:
    """The master key. Never logged; repr shows only where it came from."""

    material: bytes
    origin: str

    def __repr__(self) -> str:
        return f"SecretKey(origin={self.origin!r})"

    def derive(self, purpose: str, length: int = 32) -> bytes:
        return HKDF(
            algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode()
        ).derive(self.material)

    def sealer(self, purpose: str) -> Sealer:
        return Sealer(self.derive(f"seal:{purpose}"))


class Sealer:
    """AES-256-GCM with a random nonce; the associated data binds a ciphertext to its owner."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, associated: bytes = b"") -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def open(self, sealed: bytes, associated: bytes = b"") -> bytes:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], associated)
        except (InvalidTag, ValueError) as exc:
            raise SealError("sealed data could not be opened (wrong secret key?)") from exc


def _decode(text: str, origin: str) -> bytes:
    text = text.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SecretKeyError(f"{origin}: not urlsafe base64") from exc
    if len(raw) < MIN_KEY_BYTES:
        raise SecretKeyError(
            f"{origin}: the key has {len(raw)} bytes, at least {MIN_KEY_BYTES} are needed; "
            "delete the file to have a new one generated"
        )
    return raw


def load_secret_key(path: Path | None, environ: dict[str, str] | None = None) -> SecretKey:
    """Env var first, then the file; a missing file is created with a new random key (0600)."""
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR):
        return SecretKey(_decode(env[ENV_VAR], f"env {ENV_VAR}"), f"env {ENV_VAR}")
    if path is None:
        raise SecretKeyError(f"no secret key: set secret_key_file in gateway.yaml or {ENV_VAR}")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        encoded = base64.urlsafe_b64encode(secrets.token_bytes(MIN_KEY_BYTES)).decode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another worker created it first: read theirs
        else:
            with os.fdopen(fd, "w") as f:
                f.write(encoded + "\n")
    try:
        text = path.read_text()
    except OSError as exc:
        raise SecretKeyError(f"{path}: cannot read the secret key ({exc.strerror})") from exc
    return SecretKey(_decode(text, str(path)), str(path))
