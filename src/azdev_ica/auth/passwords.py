"""Password hashing: argon2id (RFC 9106), with a dummy verification for unknown logins.

The default parameters are argon2-cffi's RFC 9106 low-memory profile (64 MiB, t=3, p=4,
~130 ms on a 2-core machine). Tests choose the cheapest profile through settings, never
production: a sign-in suite on 2 cores would otherwise crawl.
"""

from __future__ import annotations

from contextlib import suppress
from functools import cache

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024

PROFILES = ("rfc9106_low_memory", "cheapest")


@cache
def hasher(profile: str = "rfc9106_low_memory") -> PasswordHasher:
    if profile == "cheapest":
        return PasswordHasher.from_parameters(profiles.CHEAPEST)
    if profile == "rfc9106_low_memory":
        return PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY)
    raise ValueError(f"unknown password hash profile {profile!r}")


@cache
def _dummy_hash(profile: str) -> str:
    # Verified against when the login is unknown, so an unknown login costs the same work
    # as a wrong password (no timing oracle for which logins exist).
    return hasher(profile).hash("not a password anyone has: " + profile)


def password_problem(password: str) -> str | None:
    """Why `password` is not acceptable as a new password, or None."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"a password needs at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"a password has at most {MAX_PASSWORD_CHARS} characters"
    if password.strip() != password or not password.isprintable():
        return "a password has no leading or trailing spaces and no control characters"
    return None


def hash_password(password: str, profile: str = "rfc9106_low_memory") -> str:
    return hasher(profile).hash(password)


def verify_password(stored: str | None, password: str, profile: str = "rfc9106_low_memory") -> bool:
    """Whether `password` matches `stored`; with no stored hash, the same work for False."""
    candidate = password[:MAX_PASSWORD_CHARS]
    if stored is None:
        with suppress(VerificationError):
            hasher(profile).verify(_dummy_hash(profile), candidate + "\x00")
        return False
    try:
        return hasher(profile).verify(stored, candidate)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
