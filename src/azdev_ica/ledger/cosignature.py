"""C2SP tlog-cosignature (https://c2sp.org/tlog-cosignature), Ed25519 (``cosignature/v1``).

A cosignature is a signed-note signature line over a checkpoint, by a *witness* key::

    — <witness name> base64(key id || u64 timestamp || 64-byte Ed25519 signature)

- the key id is ``SHA-256(name || 0x0A || 0x04 || public key)[:4]`` (signature type 0x04);
- the signed message is ``cosignature/v1\\ntime <timestamp>\\n`` followed by the whole note
  text of the checkpoint (its lines up to the blank line, final newline included);
- the timestamp is a POSIX time (seconds), big-endian, never zero.

Key strings follow the signed-note forms with type byte 0x04:

- verifier key: ``<name>+<8 hex key id>+<base64(0x04 || public key)>``
- signer key: ``PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x04 || seed)>``

A v1 cosignature states that, as of its time, the consistent tree head with the largest size
the witness has observed for that origin has that root hash.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .note import (
    DEFAULT_BACKEND,
    Ed25519Backend,
    NoteError,
    NoteSignature,
    is_valid_key_name,
    parse_note,
)
from .note import _b64decode as b64decode

__all__ = [
    "ALG_COSIGNATURE_V1",
    "Cosignature",
    "CosignatureVerifier",
    "Cosigner",
    "append_cosignatures",
    "cosignature_key_id",
    "cosigned_message",
    "verify_cosignatures",
]

ALG_COSIGNATURE_V1 = 0x04
MAX_TIMESTAMP = 2**63 - 1


def cosignature_key_id(name: str, public_key: bytes) -> int:
    """``SHA-256(name || 0x0A || 0x04 || public key)[:4]``, big-endian."""
    material = name.encode("utf-8") + b"\n" + bytes([ALG_COSIGNATURE_V1]) + public_key
    return int.from_bytes(hashlib.sha256(material).digest()[:4], "big")


def cosigned_message(checkpoint_text: str, timestamp: int) -> bytes:
    """The bytes an Ed25519 v1 cosignature signs."""
    if not 0 < timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"cosignature timestamp {timestamp} is out of range")
    if not checkpoint_text.endswith("\n"):
        raise NoteError("checkpoint text must end with a newline")
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode()


def _key_fields(name: str, hex_id: str, key_b64: str, what: str) -> tuple[str, int, bytes]:
    if not is_valid_key_name(name):
        raise NoteError(f"{what}: invalid key name {name!r}")
    if len(hex_id) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hex_id):
        raise NoteError(f"{what}: the key id must be 8 hex digits, not {hex_id!r}")
    key = b64decode(key_b64, f"{what}: the key")
    if len(key) != 33 or key[0] != ALG_COSIGNATURE_V1:
        raise NoteError(
            f"{what}: not an Ed25519 cosignature key (base64 of 0x04 || 32 bytes); a log key "
            "(type 0x01) cannot check cosignatures"
        )
    return name, int(hex_id, 16), key[1:]


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: who, and the time it states."""

    name: str
    key_id: int
    timestamp: int
    line: str


@dataclass(frozen=True)
class CosignatureVerifier:
    """A witness's public key (signature type 0x04)."""

    name: str
    public_key: bytes
    backend: Ed25519Backend = field(default=DEFAULT_BACKEND, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not is_valid_key_name(self.name):
            raise NoteError(f"invalid key name {self.name!r}")
        if len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")

    @classmethod
    def from_key_string(
        cls, vkey: str, backend: Ed25519Backend | None = None
    ) -> CosignatureVerifier:
        parts = vkey.strip().split("+", 2)  # base64 may contain "+"
        if len(parts) != 3:
            raise NoteError("a witness key is <name>+<hex key id>+<base64 key>")
        name, kid, public = _key_fields(parts[0], parts[1], parts[2], "witness key")
        verifier = cls(name, public, backend or DEFAULT_BACKEND)
        if verifier.key_id != kid:
            raise NoteError(f"witness key {name!r}: the key id does not match the name and key")
        return verifier

    @property
    def key_id(self) -> int:
        return cosignature_key_id(self.name, self.public_key)

    def key_string(self) -> str:
        key = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{key}"

    def matches(self, sig: NoteSignature) -> bool:
        return sig.name == self.name and sig.key_id == self.key_id

    def verify(self, checkpoint_text: str, sig: NoteSignature) -> Cosignature:
        """Check one signature line of this key; raise :class:`NoteError` if it is invalid."""
        if not self.matches(sig):
            raise NoteError(f"the signature is not by the witness key {self.name!r}")
        if len(sig.signature) != 8 + 64:
            raise NoteError(f"the cosignature by {self.name!r} is not 72 bytes")
        timestamp = int.from_bytes(sig.signature[:8], "big")
        if not 0 < timestamp <= MAX_TIMESTAMP:
            raise NoteError(f"the cosignature by {self.name!r} has no valid timestamp")
        message = cosigned_message(checkpoint_text, timestamp)
        if not self.backend.verify(self.public_key, message, sig.signature[8:]):
            raise NoteError(f"the cosignature by {self.name!r} ({self.key_id:08x}) is invalid")
        return Cosignature(self.name, self.key_id, timestamp, sig.line())


@dataclass(frozen=True)
class Cosigner:
    """A witness's private key (its 32-byte seed)."""

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
    def generate(cls, name: str) -> Cosigner:
        return cls(name, secrets.token_bytes(32))

    @classmethod
    def from_key_string(cls, skey: str) -> Cosigner:
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a witness signer key is PRIVATE+KEY+<name>+<hex key id>+<base64>")
        name, kid, seed = _key_fields(parts[2], parts[3], parts[4], "witness signer key")
        cosigner = cls(name, seed)
        if cosigner.key_id != kid:
            raise NoteError(f"witness signer key {name!r}: the key id does not match")
        return cosigner

    @property
    def key_id(self) -> int:
        return cosignature_key_id(self.name, self.public_key)

    def key_string(self) -> str:
        key = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.seed).decode("ascii")
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{key}"

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.public_key, self.backend)

    def cosign(self, checkpoint_text: str, timestamp: int) -> str:
        """Return the cosignature line (newline included) over ``checkpoint_text``."""
        signature = self.backend.sign(self.seed, cosigned_message(checkpoint_text, timestamp))
        return NoteSignature(
            self.name, self.key_id, timestamp.to_bytes(8, "big") + signature
        ).line()


def append_cosignatures(note: str, lines: Iterable[str]) -> str:
    """The signed note with cosignature lines appended (those it does not carry already)."""
    present = set(note.rpartition("\n\n")[2].splitlines(keepends=True))
    return note + "".join(line for line in lines if line not in present)


def verify_cosignatures(
    note: str, witnesses: Iterable[CosignatureVerifier]
) -> tuple[list[Cosignature], list[str]]:
    """The valid cosignatures of ``note`` by ``witnesses`` (one per witness), and the problems:
    a signature line that names a witness key but does not verify."""
    parsed = parse_note(note)
    found: dict[tuple[str, int], Cosignature] = {}
    problems: list[str] = []
    keys: Sequence[CosignatureVerifier] = list(witnesses)
    for sig in parsed.signatures:
        for key in keys:
            if key.matches(sig):
                try:
                    found.setdefault((key.name, key.key_id), key.verify(parsed.text, sig))
                except NoteError as exc:
                    problems.append(str(exc))
    return list(found.values()), problems
