"""API-key material: generation, parsing and the HMAC digest that is stored.

A key looks like `ica_<prefix>_<secret>`. The prefix is stored in clear (it names the key
in listings and finds its row); only HMAC-SHA-256(server secret, key) is stored, so a
leaked table is useless without the server secret, and a check costs one indexed read
and one HMAC (microseconds), unlike a password hash.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_KEY_RE = re.compile(r"^(ica|icp)_([a-z2-7]{10})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    prefix: str
    secret: str  # the whole key, shown once

    def digest(self, pepper: bytes) -> str:
        return digest_key(self.secret, pepper)


def generate_key(kind: str = "ica") -> NewKey:
    """A new key: `ica` for API keys, `icp` for personal tokens."""
    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(10))
    return NewKey(prefix=prefix, secret=f"{kind}_{prefix}_{secrets.token_urlsafe(32)}")


def parse_prefix(key: str, kind: str = "ica") -> str | None:
    """The prefix of a well-formed key of `kind`, or None."""
    match = _KEY_RE.match(key)
    return match.group(2) if match and match.group(1) == kind else None


def digest_key(key: str, pepper: bytes) -> str:
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()


def digest_matches(key: str, stored_digest: str, pepper: bytes) -> bool:
    return hmac.compare_digest(digest_key(key, pepper), stored_digest)
