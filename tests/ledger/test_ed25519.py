"""Ed25519: Wycheproof vectors on every back end, RFC 8032 signing, and the embedded copy."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azdev_ica.ledger import ed25519_pure, offline_verify
from azdev_ica.ledger.note import CRYPTOGRAPHY_BACKEND, PURE_BACKEND

WYCHEPROOF = Path(__file__).parent / "vectors" / "ed25519_test.json"

Verify = Callable[[bytes, bytes, bytes], bool]
assert CRYPTOGRAPHY_BACKEND is not None
BACKENDS: dict[str, Verify] = {
    "pure": ed25519_pure.ed25519_verify,
    "cryptography": CRYPTOGRAPHY_BACKEND.verify,
    "offline_verify-embedded": offline_verify.ed25519_verify,
}


def _cases() -> list[Any]:
    data = json.loads(WYCHEPROOF.read_text())
    cases = []
    for group in data["testGroups"]:
        public = bytes.fromhex(group["publicKey"]["pk"])
        for t in group["tests"]:
            assert t["result"] in ("valid", "invalid")  # no "acceptable" cases in this file
            cases.append(
                pytest.param(
                    public,
                    bytes.fromhex(t["msg"]),
                    bytes.fromhex(t["sig"]),
                    t["result"] == "valid",
                    id=f"tc{t['tcId']}-{t['result']}-{'-'.join(t['flags'])}",
                )
            )
    return cases


CASES = _cases()


def test_all_wycheproof_vectors_are_loaded() -> None:
    assert len(CASES) == 151


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize(("public", "message", "signature", "valid"), CASES)
def test_wycheproof(
    backend: str, public: bytes, message: bytes, signature: bytes, valid: bool
) -> None:
    assert BACKENDS[backend](public, message, signature) is valid


# RFC 8032 §7.1, TEST 1 and TEST 3 (secret key, public key, message, signature).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_signing(seed: str, public: str, message: str, signature: str) -> None:
    sk, pk, msg, sig = (bytes.fromhex(x) for x in (seed, public, message, signature))
    assert ed25519_pure.ed25519_public_key(sk) == pk
    assert ed25519_pure.ed25519_sign(sk, msg) == sig
    for verify in BACKENDS.values():
        assert verify(pk, msg, sig)
        assert not verify(pk, msg + b"x", sig)


@settings(max_examples=15, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=64))
def test_pure_signing_matches_cryptography(seed: bytes, message: bytes) -> None:
    assert CRYPTOGRAPHY_BACKEND is not None
    public = ed25519_pure.ed25519_public_key(seed)
    signature = ed25519_pure.ed25519_sign(seed, message)
    assert public == CRYPTOGRAPHY_BACKEND.public_key(seed)
    assert signature == CRYPTOGRAPHY_BACKEND.sign(seed, message)
    assert PURE_BACKEND.verify(public, message, signature)
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    assert not PURE_BACKEND.verify(public, message, tampered)
    assert ed25519_pure.ed25519_public_key_ok(public)


def test_weak_and_non_canonical_public_keys_are_flagged() -> None:
    identity = (1).to_bytes(32, "little")  # the neutral point: small order
    order_two = (2**255 - 20).to_bytes(32, "little")  # y = -1: the point of order 2
    non_canonical = (2**255 - 19 + 1).to_bytes(32, "little")  # y = p + 1, i.e. y = 1
    off_curve = (2).to_bytes(32, "little")
    for key in (identity, order_two, non_canonical, off_curve, b"\x00" * 31):
        assert not ed25519_pure.ed25519_public_key_ok(key)
    assert ed25519_pure.ed25519_public_key_ok(ed25519_pure.ed25519_public_key(b"\x01" * 32))


def test_signing_rejects_bad_seeds_and_verify_rejects_bad_lengths() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        ed25519_pure.ed25519_sign(b"short", b"m")
    public = ed25519_pure.ed25519_public_key(b"\x02" * 32)
    signature = ed25519_pure.ed25519_sign(b"\x02" * 32, b"m")
    assert not ed25519_pure.ed25519_verify(public[:31], b"m", signature)
    assert not ed25519_pure.ed25519_verify(public, b"m", signature + b"\x00")


def _embedded_block(path: str) -> str:
    text = Path(path).read_text(encoding="utf-8")
    match = re.search(r"# ---- BEGIN embedded.*?# ---- END embedded[^\n]*\n", text, re.DOTALL)
    assert match is not None, f"no embedded Ed25519 block in {path}"
    return match.group(0)


def test_the_offline_verifier_embeds_the_same_ed25519_code() -> None:
    # offline_verify.py must run alone, so it carries a copy; the copy must not drift.
    assert _embedded_block(offline_verify.__file__) == _embedded_block(ed25519_pure.__file__)
