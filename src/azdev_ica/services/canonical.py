"""Canonical JSON (RFC 8785), the bytes `rfc8785.dumps` gives, at the speed of `json.dumps`.

Audit records and idempotency fingerprints are canonical JSON, two per write. The `rfc8785`
package writes it value by value in Python; `json.dumps` (its C encoder) writes the same bytes
for the values a request carries, given sorted keys, no whitespace and UTF-8 left as is:

- strings: both escape `"`, `\\`, `\\b \\f \\n \\r \\t` and other control characters as
  `\\u00xx` (lower-case hex), and nothing else;
- keys sort alike when they hold no character beyond U+FFFF (RFC 8785 sorts by UTF-16 code
  units, Python by code points; the two orders differ only there);
- integers alike inside JSON's safe range (±(2**53 - 1)); outside it `rfc8785` refuses;
- floats alike when finite, not integral and |x| >= 1e-4: there Python's shortest repr is
  ECMAScript's too (integral floats print as `2.0` in Python and `2` in RFC 8785, and every
  float from 2**53 up is integral; below 1e-4 Python writes an exponent, ECMAScript down to
  1e-7 does not).

`dumps` checks that a value holds only such parts (exact types, no subclasses: an enum's
value is left to `rfc8785`) and otherwise hands it to `rfc8785`, so every output and every
refusal is the one `rfc8785` gives (tests/services/test_canonical.py holds it to that).
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

_SAFE_INT = 2**53 - 1
_encode = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode


def dumps(value: Any) -> bytes:
    """RFC 8785 canonical JSON of `value`, as `rfc8785.dumps(value)`."""
    if _plain(value):
        try:
            return _encode(value).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: rfc8785 refuses it in its own words
    return bytes(rfc8785.dumps(value))


def _plain(value: Any) -> bool:
    """Whether `json.dumps` writes `value` exactly as RFC 8785 does (see the module)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-_SAFE_INT <= value <= _SAFE_INT)
    if kind is float:
        magnitude = abs(value)
        return bool(1e-4 <= magnitude < 1e16 and not value.is_integer())
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not (key.isascii() or max(key) < "\U00010000"):
                return False
            if not _plain(item):
                return False
        return True
    if kind is list or kind is tuple:
        return all(_plain(item) for item in value)
    return False
