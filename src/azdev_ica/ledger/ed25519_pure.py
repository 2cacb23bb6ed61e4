"""Pure-Python Ed25519 (RFC 8032), standard library only.

Verification follows RFC 8032 section 5.1.7 with the *cofactorless* equation used by Go's
``crypto/ed25519`` and by OpenSSL (hence ``cryptography``): the signature ``R || S`` is accepted
only if ``S < L`` and the canonical encoding of ``[S]B - [k]A`` equals the 32 bytes of ``R``
exactly. Comparing encodings instead of decoding ``R`` rejects every non-canonical or invalid
``R`` (flipped sign bits, ``y >= p``, off-curve values) the way the Wycheproof vectors expect.
The public key ``A`` is decoded the way Go's ``edwards25519`` and OpenSSL decode it, so that
both signature back ends of this package agree on every input: a non-canonical ``y`` (``p <= y <
2**255``) is reduced modulo ``p`` and ``x = 0`` with the sign bit set is read as ``x = 0``. Those
encodings only arise for a handful of low-order points, never for an honestly generated key.

Signing is provided for tests and tooling; it is *not* constant time and must not be used
with secret keys in a setting where timing can be observed.

The code between the ``BEGIN``/``END`` markers below is also embedded, byte for byte, in
:mod:`azdev_ica.ledger.offline_verify` (which must run with the standard library alone); a test
keeps the two copies identical. It therefore uses only ``hashlib`` and names every private
helper ``_ed...``.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "ed25519_public_key",
    "ed25519_public_key_ok",
    "ed25519_sign",
    "ed25519_verify",
]

# ---- BEGIN embedded pure-Python Ed25519 (RFC 8032) ----
_ED_P = 2**255 - 19
_ED_L = 2**252 + 27742317777372353535851937790883648493
_ED_D = -121665 * pow(121666, _ED_P - 2, _ED_P) % _ED_P
_ED_D2 = 2 * _ED_D % _ED_P
_ED_SQRT_M1 = pow(2, (_ED_P - 1) // 4, _ED_P)

# A point in extended twisted Edwards coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z, xy = T/Z.
_EdPoint = tuple[int, int, int, int]

_ED_IDENTITY: _EdPoint = (0, 1, 1, 0)
_ED_BASE_Y = 4 * pow(5, _ED_P - 2, _ED_P) % _ED_P


def _ed_add(p: _EdPoint, q: _EdPoint) -> _EdPoint:
    """Add two points (add-2008-hwcd-3 for a = -1; complete, so it also doubles)."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    pp = _ED_P
    a = (y1 - x1) * (y2 - x2) % pp
    b = (y1 + x1) * (y2 + x2) % pp
    c = t1 * _ED_D2 % pp * t2 % pp
    d = 2 * z1 * z2 % pp
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % pp, g * h % pp, f * g % pp, e * h % pp)


def _ed_double(p: _EdPoint) -> _EdPoint:
    """Double a point (dbl-2008-hwcd for a = -1), cheaper than a general addition."""
    x1, y1, z1, _ = p
    pp = _ED_P
    a = x1 * x1 % pp
    b = y1 * y1 % pp
    c = 2 * z1 * z1 % pp
    e = ((x1 + y1) * (x1 + y1) - a - b) % pp
    g = b - a
    f = g - c
    h = -a - b
    return (e * f % pp, g * h % pp, f * g % pp, e * h % pp)


def _ed_negate(p: _EdPoint) -> _EdPoint:
    x, y, z, t = p
    return ((-x) % _ED_P, y, z, (-t) % _ED_P)


def _ed_recover_x(y: int, sign: int) -> int | None:
    """Return the x coordinate for ``y`` with the given sign bit, or None if there is none.

    For ``x = 0`` the sign bit is ignored (``-0 = 0``), matching Go and OpenSSL.
    """
    pp = _ED_P
    yy = y * y % pp
    u = (yy - 1) % pp
    v = (_ED_D * yy + 1) % pp
    v3 = v * v % pp * v % pp
    x = u * v3 % pp * pow(u * v3 % pp * v3 % pp * v % pp, (pp - 5) // 8, pp) % pp
    vxx = v * x % pp * x % pp
    if vxx == u:
        pass
    elif vxx == (-u) % pp:
        x = x * _ED_SQRT_M1 % pp
    else:
        return None
    if x & 1 != sign:
        x = (pp - x) % pp
    return x


def _ed_decode_point(data: bytes) -> _EdPoint | None:
    """Decode a 32-byte point as Go and OpenSSL do: y taken mod p, negative zero allowed."""
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y = (y & ((1 << 255) - 1)) % _ED_P
    x = _ed_recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % _ED_P)


def _ed_encode_point(p: _EdPoint) -> bytes:
    """Return the canonical 32-byte encoding of a point."""
    x, y, z, _ = p
    zinv = pow(z, _ED_P - 2, _ED_P)
    xa = x * zinv % _ED_P
    ya = y * zinv % _ED_P
    return (ya | ((xa & 1) << 255)).to_bytes(32, "little")


def _ed_base_point() -> _EdPoint:
    x = _ed_recover_x(_ED_BASE_Y, 0)
    if x is None:  # pragma: no cover - the base point is a constant of the curve
        raise AssertionError("invalid Ed25519 base point")
    return (x, _ED_BASE_Y, 1, x * _ED_BASE_Y % _ED_P)


_ED_BASE: _EdPoint = _ed_base_point()


def _ed_scalar_mult(scalar: int, p: _EdPoint) -> _EdPoint:
    """Return ``[scalar]p`` by left-to-right double-and-add (variable time)."""
    acc = _ED_IDENTITY
    for i in range(scalar.bit_length() - 1, -1, -1):
        acc = _ed_double(acc)
        if (scalar >> i) & 1:
            acc = _ed_add(acc, p)
    return acc


def _ed_double_scalar_mult(s: int, p: _EdPoint, k: int, q: _EdPoint) -> _EdPoint:
    """Return ``[s]p + [k]q`` with Straus' trick: one shared chain of doublings."""
    table = (_ED_IDENTITY, p, q, _ed_add(p, q))
    acc = _ED_IDENTITY
    for i in range(max(s.bit_length(), k.bit_length()) - 1, -1, -1):
        acc = _ed_double(acc)
        sel = ((s >> i) & 1) | (((k >> i) & 1) << 1)
        if sel:
            acc = _ed_add(acc, table[sel])
    return acc


def _ed_hash_int(*parts: bytes) -> int:
    digest = hashlib.sha512(b"".join(parts)).digest()
    return int.from_bytes(digest, "little")


def _ed_expand_seed(seed: bytes) -> tuple[int, bytes]:
    """Return the clamped secret scalar and the nonce prefix derived from a 32-byte seed."""
    if len(seed) != 32:
        raise ValueError("an Ed25519 private seed is 32 bytes")
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def ed25519_public_key(seed: bytes) -> bytes:
    """Return the 32-byte public key for a 32-byte private seed (RFC 8032 section 5.1.5)."""
    a, _ = _ed_expand_seed(seed)
    return _ed_encode_point(_ed_scalar_mult(a, _ED_BASE))


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    """Return the 64-byte signature of ``message`` (RFC 8032 section 5.1.6). Not constant time."""
    a, prefix = _ed_expand_seed(seed)
    public = _ed_encode_point(_ed_scalar_mult(a, _ED_BASE))
    r = _ed_hash_int(prefix, message) % _ED_L
    r_enc = _ed_encode_point(_ed_scalar_mult(r, _ED_BASE))
    k = _ed_hash_int(r_enc, public, message) % _ED_L
    s = (r + k * a) % _ED_L
    return r_enc + s.to_bytes(32, "little")


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Return True iff ``signature`` is a valid Ed25519 signature of ``message``.

    Cofactorless verification as in Go and OpenSSL: reject ``S >= L``, decode ``A`` strictly,
    and require ``encode([S]B - [k]A) == R`` byte for byte.
    """
    if len(public_key) != 32 or len(signature) != 64:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _ED_L:
        return False
    a_point = _ed_decode_point(public_key)
    if a_point is None:
        return False
    r_bytes = signature[:32]
    k = _ed_hash_int(r_bytes, public_key, message) % _ED_L
    check = _ed_double_scalar_mult(s, _ED_BASE, k, _ed_negate(a_point))
    return _ed_encode_point(check) == r_bytes


def ed25519_public_key_ok(public_key: bytes) -> bool:
    """Return True iff ``public_key`` is a canonical encoding of a point that is not of small
    order. Keys failing this can never come from honest key generation (some of them make
    signatures verify for many messages), so key parsers refuse them, as Go's ``note`` does.
    """
    point = _ed_decode_point(public_key)
    if point is None or _ed_encode_point(point) != public_key:
        return False
    x, y, z, _ = _ed_double(_ed_double(_ed_double(point)))
    return not (x % _ED_P == 0 and (y - z) % _ED_P == 0)


# ---- END embedded pure-Python Ed25519 ----
