"""`ica audit verify --witness-key ... --known-checkpoints DIR`: the checks that need what the
auditor brings, not what the database says.

- ``--witness-key`` (repeatable; ``--witness-threshold K``, default all): the latest checkpoint
  of every shard must carry valid cosignatures (C2SP ``cosignature/v1``) of K of those
  witnesses, from the database or the outside store. A rewound or forked log cannot get one.
- ``--known-checkpoints DIR``: every checkpoint in the folder (any file that parses as a signed
  checkpoint) of a shard the database has must be reproduced by the database's tree (same
  root at its size), and none may be larger than the tree; one of a shard the database does
  not have fails too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select

from azdev_ica.adapters.checkpoint_store import CheckpointStoreError, FolderCheckpointStore
from azdev_ica.audit.verify import Finding
from azdev_ica.db.engine import Database
from azdev_ica.db.tables import AuditCheckpoint, AuditShard, AuditTree
from azdev_ica.errors import LedgerUnavailable
from azdev_ica.jobs.sealer import node_reader
from azdev_ica.ledger.cosignature import CosignatureVerifier, verify_cosignatures
from azdev_ica.ledger.merkle import root_from_nodes
from azdev_ica.ledger.note import Checkpoint, NoteError, parse_note
from azdev_ica.queries.audit import cosigned_note

__all__ = ["check_known_checkpoints", "check_witnessed"]


def check_witnessed(
    db: Database,
    store: FolderCheckpointStore | None,
    witnesses: Sequence[CosignatureVerifier],
    threshold: int | None = None,
) -> list[Finding]:
    """The latest checkpoint of each shard needs ``threshold`` (default: all) cosignatures."""
    need = len(witnesses) if threshold is None else threshold
    findings: list[Finding] = []
    if not 1 <= need <= len(witnesses):
        return [Finding("--witness-threshold", f"{need} is not in [1, {len(witnesses)}]")]
    with db.read() as session:
        for shard in session.scalars(select(AuditShard).order_by(AuditShard.year)):
            latest = session.scalars(
                select(AuditCheckpoint)
                .where(AuditCheckpoint.year == shard.year)
                .order_by(AuditCheckpoint.size.desc())
                .limit(1)
            ).first()
            if latest is None:
                continue
            notes = [cosigned_note(session, latest)]
            if store is not None:
                try:
                    published = store.get(shard.origin, latest.size)
                except CheckpointStoreError as exc:
                    findings.append(Finding("outside store", str(exc)))
                    published = None
                if published is not None:
                    notes.append(published.note)
            names: set[str] = set()
            where = f"{shard.origin} checkpoint {latest.size}"
            for note in notes:
                try:
                    found, problems = verify_cosignatures(note, witnesses)
                except NoteError as exc:
                    findings.append(Finding(where, f"is malformed: {exc}"))
                    continue
                findings.extend(Finding(where, problem) for problem in problems)
                names.update(c.name for c in found)
            if len(names) < need:
                findings.append(
                    Finding(
                        where,
                        f"carries {len(names)} valid cosignature(s) of the given witnesses, "
                        f"{need} required: no witness vouches for this history (a fork or a "
                        "rewound log cannot get a cosignature; or a witness is behind, see "
                        "the witness.unreachable alerts)",
                        latest.size,
                    )
                )
    return findings


def check_known_checkpoints(db: Database, folder: Path) -> tuple[int, list[Finding]]:
    """Compare the checkpoints the auditor kept with the database's trees; return how many
    were checked and what failed."""
    if not folder.is_dir():
        return 0, [Finding("--known-checkpoints", f"{folder} is not a directory")]
    findings: list[Finding] = []
    checked = 0
    with db.read() as session:
        shards = {s.origin: s.year for s in session.scalars(select(AuditShard))}
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            try:
                known = Checkpoint.parse(parse_note(path.read_bytes()).text)
            except (OSError, NoteError):
                continue  # not a checkpoint
            checked += 1
            where = f"--known-checkpoints {path}"
            year = shards.get(known.origin)
            if year is None:
                findings.append(
                    Finding(where, f"names {known.origin}, a shard the database does not have")
                )
                continue
            size = session.scalar(
                select(AuditTree.size)
                .where(AuditTree.year == year)
                .order_by(AuditTree.size.desc())
                .limit(1)
            )
            size = int(size or 0)
            if known.size > size:
                findings.append(
                    Finding(
                        where,
                        f"you kept {known.origin} at size {known.size}, but the database's "
                        f"tree has {size} entries: the database was rewound or cut short",
                        size,
                    )
                )
                continue
            try:
                root = root_from_nodes(known.size, node_reader(session, year))
            except LedgerUnavailable as exc:
                findings.append(Finding(where, exc.detail))
                continue
            if root != known.root_hash:
                findings.append(
                    Finding(
                        where,
                        f"the database's {known.origin} tree has another root at size "
                        f"{known.size} than the checkpoint you kept: a fork",
                        0,
                        known.size,
                    )
                )
    return checked, findings
