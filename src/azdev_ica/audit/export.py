"""`ica audit export --year Y --out FILE.tar.gz`: a yearly bundle an auditor verifies offline.

The bundle is the format ``ica-audit-bundle/v1`` that ``ledger/offline_verify.py`` documents
and checks, and that program itself, as ``verify.py``. It holds the checkpoints of the database
*and* those of the outside store: a database that was cut short or rewound then exports
entries that do not reach the published checkpoints, and the auditor's `verify.py` says so.

Streaming, in constant memory: the entries go through a temporary file (hashed as they are
written, since the manifest and the tar header need their digest and size first).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import select

from azdev_ica.adapters.checkpoint_store import CheckpointStoreError, FolderCheckpointStore
from azdev_ica.db.engine import Database
from azdev_ica.db.tables import AuditCheckpoint, AuditEntry, AuditShard, WitnessCosignature
from azdev_ica.db.types import stored_bytes
from azdev_ica.errors import NotFound
from azdev_ica.ledger import offline_verify
from azdev_ica.ledger.cosignature import append_cosignatures
from azdev_ica.queries.audit import public_keys
from azdev_ica.services.audit import rfc3339

__all__ = ["ExportSummary", "export_bundle", "verifier_source"]

_CHUNK = 1 << 20


@dataclass
class ExportSummary:
    origin: str
    entries: int
    size: int
    checkpoints: int
    out: Path
    warnings: list[str] = field(default_factory=list)


def verifier_source() -> bytes:
    """The bytes of the standalone verifier shipped as ``verify.py``."""
    return (resources.files("azdev_ica.ledger") / "offline_verify.py").read_bytes()


@dataclass
class _Member:
    path: str
    data: bytes | None = None  # small files in memory; entries from a file
    source: Path | None = None
    digest: str = ""
    length: int = 0
    lines: int = 0

    def listed(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.digest, "bytes": self.length}


def _small(path: str, data: bytes) -> _Member:
    return _Member(path, data=data, digest=hashlib.sha256(data).hexdigest(), length=len(data))


def export_bundle(
    db: Database, store: FolderCheckpointStore | None, *, year: int, out: Path
) -> ExportSummary:
    """Write the bundle of shard ``year`` to ``out`` (a .tar.gz, replaced atomically)."""
    warnings: list[str] = []
    with db.engine.connect() as conn, conn.begin(), db.read() as session:
        shard = conn.execute(select(AuditShard).where(AuditShard.year == year)).first()
        if shard is None:
            raise NotFound(f"the ledger has no shard for {year}")
        origin = shard.origin
        keys = [
            {
                "name": k.name,
                "vkey": k.vkey,
                "valid_from": rfc3339(k.valid_from),
                "valid_until": rfc3339(k.valid_until) if k.valid_until else None,
            }
            for k in public_keys(session)
        ]
        cosignatures: dict[int, list[str]] = {}
        for size_, line in conn.execute(
            select(WitnessCosignature.size, WitnessCosignature.line)
            .where(WitnessCosignature.year == year)
            .order_by(WitnessCosignature.size, WitnessCosignature.witness)
        ):
            cosignatures.setdefault(size_, []).append(line)
        # One note per (size, checkpoint text): the log's signature with every cosignature
        # the database or the store holds for it; a different text for a size is a fork and
        # is shipped as a second file (verify.py flags it).
        checkpoints: dict[tuple[int, str], tuple[str, datetime]] = {}
        for row in conn.execute(
            select(AuditCheckpoint.size, AuditCheckpoint.note, AuditCheckpoint.signed_at)
            .where(AuditCheckpoint.year == year)
            .order_by(AuditCheckpoint.size)
        ):
            note = append_cosignatures(row.note, cosignatures.get(row.size, []))
            checkpoints[(row.size, _text(note))] = (note, row.signed_at)
        if store is not None:
            try:
                for published in store.all(origin):
                    key = (published.size, _text(published.note))
                    if key in checkpoints:
                        note, signed_at = checkpoints[key]
                        lines = published.note.rpartition("\n\n")[2].splitlines(keepends=True)
                        checkpoints[key] = (append_cosignatures(note, lines), signed_at)
                    else:
                        checkpoints[key] = (published.note, published.signed_at)
            except CheckpointStoreError as exc:
                warnings.append(f"the outside store could not be read: {exc}")
        if not checkpoints:
            raise NotFound(f"{origin} has no signed checkpoint yet: nothing to export")
        size = max(s for s, _ in checkpoints)
        members, listed = _checkpoint_members(checkpoints)
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in the finally below
            prefix=".ica-entries-", dir=out.parent if out.parent.exists() else None, delete=False
        )
        try:
            entries = _write_entries(conn, year, size, handle, warnings)
            handle.close()
            members.append(entries)
            members.append(_small(offline_verify.KEYS_FILE, _json(keys)))
            members.append(_small("verify.py", verifier_source()))
            members.append(_small("README.txt", _readme(origin, year)))
            manifest = {
                "format": offline_verify.BUNDLE_FORMAT,
                "origin": origin,
                "size": size,
                "checkpoints": listed,
                "files": [m.listed() for m in sorted(members, key=lambda m: m.path)],
            }
            members.append(_small(offline_verify.MANIFEST_FILE, _json(manifest)))
            _write_tar(out, f"ica-audit-{year}", members)
        finally:
            handle.close()
            os.unlink(handle.name)
    return ExportSummary(origin, entries.lines, size, len(listed), out, warnings)


def _text(note: str) -> str:
    """A signed note's text, without its signature lines."""
    return note.rpartition("\n\n")[0]


def _checkpoint_members(
    checkpoints: dict[tuple[int, str], tuple[str, datetime]],
) -> tuple[list[_Member], list[dict[str, Any]]]:
    members: list[_Member] = []
    listed: list[dict[str, Any]] = []
    names: set[str] = set()
    for (size, _), (note, signed_at) in sorted(checkpoints.items(), key=lambda i: i[0][0]):
        name = offline_verify.checkpoint_file_name(size)
        copy = 1
        while name in names:  # two different notes for one size: ship both, verify.py flags it
            copy += 1
            name = offline_verify.checkpoint_file_name(size).replace(
                ".checkpoint", f".{copy}.checkpoint"
            )
        names.add(name)
        members.append(_small(name, note.encode("utf-8")))
        listed.append({"path": name, "size": size, "signed_at": rfc3339(signed_at)})
    return members, listed


def _write_entries(conn: Any, year: int, size: int, handle: Any, warnings: list[str]) -> _Member:
    """Entries [0, size) as stored, one per line; hashed while written."""
    digest = hashlib.sha256()
    length = lines = 0
    expected = 0
    result = conn.execution_options(yield_per=2000).execute(
        select(AuditEntry.idx, AuditEntry.entry)
        .where(AuditEntry.year == year, AuditEntry.idx < size)
        .order_by(AuditEntry.idx)
    )
    for index, raw in result:
        if index != expected and not any("gap" in w for w in warnings):
            warnings.append(f"entry {expected} is missing in the database (gap before {index})")
        expected = index + 1
        line = stored_bytes(raw) + b"\n"
        handle.write(line)
        digest.update(line)
        length += len(line)
        lines += 1
    handle.flush()
    if lines < size:
        warnings.append(
            f"the database holds {lines} entries of {size} signed: the bundle will not verify"
        )
    return _Member(
        offline_verify.ENTRIES_FILE,
        source=Path(handle.name),
        digest=digest.hexdigest(),
        length=length,
        lines=lines,
    )


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _readme(origin: str, year: int) -> bytes:
    # No key from the bundle is printed here: a key that travels with the bundle proves
    # nothing about it. The auditor brings the keys.
    text = f"""ICA audit ledger export: {origin} ({year})

Verify it with Python 3.9 or later and nothing else (the `cryptography` package, when it is
installed, makes it faster):

    tar -xzf <this file>.tar.gz
    python3 ica-audit-{year}/verify.py ica-audit-{year} \\
        --trust-key '<the log's public key, obtained from ICA independently>' \\
        --witness-key '<each witness's public key, obtained from its operator>' \\
        --known-checkpoints <a folder of checkpoints you kept>

What each option proves (verify.py states it in its result):

- none: the bundle is internally consistent, and that is all. Whoever wrote the bundle could
  have written all of it, keys.json included.
- --trust-key (GET /api/v1/azdev/audit/keys, or the copy in your control documentation): the
  log's key signed the checkpoints. Whoever controls the log (or restores its database from a
  backup) can still sign a second, forked history with that key.
- --witness-key (repeatable; --witness-threshold K requires K of them): the final checkpoint
  carries those witnesses' cosignatures. A witness cosigns only what is consistent with what
  it cosigned before, so a rewound or forked log fails here.
- --known-checkpoints DIR (checkpoints you kept: last year's export, a monitor's copies,
  receipts): the bundle must reproduce each of them; a fork or a rewind against them fails.

entries.jsonl: line i is entry i, byte for byte as the ledger hashed it (canonical JSON).
checkpoints/: every signed checkpoint of the year, from ICA's database and its outside store,
with the witnesses' cosignatures ICA received.
keys.json: the log's keys as ICA lists them (for comparison only, never for trust).
"""
    return text.encode("utf-8")


def _write_tar(out: Path, prefix: str, members: list[_Member]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.time()
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(temporary, "w:gz") as tar:
            for member in sorted(members, key=lambda m: m.path):
                info = tarfile.TarInfo(f"{prefix}/{member.path}")
                info.size = member.length
                info.mode = 0o644
                info.mtime = int(stamp)
                if member.data is not None:
                    tar.addfile(info, io.BytesIO(member.data))
                else:
                    assert member.source is not None
                    with open(member.source, "rb") as source:
                        tar.addfile(info, source)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
