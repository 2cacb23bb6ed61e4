"""Reading the audit ledger: filtered entries, checkpoints, proofs, public keys."""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.engine import driver_rows
from azdev_ica.db.tables import (
    AUDIT_BLOCK_BITS,
    AUDIT_BLOCK_SIZE,
    AuditCheckpoint,
    AuditEntry,
    AuditInbox,
    AuditKey,
    AuditShard,
    AuditTimeBlock,
    AuditTree,
    WitnessCosignature,
)
from azdev_ica.db.types import stored_bytes
from azdev_ica.errors import NotFound, ValidationProblem
from azdev_ica.jobs.sealer import node_reader
from azdev_ica.ledger.cosignature import append_cosignatures
from azdev_ica.ledger.merkle import consistency_proof, inclusion_proof, leaf_hash, root_from_nodes


@dataclass(frozen=True)
class AuditFilter:
    year: int | None = None
    time_from: datetime | None = None
    time_to: datetime | None = None
    actor: str | None = None
    action: str | None = None
    subject_type: str | None = None
    subject_id: str | None = None
    tenant: str | None = None


def query_entries(
    session: Session,
    *,
    principal: Principal,
    filters: AuditFilter,
    limit: int,
    cursor: str | None,
) -> tuple[list[LedgerEntry], str | None]:
    """Entries in log order (year, then index); the cursor is the last (year, index) seen.
    Read as plain rows (Core: no ORM identity map or instances for a page of 100).

    A tenant-scoped caller sees only entries of its tenants (never the global ones).
    """
    conditions: list[ColumnElement[bool]] = []
    for column, value in (
        (AuditEntry.year, filters.year),
        (AuditEntry.actor_id, filters.actor),
        (AuditEntry.action, filters.action),
        (AuditEntry.subject_type, filters.subject_type),
        (AuditEntry.subject_id, filters.subject_id),
        (AuditEntry.tenant, filters.tenant),
    ):
        if value is not None:
            conditions.append(column == value)
    # The window is checked on each entry read, not used to pick an index: the time index
    # would read the whole window and sort it (PostgreSQL prefers it, misjudging how many of
    # the window's entries lie in the span), whereas the span is read in log order and the
    # read stops at the limit. coalesce(time, time) is time, but no index is on it.
    time = func.coalesce(AuditEntry.time, AuditEntry.time)
    if filters.time_from is not None:
        conditions.append(time >= filters.time_from)
    if filters.time_to is not None:
        conditions.append(time < filters.time_to)
    scope = principal.scope(Permission.AUDIT_READ)
    after = _decode_cursor(cursor) if cursor is not None else None
    if scope is not None:
        # Said as plainly as the tenant filter allows, so the database takes the tenant index
        # in log order: a tenant outside the scope matches nothing (no read at all), one
        # inside it needs no more, a scope of one tenant is that tenant.
        if filters.tenant is not None:
            if filters.tenant not in scope:
                return [], None
        elif len(scope) == 1:
            conditions.append(AuditEntry.tenant == next(iter(scope)))
        else:
            conditions.append(AuditEntry.tenant.in_(sorted(scope)))
    if filters.time_from is None and filters.time_to is None:
        query = select(*_ENTRY_COLUMNS).where(*conditions)
        if after is not None:
            year, index = after
            query = query.where(
                or_(AuditEntry.year > year, and_(AuditEntry.year == year, AuditEntry.idx > index))
            )
        query = query.order_by(AuditEntry.year, AuditEntry.idx).limit(limit + 1)
        rows = _ledger_entries(session, query)
    else:
        # A window: read only the spans of the log that can hold its entries (see
        # `_window_spans`), each in log order through the same indexes, until the page is full.
        # Each span is read in chunks of the log that double in size (a block, two, four...):
        # a chunk is read whole and sorted, so a dense window fills the page from its first
        # block, and a sparse one (a rare actor over a month) costs a few reads, not one per
        # block.
        rows = []
        spans, shard_ends = _window_plan(session, filters, after)
        for year, first, end in spans:
            top = end if end is not None else shard_ends[year]
            low, step = first, AUDIT_BLOCK_SIZE
            while len(rows) <= limit:
                high = low + step
                span = [AuditEntry.year == year, AuditEntry.idx >= low]
                if high < top or end is not None:  # the open end's last chunk: no bound
                    span.append(AuditEntry.idx < min(high, top))
                query = (
                    select(*_ENTRY_COLUMNS)
                    .where(*conditions, *span)
                    .order_by(AuditEntry.year, AuditEntry.idx)
                    .limit(limit + 1 - len(rows))
                )
                rows.extend(_ledger_entries(session, query))
                if high >= top:
                    break
                low, step = high, step * 2
            if len(rows) > limit:
                break
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _encode_cursor(rows[-1].year, rows[-1].idx)
    return rows, next_cursor


def _window_spans(
    session: Session, filters: AuditFilter, after: tuple[int, int] | None
) -> list[tuple[int, int, int | None]]:
    """`_window_plan`'s spans."""
    return _window_plan(session, filters, after)[0]


def _window_plan(
    session: Session, filters: AuditFilter, after: tuple[int, int] | None
) -> tuple[list[tuple[int, int, int | None]], dict[int, int]]:
    """The spans ``(year, first index, end index or None: to the end)`` of the log, in log
    order, outside which no entry of the time window lies (and beyond the cursor).

    Each complete block of a shard records its entries' earliest and latest time
    (`AuditTimeBlock`): the blocks that overlap the window make one span (with any block
    between them), and the incomplete block at the end of the shard, whose times are not
    recorded yet, is always read. A shard whose blocks are not all recorded is read whole.

    Also each shard's end (one past its last index), which bounds an open span's reads. All of
    it in one read: the shards, the summary of their blocks and their last indexes.
    """
    blocks: dict[int, tuple[Any, ...]] = {}
    ends: dict[int, int] = {}
    statement = _plan_read(filters.time_from is not None, filters.time_to is not None)
    params = {"time_from": filters.time_from, "time_to": filters.time_to}
    for year, count, last, low, high, last_idx in driver_rows(session, statement, params):
        ends[year] = 0 if last_idx is None else int(last_idx) + 1
        if count is not None:
            blocks[year] = (count, last, low, high)
    spans: list[tuple[int, int, int | None]] = []
    for year in sorted(ends):
        if filters.year is not None and year != filters.year:
            continue
        if after is not None and year < after[0]:
            continue
        found = blocks.get(year)
        if found is None or found[0] != found[1] + 1:
            year_spans: list[tuple[int, int | None]] = [(0, None)]
        else:
            _, last, low, high = found
            tail = (last + 1) << AUDIT_BLOCK_BITS
            if low is None:
                year_spans = [(tail, None)]
            elif high == last:
                year_spans = [(low << AUDIT_BLOCK_BITS, None)]
            else:
                year_spans = [
                    (low << AUDIT_BLOCK_BITS, (high + 1) << AUDIT_BLOCK_BITS),
                    (tail, None),
                ]
        for first, end in year_spans:
            if after is not None and year == after[0]:
                first = max(first, after[1] + 1)
                if end is not None and first >= end:
                    continue
            spans.append((year, first, end))
    return spans, ends


@functools.cache
def _plan_read(time_from: bool, time_to: bool) -> Select[Any]:
    """`_window_plan`'s read for a window with these bounds (``:time_from``, ``:time_to``),
    built once: each shard's year, the count of its recorded blocks, the last of them, the
    first and last that overlap the window, and the shard's last index."""
    overlap: list[ColumnElement[bool]] = []
    if time_from:
        overlap.append(AuditTimeBlock.max_time >= bindparam("time_from"))
    if time_to:
        overlap.append(AuditTimeBlock.min_time < bindparam("time_to"))
    hit = case((and_(*overlap), AuditTimeBlock.block))
    summary = (
        select(
            AuditTimeBlock.year,
            func.count().label("count"),
            func.max(AuditTimeBlock.block).label("last"),
            func.min(hit).label("low"),
            func.max(hit).label("high"),
        )
        .group_by(AuditTimeBlock.year)
        .subquery()
    )
    last_index = (
        select(func.max(AuditEntry.idx))
        .where(AuditEntry.year == AuditShard.year)
        .correlate(AuditShard)
        .scalar_subquery()
    )
    return select(
        AuditShard.year,
        summary.c.count,
        summary.c.last,
        summary.c.low,
        summary.c.high,
        last_index.label("last_index"),
    ).outerjoin(summary, summary.c.year == AuditShard.year)


def _encode_cursor(year: int, index: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([year, index]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        year, index = json.loads(raw)
        for value in (year, index):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**62:
                raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValidationProblem("the cursor is not valid; start again without one") from None
    return year, index


def shard(session: Session, year: int | None) -> AuditShard:
    """The shard of ``year``, or the latest one."""
    query = select(AuditShard)
    query = (
        query.where(AuditShard.year == year)
        if year is not None
        else query.order_by(AuditShard.year.desc()).limit(1)
    )
    found = session.scalars(query).first()
    if found is None:
        raise NotFound(
            "the audit ledger has no entries yet" if year is None else f"no audit shard {year}"
        )
    return found


def tree_size(session: Session, year: int) -> int:
    size = session.scalar(
        select(AuditTree.size)
        .where(AuditTree.year == year)
        .order_by(AuditTree.size.desc())
        .limit(1)
    )
    return int(size or 0)


def latest_checkpoint(session: Session, year: int | None = None) -> AuditCheckpoint:
    found = shard(session, year)
    checkpoint = session.scalars(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.year == found.year)
        .order_by(AuditCheckpoint.size.desc())
        .limit(1)
    ).first()
    if checkpoint is None:
        raise NotFound(f"{found.origin} has no signed checkpoint yet")
    return checkpoint


def cosigned_note(session: Session, checkpoint: AuditCheckpoint) -> str:
    """The checkpoint's signed note with the witnesses' cosignatures ICA received for it."""
    lines = session.scalars(
        select(WitnessCosignature.line)
        .where(
            WitnessCosignature.year == checkpoint.year, WitnessCosignature.size == checkpoint.size
        )
        .order_by(WitnessCosignature.witness)
    )
    return append_cosignatures(checkpoint.note, lines)


def checkpoint_at(session: Session, year: int, size: int) -> AuditCheckpoint | None:
    return session.get(AuditCheckpoint, (year, size))


@dataclass(frozen=True)
class LedgerEntry:
    """An entry as read: its exact bytes and the fields copied beside them for queries."""

    year: int
    idx: int
    entry: bytes
    time: datetime
    action: str
    actor_kind: str
    actor_id: str
    subject_type: str
    subject_id: str
    tenant: str | None


@dataclass(frozen=True)
class EntryProof:
    """An entry and its inclusion proof in the latest checkpoint that covers it (``tree_size``
    and ``note`` None, ``proof`` empty: sealed, but no signed checkpoint covers it yet).
    ``note`` is the checkpoint's signed note with the witnesses' cosignatures."""

    origin: str
    year: int
    entry: LedgerEntry
    leaf_hash: bytes
    tree_size: int | None
    note: str | None
    proof: list[bytes]


def _entry_read(latest_shard: bool) -> Select[Any]:
    """One read of the shard (``:year``, or the latest), entry ``:index``, the shard's latest
    checkpoint when it covers the entry (an index look-up, whichever its size) and that
    checkpoint's cosignature lines: one row per line in the witnesses' order, or one row."""
    index = bindparam("index", type_=BigInteger)
    chosen = select(AuditShard.year)
    chosen = (
        chosen.order_by(AuditShard.year.desc()).limit(1)
        if latest_shard
        else chosen.where(AuditShard.year == bindparam("year", type_=Integer))
    )
    shard_year = chosen.scalar_subquery()
    latest = (
        select(func.max(AuditCheckpoint.size))
        .where(AuditCheckpoint.year == shard_year)
        .scalar_subquery()
    )
    return (
        select(
            AuditShard.origin,
            AuditShard.year.label("shard_year"),
            *_ENTRY_COLUMNS,
            AuditCheckpoint.size.label("tree_size"),
            AuditCheckpoint.note,
            WitnessCosignature.line,
        )
        .select_from(AuditShard)
        .outerjoin(AuditEntry, and_(AuditEntry.year == AuditShard.year, AuditEntry.idx == index))
        .outerjoin(
            AuditCheckpoint,
            and_(
                AuditCheckpoint.year == AuditShard.year,
                AuditCheckpoint.size == latest,
                AuditCheckpoint.size > index,
            ),
        )
        .outerjoin(
            WitnessCosignature,
            and_(
                WitnessCosignature.year == AuditCheckpoint.year,
                WitnessCosignature.size == AuditCheckpoint.size,
            ),
        )
        .where(AuditShard.year == shard_year)
        .order_by(WitnessCosignature.witness)
    )


_ENTRY_FIELDS = tuple(f.name for f in fields(LedgerEntry))
_ENTRY_COLUMNS = tuple(AuditEntry.__table__.c[name] for name in _ENTRY_FIELDS)


def _ledger_entries(session: Session, query: Select[Any]) -> list[LedgerEntry]:
    return [LedgerEntry(*row) for row in session.connection().execute(query)]


# Built once: each read only binds its values (Core rows, no ORM identity map or instances).
_ENTRY_IN_SHARD = _entry_read(latest_shard=False)
_ENTRY_IN_LATEST_SHARD = _entry_read(latest_shard=True)


def entry_with_proof(
    session: Session, *, principal: Principal, year: int | None, index: int
) -> EntryProof:
    """Entry ``index`` and its inclusion proof in the latest checkpoint that covers it: the
    shard, the entry, the checkpoint and its cosignatures in one read, the proof's nodes in
    another."""
    return _entry_and_proof(
        session,
        year=year,
        index=index,
        may_read=lambda tenant: principal.can_for(Permission.AUDIT_READ, tenant),
    )


def _entry_and_proof(
    session: Session, *, year: int | None, index: int, may_read: Callable[[str | None], bool]
) -> EntryProof:
    statement = _ENTRY_IN_LATEST_SHARD if year is None else _ENTRY_IN_SHARD
    # On PostgreSQL straight through the driver, in the session's transaction.
    rows = driver_rows(session, statement, {"index": index, "year": year})
    if not rows:
        raise NotFound(
            "the audit ledger has no entries yet" if year is None else f"no audit shard {year}"
        )
    row = rows[0]
    # Out of scope answers exactly like absent, as for runs.
    if row.idx is None or not may_read(row.tenant):
        raise NotFound(f"no entry {index} in {row.origin}")
    entry = LedgerEntry(*(getattr(row, name) for name in _ENTRY_FIELDS))
    note = None
    if row.tree_size is not None:
        note = append_cosignatures(row.note, (r.line for r in rows if r.line is not None))
    return _proof_in(session, row.origin, entry, row.tree_size, note)


def _proof_in(
    session: Session, origin: str, entry: LedgerEntry, tree_size: int | None, note: str | None
) -> EntryProof:
    proof: list[bytes] = []
    if tree_size is not None:
        proof = inclusion_proof(entry.idx, tree_size, node_reader(session, entry.year))
    raw = stored_bytes(entry.entry)
    return EntryProof(origin, entry.year, entry, leaf_hash(raw), tree_size, note, proof)


@dataclass(frozen=True)
class Receipt:
    """What became of the audit record with inbox id ``ref``: ``pending`` (not sealed yet),
    ``sealed`` (an entry, no signed checkpoint covers it yet) or ``included`` (with its proof)."""

    ref: int
    status: str
    found: EntryProof | None = None


def receipt(session: Session, *, principal: Principal, ref: int) -> Receipt:
    """The receipt of an audit record, for an auditor of its tenant or the actor who wrote it
    (anyone else: as if it did not exist)."""
    row = session.execute(
        select(AuditInbox.tenant, AuditInbox.actor_kind, AuditInbox.actor_id).where(
            AuditInbox.id == ref
        )
    ).first()
    if row is None or not (
        principal.can_for(Permission.AUDIT_READ, row.tenant)
        or (principal.actor.kind, principal.actor.id) == (row.actor_kind, row.actor_id)
    ):
        raise NotFound(f"no audit record {ref}")
    sealed = session.execute(
        select(AuditEntry.year, AuditEntry.idx).where(AuditEntry.inbox_id == ref)
    ).first()
    if sealed is None:
        return Receipt(ref, "pending")
    # (The record's reader was checked above: the writer may read its entry too.)
    found = _entry_and_proof(
        session, year=sealed.year, index=sealed.idx, may_read=lambda tenant: True
    )
    return Receipt(ref, "included" if found.tree_size is not None else "sealed", found)


@dataclass(frozen=True)
class ConsistencyProof:
    origin: str
    year: int
    size1: int
    size2: int
    root1: bytes
    root2: bytes
    proof: list[bytes]
    checkpoint1: AuditCheckpoint | None
    checkpoint2: AuditCheckpoint | None


def consistency(session: Session, *, year: int | None, size1: int, size2: int) -> ConsistencyProof:
    """The consistency proof between two sizes of a shard's tree (RFC 9162 §2.1.4)."""
    found = shard(session, year)
    size = tree_size(session, found.year)
    if not 0 < size1 <= size2 <= size:
        raise ValidationProblem(
            f"need 0 < from <= to <= {size} (the size of {found.origin}); got {size1}, {size2}"
        )
    nodes = node_reader(session, found.year)
    return ConsistencyProof(
        origin=found.origin,
        year=found.year,
        size1=size1,
        size2=size2,
        root1=root_from_nodes(size1, nodes),
        root2=root_from_nodes(size2, nodes),
        proof=consistency_proof(size1, size2, nodes),
        checkpoint1=checkpoint_at(session, found.year, size1),
        checkpoint2=checkpoint_at(session, found.year, size2),
    )


@dataclass(frozen=True)
class PublicKey:
    name: str
    key_id: str
    vkey: str
    valid_from: datetime
    valid_until: datetime | None


def public_keys(session: Session) -> list[PublicKey]:
    """The log's keys, oldest first; each is valid until the next one's start."""
    rows = list(session.scalars(select(AuditKey).order_by(AuditKey.valid_from, AuditKey.id)))
    return [
        PublicKey(
            name=row.name,
            key_id=row.key_id,
            vkey=row.vkey,
            valid_from=row.valid_from,
            valid_until=rows[i + 1].valid_from if i + 1 < len(rows) else None,
        )
        for i, row in enumerate(rows)
    ]
