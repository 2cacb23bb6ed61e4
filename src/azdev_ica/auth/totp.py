"""Time-based one-time passwords (RFC 6238: HMAC-SHA-1, 30-second steps, 6 digits), with
the secret encrypted at rest.

Verification answers the *time step* a code matched (one step of clock skew either way), so
the caller can refuse a step at or below the last one it accepted: a code is good once.
The secret is encrypted with AES-GCM under a key derived (HKDF) from the server secret, and
bound to the person it belongs to, so a row copied onto another person does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from datetime import datetime
from urllib.parse import quote, urlencode

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

STEP_SECONDS = 30
DIGITS = 6
SKEW_STEPS = 1
SECRET_BYTES = 20  # 160 bits, RFC 4226's recommendation for HMAC-SHA-1
_SEALED_VERSION = b"\x01"


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def time_step(at: datetime) -> int:
    return int(at.timestamp()) // STEP_SECONDS


def code_at_step(secret: bytes, step: int, digits: int = DIGITS) -> str:
    """The HOTP value (RFC 4226 §5.3) of `secret` for counter `step`."""
    digest = hmac.new(secret, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def matching_step(secret: bytes, code: str, at: datetime) -> int | None:
    """The time step within ±SKEW_STEPS of `at` whose code is `code`, or None.

    Every candidate is compared (constant time each), so timing says nothing about which
    step matched or how close a guess was.
    """
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    now = time_step(at)
    found: int | None = None
    for step in range(now - SKEW_STEPS, now + SKEW_STEPS + 1):
        if hmac.compare_digest(code_at_step(secret, step), code) and found is None:
            found = step
    return found


def provisioning_uri(secret: bytes, *, account: str, issuer: str) -> str:
    """The `otpauth://` URI an authenticator app reads (Key URI Format)."""
    label = quote(f"{issuer}:{account}", safe="@:")
    query = urlencode(
        {
            "secret": base64.b32encode(secret).decode().rstrip("="),
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_SECONDS,
        }
    )
    return f"otpauth://totp/{label}?{query}"


def _key(pepper: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"ica totp secret v1").derive(
        pepper
    )


def seal_secret(secret: bytes, *, pepper: bytes, person_id: int) -> bytes:
    nonce = secrets.token_bytes(12)
    aad = f"person:{person_id}".encode()
    return _SEALED_VERSION + nonce + AESGCM(_key(pepper)).encrypt(nonce, secret, aad)


def open_secret(sealed: bytes, *, pepper: bytes, person_id: int) -> bytes:
    """The TOTP secret; raises ValueError when it was not sealed for this person and key."""
    from cryptography.exceptions import InvalidTag

    if not sealed.startswith(_SEALED_VERSION) or len(sealed) < 1 + 12 + 16:
        raise ValueError("not a sealed TOTP secret")
    nonce, ciphertext = sealed[1:13], sealed[13:]
    try:
        return AESGCM(_key(pepper)).decrypt(nonce, ciphertext, f"person:{person_id}".encode())
    except InvalidTag:
        raise ValueError("the TOTP secret does not open with this key for this person") from None
