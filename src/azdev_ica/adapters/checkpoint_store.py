"""The outside store of signed checkpoints: a copy of every checkpoint the ledger signs, kept
where the database's administrators cannot rewrite it together with the database.

A database restored from an old backup, or rewound, or with its tail cut off, no longer
reaches the checkpoints published here: `ica audit verify`, the sealer's start-up check and
the export (which ships these checkpoints too) all notice. A published checkpoint is never
replaced: writing a different note for a size that is already stored is refused, since two
roots for one size are a fork. Adding signature lines to a stored checkpoint (the witnesses'
cosignatures) is not a replacement: the file is rewritten with them.

Layout (a folder; Azure Blob later uses the same names)::

    <root>/<origin, one folder per "/"-separated part>/<size, 20 digits>.checkpoint
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["CheckpointStoreError", "FolderCheckpointStore", "StoredCheckpoint", "adds_signatures"]

_SEGMENT = re.compile(r"[A-Za-z0-9._:-]+")
_NAME = re.compile(r"([0-9]{20})\.checkpoint")


class CheckpointStoreError(RuntimeError):
    """The store is unreachable, or refused a write (a different note for a stored size)."""


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    note: str
    where: str
    signed_at: datetime
    """When it was signed, as the writer said (the file's modification time): a claim."""


def adds_signatures(stored: bytes, new: bytes) -> bool:
    """Whether ``new`` is the same checkpoint as ``stored`` with more signature lines (the
    witnesses' cosignatures): same text, every stored signature line kept."""
    old_text, _, old_sigs = stored.rpartition(b"\n\n")
    new_text, _, new_sigs = new.rpartition(b"\n\n")
    if not old_text or old_text != new_text:
        return False
    return set(old_sigs.splitlines()) < set(new_sigs.splitlines())


class FolderCheckpointStore:
    """Checkpoints as files under a folder (local disk, or a mounted share)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _folder(self, origin: str) -> Path:
        parts = origin.split("/")
        if not all(_SEGMENT.fullmatch(p) and p not in (".", "..") for p in parts):
            raise CheckpointStoreError(f"the origin {origin!r} cannot name a folder")
        return self.root.joinpath(*parts)

    def path(self, origin: str, size: int) -> Path:
        return self._folder(origin) / f"{size:020d}.checkpoint"

    def put(self, origin: str, size: int, note: str, signed_at: datetime) -> bool:
        """Store the note of ``size``; False if that exact note was already stored. A note
        that only adds signature lines to the stored one (cosignatures) replaces it."""
        target = self.path(origin, size)
        data = note.encode("utf-8")
        try:
            if target.exists():
                stored = target.read_bytes()
                if stored == data or adds_signatures(data, stored):
                    return False  # already there (with as many or more signatures)
                if not adds_signatures(stored, data):
                    raise CheckpointStoreError(
                        f"{target} already holds a different checkpoint of size {size}: "
                        "the database no longer agrees with what it published (restored from "
                        "an old backup, or tampered with)"
                    )
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            stamp = signed_at.timestamp()
            os.utime(temporary, (stamp, stamp))
            os.replace(temporary, target)
        except OSError as exc:
            raise CheckpointStoreError(f"cannot write {target}: {exc.strerror or exc}") from None
        return True

    def sizes(self, origin: str) -> list[int]:
        """The sizes stored for ``origin``, ascending."""
        folder = self._folder(origin)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise CheckpointStoreError(f"cannot list {folder}: {exc.strerror or exc}") from None
        return sorted(int(m.group(1)) for n in names if (m := _NAME.fullmatch(n)))

    def origins(self) -> list[str]:
        """Every origin with at least one stored checkpoint."""
        found = []
        for top, dirs, files in os.walk(self.root):
            dirs.sort()
            if any(_NAME.fullmatch(name) for name in files):
                found.append(Path(top).relative_to(self.root).as_posix())
        return sorted(found)

    def get(self, origin: str, size: int) -> StoredCheckpoint | None:
        target = self.path(origin, size)
        try:
            note = target.read_text(encoding="utf-8")
            signed_at = datetime.fromtimestamp(target.stat().st_mtime, UTC)
            return StoredCheckpoint(size, note, str(target), signed_at)
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointStoreError(f"cannot read {target}: {exc}") from None

    def latest(self, origin: str) -> StoredCheckpoint | None:
        sizes = self.sizes(origin)
        return self.get(origin, sizes[-1]) if sizes else None

    def all(self, origin: str) -> list[StoredCheckpoint]:
        found = (self.get(origin, size) for size in self.sizes(origin))
        return [c for c in found if c is not None]
