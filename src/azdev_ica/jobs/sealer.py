"""The sealer: turns inbox rows into numbered ledger entries, extends the Merkle tree, signs
checkpoints and publishes them outside the database.

One sealer runs at a time, across every server process: it holds a lease row (taken and
renewed with conditional writes). Even if two ever overlapped (a paused process whose lease
ran out), they could not fork the log: entries, nodes, tree heads and checkpoints are keyed by
(year, position), so the second one's commit fails.

Which inbox rows are still to seal
----------------------------------
A row is sealed once an entry names it (`azdev_audit_entry.inbox_id`, unique); nothing is ever
updated. Each tree head stores where the sealer got to, so that finding the next rows never
scans the whole inbox:

- the cursor, the largest inbox id sealed: every row above it is new (an index range scan);
- on PostgreSQL, ids do not commit in order: a transaction may take id 10 and commit after
  the one that took 11, so 10 was invisible when 11 was sealed and now lies below the cursor.
  Such stragglers are found among the rows whose writer's transaction id (`txid`, stored in
  each row) is at or above a *floor*: when a sweep took every visible unsealed row, every
  transaction older than the sweep snapshot's `xmin` had already ended, so all its rows were
  seen and sealed, and `xmin` becomes the floor. Stragglers are looked for only when the rows
  above the cursor do not fill a batch, so draining a backlog stays linear. (`xmin` is
  cluster-wide: a transaction left open anywhere on the server holds the floor back, as it
  holds back VACUUM; sealing stays correct, the straggler check just looks at more rows.)
- SQLite runs one writer at a time (the sealer's BEGIN IMMEDIATE waits for the others): no
  stragglers, the cursor is enough.

What a batch writes
-------------------
One transaction per batch: the entry rows, the tree nodes the batch completes at level
`STORED_LEVEL` and up (about one per 32 entries), the time span of each block of
`AUDIT_BLOCK_SIZE` entries the batch completes (for audit queries with a time window), and a
tree head. On PostgreSQL the server
composes the entries itself from the inbox rows (one INSERT ... SELECT; the same bytes as
`compose_entry`) with their leaf hashes (`sha256()`), and only the 32-byte leaf hashes come
back to extend the tree: the bodies never travel. SQLite composes them here.

What the sealer signs
---------------------
Only a tree it computed itself. Every row it reads back (tree heads, nodes, entries, shards,
checkpoints) could have been inserted by someone holding no more than the application's
INSERT right, so before extending or signing a shard's tree the sealer checks it
(`TreeTrust`): a tree head is taken as is only when it is the one this process wrote last;
any other is rebuilt from the latest checkpoint whose signature verifies with the key file's
keys: the stored nodes must give that checkpoint's root, and every entry since must carry its
own leaf hash and be, byte for byte, the entry of an inbox row (entry 0 of a shard: its
`ledger.open`, linking the previous shard's last checkpoint), up to a head whose root and
right edge are those of the rebuilt tree. Nothing may lie beyond that head (an entry or node
the sealer did not write). Before signing, a consistency proof from the last signed checkpoint
to the new tree must verify: a log never signs two inconsistent checkpoints. Any failure is a
refusal (`SealRefused`): the sealer stops, and `services/ledger_status.py` makes the stall
loud (a critical alert once, `/ready`'s body, `ica audit verify`).

Yearly shards
-------------
Entries go to the shard of the year the sealer seals them in (UTC); the entry's body keeps the
action's own time. A shard starts with a `ledger.open` entry that embeds the previous shard's
final signed checkpoint, signed just before.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Executable,
    insert,
    literal_column,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.orm import Session

from azdev_ica.adapters.checkpoint_store import CheckpointStoreError, FolderCheckpointStore
from azdev_ica.db.tables import (
    AUDIT_BLOCK_BITS,
    AUDIT_BLOCK_SIZE,
    AuditCheckpoint,
    AuditEntry,
    AuditInbox,
    AuditKey,
    AuditNode,
    AuditShard,
    AuditTree,
    Base,
    JobLease,
)
from azdev_ica.db.types import stored_bytes
from azdev_ica.errors import LedgerUnavailable
from azdev_ica.jobs import lease
from azdev_ica.ledger.entry import (
    MAX_INDEX,
    EntryError,
    compose_entry,
    entry_affixes,
    parse_entry,
)
from azdev_ica.ledger.keyfile import KeyFileError, read_signers
from azdev_ica.ledger.merkle import (
    CompactRange,
    GetNodes,
    ProofError,
    consistency_proof,
    leaf_hash,
    node_hash,
    root_from_nodes,
    stored_hash_index,
    verify_consistency,
)
from azdev_ica.ledger.note import Checkpoint, NoteError, Signer, Verifier, open_checkpoint
from azdev_ica.ledger.note import sign_checkpoint as sign_note_checkpoint
from azdev_ica.services.audit import on_append, record_body
from azdev_ica.services.context import LedgerConfig, ServiceContext
from azdev_ica.services.ledger import SEALER_ACTOR, add_signing_key
from azdev_ica.services.ledger_status import (
    SEALER_SOURCE,
    blocking_reasons,
    clear_stall,
    set_stall,
)

__all__ = [
    "SEALER_LEASE",
    "STORED_LEVEL",
    "EntryRef",
    "SealRefused",
    "SealResult",
    "Sealer",
    "TreeTrust",
    "acquire_lease",
    "checkpoint_store",
    "load_signers",
    "node_reader",
    "release_lease",
    "seal_now",
    "wait_for_entry",
    "write_time_blocks",
]

SEALER_LEASE = "ledger.sealer"
_XMIN_COLUMN: ColumnElement[int] = literal_column(
    "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
)
log = logging.getLogger("azdev_ica.ledger")

# Woken after every sealing commit, so a caller waiting for its entry in this process does not
# have to poll at a fixed pace (callers in other processes poll).
_SEALED = threading.Condition()


@dataclass(frozen=True)
class EntryRef:
    """Where an inbox row ended up: entry ``index`` of the ``year`` shard."""

    year: int
    index: int


@dataclass(frozen=True)
class PublishedCheckpoint:
    origin: str
    year: int
    size: int
    note: str
    signed_at: datetime


@dataclass
class SealResult:
    sealed: int = 0
    checkpoints: list[PublishedCheckpoint] = field(default_factory=list)


class SealRefused(LedgerUnavailable):
    """The sealer refuses to seal or sign: what it reads is not what it computed and signed."""


class _LeaseLost(LedgerUnavailable):
    """Another process took the sealer's lease (not a stall: that process seals)."""


class _Stopped(LedgerUnavailable):
    """Another source (a witness) stopped the ledger: see services/ledger_status.py."""


# --- leases ----------------------------------------------------------------------------------


# The lease helpers live in jobs/lease.py (the scheduler's jobs use them too); these names
# stay for the sealer's callers.
acquire_lease = lease.acquire
release_lease = lease.release
lease_holder = lease.holder_of


def _holds(session: Session, holder: str, now: datetime) -> bool:
    row = session.execute(
        select(JobLease.holder, JobLease.expires_at).where(JobLease.name == SEALER_LEASE)
    ).first()
    return row is not None and row[0] == holder and row[1] > now


def _holds_and_xmin(
    session: Session, holder: str, now: datetime, postgresql: bool
) -> tuple[bool, int]:
    """`_holds`, and on PostgreSQL the xmin of the statement's snapshot, in one statement."""
    if not postgresql:
        return _holds(session, holder, now), 0
    row = session.execute(
        select(JobLease.holder, JobLease.expires_at, _XMIN_COLUMN).where(
            JobLease.name == SEALER_LEASE
        )
    ).first()
    if row is None:
        return False, 0
    return row[0] == holder and row[1] > now, int(row[2] or 0)


# --- keys and stores -------------------------------------------------------------------------


def load_signers(config: LedgerConfig) -> list[Signer]:
    """The signing keys of this process, oldest first; refuses (and says why) without one."""
    if config.key_file is None:
        raise LedgerUnavailable("no ledger signing key is configured (ICA_LEDGER_KEY_FILE)")
    try:
        return read_signers(config.key_file)
    except KeyFileError as exc:
        raise LedgerUnavailable(f"the sealer refuses to seal: {exc}") from None


def checkpoint_store(config: LedgerConfig) -> FolderCheckpointStore | None:
    return FolderCheckpointStore(config.store_dir) if config.store_dir is not None else None


def registered_keys(session: Session) -> list[AuditKey]:
    return list(session.scalars(select(AuditKey).order_by(AuditKey.valid_from, AuditKey.id)))


def _current_signer(
    session: Session, signers: Sequence[Signer], now: datetime, config: LedgerConfig
) -> Signer:
    """The signer of the key valid now; the first key ever is registered on first use."""
    keys = registered_keys(session)
    if not keys:
        signer = signers[-1]
        add_signing_key(
            session, actor=SEALER_ACTOR, verifier=signer.verifier(), valid_from=now, at=now
        )
        log.info("registered the ledger signing key %s", signer.verifier().key_string())
        return signer
    valid = [k for k in keys if k.valid_from <= now]
    if not valid:
        raise LedgerUnavailable("no registered ledger key is valid yet")
    current = valid[-1]
    for signer in signers:
        if _vkey(signer) == current.vkey:
            return signer
    raise LedgerUnavailable(
        f"the sealer refuses to seal: the key file {config.key_file} does not hold the current "
        f"ledger key {current.name} {current.key_id} (valid since "
        f"{current.valid_from:%Y-%m-%d %H:%M:%S} UTC); install the key file every replica shares"
    )


@functools.lru_cache(maxsize=64)
def _vkey(signer: Signer) -> str:
    # Building a Verifier checks the public key's point (milliseconds in pure Python): once.
    return signer.verifier().key_string()


def _refuse_after_witness_refusal(session: Session) -> None:
    """Neither seal nor sign while a witness's refusal is unresolved (`services/witnesses.py`)."""
    from azdev_ica.services.witnesses import unresolved_refusal

    refusal = unresolved_refusal(session)
    if refusal is not None:
        # Its own critical alert (`witness.refused`) went out already: not a sealer stall too;
        # `services/ledger_status.py` reports it as the witness's reason.
        raise _Stopped(
            f"the sealer refuses to seal: witness {refusal.witness} refused {refusal.origin} at "
            f"size {refusal.size} ({refusal.reason}); history was rewritten. Restore the "
            "genuine history, then `ica witness resolve`"
        )


# --- reading the tree ------------------------------------------------------------------------


STORED_LEVEL = 6
"""The sealer stores tree nodes of this level and above (one row per 32 entries); a node below
it is folded from the leaf hashes of its at most 64 entries, which each entry row carries."""


def node_reader(session: Session, year: int) -> GetNodes:
    """A batched `get_nodes` for the tree of ``year`` in one round trip: one SELECT that reads
    the requested stored nodes by key and, for requested nodes below `STORED_LEVEL`, the leaf
    hashes under them (at most ``2**STORED_LEVEL`` per node, adjacent rows of the primary key);
    the low nodes are folded here. An inclusion proof thus reads its O(log n) stored hashes and
    at most one block of 64 leaf hashes, whatever the size of the tree.

    On PostgreSQL the SELECT is one statement text whatever the nodes (their keys and leaf
    ranges travel as arrays), sent through the driver: the server plans it once per connection
    (a prepared statement) and no SQL is compiled here per read."""
    postgresql = _is_postgresql(session)

    def get_nodes(ids: list[tuple[int, int]]) -> list[bytes]:
        high = [(level, index) for level, index in ids if level >= STORED_LEVEL]
        low = [(level, index) for level, index in ids if level < STORED_LEVEL]
        found: dict[tuple[int, int], bytes] = {}
        wanted = {stored_hash_index(level, index): (level, index) for level, index in high}
        ranges = _merged_ranges(low)
        rows: Iterable[Any] = ()
        if postgresql:
            rows = _read_nodes_pg(session, year, list(wanted), ranges)
        elif wanted or ranges:
            rows = session.execute(_nodes_statement(year, list(wanted), ranges))
        leaves: dict[int, bytes] = {}
        legacy: list[int] = []
        for key, h in rows:
            if key >= 0:
                found[wanted[key]] = stored_bytes(h)
            elif h is None:
                legacy.append(-1 - key)
            else:
                leaves[-1 - key] = stored_bytes(h)
        if legacy:
            leaves.update(_legacy_leaf_hashes(session, year, legacy))
        for level, index in low:
            first = index << level
            hashes = [leaves.get(i) for i in range(first, first + (1 << level))]
            if all(h is not None for h in hashes):
                found[(level, index)] = _fold_perfect([h for h in hashes if h is not None])
        missing = [node for node in ids if node not in found]
        if missing:
            raise LedgerUnavailable(f"tree {year} is missing stored nodes {missing[:3]}")
        return [found[node] for node in ids]

    return get_nodes


# Stored nodes by key, and the leaf hashes of the ranges [first, last] under the low nodes, the
# leaves under negative keys (-1 - idx) so that one result holds both; each range a walk of
# adjacent primary-key rows (LATERAL, kept a subquery by its LIMIT: as a plain join the
# planner may scan the whole shard). The LIMIT is the most a range holds (`_merged_ranges`)
# and also what keeps the estimate honest: the planner cannot see a range's bounds, so it
# guesses a fraction of the shard per range (50,000 rows at 10 M entries), and the statement's
# estimated cost then passed PostgreSQL's `jit_above_cost`: every proof paid 10-15 ms of JIT
# compilation for a read that takes a fraction of a millisecond.
_NODES_SQL = (
    "SELECT seq, hash FROM azdev_audit_node"  # noqa: S608 - a constant
    " WHERE year = %(year)s::integer AND seq = ANY(%(seqs)s::bigint[]) "
    "UNION ALL "
    "SELECT -1 - e.idx, e.leaf"
    " FROM unnest(%(firsts)s::bigint[], %(lasts)s::bigint[]) AS r(first, last),"
    " LATERAL (SELECT idx, leaf FROM azdev_audit_entry WHERE year = %(year)s::integer"
    f" AND idx >= r.first AND idx <= r.last LIMIT {1 << STORED_LEVEL}) AS e"
)


def _read_nodes_pg(
    session: Session, year: int, seqs: list[int], ranges: list[tuple[int, int]]
) -> list[tuple[int, object]]:
    if not seqs and not ranges:
        return []
    dbapi = session.connection().connection.cursor()
    try:
        dbapi.execute(
            _NODES_SQL,
            {
                "year": year,
                "seqs": seqs,
                "firsts": [first for first, _ in ranges],
                "lasts": [end - 1 for _, end in ranges],
            },
        )
        return list(dbapi.fetchall())
    finally:
        dbapi.close()


def _nodes_statement(year: int, seqs: list[int], ranges: list[tuple[int, int]]) -> Executable:
    """SQLite: the same read, composed for the nodes at hand."""
    parts: list[Any] = []
    if seqs:
        parts.append(
            select(AuditNode.seq.label("key"), AuditNode.hash.label("hash")).where(
                AuditNode.year == year, AuditNode.seq.in_(seqs)
            )
        )
    if ranges:
        parts.append(
            select((-1 - AuditEntry.idx).label("key"), AuditEntry.leaf.label("hash")).where(
                AuditEntry.year == year,
                or_(*(AuditEntry.idx.between(first, end - 1) for first, end in ranges)),
            )
        )
    statement: Executable = parts[0]
    if len(parts) > 1:
        statement = union_all(*parts)
    return statement


def _merged_ranges(nodes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The leaf ranges ``[first, end)`` under ``nodes`` (each below `STORED_LEVEL`), adjacent
    ones merged while the result spans at most ``2**STORED_LEVEL`` leaves (the read's LIMIT)."""
    merged: list[tuple[int, int]] = []
    for first, end in sorted((index << level, (index + 1) << level) for level, index in nodes):
        if (
            merged
            and first <= merged[-1][1]
            and max(end, merged[-1][1]) - merged[-1][0] <= 1 << STORED_LEVEL
        ):
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((first, end))
    return merged


def _legacy_leaf_hashes(session: Session, year: int, indexes: list[int]) -> dict[int, bytes]:
    """Leaf hashes of entries sealed before leaves were stored with them: stored level-0 nodes."""
    seqs = {stored_hash_index(0, idx): idx for idx in indexes}
    return {
        seqs[seq]: stored_bytes(h)
        for seq, h in session.execute(
            select(AuditNode.seq, AuditNode.hash).where(
                AuditNode.year == year, AuditNode.seq.in_(list(seqs))
            )
        )
    }


def _fold_perfect(hashes: list[bytes]) -> bytes:
    """The root of a perfect subtree from its leaf hashes (a power of two of them)."""
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


def _latest_shard(session: Session) -> AuditShard | None:
    return session.scalars(select(AuditShard).order_by(AuditShard.year.desc()).limit(1)).first()


def _head(session: Session, year: int) -> AuditTree | None:
    return session.scalars(
        select(AuditTree).where(AuditTree.year == year).order_by(AuditTree.size.desc()).limit(1)
    ).first()


def _latest_checkpoint(session: Session, year: int) -> AuditCheckpoint | None:
    return session.scalars(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.year == year)
        .order_by(AuditCheckpoint.size.desc())
        .limit(1)
    ).first()


# --- trusting the tree ----------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _verifier(signer: Signer) -> Verifier:
    return signer.verifier()


def _refuse(origin: str, what: str) -> SealRefused:
    return SealRefused(
        f"the sealer refuses to sign {origin}: {what}; rows were written outside the sealer "
        "(run `ica audit verify`)"
    )


class TreeTrust:
    """What the sealer knows of each shard's tree because it computed it: the right edge
    (size and hashes) of the last tree it wrote or verified. See the module docstring."""

    def __init__(self) -> None:
        self._known: dict[int, bytes] = {}

    def forget(self) -> None:
        self._known.clear()

    def remember(self, year: int, edge: CompactRange) -> None:
        self._known[year] = edge.to_bytes()

    def tree(
        self,
        session: Session,
        shard: AuditShard,
        signers: Sequence[Signer],
        config: LedgerConfig,
        head: AuditTree | None = None,
    ) -> tuple[CompactRange, AuditTree]:
        """The shard's current tree as the sealer computed it, and its head row (``head``: the
        latest, if the caller read it in this transaction already); refuses (`SealRefused`)
        when the rows are not a tree the sealer computed."""
        origin = config.origin(shard.year)
        if shard.origin != origin:
            raise _refuse(shard.origin, f"shard {shard.year} is not this log's ({origin})")
        if head is None:
            head = _head(session, shard.year)
        if head is None:
            raise _refuse(origin, "the shard has no tree head")
        edge = stored_bytes(head.edge)
        if self._known.get(shard.year) == edge:
            tree = CompactRange.from_bytes(edge)
        else:
            tree = _rebuild_from_checkpoint(session, shard, head, signers)
            if tree.to_bytes() != edge or tree.root() != stored_bytes(head.root):
                raise _refuse(origin, f"tree head {head.size} is not the tree of its entries")
        _nothing_beyond(session, shard.year, origin, tree.size)
        self.remember(shard.year, tree)
        return tree, head


def _signed_checkpoint(
    session: Session, year: int, origin: str, signers: Sequence[Signer]
) -> Checkpoint | None:
    """The shard's latest checkpoint row, which must be signed by a key of the key file."""
    row = _latest_checkpoint(session, year)
    if row is None:
        return None
    try:
        checkpoint, _ = open_checkpoint(row.note, [_verifier(s) for s in signers], origin)
    except NoteError as exc:
        raise _refuse(origin, f"checkpoint {row.size} is not signed by this log ({exc})") from None
    if checkpoint.size != row.size:
        raise _refuse(origin, f"checkpoint row {row.size} holds the note of {checkpoint.size}")
    return checkpoint


def _rebuild_from_checkpoint(
    session: Session, shard: AuditShard, head: AuditTree, signers: Sequence[Signer]
) -> CompactRange:
    """The tree up to ``head``, rebuilt from the latest signed checkpoint and the entries
    since, each checked against the inbox row it was made from."""
    year, origin = shard.year, shard.origin
    anchor = _signed_checkpoint(session, year, origin, signers)
    start = anchor.size if anchor is not None else 0
    if start > head.size:
        raise _refuse(origin, f"tree head {head.size} is behind checkpoint {start}")
    if anchor is not None:
        try:
            tree = CompactRange.from_nodes(start, node_reader(session, year))
        except LedgerUnavailable as exc:
            raise _refuse(origin, exc.detail) from None
        if tree.root() != anchor.root_hash:
            raise _refuse(origin, f"the stored tree does not give the root of checkpoint {start}")
    else:
        tree = CompactRange()
    rows = session.execute(
        select(
            AuditEntry.idx,
            AuditEntry.inbox_id,
            AuditEntry.entry,
            AuditEntry.leaf,
            AuditInbox.body,
        )
        .outerjoin(AuditInbox, AuditInbox.id == AuditEntry.inbox_id)
        .where(AuditEntry.year == year, AuditEntry.idx >= start, AuditEntry.idx < head.size)
        .order_by(AuditEntry.idx)
    )
    computed: dict[int, bytes] = {}
    for idx, inbox_id, raw, stored_leaf, body in rows:
        if idx != tree.size:
            raise _refuse(origin, f"entry {tree.size} is missing")
        entry = stored_bytes(raw)
        leaf = leaf_hash(entry)
        if stored_leaf is not None and stored_bytes(stored_leaf) != leaf:
            raise _refuse(origin, f"entry {idx} does not have its stored leaf hash")
        if inbox_id is None:
            _check_open_entry(session, shard, idx, entry)
        elif body is None:
            raise _refuse(origin, f"entry {idx} names inbox row {inbox_id}, which does not exist")
        elif compose_entry(stored_bytes(body), idx, origin) != entry:
            raise _refuse(origin, f"entry {idx} was not made from inbox row {inbox_id}")
        seq = 2 * idx - idx.bit_count()
        for level, h in tree.append_upper(leaf, STORED_LEVEL):
            computed[seq + level] = h
    if tree.size != head.size:
        raise _refuse(origin, f"tree head {head.size} names entries up to {tree.size} only")
    if computed:
        stored = {
            seq: stored_bytes(h)
            for seq, h in session.execute(
                select(AuditNode.seq, AuditNode.hash).where(
                    AuditNode.year == year, AuditNode.seq.in_(list(computed))
                )
            )
        }
        if stored != computed:
            raise _refuse(origin, "stored nodes differ from the tree of the entries")
    return tree


def _check_open_entry(session: Session, shard: AuditShard, idx: int, entry: bytes) -> None:
    """An entry made from no inbox row: only entry 0, the shard's `ledger.open`, linking the
    previous shard's last checkpoint."""
    try:
        body = parse_entry(entry).body
    except EntryError as exc:
        raise _refuse(shard.origin, f"entry {idx} is not a ledger entry ({exc})") from None
    if (
        idx != 0
        or body.get("action") != "ledger.open"
        or body.get("actor") != (SEALER_ACTOR.as_record())
    ):
        raise _refuse(shard.origin, f"entry {idx} was not made from an inbox row")
    previous = session.scalars(
        select(AuditShard)
        .where(AuditShard.year < shard.year)
        .order_by(AuditShard.year.desc())
        .limit(1)
    ).first()
    last = _latest_checkpoint(session, previous.year) if previous is not None else None
    data = body.get("data")
    linked = data.get("previous_checkpoint") if isinstance(data, dict) else None
    if linked != (last.note if last is not None else None) or linked != (shard.previous_checkpoint):
        raise _refuse(shard.origin, "entry 0 does not link the previous shard's last checkpoint")


def _nothing_beyond(session: Session, year: int, origin: str, size: int) -> None:
    """No entry or stored node lies past the tree of ``size``: the sealer wrote neither (both
    looked for in one statement, two primary-key probes)."""
    row = session.execute(
        select(
            select(AuditEntry.idx)
            .where(AuditEntry.year == year, AuditEntry.idx >= size)
            .limit(1)
            .scalar_subquery(),
            select(AuditNode.seq)
            .where(AuditNode.year == year, AuditNode.seq >= 2 * size - size.bit_count())
            .limit(1)
            .scalar_subquery(),
        )
    ).one()
    entry, node = row
    if entry is not None:
        raise _refuse(origin, f"entry {entry} lies beyond its tree of {size} entries")
    if node is not None:
        raise _refuse(origin, f"stored node {node} lies beyond its tree of {size} entries")


def _check_consistent(
    session: Session, shard: AuditShard, tree: CompactRange, signers: Sequence[Signer]
) -> None:
    """The tree extends the shard's last signed checkpoint (a consistency proof from the
    stored nodes verifies): the sealer never signs two inconsistent checkpoints."""
    last = _signed_checkpoint(session, shard.year, shard.origin, signers)
    if last is None or last.size == 0:
        return
    try:
        proof = consistency_proof(last.size, tree.size, node_reader(session, shard.year))
        verify_consistency(last.size, tree.size, proof, last.root_hash, tree.root())
    except (ProofError, LedgerUnavailable, ValueError) as exc:
        raise _refuse(
            shard.origin,
            f"the tree of {tree.size} entries is not consistent with checkpoint {last.size} "
            f"({exc})",
        ) from None


# --- sealing ---------------------------------------------------------------------------------


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


_INBOX_COLUMNS = (  # SQLite (Core, for UTCDateTime); PostgreSQL reads ids only
    AuditInbox.id,
    AuditInbox.txid,
    AuditInbox.created_at,
    AuditInbox.action,
    AuditInbox.actor_kind,
    AuditInbox.actor_id,
    AuditInbox.subject_type,
    AuditInbox.subject_id,
    AuditInbox.tenant,
    AuditInbox.body,
)


def _pending_rows(session: Session, head: AuditTree | None, limit: int) -> list[Any]:
    """SQLite: up to ``limit`` unsealed inbox rows, in id order (one writer: no stragglers)."""
    cursor = head.inbox_cursor if head is not None else 0
    return list(
        session.execute(
            select(*_INBOX_COLUMNS)
            .where(AuditInbox.id > cursor)
            .order_by(AuditInbox.id)
            .limit(limit)
        )
    )


def _pending_ids(session: Session, head: AuditTree | None, limit: int) -> list[int]:
    """PostgreSQL: the ids of up to ``limit`` unsealed inbox rows, in id order (see the module
    docstring); the rows themselves never leave the server."""
    cursor = head.inbox_cursor if head is not None else 0
    dbapi = session.connection().connection.cursor()
    try:
        dbapi.execute(_NEW_IDS, (cursor, limit))
        ids = [row[0] for row in dbapi.fetchall()]
        if len(ids) == limit:
            return ids
        floor = head.inbox_floor if head is not None else 0
        # Stragglers lie at or below the cursor, the new rows above it: still in id order.
        dbapi.execute(_STRAGGLER_IDS, (floor, cursor, limit - len(ids)))
        return [row[0] for row in dbapi.fetchall()] + ids
    finally:
        dbapi.close()


def _pending(session: Session, head: AuditTree | None, limit: int) -> list[Any]:
    if _is_postgresql(session):
        return _pending_ids(session, head, limit)
    return [row.id for row in _pending_rows(session, head, limit)]


_NEW_IDS = "SELECT id FROM azdev_audit_inbox WHERE id > %s ORDER BY id LIMIT %s"
_STRAGGLER_IDS = (
    "SELECT i.id FROM azdev_audit_inbox AS i WHERE i.txid >= %s AND i.id <= %s "
    "AND NOT EXISTS (SELECT 1 FROM azdev_audit_entry AS e WHERE e.inbox_id = i.id) "
    "ORDER BY i.id LIMIT %s"
)

# PostgreSQL composes the entries (`ledger.entry.entry_affixes`: the same bytes as
# `compose_entry`) and their leaf hashes itself, straight from the inbox rows: the bodies never
# travel to the sealer and back, only 32-byte leaf hashes come back for the tree. A body that is
# not a JSON object is left out, which the row count then refuses.
_SEAL_SQL = (
    "INSERT INTO azdev_audit_entry (year, idx, inbox_id, entry, leaf, time, action, actor_kind,"
    " actor_id, subject_type, subject_id, tenant) "
    "SELECT %(year)s, x.idx, i.id, e.entry, sha256(%(leaf_prefix)s || e.entry), i.created_at,"
    " i.action, i.actor_kind, i.actor_id, i.subject_type, i.subject_id, i.tenant "
    # The ids numbered in id order, read through the primary key: the range between the first
    # and the last id bounds the scan (with `id = ANY(...)` alone the planner may read the
    # whole inbox, every batch, when it misjudges how many rows the array matches).
    "FROM (SELECT *, row_number() OVER (ORDER BY id) AS n FROM azdev_audit_inbox"
    " WHERE id = ANY(%(ids)s::bigint[])"
    " AND id BETWEEN %(first)s::bigint AND %(last)s::bigint) AS i, "
    "LATERAL (SELECT %(base)s::bigint + i.n - 1 AS idx) AS x, "
    "LATERAL (SELECT %(head)s || i.body || %(middle)s || convert_to(x.idx::text, 'UTF8')"
    " || %(tail)s AS entry) AS e "
    "WHERE substring(i.body FROM 1 FOR 1) = %(open)s"
    " AND substring(i.body FROM octet_length(i.body) FOR 1) = %(close)s "
    "RETURNING idx, leaf"
)


def _seal_in_database(session: Session, tree: _Tree, ids: list[int]) -> None:
    """PostgreSQL: turn the inbox rows ``ids`` into the next entries of ``tree`` server-side."""
    base = tree.range.size
    if base + len(ids) - 1 > MAX_INDEX:
        raise EntryError(f"entry index {base + len(ids) - 1} is out of range")
    head, middle, tail = entry_affixes(tree.origin)
    dbapi = session.connection().connection.cursor()
    try:
        dbapi.execute(
            _SEAL_SQL,
            {
                "year": tree.year,
                "base": base,
                "ids": ids,
                "first": ids[0],
                "last": ids[-1],
                "head": head,
                "middle": middle,
                "tail": tail,
                "leaf_prefix": b"\x00",
                "open": b"{",
                "close": b"}",
            },
        )
        sealed = sorted(dbapi.fetchall())
    finally:
        dbapi.close()
    if len(sealed) != len(ids):
        raise EntryError(
            f"{len(ids) - len(sealed)} of the inbox rows {ids[0]}..{ids[-1]} have a body that is "
            "not a JSON object"
        )
    for position, (idx, leaf) in enumerate(sealed, base):
        if idx != position:  # pragma: no cover - row_number() is dense
            raise LedgerUnavailable(f"sealing assigned index {idx} where {position} was due")
        tree.add_leaf(bytes(leaf))


def has_pending(ctx: ServiceContext) -> bool:
    """Whether any inbox row waits to be sealed (a cheap read, no write lock)."""
    return _idle_check(ctx)[0]


# The sealer's look at the database when it may have nothing to do: whether an inbox row waits
# (the same rows `_pending` finds: above the latest head's cursor, or on PostgreSQL a straggler
# at or below it) and whether the latest shard's tree grew since its latest checkpoint, in one
# statement (on PostgreSQL outside a transaction: one round trip, its own snapshot).
_IDLE_PG = (
    "WITH s AS (SELECT max(year) AS year FROM azdev_audit_shard), "
    "h AS (SELECT s.year, t.size, coalesce(t.inbox_cursor, 0) AS cursor,"
    " coalesce(t.inbox_floor, 0) AS floor FROM s LEFT JOIN LATERAL"
    " (SELECT size, inbox_cursor, inbox_floor FROM azdev_audit_tree WHERE year = s.year"
    " ORDER BY size DESC LIMIT 1) AS t ON true) "
    "SELECT EXISTS (SELECT 1 FROM azdev_audit_inbox WHERE id > h.cursor)"
    " OR EXISTS (SELECT 1 FROM azdev_audit_inbox AS i WHERE i.txid >= h.floor"
    " AND i.id <= h.cursor"
    " AND NOT EXISTS (SELECT 1 FROM azdev_audit_entry AS e WHERE e.inbox_id = i.id)),"
    " coalesce(h.size > (SELECT max(size) FROM azdev_audit_checkpoint WHERE year = h.year),"
    " h.size IS NOT NULL) "
    "FROM h"
)
_IDLE_SQLITE = (  # no LATERAL: the latest head's columns one by one
    "WITH s AS (SELECT max(year) AS year FROM azdev_audit_shard), "
    "h AS (SELECT s.year,"
    " (SELECT size FROM azdev_audit_tree WHERE year = s.year ORDER BY size DESC LIMIT 1)"
    " AS size,"
    " coalesce((SELECT inbox_cursor FROM azdev_audit_tree WHERE year = s.year"
    " ORDER BY size DESC LIMIT 1), 0) AS cursor FROM s) "
    "SELECT EXISTS (SELECT 1 FROM azdev_audit_inbox WHERE id > h.cursor),"
    " coalesce(h.size > (SELECT max(size) FROM azdev_audit_checkpoint WHERE year = h.year),"
    " h.size IS NOT NULL) "
    "FROM h"
)


def _idle_check(ctx: ServiceContext) -> tuple[bool, bool]:
    """(an inbox row waits to be sealed, the latest shard's tree is larger than its latest
    checkpoint), read in one statement."""

    def read(session: Session) -> tuple[bool, bool]:
        postgresql = _is_postgresql(session)
        dbapi = session.connection().connection.cursor()
        try:
            dbapi.execute(_IDLE_PG if postgresql else _IDLE_SQLITE)
            row = dbapi.fetchone()
        finally:
            dbapi.close()
        return (bool(row[0]), bool(row[1])) if row is not None else (False, False)

    return ctx.db.first_read(read)


@dataclass
class _Tree:
    """A shard's tree while a batch is being appended to it: rows to write, in column order."""

    year: int
    origin: str
    range: CompactRange
    floor: int
    cursor: int
    entries: list[tuple[object, ...]] = field(default_factory=list)
    nodes: list[tuple[int, int, bytes]] = field(default_factory=list)
    start: int = field(init=False)  # the tree's size before this batch

    def __post_init__(self) -> None:
        self.start = self.range.size

    def append(self, entry: bytes, columns: tuple[object, ...], inbox_id: int | None) -> None:
        """Add an entry composed here; ``columns``: the query columns after ``entry`` and its
        leaf hash (see `_ENTRY_COLUMNS`)."""
        leaf = leaf_hash(entry)
        self.entries.append((self.year, self.range.size, inbox_id, entry, leaf, *columns))
        self.add_leaf(leaf)

    def add_leaf(self, leaf: bytes) -> None:
        """Extend the tree; keep the stored nodes (level `STORED_LEVEL` and up) it completes."""
        index = self.range.size
        # The nodes an append completes are numbered consecutively from its leaf's number.
        seq = 2 * index - index.bit_count()
        for level, h in self.range.append_upper(leaf, STORED_LEVEL):
            self.nodes.append((self.year, seq + level, h))

    def write(self, session: Session, now: datetime) -> None:
        postgresql = _is_postgresql(session)
        for table, names, rows in (
            (AuditEntry.__tablename__, _ENTRY_COLUMNS, self.entries),
            (AuditNode.__tablename__, _NODE_COLUMNS, self.nodes),
        ):
            if not rows:
                continue
            if postgresql:
                _copy(session, table, names, rows)
            else:  # Core executemany: SQLite's own bulk path, no ORM bookkeeping
                values = [dict(zip(names, row, strict=True)) for row in rows]
                session.connection().execute(insert(Base.metadata.tables[table]), values)
        write_time_blocks(session, self.year, self.start, self.range.size)
        session.execute(
            insert(AuditTree).values(
                year=self.year,
                size=self.range.size,
                root=self.range.root(),
                edge=self.range.to_bytes(),
                inbox_floor=self.floor,
                inbox_cursor=self.cursor,
                sealed_at=now,
            )
        )
        self.entries, self.nodes = [], []
        self.start = self.range.size


def write_time_blocks(session: Session, year: int, start: int, size: int) -> None:
    """Record the time span of each block of entries that growing the shard of ``year`` from
    ``start`` to ``size`` entries completes (see `AuditTimeBlock`): one INSERT ... SELECT over
    the completed blocks' entries."""
    first = start >> AUDIT_BLOCK_BITS
    end = size >> AUDIT_BLOCK_BITS
    if first < end:
        session.execute(
            _TIME_BLOCKS,
            {"year": year, "first": first << AUDIT_BLOCK_BITS, "end": end << AUDIT_BLOCK_BITS},
        )


_TIME_BLOCKS = text(
    "INSERT INTO azdev_audit_time_block (year, block, min_time, max_time) "  # noqa: S608 - a constant
    f"SELECT year, idx / {AUDIT_BLOCK_SIZE}, min(time), max(time) FROM azdev_audit_entry "
    "WHERE year = :year AND idx >= :first AND idx < :end "
    f"GROUP BY year, idx / {AUDIT_BLOCK_SIZE}"
)


_ENTRY_COLUMNS = (
    "year",
    "idx",
    "inbox_id",
    "entry",
    "leaf",
    "time",
    "action",
    "actor_kind",
    "actor_id",
    "subject_type",
    "subject_id",
    "tenant",
)
_NODE_COLUMNS = ("year", "seq", "hash")


# PostgreSQL types of the columns the sealer bulk-loads (binary COPY needs them).
_COPY_TYPES = {
    "year": "int4",
    "idx": "int8",
    "seq": "int8",
    "inbox_id": "int8",
    "entry": "bytea",
    "leaf": "bytea",
    "hash": "bytea",
    "time": "timestamptz",
    "action": "varchar",
    "actor_kind": "varchar",
    "actor_id": "varchar",
    "subject_type": "varchar",
    "subject_id": "varchar",
    "tenant": "varchar",
}


def _copy(
    session: Session, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]
) -> None:
    """Bulk-load rows with PostgreSQL's binary COPY, in the session's own transaction: the
    fastest way in (one stream per batch, no per-row statements, no bytea escaping)."""
    cursor = session.connection().connection.cursor()
    try:
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        with cursor.copy(statement) as copy:
            copy.set_types([_COPY_TYPES[column] for column in columns])
            for row in rows:
                copy.write_row(row)
    finally:
        cursor.close()


def _sign(
    session: Session, year: int, origin: str, tree: CompactRange, signer: Signer, now: datetime
) -> PublishedCheckpoint:
    """Sign ``tree`` (one the sealer computed, never a root read back from a row)."""
    root = tree.root()
    note = sign_note_checkpoint(Checkpoint(origin, tree.size, root), [signer])
    session.execute(
        insert(AuditCheckpoint).values(
            year=year,
            size=tree.size,
            root=root,
            note=note,
            key_name=signer.name,
            key_id=f"{signer.key_id:08x}",
            signed_at=now,
        )
    )
    return PublishedCheckpoint(origin, year, tree.size, note, now)


def _open_shard(
    session: Session,
    config: LedgerConfig,
    year: int,
    previous: AuditShard | None,
    previous_head: AuditTree | None,
    previous_tree: CompactRange | None,
    signer: Signer,
    now: datetime,
    result: SealResult,
) -> _Tree:
    """Close the previous shard with a final checkpoint and start ``year`` with `ledger.open`
    (``previous_tree``: the previous shard's tree, as `TreeTrust` verified it)."""
    previous_note = None
    if previous is not None and previous_head is not None and previous_tree is not None:
        last = _latest_checkpoint(session, previous.year)
        if last is None or last.size < previous_tree.size:
            final = _sign(session, previous.year, previous.origin, previous_tree, signer, now)
            result.checkpoints.append(final)
            previous_note = final.note
        else:
            previous_note = last.note
    origin = config.origin(year)
    session.execute(
        insert(AuditShard).values(
            year=year, origin=origin, opened_at=now, previous_checkpoint=previous_note
        )
    )
    tree = _Tree(
        year=year,
        origin=origin,
        range=CompactRange(),
        floor=previous_head.inbox_floor if previous_head is not None else 0,
        cursor=previous_head.inbox_cursor if previous_head is not None else 0,
    )
    body = record_body(
        actor=SEALER_ACTOR,
        action="ledger.open",
        subject_type="ledger",
        subject_id=origin,
        tenant=None,
        data={
            "previous_origin": previous.origin if previous is not None else None,
            "previous_checkpoint": previous_note,
        },
        at=now,
    )
    tree.append(
        compose_entry(body, 0, origin),
        (now, "ledger.open", SEALER_ACTOR.kind, SEALER_ACTOR.id, "ledger", origin, None),
        None,
    )
    return tree


def _seal_batch(
    ctx: ServiceContext,
    signers: Sequence[Signer],
    holder: str,
    result: SealResult,
    trust: TreeTrust,
) -> int:
    """Seal up to one batch of inbox rows in one transaction; return how many."""
    config = ctx.ledger
    with ctx.db.write(durable=True) as session:
        now = ctx.clock.now()
        postgresql = _is_postgresql(session)
        # First statement (with the lease check): every transaction older than `xmin` has
        # ended, so the rows it committed are visible to the queries below (see the module
        # docstring).
        held, xmin = _holds_and_xmin(session, holder, now, postgresql)
        if not held:
            raise _LeaseLost("the sealer lost its lease")
        _refuse_after_witness_refusal(session)
        shard = _latest_shard(session)
        if shard is not None and shard.year > now.year:
            raise _refuse(shard.origin, f"shard {shard.year} lies in the future")
        head = _head(session, shard.year) if shard is not None else None
        rows = [] if postgresql else _pending_rows(session, head, config.batch_size)
        ids = _pending_ids(session, head, config.batch_size) if postgresql else [r.id for r in rows]
        if not ids:  # nothing written: the tree is checked when there is something to add
            return 0
        computed, head = (
            trust.tree(session, shard, signers, config, head) if shard is not None else (None, None)
        )
        signer = _current_signer(session, signers, now, config)
        if shard is None or head is None or computed is None or now.year > shard.year:
            tree = _open_shard(
                session, config, now.year, shard, head, computed, signer, now, result
            )
        else:
            tree = _Tree(
                year=shard.year,
                origin=shard.origin,
                range=computed,
                floor=head.inbox_floor,
                cursor=head.inbox_cursor,
            )
        tree.cursor = max(tree.cursor, ids[-1])
        if len(ids) < config.batch_size:  # every visible unsealed row was taken
            tree.floor = max(tree.floor, xmin)
        if postgresql:
            _seal_in_database(session, tree, ids)
        for row in rows:
            tree.append(
                compose_entry(stored_bytes(row.body), tree.range.size, tree.origin),
                (
                    row.created_at,
                    row.action,
                    row.actor_kind,
                    row.actor_id,
                    row.subject_type,
                    row.subject_id,
                    row.tenant,
                ),
                row.id,
            )
        tree.write(session, now)
    trust.remember(tree.year, tree.range)
    result.sealed += len(ids)
    return len(ids)


def _sign_if_new(
    ctx: ServiceContext,
    signers: Sequence[Signer],
    holder: str,
    result: SealResult,
    trust: TreeTrust,
) -> PublishedCheckpoint | None:
    """Sign a checkpoint of the current shard when its tree grew since the last one: the
    tree the sealer computed, once it is shown consistent with the last checkpoint."""
    with ctx.db.write(durable=True) as session:
        now = ctx.clock.now()
        if not _holds(session, holder, now):
            raise _LeaseLost("the sealer lost its lease")
        _refuse_after_witness_refusal(session)
        shard = _latest_shard(session)
        if shard is None:
            return None
        tree, _ = trust.tree(session, shard, signers, ctx.ledger)
        last = _latest_checkpoint(session, shard.year)
        if last is not None and last.size >= tree.size:
            return None
        _check_consistent(session, shard, tree, signers)
        signer = _current_signer(session, signers, now, ctx.ledger)
        published = _sign(session, shard.year, shard.origin, tree, signer, now)
    result.checkpoints.append(published)
    return published


def publish(ctx: ServiceContext, checkpoints: Sequence[PublishedCheckpoint]) -> None:
    """Copy committed checkpoints to the outside store (never before they are committed)."""
    store = checkpoint_store(ctx.ledger)
    if store is None:
        return
    for cp in checkpoints:
        store.put(cp.origin, cp.size, cp.note, cp.signed_at)


def publish_missing(ctx: ServiceContext) -> int:
    """Copy to the outside store the latest checkpoint of each shard if it is not there yet
    (after a failed write); return how many were written."""
    store = checkpoint_store(ctx.ledger)
    if store is None:
        return 0
    written = 0
    with ctx.read() as session:
        shards = list(session.scalars(select(AuditShard).order_by(AuditShard.year)))
        for shard in shards:
            stored = store.sizes(shard.origin)
            newer = session.scalars(
                select(AuditCheckpoint)
                .where(
                    AuditCheckpoint.year == shard.year,
                    AuditCheckpoint.size > (stored[-1] if stored else -1),
                )
                .order_by(AuditCheckpoint.size)
            )
            for cp in newer:
                written += store.put(shard.origin, cp.size, cp.note, cp.signed_at)
    return written


def check_against_store(ctx: ServiceContext) -> None:
    """Refuse to seal on a database that is behind, or forked from, what it published.

    The outside store's latest checkpoint of the current shard must be signed by a registered
    key, name a size the database's tree reaches, and carry the root the tree has at that size.
    A database restored from an old backup fails here at once, instead of sealing a second
    history over the published one.
    """
    store = checkpoint_store(ctx.ledger)
    if store is None:
        return
    with ctx.read() as session:
        shard = _latest_shard(session)
        if shard is None:
            return
        published = store.latest(shard.origin)
        if published is None:
            return
        verifiers = [Verifier.from_key_string(k.vkey) for k in registered_keys(session)]
        try:
            checkpoint, _ = open_checkpoint(published.note, verifiers, shard.origin)
        except NoteError as exc:
            raise LedgerUnavailable(
                f"the outside store's checkpoint {published.where} does not verify ({exc}): "
                "run `ica audit verify`"
            ) from None
        head = _head(session, shard.year)
        size = head.size if head is not None else 0
        if checkpoint.size > size:
            raise LedgerUnavailable(
                f"the database's {shard.origin} tree has {size} entries, but the checkpoint "
                f"{published.where} published {checkpoint.size}: the database was restored "
                "from an older copy or cut short; the sealer refuses to fork the log "
                "(run `ica audit verify`)"
            )
        if root_from_nodes(checkpoint.size, node_reader(session, shard.year)) != (
            checkpoint.root_hash
        ):
            raise LedgerUnavailable(
                f"the database's {shard.origin} tree does not have the root published in "
                f"{published.where}: the database was rewritten; the sealer refuses to seal "
                "(run `ica audit verify`)"
            )


def _check_not_stopped(ctx: ServiceContext) -> None:
    """Refuse while another source (a witness) has stopped the ledger."""
    with ctx.read() as session:
        reasons = blocking_reasons(session)
    if reasons:
        raise _Stopped(
            "sealing is stopped: "
            + "; ".join(f"{r.source}: {r.reason}" for r in reasons)
            + " (services/ledger_status.py: clear_stall)"
        )


def _notify_sealed() -> None:
    with _SEALED:
        _SEALED.notify_all()


def _default_holder(kind: str) -> str:
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def seal_now(ctx: ServiceContext, *, checkpoint: bool = True) -> SealResult:
    """Seal everything pending, sign a checkpoint if the tree grew, and publish it; one call,
    in the caller's thread (tests, `ica audit seal`). Refuses while another process holds the
    sealer's lease, and without a signing key."""
    signers = load_signers(ctx.ledger)
    holder = _default_holder("seal-now")
    if not acquire_lease(ctx, SEALER_LEASE, holder, ctx.ledger.lease_seconds):
        held = lease_holder(ctx, SEALER_LEASE)
        who = f"{held[0]} until {held[1]:%H:%M:%S} UTC" if held else "another process"
        raise LedgerUnavailable(f"the sealer's lease is held by {who}")
    result = SealResult()
    trust = TreeTrust()
    try:
        check_against_store(ctx)
        _check_not_stopped(ctx)
        # Until nothing is left: sealing may itself queue a record (the first key's).
        while _seal_batch(ctx, signers, holder, result, trust):
            pass
        if checkpoint:
            _sign_if_new(ctx, signers, holder, result, trust)
    finally:
        release_lease(ctx, SEALER_LEASE, holder)
        _notify_sealed()
    publish(ctx, result.checkpoints)
    return result


def wait_for_entry(ctx: ServiceContext, inbox_id: int, timeout: float) -> EntryRef | None:
    """Wait up to ``timeout`` seconds for the inbox row to be sealed; None if it was not."""
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        with ctx.read() as session:
            row = session.execute(
                select(AuditEntry.year, AuditEntry.idx).where(AuditEntry.inbox_id == inbox_id)
            ).first()
        if row is not None:
            return EntryRef(year=row[0], index=row[1])
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        with _SEALED:
            _SEALED.wait(min(remaining, 0.1))


# --- the background job ----------------------------------------------------------------------


IDLE_SLOWDOWN = 4
"""An idle sealer waits at most this many `seal_interval`s between passes (see `Sealer`)."""


class Sealer:
    """The sealer as a thread of a server process (started and stopped by the app lifespan).

    Every `seal_interval` it seals what is pending, signs a checkpoint every
    `checkpoint_interval` when the tree grew (or at once when asked), and publishes checkpoints
    to the outside store, all under the sealer's lease. It takes the lease at its first pass
    and keeps renewing it (a conditional write every third of `lease_seconds`), idle or not,
    until it stops (`stop` hands it back).

    A sealer that finds the lease held by another process (a second worker or replica) is on
    standby: it sends nothing to the database, not even the idle check, and asks for the lease
    again every third of `lease_seconds`, so it takes over within that once the holder stops
    (or within the lease once the holder dies). The active sealer seals every process's
    records, so a standby's idle checks would only cost CPU.

    When a pass finds nothing to do (one statement: `_idle_check`), the sealer slows down: the
    wait doubles after each such pass, up to `IDLE_SLOWDOWN` intervals. A record appended in
    this process (`services.audit.on_append`) brings it back to its ordinary pace at the end
    of the current interval, as does a pass that finds work; `request_checkpoint` and `stop`
    wake it at once. So a record is sealed within one interval as before while records keep
    coming or when this process appends it; the first record another process appends after a
    quiet spell waits at most `IDLE_SLOWDOWN` intervals.
    """

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.holder = _default_holder("sealer")
        self.status = "starting"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._checkpoint_wanted = threading.Event()
        self._thread: threading.Thread | None = None
        self._signers: tuple[tuple[float, int], list[Signer]] | None = None
        self._checked_store = False
        self._last_checkpoint = 0.0
        self._lease_until = 0.0
        self._standby_until = 0.0
        self._unpublished = False
        self._logged: str | None = None
        self._trust = TreeTrust()
        self.passes = 0  # passes run so far (tests wait for some; metrics may export it)
        self._idle_passes = 0  # passes in a row that found nothing to do
        self._idle = False  # the last pass found nothing to do
        self._appends = 0  # records appended in this process (only compared, never exact)
        self._stop_listening: Callable[[], None] | None = None
        # The reason this process recorded as the sealer's stall; "?" until the first pass
        # that seals (a stall left by an earlier process is cleared then).
        self._stalled: str | None = "?"

    def start(self) -> Sealer:
        self._stop_listening = on_append(self._heard_append)
        self._thread = threading.Thread(target=self._run, name="ica-sealer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._lease_until > time.monotonic():
            try:
                release_lease(self.ctx, SEALER_LEASE, self.holder)
            except Exception:  # shutting down: the lease simply runs out
                log.debug("could not release the sealer lease", exc_info=True)

    def request_checkpoint(self) -> None:
        """Sign a checkpoint at the next pass instead of waiting for the interval."""
        self._checkpoint_wanted.set()
        self._wake.set()

    def _heard_append(self) -> None:
        # Runs in every appending thread, unlocked: two at once may count one, but the
        # number changes, which is all the sealer looks at.
        self._appends += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            appends = self._appends
            self._idle = False
            try:
                self.tick()
            except LedgerUnavailable as exc:
                # Take nothing for granted at the next pass: the lease, the store check, the
                # tree it computed.
                self._lease_until = 0.0
                self._checked_store = False
                self._trust.forget()
                self._report(exc.detail)
                if not isinstance(exc, _LeaseLost | _Stopped):
                    self._stall(exc.detail)
            except Exception as exc:  # a database hiccup must not kill the job
                self._report(f"sealing failed: {type(exc).__name__}: {exc}", error=exc)
            self.passes += 1
            # A record appended since the pass began may have committed after its look.
            idle = self._idle and self._appends == appends
            self._idle_passes = self._idle_passes + 1 if idle else 0
            self._pause()

    def _pause(self) -> None:
        """Wait for the next pass: one interval, or after idle passes up to `IDLE_SLOWDOWN`
        (see the class docstring), cut short at the end of the interval in which this process
        appends a record. On standby, until the next time it asks for the lease."""
        standby = self._standby_until - time.monotonic()
        if standby > 0:  # another process seals this process's records too
            self._wake.wait(standby)
            self._wake.clear()
            return
        interval = self.ctx.ledger.seal_interval
        slices = min(1 << min(self._idle_passes, 8), IDLE_SLOWDOWN) if self._idle_passes else 1
        appends = self._appends
        for _ in range(slices):
            if self._wake.wait(interval) or self._appends != appends:
                break
        self._wake.clear()

    def _report(self, status: str, error: Exception | None = None) -> None:
        self.status = status
        if status != self._logged:  # say it once, not four times a second
            self._logged = status
            log.error("audit ledger: %s", status, exc_info=error)

    def _stall(self, reason: str) -> None:
        """Record the refusal where every replica and `/ready` see it (an alert, once)."""
        if reason == self._stalled:
            return
        try:
            set_stall(self.ctx, source=SEALER_SOURCE, reason=reason)
            self._stalled = reason
        except Exception:  # the database may be what fails: say so, try again next pass
            log.exception("could not record the ledger's stall")

    def _load_signers(self) -> list[Signer]:
        path = self.ctx.ledger.key_file
        try:
            # Its mode too: a key file made readable by others is refused at the next pass.
            found = path.stat() if isinstance(path, Path) else None
            version = (found.st_mtime, found.st_mode) if found is not None else (0.0, 0)
        except OSError:
            version = (-1.0, 0)
        if self._signers is None or self._signers[0] != version:
            self._signers = (version, load_signers(self.ctx.ledger))
        return self._signers[1]

    def _renew(self) -> bool:
        seconds = self.ctx.ledger.lease_seconds
        now = time.monotonic()
        if self._lease_until - now > seconds * 2 / 3:
            return True
        if now < self._standby_until:  # another process seals: ask again only now and then
            return False
        if acquire_lease(self.ctx, SEALER_LEASE, self.holder, seconds):
            self._lease_until = time.monotonic() + seconds
            self._standby_until = 0.0
            return True
        self._lease_until = 0.0
        self._standby_until = now + seconds / 3
        self._checked_store = False
        held = lease_holder(self.ctx, SEALER_LEASE)
        self.status = f"standby: {held[0] if held else 'another process'} seals"
        return False

    def tick(self) -> None:
        """One pass (the tests drive it directly)."""
        signers = self._load_signers()
        if not self._renew():  # on standby: nothing to look at (see the class docstring)
            return
        wanted = self._checkpoint_wanted.is_set()
        due = time.monotonic() - self._last_checkpoint >= self.ctx.ledger.checkpoint_interval
        if due:  # look at most once per interval whether something is left unsigned
            self._last_checkpoint = time.monotonic()
        pending, unsigned = _idle_check(self.ctx)
        if not (pending or wanted or (due and unsigned)):
            if self._unpublished:
                publish_missing(self.ctx)
                self._unpublished = False
            self._healthy()
            self._idle = not unsigned  # (a grown tree is signed at the next due pass)
            return
        if not self._checked_store:
            check_against_store(self.ctx)
            self._checked_store = True
        _check_not_stopped(self.ctx)
        result = SealResult()
        batch = self.ctx.ledger.batch_size
        try:
            while _seal_batch(self.ctx, signers, self.holder, result, self._trust) == batch:
                pass
            if wanted or due:
                self._checkpoint_wanted.clear()
                _sign_if_new(self.ctx, signers, self.holder, result, self._trust)
        finally:
            if result.sealed or result.checkpoints:
                _notify_sealed()
        try:
            publish(self.ctx, result.checkpoints)
        except CheckpointStoreError as exc:
            # Retried at the next passes; a refused write (another note for a stored size)
            # means a fork, which the store check before sealing then refuses to extend.
            self._unpublished = True
            self._checked_store = False
            raise LedgerUnavailable(f"publishing a checkpoint failed: {exc}") from None
        self._healthy()

    def _healthy(self) -> None:
        if self._logged is not None:
            log.info("audit ledger: sealing again")
        self.status = "ok"
        self._logged = None
        if self._stalled is not None:
            try:
                clear_stall(self.ctx, source=SEALER_SOURCE)
                self._stalled = None
            except Exception:  # retried at the next healthy pass
                log.exception("could not clear the ledger's stall")
