"""Build export bundles (format ``ica-audit-bundle/v1``) with the library, for the verifier tests.

This is a minimal reference writer of the format documented in
``azdev_ica/ledger/offline_verify.py``; the real exporter must produce the same layout.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azdev_ica.ledger import offline_verify
from azdev_ica.ledger.merkle import MemoryTree
from azdev_ica.ledger.note import Checkpoint, Signer, sign_checkpoint

ORIGIN = "ica.example/audit/2026"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Fixed seeds: deterministic keys (and Ed25519 signatures) make failures reproducible.
LOG_SIGNER = Signer("ica.example/audit", bytes(range(32)))
OLD_SIGNER = Signer("ica.example/audit", bytes(range(1, 33)))
EVIL_SIGNER = Signer("ica.example/audit", bytes(range(2, 34)))


def rfc3339(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry(i: int) -> bytes:
    """A canonical-JSON-like audit entry (the verifier never parses it)."""
    record = {
        "action": "approval.granted" if i % 3 else "run.started",
        "actor": {"id": f"user-{i % 7}", "kind": "user"},
        "at": rfc3339(T0 + timedelta(seconds=i)),
        "data": {"note": "é ✓", "n": i},
        "idx": i,
        "log": ORIGIN,
        "v": 1,
    }
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class KeySpec:
    signer: Signer
    valid_from: datetime = T0 - timedelta(days=1)
    valid_until: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        until = None if self.valid_until is None else rfc3339(self.valid_until)
        vkey = self.signer.verifier().key_string()
        return {
            "name": self.signer.name,
            "vkey": vkey,
            "valid_from": rfc3339(self.valid_from),
            "valid_until": until,
        }


@dataclass
class Bundle:
    path: Path
    entries: list[bytes]
    sizes: list[int]
    tree: MemoryTree
    keys: list[KeySpec] = field(default_factory=list)

    def file(self, rel: str) -> Path:
        return self.path / rel

    def checkpoint_path(self, size: int) -> Path:
        return self.path / offline_verify.checkpoint_file_name(size)

    def signed_at(self, size: int) -> datetime:
        return T0 + timedelta(seconds=size, milliseconds=500)

    def write_entries(self, lines: Sequence[bytes], *, newline_at_end: bool = True) -> None:
        data = b"\n".join(lines) + (b"\n" if newline_at_end and lines else b"")
        self.file(offline_verify.ENTRIES_FILE).write_bytes(data)

    def read_entries(self) -> list[bytes]:
        return self.file(offline_verify.ENTRIES_FILE).read_bytes().split(b"\n")[:-1]

    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.file(offline_verify.MANIFEST_FILE).read_text())
        return data

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=2)
        self.file(offline_verify.MANIFEST_FILE).write_text(text, encoding="utf-8")

    def reseal_manifest(self) -> None:
        """Recompute every file hash, as an attacker who rewrote files would."""
        manifest = self.manifest()
        manifest["files"] = file_list(self.path)
        self.write_manifest(manifest)

    def sign(self, size: int, root: bytes, signers: Sequence[Signer]) -> bytes:
        note = sign_checkpoint(Checkpoint(ORIGIN, size, root), signers)
        return note.encode("utf-8")


def file_list(root: Path) -> list[dict[str, Any]]:
    files = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != offline_verify.MANIFEST_FILE:
            data = p.read_bytes()
            files.append(
                {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            )
    return files


def build_bundle(
    path: Path,
    n: int,
    sizes: Sequence[int],
    *,
    keys: Sequence[KeySpec] | None = None,
    signer_for: dict[int, Signer] | None = None,
    with_verify_py: bool = True,
) -> Bundle:
    """Write a bundle of ``n`` entries with checkpoints at ``sizes`` (the last must be ``n``)."""
    keys = list(keys) if keys is not None else [KeySpec(LOG_SIGNER)]
    path.mkdir(parents=True, exist_ok=True)
    entries = [entry(i) for i in range(n)]
    tree = MemoryTree()
    for e in entries:
        tree.append(e)
    bundle = Bundle(path, entries, sorted(sizes), tree, keys)
    bundle.write_entries(entries)
    (path / offline_verify.CHECKPOINT_DIR).mkdir(exist_ok=True)
    listed = []
    for size in bundle.sizes:
        signer = (signer_for or {}).get(size, keys[-1].signer)
        note = bundle.sign(size, tree.root(size), [signer])
        bundle.checkpoint_path(size).write_bytes(note)
        listed.append(
            {
                "path": offline_verify.checkpoint_file_name(size),
                "size": size,
                "signed_at": rfc3339(bundle.signed_at(size)),
            }
        )
    keys_json = json.dumps([k.as_json() for k in keys], indent=2)
    (path / offline_verify.KEYS_FILE).write_text(keys_json, encoding="utf-8")
    if with_verify_py:
        shutil.copyfile(offline_verify.__file__, path / "verify.py")
    manifest = {
        "format": offline_verify.BUNDLE_FORMAT,
        "origin": ORIGIN,
        "size": n,
        "checkpoints": listed,
        "files": file_list(path),
    }
    bundle.write_manifest(manifest)
    return bundle
