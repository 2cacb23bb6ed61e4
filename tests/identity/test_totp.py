"""RFC 6238 TOTP: the RFC's own test vectors, the skew window, and the sealed secret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from azdev_ica.auth import passwords, totp

RFC_SECRET = b"12345678901234567890"  # RFC 6238 Appendix B, SHA-1


@pytest.mark.parametrize(
    ("unix", "eight_digits"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_the_rfc_6238_vectors(unix, eight_digits):
    at = datetime.fromtimestamp(unix, UTC)
    assert totp.code_at_step(RFC_SECRET, totp.time_step(at), digits=8) == eight_digits
    # Six digits are the last six of the same value (the modulus differs, the number not).
    assert totp.code_at_step(RFC_SECRET, totp.time_step(at)) == eight_digits[-6:]
    assert totp.matching_step(RFC_SECRET, eight_digits[-6:], at) == totp.time_step(at)


@given(
    unix=st.integers(min_value=10**9, max_value=4 * 10**9),
    offset=st.integers(min_value=-5, max_value=5),
)
def test_a_code_matches_only_within_one_step_of_skew(unix, offset):
    at = datetime.fromtimestamp(unix, UTC)
    step = totp.time_step(at) + offset
    code = totp.code_at_step(RFC_SECRET, step)
    found = totp.matching_step(RFC_SECRET, code, at)
    if abs(offset) <= totp.SKEW_STEPS:
        # Another step in the window may carry the same six digits (1 in 10^6); it is
        # never outside the window.
        assert found is not None
        assert abs(found - totp.time_step(at)) <= totp.SKEW_STEPS
    else:
        assert found is None or abs(found - totp.time_step(at)) <= totp.SKEW_STEPS


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 34 5", "١٢٣٤٥٦"])
def test_malformed_codes_never_match(code):
    assert totp.matching_step(RFC_SECRET, code, datetime.now(UTC)) is None


def test_the_sealed_secret_opens_only_for_its_person_and_key():
    secret = totp.new_secret()
    sealed = totp.seal_secret(secret, pepper=b"k" * 32, person_id=7)
    assert secret not in sealed
    assert totp.open_secret(sealed, pepper=b"k" * 32, person_id=7) == secret
    with pytest.raises(ValueError, match="does not open"):
        totp.open_secret(sealed, pepper=b"k" * 32, person_id=8)
    with pytest.raises(ValueError, match="does not open"):
        totp.open_secret(sealed, pepper=b"j" * 32, person_id=7)


def test_the_provisioning_uri_is_what_authenticator_apps_read():
    uri = totp.provisioning_uri(RFC_SECRET, account="ana@example.org", issuer="ICA")
    assert uri.startswith("otpauth://totp/ICA:ana@example.org?")
    assert "secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ" in uri
    assert "algorithm=SHA1" in uri
    assert "digits=6" in uri
    assert "period=30" in uri


def test_passwords_verify_and_an_unknown_login_costs_a_verification():
    stored = passwords.hash_password("a long enough password", "cheapest")
    assert stored.startswith("$argon2id$")
    assert passwords.verify_password(stored, "a long enough password", "cheapest")
    assert not passwords.verify_password(stored, "a long enough passwore", "cheapest")
    assert not passwords.verify_password(None, "a long enough password", "cheapest")
    assert passwords.password_problem("short") is not None
    assert passwords.password_problem(" padded password ") is not None
    assert passwords.password_problem("a long enough password") is None


def test_the_default_profile_is_rfc_9106():
    assert passwords.hasher().memory_cost == 65536
    assert passwords.hasher().time_cost == 3


def test_time_step_is_thirty_seconds():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert totp.time_step(t0 + timedelta(seconds=30)) == totp.time_step(t0) + 1
