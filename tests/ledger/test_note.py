"""C2SP signed notes and checkpoints: the Go reference vector, round trips and strictness."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azdev_ica.ledger.merkle import EMPTY_ROOT
from azdev_ica.ledger.note import (
    CRYPTOGRAPHY_BACKEND,
    DEFAULT_BACKEND,
    PURE_BACKEND,
    Checkpoint,
    Ed25519Backend,
    NoteError,
    NoteSignature,
    Signer,
    Verifier,
    key_id,
    open_checkpoint,
    open_note,
    parse_note,
    sign_checkpoint,
    sign_note,
)

# golang.org/x/mod/sumdb/note note_test.go (BSD-3-Clause): the PeterNeumann key and note.
# The private key's base64 contains "+", which catches a naive split of key strings.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"  # noqa: E501 - a published vector, kept on one line to compare byte for byte
GO_NOTE = GO_TEXT + "\n" + GO_SIG

assert CRYPTOGRAPHY_BACKEND is not None
BACKENDS = {"pure": PURE_BACKEND, "cryptography": CRYPTOGRAPHY_BACKEND}

SIGNER = Signer("ica.example/audit", bytes(range(32)))
OTHER = Signer("ica.example/witness", bytes(range(5, 37)))


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Ed25519Backend:
    chosen: Ed25519Backend = BACKENDS[request.param]
    return chosen


def test_default_backend_is_cryptography() -> None:
    assert DEFAULT_BACKEND is CRYPTOGRAPHY_BACKEND


def test_go_reference_note(backend: Ed25519Backend) -> None:
    verifier = Verifier.from_key_string(GO_VKEY, backend)
    signer = Signer.from_key_string(GO_SKEY, backend)
    assert verifier.name == "PeterNeumann"
    assert verifier.key_id == 0xC74F20A3
    assert signer.key_string() == GO_SKEY
    assert signer.verifier() == verifier
    assert verifier.key_string() == GO_VKEY
    # Ed25519 is deterministic: signing reproduces the published note byte for byte.
    assert sign_note(GO_TEXT, [signer]) == GO_NOTE
    opened = open_note(GO_NOTE, [verifier])
    assert opened.text == GO_TEXT
    assert opened.verified_by == (verifier,)
    assert opened.unverified == ()
    assert open_note(GO_NOTE.encode(), [verifier]).text == GO_TEXT
    with pytest.raises(NoteError, match="invalid"):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), [verifier])


def test_go_vkey_manglings_are_refused() -> None:
    # As in Go's TestNewVerifier: every proper substring and every single-byte change fails.
    Verifier.from_key_string(GO_VKEY)
    raw = GO_VKEY.encode()
    for i in range(len(raw) + 1):
        for j in range(i + 1, len(raw) + 1):
            if (i, j) != (0, len(raw)):
                with pytest.raises(NoteError):
                    Verifier.from_key_string(raw[i:j].decode())
    for i in range(len(raw)):
        mangled = raw[:i] + bytes([raw[i] + 1]) + raw[i + 1 :]
        with pytest.raises(NoteError):
            Verifier.from_key_string(mangled.decode())


def test_key_id_is_the_c2sp_hash() -> None:
    verifier = Verifier.from_key_string(GO_VKEY)
    digest = hashlib.sha256(b"PeterNeumann\n\x01" + verifier.public_key).digest()
    assert key_id("PeterNeumann", verifier.public_key) == int.from_bytes(digest[:4], "big")


@settings(max_examples=25, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.just("\n"), max_size=80),
    st.integers(0, 2**64 - 1),
)
def test_round_trip_with_any_text(body: str, size: int) -> None:
    text = body + "\n"
    note = sign_note(text, [SIGNER, OTHER])
    opened = open_note(note, [SIGNER.verifier()])
    assert opened.text == text
    assert [s.name for s in opened.unverified] == [OTHER.name]
    both = open_note(note, [SIGNER.verifier(), OTHER.verifier()])
    assert len(both.verified_by) == 2
    checkpoint = Checkpoint("ica.example/audit/2026", size, hashlib.sha256(text.encode()).digest())
    cp, _ = open_checkpoint(sign_checkpoint(checkpoint, [SIGNER]), [SIGNER.verifier()])
    assert cp == checkpoint


def test_key_strings_round_trip_even_with_plus_in_base64() -> None:
    seen_plus = False
    for i in range(40):
        signer = Signer(f"log{i}.example/x", hashlib.sha256(bytes([i])).digest())
        vkey, skey = signer.verifier().key_string(), signer.key_string()
        seen_plus |= "+" in vkey.split("+", 2)[2]
        assert Verifier.from_key_string(vkey) == signer.verifier()
        assert Signer.from_key_string(skey).public_key == signer.public_key
    assert seen_plus


def test_generated_keys_differ() -> None:
    a, b = Signer.generate("k"), Signer.generate("k")
    assert a.public_key != b.public_key
    assert "seed" not in repr(a)


def _sig_line(signer: Signer, text: str) -> str:
    return sign_note(text, [signer]).split("\n\n")[-1]


@pytest.mark.parametrize(
    ("note", "error"),
    [
        ("no blank line\n— k AAAAAAA=\n", "no blank line"),
        ("text\n\n", "no signature lines"),
        ("text\n\n— a AAAAAAA=", "does not end with a newline"),
        ("text\n\n- a AAAAAAA=\n", "em dash"),
        ("text\n\n—a AAAAAAA=\n", "em dash"),
        ("text\n\n— a\n", "key name"),
        ("text\n\n— a \n", "key name"),
        ("text\n\n— a AAAAAAA=\n\n", "no signature lines"),  # the last blank line splits
        ("text\n\n— a+b AAAAAAA=\n", "invalid key name"),
        ("text\n\n— a AAAA\n", "too short"),
        ("text\n\n— a AAAAAAA\n", "not valid base64"),
        ("text\n\n— a AAAAAAB=\n", "not canonical base64"),
        ("text\n\n— a AAAA AAA=\n", "not valid base64"),
        ("te\tt\n\n— a AAAAAAA=\n", "forbidden character"),
        ("text\r\n\n— a AAAAAAA=\n", "forbidden character"),
        (b"text\xff\n\n\xe2\x80\x94 a AAAAAAA=\n", "UTF-8"),
        ("text\n\n" + "— a AAAAAAA=\n" * 101, "more than 100"),
    ],
)
def test_malformed_notes_are_refused(note: str | bytes, error: str) -> None:
    with pytest.raises(NoteError, match=error):
        parse_note(note)
    with pytest.raises(NoteError, match=error):
        open_note(note, [SIGNER.verifier()])


def test_text_may_contain_blank_lines_the_last_one_separates() -> None:
    text = "first\n\nsecond\n"
    note = sign_note(text, [SIGNER])
    assert open_note(note, [SIGNER.verifier()]).text == text


def test_unknown_keys_are_ignored_but_needed_keys_must_sign() -> None:
    note = sign_note("hello\n", [OTHER])
    with pytest.raises(NoteError, match="not signed by any known key"):
        open_note(note, [SIGNER.verifier()])
    with pytest.raises(NoteError, match="not signed by any known key"):
        open_note(note, [])
    # Same name, different key (so a different key id): an unknown key, ignored.
    impostor = Signer(SIGNER.name, bytes(range(9, 41)))
    note = sign_note("hello\n", [impostor, SIGNER])
    opened = open_note(note, [SIGNER.verifier()])
    assert opened.verified_by == (SIGNER.verifier(),)
    assert [s.key_id for s in opened.unverified] == [impostor.key_id]


def test_wrong_signature_by_a_known_key_fails_the_note(backend: Ed25519Backend) -> None:
    verifier = Verifier(SIGNER.name, SIGNER.public_key, backend)
    text = "hello\n"
    good = NoteSignature(SIGNER.name, SIGNER.key_id, SIGNER.sign(text.encode()))
    other_message = NoteSignature(SIGNER.name, SIGNER.key_id, SIGNER.sign(b"other\n"))
    flipped = NoteSignature(
        SIGNER.name, SIGNER.key_id, bytes([good.signature[0] ^ 0x80]) + good.signature[1:]
    )
    for bad in (other_message, flipped):
        note = text + "\n" + bad.line()
        with pytest.raises(NoteError, match=r"signature by key 'ica\.example/audit'.*invalid"):
            open_note(note, [verifier])
        # Even next to a valid signature by another known key.
        with pytest.raises(NoteError, match="invalid"):
            open_note(note + _sig_line(OTHER, text), [verifier, OTHER.verifier()])
    assert open_note(text + "\n" + good.line(), [verifier]).text == text


def test_bad_key_hash_in_a_signature_line_is_an_unknown_key() -> None:
    text = "hello\n"
    blob = (SIGNER.key_id ^ 1).to_bytes(4, "big") + SIGNER.sign(text.encode())
    note = f"{text}\n— {SIGNER.name} {base64.b64encode(blob).decode()}\n"
    with pytest.raises(NoteError, match="not signed by any known key"):
        open_note(note, [SIGNER.verifier()])


def test_repeated_signatures_are_checked_once() -> None:
    note = sign_note("hello\n", [SIGNER, SIGNER])
    assert len(open_note(note, [SIGNER.verifier()]).verified_by) == 1


def test_ambiguous_verifiers_are_refused() -> None:
    # Two keys with the same name and key id: a real one needs a 32-bit collision, so fake it.
    v = SIGNER.verifier()

    class Clash(Verifier):
        @property
        def key_id(self) -> int:
            return v.key_id

    clash = Clash(v.name, OTHER.public_key)
    with pytest.raises(NoteError, match="two different keys"):
        open_note(sign_note("x\n", [SIGNER]), [v, clash])


@pytest.mark.parametrize(
    ("vkey", "error"),
    [
        ("justaname", "verifier key is"),
        ("a+b", "verifier key is"),
        ("a b+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "invalid key name"),
        ("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 hex digits"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "base64"),
        ("PeterNeumann+c74f20a3+" + base64.b64encode(b"\x02" + bytes(32)).decode(), "Ed25519"),
        ("PeterNeumann+c74f20a3+" + base64.b64encode(b"\x01" + bytes(31)).decode(), "Ed25519"),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "key id"),
        ("PeterNeumann+c74f20a3+AQEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "not a valid"),
    ],
)
def test_malformed_verifier_keys_are_refused(vkey: str, error: str) -> None:
    with pytest.raises(NoteError, match=error):
        Verifier.from_key_string(vkey)


def test_malformed_signer_keys_are_refused() -> None:
    with pytest.raises(NoteError, match="PRIVATE"):
        Signer.from_key_string(GO_VKEY)
    with pytest.raises(NoteError, match="key id"):
        Signer.from_key_string(GO_SKEY.replace("c74f20a3", "c74f20a4"))
    with pytest.raises(NoteError, match="32 bytes"):
        Signer("k", b"short")
    with pytest.raises(NoteError, match="invalid key name"):
        Signer("k+1", bytes(32))
    with pytest.raises(NoteError, match="32 bytes"):
        Verifier("k", b"short")


def test_signing_refuses_bad_text() -> None:
    with pytest.raises(NoteError, match="end with a newline"):
        sign_note("no newline", [SIGNER])
    with pytest.raises(NoteError, match="forbidden"):
        sign_note("tab\there\n", [SIGNER])
    with pytest.raises(NoteError, match="at least one signer"):
        sign_note("x\n", [])


# --- checkpoints -----------------------------------------------------------------------------

ROOT_B64 = base64.b64encode(EMPTY_ROOT).decode()


def test_checkpoint_body_format() -> None:
    cp = Checkpoint("ica.example/audit/2026", 0, EMPTY_ROOT)
    assert cp.body() == f"ica.example/audit/2026\n0\n{ROOT_B64}\n"
    with_ext = Checkpoint("o", 5, EMPTY_ROOT, ("ext one", "ext two"))
    assert with_ext.body().endswith(f"{ROOT_B64}\next one\next two\n")
    assert Checkpoint.parse(with_ext.body()) == with_ext


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (f"o\n1\n{ROOT_B64}", "end with a newline"),
        ("o\n1\n", "needs origin"),
        (f"o\n01\n{ROOT_B64}\n", "plain decimal"),
        (f"o\n+1\n{ROOT_B64}\n", "plain decimal"),
        (f"o\n-1\n{ROOT_B64}\n", "plain decimal"),
        (f"o\n 1\n{ROOT_B64}\n", "plain decimal"),
        (f"o\n{2**64}\n{ROOT_B64}\n", "64 unsigned bits"),
        ("o\n1\nAAAA\n", "3 bytes, not 32"),
        (f"o\n1\n{ROOT_B64[:-1]}\n", "base64"),
        (f"\n1\n{ROOT_B64}\n", "origin"),
        (f"o\n1\n{ROOT_B64}\n\n", "non-empty"),
    ],
)
def test_malformed_checkpoints_are_refused(text: str, error: str) -> None:
    with pytest.raises(NoteError, match=error):
        Checkpoint.parse(text)


def test_open_checkpoint_checks_signature_and_origin() -> None:
    cp = Checkpoint("ica.example/audit/2026", 3, EMPTY_ROOT)
    note = sign_checkpoint(cp, [SIGNER])
    got, opened = open_checkpoint(note, [SIGNER.verifier()], origin="ica.example/audit/2026")
    assert got == cp
    assert opened.verified_by == (SIGNER.verifier(),)
    with pytest.raises(NoteError, match="origin"):
        open_checkpoint(note, [SIGNER.verifier()], origin="ica.example/audit/2027")
    with pytest.raises(NoteError, match="not signed by any known key"):
        open_checkpoint(note, [OTHER.verifier()])
    forged = note.replace("\n3\n", "\n4\n")
    with pytest.raises(NoteError, match="invalid"):
        open_checkpoint(forged, [SIGNER.verifier()])
