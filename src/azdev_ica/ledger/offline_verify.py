#!/usr/bin/env python3
"""Verify an ICA audit-ledger export bundle, offline, with the Python standard library alone.

Usage::

    python3 verify.py BUNDLE_DIR [--trust-key VKEY]... [--trust-keys-file FILE]
                                 [--witness-key VKEY]... [--witness-threshold K]
                                 [--known-checkpoints DIR] [--pure] [--json] [--quiet]

Exit status: 0 when every check passes, 1 when any check fails (the report names the first bad
entry index and the first bad checkpoint), 2 for a command-line usage error.

This file is shipped alone, as ``verify.py`` inside every bundle: it imports nothing but the
standard library. It uses the ``cryptography`` package for Ed25519 when that is installed
(faster); otherwise its own embedded pure-Python RFC 8032 implementation (``--pure`` forces
that). It runs on Python 3.9 or later.

What it proves
==============
The ledger is an RFC 9162 (RFC 6962) Merkle tree: leaf ``i`` is ``SHA-256(0x00 || entry i)``,
interior nodes are ``SHA-256(0x01 || left || right)``. The log signs C2SP tlog-checkpoints
(https://c2sp.org/tlog-checkpoint): the tree size and root hash, as a C2SP signed note with an
Ed25519 key (https://c2sp.org/signed-note). This script recomputes the tree from the entries,
in one streaming pass in constant memory (the right edge of the tree: at most 64 hashes, plus
one root per checkpoint size), and checks that the root at every checkpoint's size equals the
signed root. Entry ``i`` is hashed exactly as stored, the bytes of line ``i`` without its newline;
the entries are never parsed, so the check does not depend on their JSON schema.

A root mismatch proves that at least one of the entries ``[a, b)`` was altered, inserted,
removed or reordered, where ``b`` is the size of the first checkpoint that does not match and
``a`` the size of the last one that does; that range is reported (denser checkpoints narrow
it). Entries missing at the end, and entries beyond the last checkpoint, are reported exactly.

Trust: ``keys.json`` and ``manifest.json`` travel with the bundle and are not signed. Anybody who
can rewrite the bundle can also replace its keys, so pin the log's public keys, obtained from
ICA independently (its key endpoint, or a copy you keep), with ``--trust-key``: then a checkpoint
counts only if signed by a pinned key. Without pins the report lists the key fingerprints it
relied on, to compare by hand, and says plainly that it proved internal consistency only. The
checkpoint times in the manifest (``signed_at``) are the
exporter's statement of when each checkpoint was signed, checked against the keys' validity
periods; they are not themselves signed.

What each mode proves
--------------------
- no keys given: the bundle is internally consistent (its entries hash to the roots its own
  checkpoints sign with its own keys.json). Whoever wrote the bundle could have written all of
  it; nothing ties it to the real log.
- ``--trust-key`` (the log's key, obtained independently): the checkpoints were signed by the
  log. The log's operator (or whoever restored its database from a backup) can still sign a
  second, forked history with the same key.
- ``--witness-key`` (each witness's key, from its operator; ``--witness-threshold K`` requires
  K of them, default all): the bundle's final checkpoint carries valid C2SP tlog-cosignatures
  (``cosignature/v1``) of those witnesses. A witness cosigns only a checkpoint consistent with
  every one it cosigned before, so a rewound or forked log cannot get one: a fork fails here.
  The cosignature time says as of when the witness vouches for that tree head; a bundle cut
  off at an older cosigned checkpoint still passes, compare the time with what you expect.
- ``--known-checkpoints DIR`` (checkpoints you kept: an earlier export's, a monitor's copies,
  receipts' checkpoints): every one of this origin must be reproduced by the entries (same
  root at its size), and none may be larger than the bundle; one of the previous year must be
  no larger than (and at the same size equal to) the checkpoint entry 0 embeds. Any fork or
  rewind against what you kept fails.

Bundle format ``ica-audit-bundle/v1``
=====================================
A directory (usually shipped as a ``.tar.gz`` of it)::

    manifest.json                   what the bundle holds, with a SHA-256 of every other file
    entries.jsonl                   the entries: line i (0-based) is entry i
    keys.json                       the log's public keys and their validity periods
    checkpoints/<size>.checkpoint   signed checkpoint notes, one per file
    verify.py                       this program (optional, like any other listed file)

All JSON files are UTF-8 JSON objects or arrays without duplicate keys; fields other than those
below are ignored (room for later additions). Times are RFC 3339 strings with an explicit
offset, e.g. ``2026-03-01T12:00:00Z`` or ``2026-03-01T12:00:00.123456Z``.

``entries.jsonl``
    Entry ``i`` is line ``i``: its exact stored bytes (canonical JSON, RFC 8785), followed by
    one ``\\n`` (0x0A), the last line included. No other bytes: no blank lines, no ``\\r``.
    The number of lines is the tree size ``size`` of the manifest.

``checkpoints/<size>.checkpoint``
    A C2SP signed note whose text is a tlog-checkpoint::

        <origin>\\n<tree size, decimal>\\n<base64 root hash>\\n[extension lines]\\n
        — <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>\\n
        [more signature lines, e.g. witness cosignatures; unknown keys are ignored]

    The recommended file name is the tree size as 20 zero-padded digits:
    ``checkpoints/00000000000000001000.checkpoint``. Any name is accepted, but every file in
    ``checkpoints/`` must be listed in the manifest. Several checkpoints may name one size;
    they must then carry the same root.

``keys.json``
    An array of objects, one per log key, oldest first::

        [{"name": "ica.example/audit",
          "vkey": "ica.example/audit+1a2b3c4d+AXbase64...",
          "valid_from": "2026-01-01T00:00:00Z",
          "valid_until": null}]

    ``vkey`` is the C2SP/Go verifier key ``<name>+<8 hex key id>+<base64(0x01 || 32-byte
    Ed25519 public key)>``, and ``name`` repeats its name. A key may sign a checkpoint whose
    ``signed_at`` lies in ``[valid_from, valid_until)``; ``valid_until`` null means "still in
    use".

``manifest.json``
    An object::

        {"format": "ica-audit-bundle/v1",
         "origin": "ica.example/audit/2026",
         "size": 1000,
         "checkpoints": [
           {"path": "checkpoints/00000000000000001000.checkpoint",
            "size": 1000, "signed_at": "2026-12-31T23:59:58Z"}],
         "files": [
           {"path": "checkpoints/00000000000000001000.checkpoint",
            "sha256": "<64 lowercase hex>", "bytes": 321},
           {"path": "entries.jsonl", "sha256": "...", "bytes": 123456},
           {"path": "keys.json", "sha256": "...", "bytes": 456},
           {"path": "verify.py", "sha256": "...", "bytes": 54321}]}

    ``origin`` is the log origin that every checkpoint names (one yearly shard). ``size`` is
    the number of entries and must equal the largest checkpoint size: an export ends on a
    checkpoint, so every entry is covered by a signature. ``checkpoints`` lists every
    checkpoint file with the size it signs and the time it was signed. ``files`` lists every
    file of the bundle except ``manifest.json`` itself, with its SHA-256 (lowercase hex) and
    length; it must include ``entries.jsonl``, ``keys.json`` and every checkpoint. Paths are
    relative, ``/``-separated, made of ``[A-Za-z0-9._-]`` segments, never ``.`` or ``..``.
    Files the manifest does not list are reported as warnings (or as problems inside
    ``checkpoints/``).

Checks, in order: manifest format and file hashes; keys (well-formed, canonical, not weak,
key id matching, validity periods); every checkpoint (strict note and checkpoint syntax,
origin, size as in the manifest, at least one valid signature by a key that is valid at its
``signed_at`` and pinned if pins were given, no invalid signature by a known key, one root per
size, times that do not go backwards as sizes grow); then the entries against every checkpoint
root, the entry count against the manifest, and the final newline.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import IO, Any

__all__ = [
    "BUNDLE_FORMAT",
    "CHECKPOINT_DIR",
    "ENTRIES_FILE",
    "KEYS_FILE",
    "MANIFEST_FILE",
    "EntriesDigest",
    "Problem",
    "Report",
    "checkpoint_file_name",
    "hash_entries",
    "main",
    "verify_bundle",
]

BUNDLE_FORMAT = "ica-audit-bundle/v1"
MANIFEST_FILE = "manifest.json"
ENTRIES_FILE = "entries.jsonl"
KEYS_FILE = "keys.json"
CHECKPOINT_DIR = "checkpoints"

_CHUNK = 1 << 20
_EMPTY_ROOT = hashlib.sha256(b"").digest()
_SIG_PREFIX = "— "
_MAX_SIGNATURES = 100
_MAX_TREE_SIZE = 2**64 - 1
_MAX_LISTED = 50  # problems printed in the text report
_MAX_SMALL_FILE = 16 << 20  # manifest, keys and checkpoints are read whole; they are small
_PATH_RE = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
_HEX_ID_RE = re.compile(r"[0-9a-fA-F]{8}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_DECIMAL_RE = re.compile(r"0|[1-9][0-9]*")
_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|([+-])(\d{2}):(\d{2}))"
)


def checkpoint_file_name(size: int) -> str:
    """Return the recommended bundle path of the checkpoint of ``size``."""
    return f"{CHECKPOINT_DIR}/{size:020d}.checkpoint"


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


def _cryptography_verify() -> Callable[[bytes, bytes, bytes], bool] | None:
    """Return Ed25519 verification by ``cryptography`` (OpenSSL), or None if not installed."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        return None

    def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    return verify


# --- report ----------------------------------------------------------------------------------


@dataclass
class Problem:
    """One failed check: where (a bundle path) and what.

    For problems with the entries, ``index`` is the first bad entry index, or, when only a
    range is known (a root mismatch), the range ``[index, end)`` that holds it.
    """

    where: str
    message: str
    index: int | None = None
    end: int | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Report:
    """The outcome of :func:`verify_bundle`.

    ``verified_size``: the largest size of a verified checkpoint whose root the entries
    ``[0, verified_size)`` reproduce, below the first bad entry. ``first_bad_index``: the
    lowest entry index that could not be verified (altered, inserted, removed, reordered,
    missing, or not covered by a valid checkpoint); if ``first_bad_index_end`` is set, the
    first bad entry is only known to lie in ``[first_bad_index, first_bad_index_end)``.
    ``first_bad_checkpoint``: the path of the smallest-size checkpoint that failed a check
    (its signature, its syntax, or its root against the entries).
    """

    bundle: str
    backend: str
    origin: str | None = None
    size: int | None = None
    entries: int = 0
    checkpoints: int = 0
    checkpoints_verified: int = 0
    verified_size: int = 0
    first_bad_index: int | None = None
    first_bad_index_end: int | None = None
    first_bad_checkpoint: str | None = None
    keys: list[str] = field(default_factory=list)
    pinned: bool = False
    witness_keys: list[str] = field(default_factory=list)
    witness_threshold: int = 0
    witnessed_size: int | None = None
    witnessed_by: list[str] = field(default_factory=list)
    known_checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True iff no check failed."""
        return not self.problems

    @property
    def assurance(self) -> str:
        """What the checks prove, given what the auditor supplied (see "What each mode
        proves" in the module documentation)."""
        if not self.pinned and not self.witness_keys and not self.known_checkpoints:
            return "internal consistency only"
        parts = []
        if self.pinned:
            parts.append("signed by the pinned log key")
        if self.witness_keys:
            parts.append(f"cosigned by {self.witness_threshold} of the given witnesses")
        if self.known_checkpoints:
            parts.append(f"consistent with {self.known_checkpoints} checkpoint(s) you kept")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        data = asdict(self)
        data["ok"] = self.ok
        data["assurance"] = self.assurance
        return data

    def text(self) -> str:
        """Return a human-readable summary."""
        out = [f"ICA audit bundle: {self.bundle}"]
        out.append(f"origin: {self.origin or '?'}")
        out.append(f"entries: {self.entries}")
        out.append(f"checkpoints: {self.checkpoints_verified} of {self.checkpoints} verified")
        source = "pinned with --trust-key" if self.pinned else "taken from keys.json, not pinned"
        out.append(f"log keys ({source}):")
        out.extend(f"  {k}" for k in self.keys)
        if self.witness_keys:
            out.append(f"witness keys (given; {self.witness_threshold} required):")
            out.extend(f"  {k}" for k in self.witness_keys)
            if self.witnessed_size is not None:
                out.append(f"final checkpoint {self.witnessed_size} cosigned by:")
                out.extend(f"  {w}" for w in self.witnessed_by)
        if self.known_checkpoints:
            out.append(f"checkpoints you kept, checked: {self.known_checkpoints}")
        out.append(f"Ed25519: {self.backend}")
        out.extend(f"warning: {w}" for w in self.warnings)
        if not self.pinned and not self.witness_keys:
            out.append(
                "NOTE: no --trust-key and no --witness-key was given: this run proved the "
                "bundle's INTERNAL CONSISTENCY ONLY. Whoever wrote the bundle could have "
                "written all of it, keys.json included; pin the log key you obtained from ICA "
                "independently, and the witnesses' keys, to prove more."
            )
        out.append(f"assurance: {self.assurance}")
        if self.ok:
            out.append(
                f"RESULT: OK: all {self.entries} entries match the signed checkpoints"
                f" (largest {self.verified_size})"
            )
            return "\n".join(out)
        out.append(f"RESULT: FAILED: {len(self.problems)} problem(s)")
        if self.first_bad_index is not None:
            if self.first_bad_index_end is not None:
                where = f"in [{self.first_bad_index}, {self.first_bad_index_end})"
            else:
                where = f"{self.first_bad_index}"
            out.append(f"first bad entry index: {where}")
        if self.first_bad_checkpoint is not None:
            out.append(f"first bad checkpoint: {self.first_bad_checkpoint}")
        out.append(f"entries verified before the first problem: [0, {self.verified_size})")
        out.extend(f"  - {p}" for p in self.problems[:_MAX_LISTED])
        if len(self.problems) > _MAX_LISTED:
            out.append(f"  ... and {len(self.problems) - _MAX_LISTED} more (see --json)")
        return "\n".join(out)


class _Fail(Exception):
    """A problem that stops one check (reported, then the next item is checked)."""


# --- small parsers ---------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _Fail(f"duplicate JSON key {key!r}")
        obj[key] = value
    return obj


def _load_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise _Fail("not UTF-8") from None
    except ValueError as exc:  # json.JSONDecodeError
        raise _Fail(f"not valid JSON ({exc})") from None


def _field(obj: dict[str, Any], name: str, kind: type, what: str) -> Any:
    if name not in obj:
        raise _Fail(f"{what} has no {name!r}")
    value = obj[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Fail(f"{what}: {name!r} must be a JSON {kind.__name__}, not {value!r}")
    return value


def _parse_time(text: object, what: str) -> datetime:
    if not isinstance(text, str):
        raise _Fail(f"{what} must be an RFC 3339 time string, not {text!r}")
    m = _TIME_RE.fullmatch(text)
    if m is None:
        raise _Fail(f"{what} {text!r} is not an RFC 3339 time with an offset")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micros = int((m.group(7) or "0").ljust(6, "0")[:6])
    offset = timedelta(0)
    if m.group(8) != "Z":
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        if m.group(9) == "-":
            offset = -offset
    try:
        tz = timezone(offset)
        return datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
    except ValueError:
        raise _Fail(f"{what} {text!r} is not a valid time") from None


def _b64decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise _Fail(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise _Fail(f"{what} is not canonical base64")
    return raw


def _valid_key_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


def _key_id(name: str, public_key: bytes) -> int:
    digest = hashlib.sha256(name.encode("utf-8") + b"\n\x01" + public_key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class _Key:
    name: str
    key_id: int
    public_key: bytes
    vkey: str
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    def valid_at(self, when: datetime) -> bool:
        if self.valid_from is not None and when < self.valid_from:
            return False
        return self.valid_until is None or when < self.valid_until

    def period(self) -> str:
        start = self.valid_from.isoformat() if self.valid_from else "?"
        end = self.valid_until.isoformat() if self.valid_until else "open"
        return f"[{start}, {end})"


def _parse_vkey(vkey: object) -> _Key:
    """Parse ``<name>+<hex key id>+<base64(0x01 || public key)>`` strictly."""
    if not isinstance(vkey, str):
        raise _Fail(f"a verifier key must be a string, not {vkey!r}")
    parts = vkey.split("+", 2)  # the base64 part may contain "+"
    if len(parts) != 3:
        raise _Fail(f"verifier key {vkey!r} is not <name>+<hex key id>+<base64 key>")
    name, hex_id, key_b64 = parts
    if not _valid_key_name(name):
        raise _Fail(f"verifier key {vkey!r}: invalid key name")
    if not _HEX_ID_RE.fullmatch(hex_id):
        raise _Fail(f"verifier key {vkey!r}: the key id must be 8 hex digits")
    raw = _b64decode(key_b64, f"verifier key {vkey!r}")
    if len(raw) != 33 or raw[0] != 0x01:
        raise _Fail(f"verifier key {vkey!r}: not an Ed25519 key (0x01 || 32 bytes)")
    public_key = raw[1:]
    if not ed25519_public_key_ok(public_key):
        raise _Fail(f"verifier key {vkey!r}: not a valid Ed25519 public key")
    if _key_id(name, public_key) != int(hex_id, 16):
        raise _Fail(f"verifier key {vkey!r}: the key id does not match the name and key")
    return _Key(name, int(hex_id, 16), public_key, vkey)


def _witness_key_id(name: str, public_key: bytes) -> int:
    digest = hashlib.sha256(name.encode("utf-8") + b"\n\x04" + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _parse_witness_vkey(vkey: str) -> _Key:
    """Parse a witness key ``<name>+<hex key id>+<base64(0x04 || public key)>`` strictly."""
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise _Fail(f"witness key {vkey!r} is not <name>+<hex key id>+<base64 key>")
    name, hex_id, key_b64 = parts
    if not _valid_key_name(name) or not _HEX_ID_RE.fullmatch(hex_id):
        raise _Fail(f"witness key {vkey!r}: invalid key name or key id")
    raw = _b64decode(key_b64, f"witness key {vkey!r}")
    if len(raw) != 33 or raw[0] != 0x04:
        raise _Fail(f"witness key {vkey!r}: not an Ed25519 cosignature key (0x04 || 32 bytes)")
    if not ed25519_public_key_ok(raw[1:]):
        raise _Fail(f"witness key {vkey!r}: not a valid Ed25519 public key")
    if _witness_key_id(name, raw[1:]) != int(hex_id, 16):
        raise _Fail(f"witness key {vkey!r}: the key id does not match the name and key")
    return _Key(name, int(hex_id, 16), raw[1:], vkey)


def _check_note_text(text: str) -> None:
    for ch in text:
        if ch < " " and ch != "\n":
            raise _Fail(f"the note contains the control character {ch!r}")


@dataclass(frozen=True)
class _Checkpoint:
    text: bytes
    origin: str
    size: int
    root: bytes
    signatures: tuple[tuple[str, int, bytes], ...]


def _parse_checkpoint_note(data: bytes) -> _Checkpoint:
    """Parse a signed checkpoint note strictly (C2SP signed-note and tlog-checkpoint)."""
    try:
        note = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Fail("the note is not UTF-8") from None
    _check_note_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise _Fail("the note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise _Fail("the note's signature lines are missing or do not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise _Fail(f"the note has more than {_MAX_SIGNATURES} signatures")
    signatures = []
    for number, line in enumerate(lines, 1):
        if not line.startswith(_SIG_PREFIX):
            raise _Fail(f"signature line {number} does not start with an em dash and a space")
        name, sep, sig_b64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not sep or not sig_b64 or not _valid_key_name(name):
            raise _Fail(f"signature line {number} is not '— <key name> <base64 signature>'")
        blob = _b64decode(sig_b64, f"signature line {number} ({name})")
        if len(blob) < 5:
            raise _Fail(f"signature line {number} ({name}) is too short")
        signatures.append((name, int.from_bytes(blob[:4], "big"), blob[4:]))
    body = text[:-1].split("\n")
    if len(body) < 3:
        raise _Fail("the checkpoint needs origin, tree size and root hash lines")
    origin, size_text, root_text, *extensions = body
    if not origin or any(not line for line in extensions):
        raise _Fail("the checkpoint has an empty origin or extension line")
    if not _DECIMAL_RE.fullmatch(size_text) or int(size_text) > _MAX_TREE_SIZE:
        raise _Fail(f"the checkpoint tree size {size_text!r} is not a plain decimal number")
    root = _b64decode(root_text, "the checkpoint root hash")
    if len(root) != 32:
        raise _Fail(f"the checkpoint root hash is {len(root)} bytes, not 32")
    return _Checkpoint(text.encode("utf-8"), origin, int(size_text), root, tuple(signatures))


# --- the entries -----------------------------------------------------------------------------


@dataclass
class EntriesDigest:
    """What one pass over ``entries.jsonl`` yields."""

    count: int
    roots: dict[int, bytes]
    sha256: str
    bytes: int
    ends_with_newline: bool


def _fold(stack: Sequence[bytes]) -> bytes:
    if not stack:
        return _EMPTY_ROOT
    sha256 = hashlib.sha256
    h = stack[-1]
    for left in reversed(stack[:-1]):
        h = sha256(b"\x01" + left + h).digest()
    return h


def hash_entries(
    stream: IO[bytes],
    sizes: Iterable[int],
    progress: Callable[[int], None] | None = None,
) -> EntriesDigest:
    """Hash the entries of ``stream`` (one per line) into the tree, in constant memory.

    Returns the number of entries, the tree root at each of ``sizes`` that the stream reaches,
    the SHA-256 and length of the raw bytes, and whether they end with a newline (a last line
    without one still counts as an entry). ``progress`` is called with the bytes read so far.
    """
    stops = sorted({s for s in sizes if s >= 0})
    roots: dict[int, bytes] = {}
    stop_iter = iter(stops)
    next_stop = next(stop_iter, -1)
    if next_stop == 0:
        roots[0] = _EMPTY_ROOT
        next_stop = next(stop_iter, -1)
    sha256 = hashlib.sha256
    file_hash = sha256()
    stack: list[bytes] = []
    push, pop = stack.append, stack.pop
    count = 0
    total = 0
    pending = b""
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        file_hash.update(chunk)
        total += len(chunk)
        lines = chunk.split(b"\n")
        if pending:
            lines[0] = pending + lines[0]
        pending = lines.pop()
        for line in lines:
            h = sha256(b"\x00" + line).digest()
            n = count
            while n & 1:
                h = sha256(b"\x01" + pop() + h).digest()
                n >>= 1
            push(h)
            count += 1
            if count == next_stop:
                roots[count] = _fold(stack)
                next_stop = next(stop_iter, -1)
        if progress is not None:
            progress(total)
    ends_with_newline = not pending
    if pending:
        h = sha256(b"\x00" + pending).digest()
        n = count
        while n & 1:
            h = sha256(b"\x01" + pop() + h).digest()
            n >>= 1
        push(h)
        count += 1
        if count == next_stop:
            roots[count] = _fold(stack)
    return EntriesDigest(count, roots, file_hash.hexdigest(), total, ends_with_newline)


# --- the bundle ------------------------------------------------------------------------------


@dataclass
class _ListedCheckpoint:
    path: str
    size: int
    signed_at: datetime
    root: bytes | None = None  # set once the checkpoint passed every check


class _Verification:
    def __init__(
        self,
        root: str,
        trusted: Sequence[str],
        verify: Callable[[bytes, bytes, bytes], bool],
        backend: str,
        progress: Callable[[int, int], None] | None,
        witness_keys: Sequence[str] = (),
        witness_threshold: int | None = None,
        known_dir: str | None = None,
    ) -> None:
        self.dir = root
        self.trusted = trusted
        self.witness_vkeys = [k.strip() for k in witness_keys]
        self.witness_threshold = witness_threshold
        self.known_dir = known_dir
        self.witnesses: list[_Key] = []
        self.known: list[tuple[str, _Checkpoint]] = []
        self.verify = verify
        self.progress = progress
        self.report = Report(bundle=root, backend=backend, pinned=bool(trusted))
        self.files: dict[str, tuple[str, int]] = {}
        self.keys: list[_Key] = []
        self.checkpoints: list[_ListedCheckpoint] = []
        self.bad_checkpoints: set[str] = set()
        self.matched: list[int] = []

    # -- helpers

    def problem(
        self, where: str, message: str, index: int | None = None, end: int | None = None
    ) -> None:
        self.report.problems.append(Problem(where, message, index, end))

    def path(self, rel: str) -> str:
        return os.path.join(self.dir, *rel.split("/"))

    def read_small(self, rel: str) -> bytes:
        """Read a listed small file whole and check it against the manifest."""
        try:
            with open(self.path(rel), "rb") as f:
                data = f.read(_MAX_SMALL_FILE + 1)
        except OSError as exc:
            raise _Fail(f"cannot be read ({exc.strerror or exc})") from None
        if len(data) > _MAX_SMALL_FILE:
            raise _Fail("is unreasonably large")
        self.check_file(rel, hashlib.sha256(data).hexdigest(), len(data))
        return data

    def check_file(self, rel: str, digest: str, size: int) -> None:
        listed = self.files.get(rel)
        if listed is None:
            return
        want_digest, want_size = listed
        if size != want_size or not hmac.compare_digest(digest, want_digest):
            self.problem(
                rel,
                f"does not match the manifest: {size} bytes with SHA-256 {digest},"
                f" the manifest says {want_size} bytes with SHA-256 {want_digest}",
            )

    # -- phases

    def run(self) -> Report:
        try:
            manifest = self.load_manifest()
        except _Fail as exc:
            self.problem(MANIFEST_FILE, str(exc))
            return self.report
        self.check_listing(manifest)
        self.check_other_files()
        self.load_keys()
        self.check_checkpoints(manifest)
        self.check_witnesses()
        self.load_known(manifest)
        self.check_entries(manifest)
        self.summarize()
        return self.report

    def load_manifest(self) -> dict[str, Any]:
        try:
            with open(self.path(MANIFEST_FILE), "rb") as f:
                data = f.read(_MAX_SMALL_FILE + 1)
        except OSError as exc:
            raise _Fail(f"cannot be read ({exc.strerror or exc})") from None
        manifest = _load_json(data)
        if not isinstance(manifest, dict):
            raise _Fail("must be a JSON object")
        fmt = manifest.get("format")
        if fmt != BUNDLE_FORMAT:
            raise _Fail(f"format is {fmt!r}; this verify.py reads {BUNDLE_FORMAT!r}")
        origin = _field(manifest, "origin", str, "the manifest")
        if not origin or "\n" in origin:
            raise _Fail("the origin must be a non-empty single line")
        size = _field(manifest, "size", int, "the manifest")
        if not 0 <= size <= _MAX_TREE_SIZE:
            raise _Fail(f"size {size} is out of range")
        self.report.origin, self.report.size = origin, size
        for i, item in enumerate(_field(manifest, "files", list, "the manifest")):
            what = f"files[{i}]"
            if not isinstance(item, dict):
                raise _Fail(f"{what} must be an object")
            rel = self.checked_path(_field(item, "path", str, what), what)
            digest = _field(item, "sha256", str, what)
            if not _SHA256_RE.fullmatch(digest):
                raise _Fail(f"{what}: sha256 must be 64 lowercase hex digits")
            length = _field(item, "bytes", int, what)
            if length < 0:
                raise _Fail(f"{what}: bytes must not be negative")
            if rel in self.files:
                raise _Fail(f"{rel} is listed twice in files")
            self.files[rel] = (digest, length)
        seen: set[str] = set()
        for i, item in enumerate(_field(manifest, "checkpoints", list, "the manifest")):
            what = f"checkpoints[{i}]"
            if not isinstance(item, dict):
                raise _Fail(f"{what} must be an object")
            rel = self.checked_path(_field(item, "path", str, what), what)
            if not rel.startswith(CHECKPOINT_DIR + "/"):
                raise _Fail(f"{what}: checkpoint files live in {CHECKPOINT_DIR}/")
            if rel in seen:
                raise _Fail(f"{rel} is listed twice in checkpoints")
            seen.add(rel)
            cp_size = _field(item, "size", int, what)
            if not 0 <= cp_size <= _MAX_TREE_SIZE:
                raise _Fail(f"{what}: size {cp_size} is out of range")
            signed_at = _parse_time(item.get("signed_at"), f"{what}: signed_at")
            self.checkpoints.append(_ListedCheckpoint(rel, cp_size, signed_at))
        self.checkpoints.sort(key=lambda c: (c.size, c.signed_at, c.path))
        self.report.checkpoints = len(self.checkpoints)
        return manifest

    @staticmethod
    def checked_path(rel: str, what: str) -> str:
        parts = rel.split("/")
        if not _PATH_RE.fullmatch(rel) or any(p in (".", "..") for p in parts):
            raise _Fail(f"{what}: unsafe or malformed path {rel!r}")
        if rel == MANIFEST_FILE:
            raise _Fail(f"{what}: the manifest does not list itself")
        return rel

    def check_listing(self, manifest: dict[str, Any]) -> None:
        for rel in (ENTRIES_FILE, KEYS_FILE, *(c.path for c in self.checkpoints)):
            if rel not in self.files:
                self.problem(MANIFEST_FILE, f"{rel} is not listed in files with its SHA-256")
        if not self.checkpoints:
            self.problem(MANIFEST_FILE, "the bundle has no checkpoints: nothing is signed")
        elif self.checkpoints[-1].size != manifest["size"]:
            self.problem(
                MANIFEST_FILE,
                f"size {manifest['size']} is not the largest checkpoint size"
                f" {self.checkpoints[-1].size}",
            )
        listed_checkpoints = {c.path for c in self.checkpoints}
        for rel in self.walk():
            if rel == MANIFEST_FILE or rel in self.files:
                continue
            if rel.startswith(CHECKPOINT_DIR + "/") and rel not in listed_checkpoints:
                self.problem(rel, "this checkpoint file is not listed in the manifest")
            else:
                self.report.warnings.append(f"{rel} is not listed in the manifest (ignored)")

    def walk(self) -> list[str]:
        found: list[str] = []
        for top, dirs, files in os.walk(self.dir):
            dirs.sort()
            rel_top = os.path.relpath(top, self.dir)
            for name in sorted(files):
                rel = name if rel_top == "." else f"{rel_top.replace(os.sep, '/')}/{name}"
                found.append(rel)
        return found

    def check_other_files(self) -> None:
        """Hash every listed file that no other check reads."""
        read_elsewhere = {ENTRIES_FILE, KEYS_FILE, *(c.path for c in self.checkpoints)}
        for rel in sorted(self.files):
            if rel in read_elsewhere:
                continue
            file_hash = hashlib.sha256()
            length = 0
            try:
                with open(self.path(rel), "rb") as f:
                    chunk = f.read(_CHUNK)
                    while chunk:
                        file_hash.update(chunk)
                        length += len(chunk)
                        chunk = f.read(_CHUNK)
            except OSError as exc:
                self.problem(rel, f"cannot be read ({exc.strerror or exc})")
                continue
            self.check_file(rel, file_hash.hexdigest(), length)

    def load_keys(self) -> None:
        try:
            keys = _load_json(self.read_small(KEYS_FILE))
            if not isinstance(keys, list) or not keys:
                raise _Fail("must be a non-empty JSON array of keys")
        except _Fail as exc:
            self.problem(KEYS_FILE, str(exc))
            return
        for i, item in enumerate(keys):
            what = f"key {i}"
            try:
                if not isinstance(item, dict):
                    raise _Fail("must be an object")
                key = _parse_vkey(_field(item, "vkey", str, what))
                if _field(item, "name", str, what) != key.name:
                    raise _Fail(f"name {item['name']!r} is not the vkey's name {key.name!r}")
                start = _parse_time(item.get("valid_from"), "valid_from")
                if "valid_until" not in item:
                    raise _Fail("has no 'valid_until' (null for a key still in use)")
                until_text = item["valid_until"]
                until = None if until_text is None else _parse_time(until_text, "valid_until")
                if until is not None and until <= start:
                    raise _Fail("valid_until is not after valid_from")
            except _Fail as exc:
                self.problem(KEYS_FILE, f"{what}: {exc}")
                continue
            key = _Key(key.name, key.key_id, key.public_key, key.vkey, start, until)
            if any((k.name, k.key_id) == (key.name, key.key_id) for k in self.keys):
                self.problem(KEYS_FILE, f"{what}: {key.name} {key.key_id:08x} is listed twice")
                continue
            self.keys.append(key)
        pinned: set[tuple[str, int, bytes]] = set()
        for vkey in self.trusted:
            try:
                k = _parse_vkey(vkey.strip())
            except _Fail as exc:
                self.problem("--trust-key", str(exc))
                continue
            pinned.add((k.name, k.key_id, k.public_key))
            if not any(
                (x.name, x.key_id, x.public_key) == (k.name, k.key_id, k.public_key)
                for x in self.keys
            ):
                self.report.warnings.append(f"pinned key {vkey.strip()} is not in keys.json")
        if self.trusted:
            self.keys = [k for k in self.keys if (k.name, k.key_id, k.public_key) in pinned]
        self.report.keys = [f"{k.vkey} valid {k.period()}" for k in self.keys]

    def check_checkpoints(self, manifest: dict[str, Any]) -> None:
        known = {(k.name, k.key_id): k for k in self.keys}
        roots: dict[int, tuple[bytes, str]] = {}
        latest: _ListedCheckpoint | None = None
        for cp in self.checkpoints:
            try:
                parsed = _parse_checkpoint_note(self.read_small(cp.path))
                if parsed.origin != manifest["origin"]:
                    raise _Fail(
                        f"origin {parsed.origin!r} is not the bundle's {manifest['origin']!r}"
                    )
                if parsed.size != cp.size:
                    raise _Fail(f"signs size {parsed.size}, the manifest says {cp.size}")
                self.check_signatures(parsed, cp, known)
                other = roots.get(cp.size)
                if other is not None and other[0] != parsed.root:
                    raise _Fail(f"a second, different root for size {cp.size} (see {other[1]})")
                if latest is not None and latest.size < cp.size and cp.signed_at < latest.signed_at:
                    raise _Fail(
                        f"signed at {cp.signed_at.isoformat()}, before the smaller checkpoint"
                        f" {latest.path} ({latest.signed_at.isoformat()})"
                    )
            except _Fail as exc:
                self.problem(cp.path, str(exc))
                self.bad_checkpoints.add(cp.path)
                continue
            roots.setdefault(cp.size, (parsed.root, cp.path))
            cp.root = parsed.root
            latest = cp
            self.report.checkpoints_verified += 1

    def check_signatures(
        self, parsed: _Checkpoint, cp: _ListedCheckpoint, known: dict[tuple[str, int], _Key]
    ) -> None:
        accepted = False
        notes: list[str] = []
        seen: set[tuple[str, int]] = set()
        for name, kid, signature in parsed.signatures:
            key = known.get((name, kid))
            if key is None or (name, kid) in seen:
                continue
            seen.add((name, kid))
            if not self.verify(key.public_key, parsed.text, signature):
                raise _Fail(f"the signature by key {name} ({kid:08x}) is invalid")
            if key.valid_at(cp.signed_at):
                accepted = True
            else:
                notes.append(f"{name} ({kid:08x}) is valid only {key.period()}")
        if not accepted:
            signers = ", ".join(f"{n} ({k:08x})" for n, k, _ in parsed.signatures)
            detail = "; ".join(notes) if notes else f"it is signed by: {signers}"
            trusted = "pinned" if self.trusted else "keys.json"
            raise _Fail(
                f"not signed by any {trusted} key valid at {cp.signed_at.isoformat()}: {detail}"
            )

    def check_witnesses(self) -> None:
        """Every given witness key's cosignature must verify; the final checkpoint needs the
        threshold of them (C2SP tlog-cosignature, ``cosignature/v1``)."""
        for vkey in self.witness_vkeys:
            try:
                key = _parse_witness_vkey(vkey)
            except _Fail as exc:
                self.problem("--witness-key", str(exc))
                continue
            if any((k.name, k.key_id) == (key.name, key.key_id) for k in self.witnesses):
                continue
            self.witnesses.append(key)
        if not self.witness_vkeys:
            return
        threshold = self.witness_threshold
        if threshold is None:
            threshold = len(self.witnesses)
        if not 1 <= threshold <= max(1, len(self.witnesses)):
            self.problem("--witness-threshold", f"{threshold} is not in [1, {len(self.witnesses)}]")
            threshold = max(1, len(self.witnesses))
        self.report.witness_threshold = threshold
        self.report.witness_keys = [k.vkey for k in self.witnesses]
        by_id = {(k.name, k.key_id): k for k in self.witnesses}
        final: tuple[_ListedCheckpoint, list[str]] | None = None
        for cp in self.checkpoints:
            if cp.root is None:
                continue
            try:
                parsed = _parse_checkpoint_note(self.read_small(cp.path))
            except _Fail:
                continue
            cosigners: list[str] = []
            for name, kid, blob in parsed.signatures:
                witness = by_id.get((name, kid))
                if witness is None or name in [c.split(" ")[0] for c in cosigners]:
                    continue
                timestamp = int.from_bytes(blob[:8], "big") if len(blob) == 72 else 0
                message = b"cosignature/v1\ntime %d\n" % timestamp + parsed.text
                if not 0 < timestamp < 2**63 or not self.verify(
                    witness.public_key, message, blob[8:]
                ):
                    self.problem(
                        cp.path, f"the cosignature by witness {name} ({kid:08x}) is invalid"
                    )
                    self.bad_checkpoints.add(cp.path)
                    continue
                when = datetime.fromtimestamp(timestamp, timezone(timedelta(0))).isoformat()
                cosigners.append(f"{name} at {when}")
            if final is None or cp.size >= final[0].size:
                final = (cp, cosigners)
        if final is None:
            self.problem("--witness-key", "no verified checkpoint to look for cosignatures on")
            return
        cp, cosigners = final
        self.report.witnessed_size = cp.size
        self.report.witnessed_by = cosigners
        if len(cosigners) < threshold:
            self.bad_checkpoints.add(cp.path)
            self.problem(
                cp.path,
                f"the final checkpoint (size {cp.size}) carries {len(cosigners)} valid "
                f"cosignature(s) of the given witnesses, {threshold} required: no witness "
                "vouches for this history (a fork or a rewound log cannot get a cosignature)",
                None,
            )

    def load_known(self, manifest: dict[str, Any]) -> None:
        """Read the checkpoints the auditor kept (every file of the folder that parses)."""
        if self.known_dir is None:
            return
        if not os.path.isdir(self.known_dir):
            self.problem("--known-checkpoints", f"{self.known_dir} is not a directory")
            return
        keys = {(k.name, k.key_id): k for k in self.keys}
        for top, dirs, files in os.walk(self.known_dir):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(top, name)
                try:
                    with open(path, "rb") as f:
                        parsed = _parse_checkpoint_note(f.read(_MAX_SMALL_FILE))
                except (OSError, _Fail) as exc:
                    self.report.warnings.append(f"{path}: not a checkpoint ({exc}); skipped")
                    continue
                signed = any(
                    (n, k) in keys and self.verify(keys[(n, k)].public_key, parsed.text, sig)
                    for n, k, sig in parsed.signatures
                )
                if not signed:
                    self.report.warnings.append(
                        f"{path}: not signed by a log key this run trusts; compared anyway"
                    )
                self.known.append((path, parsed))
        self.report.known_checkpoints = len(self.known)

    def check_known(self, manifest: dict[str, Any], digest: EntriesDigest) -> None:
        origin = manifest["origin"]
        previous: _Checkpoint | None = None
        previous_origin: str | None = None
        if any(k.origin != origin for _, k in self.known):
            previous_origin, previous = self.previous_checkpoint()
        for path, known in self.known:
            where = f"--known-checkpoints {path}"
            if known.origin == origin:
                computed = digest.roots.get(known.size)
                if known.size > digest.count:
                    self.problem(
                        where,
                        f"you kept a checkpoint of size {known.size}, but the bundle has "
                        f"{digest.count} entries: the log was rewound or the bundle cut short",
                        digest.count,
                    )
                elif computed is None or not hmac.compare_digest(computed, known.root):
                    self.problem(
                        where,
                        f"the entries do not reproduce the root of the checkpoint of size "
                        f"{known.size} you kept: this bundle is a fork of the history you saw",
                        0,
                        known.size,
                    )
            elif known.origin == previous_origin and previous is not None:
                if known.size > previous.size or (
                    known.size == previous.size and known.root != previous.root
                ):
                    self.problem(
                        where,
                        f"you kept {known.origin} at size {known.size}, but entry 0 links to "
                        f"its checkpoint of size {previous.size} with "
                        f"{'another root' if known.size == previous.size else 'fewer entries'}"
                        ": the previous year was rewound or forked before it was closed",
                        0,
                    )
                elif known.size < previous.size:
                    self.report.warnings.append(
                        f"{path}: {known.origin} at size {known.size} needs that year's bundle "
                        "to be checked (verify it with --known-checkpoints there)"
                    )
            else:
                self.report.warnings.append(f"{path}: {known.origin} is not this bundle's log")

    def previous_checkpoint(self) -> tuple[str | None, _Checkpoint | None]:
        """The previous year's origin and final checkpoint that entry 0 embeds."""
        try:
            with open(self.path(ENTRIES_FILE), "rb") as f:
                first = json.loads(f.readline(_MAX_SMALL_FILE))
            data = first["body"]["data"]
            note = data.get("previous_checkpoint")
            origin = data.get("previous_origin")
            if not isinstance(note, str):
                return (origin if isinstance(origin, str) else None), None
            return origin, _parse_checkpoint_note(note.encode("utf-8"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, _Fail):
            return None, None

    def check_entries(self, manifest: dict[str, Any]) -> None:
        good = [c for c in self.checkpoints if c.root is not None]
        total = self.files.get(ENTRIES_FILE, ("", 0))[1]
        progress = self.progress
        callback = None if progress is None else (lambda done: progress(done, total))
        try:
            with open(self.path(ENTRIES_FILE), "rb") as f:
                sizes = [c.size for c in good]
                sizes += [k.size for _, k in self.known if k.origin == manifest["origin"]]
                digest = hash_entries(f, sizes, callback)
        except OSError as exc:
            self.problem(ENTRIES_FILE, f"cannot be read ({exc.strerror or exc})", 0)
            return
        self.report.entries = digest.count
        self.check_file(ENTRIES_FILE, digest.sha256, digest.bytes)
        self.check_known(manifest, digest)
        verified = 0
        mismatch: _ListedCheckpoint | None = None
        later_mismatches = 0
        for cp in good:
            computed = digest.roots.get(cp.size)
            if computed is None:
                continue  # beyond the end of the file, reported below
            if hmac.compare_digest(computed, cp.root or b""):
                if mismatch is None:
                    verified = cp.size
                    self.matched.append(cp.size)
            elif mismatch is None:
                mismatch = cp
            else:
                later_mismatches += 1
        if mismatch is not None:
            self.bad_checkpoints.add(mismatch.path)
            more = ""
            if later_mismatches:
                more = f"; {later_mismatches} later checkpoint(s) do not match either"
            self.problem(
                ENTRIES_FILE,
                f"the first {mismatch.size} entries do not hash to the root signed by"
                f" {mismatch.path}: an entry in [{verified}, {mismatch.size}) was altered,"
                f" inserted, removed or reordered (the first {verified} entries match){more}",
                verified,
                mismatch.size,
            )
        beyond = [c for c in good if c.size > digest.count]
        covered = good[-1].size if good else 0
        if beyond:
            self.bad_checkpoints.add(beyond[0].path)
            self.problem(
                ENTRIES_FILE,
                f"has {digest.count} entries but {beyond[0].path} signs {beyond[0].size}:"
                f" entries [{digest.count}, {beyond[-1].size}) are missing",
                digest.count,
            )
        elif digest.count > covered:
            self.problem(
                ENTRIES_FILE,
                f"has {digest.count} entries, but the largest valid checkpoint signs {covered}:"
                f" entries [{covered}, {digest.count}) are not covered by a valid signed"
                " checkpoint",
                covered,
            )
        elif digest.count != manifest["size"]:  # the largest checkpoint failed its checks
            self.problem(
                ENTRIES_FILE,
                f"has {digest.count} entries, the manifest says {manifest['size']}",
                min(digest.count, manifest["size"]),
            )
        if not digest.ends_with_newline:
            self.problem(
                ENTRIES_FILE,
                f"the last line (entry {digest.count - 1}) does not end with a newline:"
                " the file was cut short or edited",
                digest.count - 1,
            )

    def summarize(self) -> None:
        report = self.report
        first: Problem | None = None
        for p in report.problems:
            if p.index is not None and (first is None or p.index < (first.index or 0)):
                first = p
        limit = _MAX_TREE_SIZE + 1
        if first is not None:
            report.first_bad_index, report.first_bad_index_end = first.index, first.end
            limit = first.index or 0
        report.verified_size = max((s for s in self.matched if s <= limit), default=0)
        bad = [c for c in self.checkpoints if c.path in self.bad_checkpoints]
        if bad:
            report.first_bad_checkpoint = bad[0].path


def verify_bundle(
    bundle_dir: str | os.PathLike[str],
    trusted_keys: Sequence[str] = (),
    *,
    use_cryptography: bool = True,
    progress: Callable[[int, int], None] | None = None,
    witness_keys: Sequence[str] = (),
    witness_threshold: int | None = None,
    known_checkpoints: str | os.PathLike[str] | None = None,
) -> Report:
    """Verify the bundle in ``bundle_dir``; see the module documentation for the checks.

    ``trusted_keys`` are pinned verifier keys (``<name>+<hex id>+<base64 key>``): when given,
    only they may sign checkpoints. ``progress(done, total)`` reports bytes of entries read.
    ``witness_keys``: witness verifier keys (type 0x04) whose cosignatures the final checkpoint
    must carry, ``witness_threshold`` of them (default all). ``known_checkpoints``: a folder of
    checkpoints the auditor kept, that the bundle must be consistent with.
    """
    verify = _cryptography_verify() if use_cryptography else None
    backend = "cryptography (OpenSSL)" if verify is not None else "pure Python (RFC 8032)"
    return _Verification(
        os.fspath(bundle_dir),
        trusted_keys,
        verify or ed25519_verify,
        backend,
        progress,
        witness_keys,
        witness_threshold,
        os.fspath(known_checkpoints) if known_checkpoints is not None else None,
    ).run()


def _progress_printer(stream: IO[str]) -> Callable[[int, int], None]:
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and done < total:
            return
        last[0] = now
        pct = f"{100 * done / total:5.1f}%" if total else ""
        stream.write(f"\rhashing entries: {done >> 20} MiB {pct}")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="verify.py",
        description="Verify an ICA audit-ledger export bundle (see the module docstring).",
    )
    parser.add_argument("bundle", help="the bundle directory (an extracted export)")
    parser.add_argument(
        "--trust-key",
        action="append",
        default=[],
        metavar="VKEY",
        help="a log public key <name>+<hex id>+<base64 key> obtained independently (repeatable)",
    )
    parser.add_argument(
        "--trust-keys-file", metavar="FILE", help="a file of such keys, one per line"
    )
    parser.add_argument(
        "--witness-key",
        action="append",
        default=[],
        metavar="VKEY",
        help="a witness's public key <name>+<hex id>+<base64(0x04 || key)>, from the witness's "
        "operator (repeatable): the final checkpoint must carry its cosignature",
    )
    parser.add_argument(
        "--witness-threshold",
        type=int,
        metavar="K",
        help="require K of the --witness-key cosignatures (default: all of them)",
    )
    parser.add_argument(
        "--known-checkpoints",
        metavar="DIR",
        help="a folder of checkpoints you kept (earlier exports, a monitor's copies): the "
        "bundle must not fork from, or fall behind, any of them",
    )
    parser.add_argument("--pure", action="store_true", help="use the built-in Ed25519 only")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    args = parser.parse_args(argv)
    trusted = list(args.trust_key)
    if args.trust_keys_file:
        try:
            with open(args.trust_keys_file, encoding="utf-8") as f:
                trusted += [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        except OSError as exc:
            parser.error(f"cannot read {args.trust_keys_file}: {exc.strerror or exc}")
    if not os.path.isdir(args.bundle):
        parser.error(f"{args.bundle} is not a directory (extract the export first)")
    show = None
    if not args.quiet and not args.json and sys.stderr.isatty():
        show = _progress_printer(sys.stderr)
    report = verify_bundle(
        args.bundle,
        trusted,
        use_cryptography=not args.pure,
        progress=show,
        witness_keys=args.witness_key,
        witness_threshold=args.witness_threshold,
        known_checkpoints=args.known_checkpoints,
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
