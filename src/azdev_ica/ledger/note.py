"""C2SP signed notes (https://c2sp.org/signed-note) and tlog checkpoints
(https://c2sp.org/tlog-checkpoint), with Ed25519 keys in the ``golang.org/x/mod/sumdb/note``
string formats.

A signed note is a text (UTF-8, no control characters but newline, ending in a newline), a
blank line, then one signature line per key: ``— <key name> <base64(key id || signature)>``.
For Ed25519 (signature type ``0x01``) the key id is the first four bytes, big-endian, of
``SHA-256(key name || 0x0A || 0x01 || public key)``. Key strings:

- verifier key (public, "vkey"): ``<name>+<8 hex digits key id>+<base64(0x01 || public key)>``
- signer key (private): ``PRIVATE+KEY+<name>+<8 hex digits key id>+<base64(0x01 || seed)>``

A checkpoint is a note whose text is ``<origin>\\n<tree size>\\n<base64 root hash>\\n`` followed by
optional extension lines. Parsing is strict: anything malformed raises :class:`NoteError` with a
message that says what is wrong.

Ed25519 uses ``cryptography`` when it is importable, else :mod:`.ed25519_pure`; both accept
exactly the same signatures (the Wycheproof vectors are run against both).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .ed25519_pure import (
    ed25519_public_key,
    ed25519_public_key_ok,
    ed25519_sign,
    ed25519_verify,
)

__all__ = [
    "ALG_ED25519",
    "CRYPTOGRAPHY_BACKEND",
    "DEFAULT_BACKEND",
    "PURE_BACKEND",
    "Checkpoint",
    "Ed25519Backend",
    "Note",
    "NoteError",
    "NoteSignature",
    "OpenedNote",
    "Signer",
    "Verifier",
    "is_valid_key_name",
    "key_id",
    "open_checkpoint",
    "open_note",
    "parse_note",
    "sign_checkpoint",
    "sign_note",
]

ALG_ED25519 = 0x01
"""Signature type identifier byte of Ed25519 in signed notes."""

SIG_PREFIX = "— "
"""Start of every signature line: an em dash (U+2014) and a space."""

MAX_SIGNATURES = 100
"""Notes with more signature lines than this are refused (the spec requires at least 16)."""

MAX_TREE_SIZE = 2**64 - 1

_HEX_KEY_ID = re.compile(r"[0-9a-fA-F]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class NoteError(ValueError):
    """A note, checkpoint or key string is malformed, unsigned or wrongly signed."""


# --- Ed25519 back ends -----------------------------------------------------------------------


@dataclass(frozen=True)
class Ed25519Backend:
    """Ed25519 primitives: ``public_key(seed)``, ``sign(seed, message)`` and
    ``verify(public_key, message, signature) -> bool``."""

    name: str
    public_key: Callable[[bytes], bytes]
    sign: Callable[[bytes, bytes], bytes]
    verify: Callable[[bytes, bytes, bytes], bool]


PURE_BACKEND = Ed25519Backend("pure", ed25519_public_key, ed25519_sign, ed25519_verify)


def _cryptography_backend() -> Ed25519Backend | None:
    """Return the ``cryptography`` (OpenSSL) back end, or None when it is not installed."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (
            Ed25519PrivateKey,
            Ed25519PublicKey,
        )
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    except ImportError:  # pragma: no cover - cryptography is a dependency of the package
        return None

    def public_key(seed: bytes) -> bytes:
        key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(seed: bytes, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(seed).sign(message)

    def verify(public: bytes, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    return Ed25519Backend("cryptography", public_key, sign, verify)


CRYPTOGRAPHY_BACKEND = _cryptography_backend()
DEFAULT_BACKEND = CRYPTOGRAPHY_BACKEND or PURE_BACKEND


# --- encodings -------------------------------------------------------------------------------


def _b64decode(text: str, what: str) -> bytes:
    """Decode canonical standard base64 (RFC 4648 §4, padded, no stray characters or bits)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise NoteError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _check_text(text: str, what: str) -> None:
    """Notes are UTF-8 without control characters other than newline."""
    for ch in text:
        if (ch < " " and ch != "\n") or "\ud800" <= ch <= "\udfff":
            raise NoteError(f"{what} contains the forbidden character {ch!r}")


def _decode_utf8(data: str | bytes, what: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError(f"{what} is not valid UTF-8") from None


def is_valid_key_name(name: str) -> bool:
    """Key names are non-empty and contain neither Unicode spaces nor ``+``."""
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


def key_id(name: str, public_key: bytes) -> int:
    """Return the Ed25519 key id: ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``."""
    material = name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key
    return int.from_bytes(hashlib.sha256(material).digest()[:4], "big")


def _parse_key_fields(name: str, hex_id: str, key_b64: str, what: str) -> tuple[str, int, bytes]:
    """Check ``name``, the hex key id and ``base64(0x01 || 32 bytes)`` of a key string."""
    if not is_valid_key_name(name):
        raise NoteError(f"{what}: invalid key name {name!r}")
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise NoteError(f"{what}: the key id must be 8 hex digits, not {hex_id!r}")
    key = _b64decode(key_b64, f"{what}: the key")
    if len(key) != 33 or key[0] != ALG_ED25519:
        raise NoteError(f"{what}: only Ed25519 keys (base64 of 0x01 || 32 bytes) are supported")
    return name, int(hex_id, 16), key[1:]


# --- keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 public key that checks note signatures."""

    name: str
    public_key: bytes
    backend: Ed25519Backend = field(default=DEFAULT_BACKEND, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not is_valid_key_name(self.name):
            raise NoteError(f"invalid key name {self.name!r}")
        if len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")
        if not ed25519_public_key_ok(self.public_key):
            raise NoteError(f"key {self.name!r}: not a valid Ed25519 public key")

    @classmethod
    def from_key_string(cls, vkey: str, backend: Ed25519Backend | None = None) -> Verifier:
        """Parse ``<name>+<hex key id>+<base64(0x01 || public key)>``."""
        parts = vkey.split("+", 2)  # the base64 part may itself contain "+"
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<hex key id>+<base64 key>")
        name, kid, public = _parse_key_fields(parts[0], parts[1], parts[2], "verifier key")
        verifier = cls(name, public, backend or DEFAULT_BACKEND)
        if verifier.key_id != kid:
            raise NoteError(f"verifier key {name!r}: the key id does not match the name and key")
        return verifier

    @property
    def key_id(self) -> int:
        """The 32-bit key id that prefixes this key's signatures."""
        return key_id(self.name, self.public_key)

    def key_string(self) -> str:
        """Return the ``<name>+<hex key id>+<base64 key>`` form."""
        key = _b64encode(bytes([ALG_ED25519]) + self.public_key)
        return f"{self.name}+{self.key_id:08x}+{key}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return True iff ``signature`` is this key's Ed25519 signature of ``message``."""
        return self.backend.verify(self.public_key, message, signature)


@dataclass(frozen=True)
class Signer:
    """A named Ed25519 private key (its 32-byte seed) that signs notes."""

    name: str
    seed: bytes = field(repr=False)
    backend: Ed25519Backend = field(default=DEFAULT_BACKEND, repr=False, compare=False)
    public_key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not is_valid_key_name(self.name):
            raise NoteError(f"invalid key name {self.name!r}")
        if len(self.seed) != 32:
            raise NoteError("an Ed25519 private key (seed) is 32 bytes")
        object.__setattr__(self, "public_key", self.backend.public_key(self.seed))

    @classmethod
    def generate(cls, name: str, backend: Ed25519Backend | None = None) -> Signer:
        """Create a signer with a fresh random key."""
        return cls(name, secrets.token_bytes(32), backend or DEFAULT_BACKEND)

    @classmethod
    def from_key_string(cls, skey: str, backend: Ed25519Backend | None = None) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>``."""
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a signer key is PRIVATE+KEY+<name>+<hex key id>+<base64 key>")
        name, kid, seed = _parse_key_fields(parts[2], parts[3], parts[4], "signer key")
        signer = cls(name, seed, backend or DEFAULT_BACKEND)
        if signer.key_id != kid:
            raise NoteError(f"signer key {name!r}: the key id does not match the name and key")
        return signer

    @property
    def key_id(self) -> int:
        """The 32-bit key id that prefixes this key's signatures."""
        return key_id(self.name, self.public_key)

    def key_string(self) -> str:
        """Return the ``PRIVATE+KEY+<name>+<hex key id>+<base64 seed>`` form (a secret)."""
        key = _b64encode(bytes([ALG_ED25519]) + self.seed)
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{key}"

    def verifier(self) -> Verifier:
        """Return the matching verifier."""
        return Verifier(self.name, self.public_key, self.backend)

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        return self.backend.sign(self.seed, message)


# --- notes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key id and the signature bytes (after the key id)."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """Return the signature line, newline included."""
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{SIG_PREFIX}{self.name} {_b64encode(blob)}\n"


@dataclass(frozen=True)
class Note:
    """A parsed (not yet verified) signed note."""

    text: str
    signatures: tuple[NoteSignature, ...]


@dataclass(frozen=True)
class OpenedNote:
    """A note with at least one verified signature from a known key."""

    text: str
    verified_by: tuple[Verifier, ...]
    unverified: tuple[NoteSignature, ...]
    """Signatures by keys that were not among the verifiers (ignored, as the spec requires)."""


def sign_note(text: str, signers: Sequence[Signer]) -> str:
    """Return ``text``, a blank line and one signature line per signer."""
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    _check_text(text, "note text")
    if not signers:
        raise NoteError("a signed note needs at least one signer")
    if len(signers) > MAX_SIGNATURES:
        raise NoteError(f"a note carries at most {MAX_SIGNATURES} signatures")
    message = text.encode("utf-8")
    lines = [NoteSignature(s.name, s.key_id, s.sign(message)).line() for s in signers]
    return text + "\n" + "".join(lines)


def _parse_signature_line(line: str, number: int) -> NoteSignature:
    if not line.startswith(SIG_PREFIX):
        raise NoteError(f"signature line {number} does not start with an em dash and a space")
    name, sep, sig_b64 = line[len(SIG_PREFIX) :].partition(" ")
    if not sep or not sig_b64:
        raise NoteError(f"signature line {number} is not '— <key name> <base64 signature>'")
    if not is_valid_key_name(name):
        raise NoteError(f"signature line {number} has the invalid key name {name!r}")
    blob = _b64decode(sig_b64, f"signature line {number} ({name})")
    if len(blob) < 5:
        raise NoteError(f"signature line {number} ({name}) is too short")
    return NoteSignature(name, int.from_bytes(blob[:4], "big"), blob[4:])


def parse_note(note: str | bytes) -> Note:
    """Split a signed note into its text and signature lines, checking the format only."""
    note = _decode_utf8(note, "note")
    _check_text(note, "note")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise NoteError("note has no signature lines")
    if not block.endswith("\n"):
        raise NoteError("the last signature line does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    sigs = tuple(_parse_signature_line(line, i) for i, line in enumerate(lines, 1))
    return Note(text, sigs)


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> OpenedNote:
    """Verify a signed note against known keys; return its text and who signed it.

    Signatures by unknown keys (whose name and key id do not both match a verifier) are
    ignored, as the spec requires. A known key's signature that fails to verify makes the
    whole note invalid, and so does a note that no known key signed. A key's repeated
    signature is checked once.
    """
    parsed = parse_note(note)
    known: dict[tuple[str, int], Verifier] = {}
    for v in verifiers:
        other = known.setdefault((v.name, v.key_id), v)
        if other.public_key != v.public_key:
            raise NoteError(f"two different keys named {v.name!r} have the key id {v.key_id:08x}")
    message = parsed.text.encode("utf-8")
    verified: list[Verifier] = []
    unverified: list[NoteSignature] = []
    seen: set[tuple[str, int]] = set()
    for sig in parsed.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            unverified.append(sig)
            continue
        if (sig.name, sig.key_id) in seen:
            continue
        seen.add((sig.name, sig.key_id))
        if not verifier.verify(message, sig.signature):
            raise NoteError(f"the signature by key {sig.name!r} ({sig.key_id:08x}) is invalid")
        verified.append(verifier)
    if not verified:
        names = ", ".join(f"{s.name} ({s.key_id:08x})" for s in parsed.signatures)
        raise NoteError(f"note is not signed by any known key (signed by: {names})")
    return OpenedNote(parsed.text, tuple(verified), tuple(unverified))


# --- checkpoints -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tlog checkpoint: origin, tree size, root hash and optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise NoteError(f"checkpoint size {self.size} does not fit in 64 unsigned bits")
        if len(self.root_hash) != 32:
            raise NoteError(f"checkpoint root hash is {len(self.root_hash)} bytes, not 32")
        if not self.origin:
            raise NoteError("checkpoint origin is empty")
        for line in (self.origin, *self.extensions):
            if not line or "\n" in line:
                raise NoteError("checkpoint origin and extension lines must be non-empty lines")
            _check_text(line, "checkpoint")

    def body(self) -> str:
        """Return the note text: origin, size, base64 root, extensions, each newline-ended."""
        lines = [self.origin, str(self.size), _b64encode(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text strictly (C2SP tlog-checkpoint)."""
        if not text.endswith("\n"):
            raise NoteError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("checkpoint text needs origin, tree size and root hash lines")
        origin, size_text, root_text, *extensions = lines
        if not _DECIMAL.fullmatch(size_text):
            raise NoteError(f"checkpoint tree size {size_text!r} is not a plain decimal number")
        root = _b64decode(root_text, "checkpoint root hash")
        return cls(origin, int(size_text), root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[Signer]) -> str:
    """Return the signed note of ``checkpoint``."""
    return sign_note(checkpoint.body(), signers)


def open_checkpoint(
    note: str | bytes, verifiers: Iterable[Verifier], origin: str | None = None
) -> tuple[Checkpoint, OpenedNote]:
    """Verify and parse a signed checkpoint; with ``origin``, require that origin too."""
    opened = open_note(note, verifiers)
    checkpoint = Checkpoint.parse(opened.text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    return checkpoint, opened
