"""`ica audit verify`: rebuild every shard's tree from the database and check it against the
stored nodes, the tree heads, every signed checkpoint, and the checkpoints published outside.

Entries, stored nodes and tree heads stream in index order and are merged as the tree is
rebuilt: O(log n) memory per shard, plus the lists of checkpoints. What tampering looks like:

- an entry edited after sealing: its leaf no longer matches the stored leaf hash (the exact
  index), and the checkpoints after it no longer match (if the stored nodes were rewritten
  too, only the range between two checkpoints is known);
- an entry deleted, inserted, or two swapped: a gap in the indices, or an entry whose envelope
  names another position (the exact index);
- the tail cut off, or the whole database rewound to an earlier copy: the outside store holds
  checkpoints of sizes, or shards, the database no longer reaches (the first missing index);
- a checkpoint replaced: its signature fails, or it differs from the published one and from
  the rebuilt tree;
- a sealed inbox row edited (the second copy of each record, which receipts and reports
  read): it no longer is the body inside its entry (the exact index);
- a recorded time span of a block of entries (`azdev_audit_time_block`, which audit queries
  with a time window trust to skip blocks) narrowed, removed or made up: it is not the
  earliest and latest time of the block's entries (the block);
- a column audit queries filter on (time, action, actor, subject, tenant) edited: it no longer
  is the entry's own field (the exact index).

The outside store is listed before the database is read, and the database is read in one
snapshot, so a live sealer's commits do not read as findings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from azdev_ica.adapters.checkpoint_store import (
    CheckpointStoreError,
    FolderCheckpointStore,
    StoredCheckpoint,
    adds_signatures,
)
from azdev_ica.db.engine import Database
from azdev_ica.db.tables import (
    AUDIT_BLOCK_BITS,
    AUDIT_BLOCK_SIZE,
    AuditCheckpoint,
    AuditEntry,
    AuditInbox,
    AuditKey,
    AuditNode,
    AuditShard,
    AuditTimeBlock,
    AuditTree,
)
from azdev_ica.db.types import stored_bytes
from azdev_ica.jobs.sealer import STORED_LEVEL
from azdev_ica.ledger.entry import EntryError, ParsedEntry, compose_entry, parse_entry
from azdev_ica.ledger.merkle import CompactRange, leaf_hash, stored_hash_index
from azdev_ica.ledger.note import Checkpoint, NoteError, Verifier, open_checkpoint
from azdev_ica.services.audit import rfc3339

__all__ = ["Finding", "LedgerReport", "ShardReport", "verify_ledger"]

Progress = Callable[[int, int], None]
_BATCH = 2000
_LISTED = 50


@dataclass
class Finding:
    """A failed check. ``index``: the first entry it implicates (``end``: only the range
    ``[index, end)`` is known)."""

    where: str
    message: str
    index: int | None = None
    end: int | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class ShardReport:
    year: int
    origin: str
    entries: int = 0
    tree_size: int = 0
    checkpoints: int = 0
    checkpoints_verified: int = 0
    published: int = 0
    published_verified: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def first_bad(self) -> Finding | None:
        """The earliest problem: the lowest exact index, unless a range (a checkpoint that
        does not match) lies wholly before it."""
        exact = [f for f in self.findings if f.index is not None and f.end is None]
        ranges = [f for f in self.findings if f.index is not None and f.end is not None]
        first = min(exact, key=lambda f: f.index or 0) if exact else None
        earlier = [r for r in ranges if first is None or (r.end or 0) <= (first.index or 0)]
        if earlier:
            return min(earlier, key=lambda f: (f.index or 0, f.end or 0))
        return first


@dataclass
class LedgerReport:
    shards: list[ShardReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # not tied to one shard
    store: str | None = None
    # Whether the ledger seals (`ica audit verify` fills it from services/ledger_status.py):
    # state, reasons, and the backlog of unsealed records (count, oldest).
    sealing: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.findings and not any(s.findings for s in self.shards)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        for shard, out in zip(self.shards, data["shards"], strict=True):
            bad = shard.first_bad
            out["first_bad_index"] = bad.index if bad else None
            out["first_bad_index_end"] = bad.end if bad else None
        return data

    def text(self) -> str:
        store = self.store or "none configured: a cut-off tail or a rewound database goes unseen"
        out = [f"outside store: {store}"]
        out.extend(f"  - {f}" for f in self.findings)
        for s in self.shards:
            out.append(
                f"{s.origin}: {s.entries} entries (tree {s.tree_size}), "
                f"{s.checkpoints_verified}/{s.checkpoints} checkpoints and "
                f"{s.published_verified}/{s.published} published checkpoints verified"
            )
            bad = s.first_bad
            if bad is not None:
                where = f"in [{bad.index}, {bad.end})" if bad.end is not None else f"{bad.index}"
                out.append(f"  first bad entry index: {where}")
            out.extend(f"  - {f}" for f in s.findings[:_LISTED])
            if len(s.findings) > _LISTED:
                out.append(f"  ... and {len(s.findings) - _LISTED} more (see --json)")
        out.extend(_sealing_lines(self.sealing))
        problems = len(self.findings) + sum(len(s.findings) for s in self.shards)
        out.append("RESULT: OK" if self.ok else f"RESULT: FAILED: {problems} problem(s)")
        return "\n".join(out)


def _sealing_lines(sealing: dict[str, Any] | None) -> list[str]:
    """The sealing state, the reasons of a stall, and the backlog of unsealed records."""
    if sealing is None:
        return []
    backlog = sealing.get("backlog") or {}
    count = backlog.get("count", 0)
    waiting = f"{count} record(s) not sealed yet"
    if count and backlog.get("oldest_at") is not None:
        waiting += (
            f", the oldest written {backlog['oldest_at']} "
            f"({backlog.get('oldest_age_seconds', 0):.0f} s ago)"
        )
    out = [f"sealing: {sealing.get('state')}: {waiting}"]
    out.extend(f"  - {r['source']}: {r['reason']}" for r in sealing.get("reasons", []))
    return out


@dataclass(frozen=True)
class _Key:
    verifier: Verifier
    valid_from: datetime
    valid_until: datetime | None

    def valid_at(self, at: datetime) -> bool:
        return self.valid_from <= at and (self.valid_until is None or at < self.valid_until)


@dataclass(frozen=True)
class _Signed:
    """A signed root to match against the rebuilt tree (from the database or the store)."""

    where: str
    root: bytes


@dataclass(frozen=True)
class _Final:
    """A shard's rebuilt end: what the next shard's first entry must link to."""

    size: int
    root: bytes
    note: str | None


def _stream(conn: Connection, query: Any) -> Any:
    """A result read in batches (a server-side cursor on PostgreSQL): close it when done."""
    return conn.execution_options(yield_per=_BATCH).execute(query)


def _keys(conn: Connection, trusted: Sequence[Verifier] | None) -> list[_Key]:
    rows = list(conn.execute(select(AuditKey).order_by(AuditKey.valid_from, AuditKey.id)))
    pinned = {v.key_string() for v in trusted} if trusted is not None else None
    keys = []
    for i, row in enumerate(rows):
        if pinned is not None and row.vkey not in pinned:
            continue
        until = rows[i + 1].valid_from if i + 1 < len(rows) else None
        keys.append(_Key(Verifier.from_key_string(row.vkey), row.valid_from, until))
    return keys


# The entry's fields copied into columns for audit queries (besides `time`), in the order of
# the envelope's body: actor and subject are objects there.
_QUERY_COLUMNS = (
    AuditEntry.action,
    AuditEntry.actor_kind,
    AuditEntry.actor_id,
    AuditEntry.subject_type,
    AuditEntry.subject_id,
    AuditEntry.tenant,
)
_COLUMN_NAMES = ("time", "action", "actor_kind", "actor_id", "subject_type", "subject_id", "tenant")


class _ShardCheck:
    """One shard's checks; findings of a kind that repeats (every entry after a gap) are
    reported once, with a count."""

    def __init__(
        self,
        conn: Connection,
        shard: Any,
        keys: list[_Key],
        store: _StoreListing | None,
        previous: _Final | None,
    ) -> None:
        self.conn = conn
        self.year: int = shard.year
        self.origin: str = shard.origin
        self.keys = keys
        self.store = store
        self.previous = previous
        self.report = ShardReport(year=self.year, origin=self.origin)
        self.link: dict[str, Any] | None = None
        self._repeats: dict[str, int] = {}
        # The time span (earliest, latest) of each complete block of entries, as rebuilt.
        self._spans: list[tuple[datetime, datetime] | None] = []
        self._next_block = 0

    def finding(
        self, where: str, message: str, index: int | None = None, end: int | None = None
    ) -> None:
        self.report.findings.append(Finding(where, message, index, end))

    def once(
        self,
        kind: str,
        where: str,
        message: str,
        index: int | None = None,
        end: int | None = None,
    ) -> None:
        count = self._repeats.get(kind, 0)
        self._repeats[kind] = count + 1
        if not count:
            self.finding(where, message, index, end)

    # -- checkpoints -------------------------------------------------------------------------

    def _open(self, note: str, signed_at: datetime | None) -> Checkpoint:
        verifiers = [k.verifier for k in self.keys if signed_at is None or k.valid_at(signed_at)]
        if not verifiers:
            raise NoteError("no trusted key was valid when it was signed")
        checkpoint, _ = open_checkpoint(note, verifiers, self.origin)
        return checkpoint

    def checkpoints(self) -> tuple[dict[int, list[_Signed]], dict[int, str]]:
        """Verify signatures; return the roots to match by size, and the database's notes."""
        signed: dict[int, list[_Signed]] = {}
        notes: dict[int, str] = {}
        rows = self.conn.execute(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.year == self.year)
            .order_by(AuditCheckpoint.size)
        )
        for row in rows:
            self.report.checkpoints += 1
            where = f"checkpoint {row.size}"
            notes[row.size] = row.note
            try:
                checkpoint = self._open(row.note, row.signed_at)
            except NoteError as exc:
                self.finding(where, f"does not verify: {exc}")
                continue
            if checkpoint.size != row.size or checkpoint.root_hash != stored_bytes(row.root):
                self.finding(where, "its note does not sign the size and root of its row")
                continue
            self.report.checkpoints_verified += 1
            signed.setdefault(checkpoint.size, []).append(_Signed(where, checkpoint.root_hash))
        for published in self._published():
            self.report.published += 1
            where = f"published checkpoint {published.where}"
            try:
                checkpoint = self._open(published.note, None)
            except NoteError as exc:
                self.finding(where, f"does not verify: {exc}")
                continue
            self.report.published_verified += 1
            stored = notes.get(checkpoint.size)
            if stored is None:
                self.finding(
                    where,
                    f"the database has no checkpoint of size {checkpoint.size}: removed, or "
                    "the database was rewound",
                )
            elif stored != published.note and not adds_signatures(
                stored.encode(), published.note.encode()
            ):  # the store's copy may carry the witnesses' cosignatures too
                self.finding(
                    f"checkpoint {checkpoint.size}",
                    f"differs from the one published in {published.where}: replaced",
                )
            signed.setdefault(checkpoint.size, []).append(_Signed(where, checkpoint.root_hash))
        return signed, notes

    def _published(self) -> list[StoredCheckpoint]:
        if self.store is None:
            return []
        error = self.store.errors.get(self.origin)
        if error is not None:
            self.finding("outside store", error)
        return self.store.checkpoints.get(self.origin, [])

    # -- the tree ----------------------------------------------------------------------------

    def run(self, progress: Progress | None, done: int, total: int) -> _Final:
        signed, notes = self.checkpoints()
        nodes = _stream(
            self.conn,
            select(AuditNode.seq, AuditNode.hash)
            .where(AuditNode.year == self.year)
            .order_by(AuditNode.seq),
        )
        heads = _stream(
            self.conn,
            select(AuditTree.size, AuditTree.root)
            .where(AuditTree.year == self.year)
            .order_by(AuditTree.size),
        )
        # Each entry with its inbox row's body: the sealed inbox rows stay as a second copy of
        # every record (receipts and reports read them), checked here against the entries.
        entries = _stream(
            self.conn,
            select(
                AuditEntry.idx,
                AuditEntry.entry,
                AuditEntry.leaf,
                AuditInbox.body,
                AuditEntry.time,
                *_QUERY_COLUMNS,
            )
            .outerjoin(AuditInbox, AuditInbox.id == AuditEntry.inbox_id)
            .where(AuditEntry.year == self.year)
            .order_by(AuditEntry.idx),
        )
        blocks = _stream(
            self.conn,
            select(AuditTimeBlock.block, AuditTimeBlock.min_time, AuditTimeBlock.max_time)
            .where(AuditTimeBlock.year == self.year)
            .order_by(AuditTimeBlock.block),
        )
        try:
            final = self._rebuild(signed, notes, entries, nodes, heads, progress, (done, total))
            self._check_time_blocks(blocks)
            return final
        finally:
            for result in (entries, nodes, heads, blocks):
                result.close()

    def _rebuild(
        self,
        signed: dict[int, list[_Signed]],
        notes: dict[int, str],
        entries: Any,
        nodes: Iterator[Any],
        heads: Iterator[Any],
        progress: Progress | None,
        counts: tuple[int, int],
    ) -> _Final:
        done, total = counts
        head = next(heads, None)
        stored_node = next(nodes, None)
        rng = CompactRange()
        position = 0
        good = 0  # the largest size up to which every signed root matched
        failed = False
        self._spans = []
        span: tuple[datetime, datetime] | None = None
        for index, raw, stored_leaf, inbox_body, when, *columns in entries:
            data = stored_bytes(raw)
            # The time span of each block of entries, as the sealer records it (SQL's min and
            # max: a missing time counts for neither).
            if when is not None:
                span = (when, when) if span is None else (min(span[0], when), max(span[1], when))
            if inbox_body is not None:
                self._check_inbox_copy(position, data, stored_bytes(inbox_body))
            if index != position:
                self.once(
                    "gap",
                    f"entry {position}",
                    f"is missing (the entry stored next is {index}): deleted, or the indices "
                    "were rewritten",
                    position,
                )
            parsed = self._check_envelope(position, data)
            if parsed is not None:
                self._check_query_columns(position, parsed.body, when, columns)
            leaf = leaf_hash(data)
            if stored_leaf is not None and stored_bytes(stored_leaf) != leaf:
                self._leaf_differs(position)
            # Entries sealed with their leaf hash keep only the nodes of level STORED_LEVEL and
            # up; older ones (a NULL leaf) also kept the leaf and every lower node.
            low_stored = stored_leaf is None
            for node in rng.append(leaf):
                if node.level < STORED_LEVEL and not low_stored:
                    continue
                seq = stored_hash_index(node.level, node.index)
                while stored_node is not None and stored_node[0] < seq:
                    stored_node = next(nodes, None)
                first = node.index << node.level
                last = first + (1 << node.level)
                if node.level == 0 and (stored_node is None or stored_node[0] != seq):
                    self.once(
                        "leaf",
                        f"entry {first}",
                        "has no leaf hash stored with it: written outside the sealer",
                        first,
                    )
                elif stored_node is None or stored_node[0] != seq:
                    self.once("node", f"node {node.id}", "is not stored", first, last)
                elif stored_bytes(stored_node[1]) != node.hash and node.level == 0:
                    self._leaf_differs(first)
                elif stored_bytes(stored_node[1]) != node.hash:
                    self.once(
                        "inner", f"node {node.id}", "differs from the rebuilt tree", first, last
                    )
            position += 1
            if not position % AUDIT_BLOCK_SIZE:
                self._spans.append(span)
                span = None
            while head is not None and head[0] <= position:
                if head[0] == position and stored_bytes(head[1]) != rng.root():
                    self.once(
                        "head", f"tree head {position}", "is not the root of the entries", None
                    )
                head = next(heads, None)
            for cp in signed.get(position, ()):
                if cp.root == rng.root():
                    good = position if not failed else good
                    continue
                failed = True
                self.finding(
                    cp.where,
                    f"the first {position} entries do not hash to its signed root: an entry in "
                    f"[{good}, {position}) was altered, inserted, removed or reordered",
                    good,
                    position,
                )
            if progress is not None and position % 10_000 == 0:
                progress(done + position, total)
        for kind, count in self._repeats.items():
            if count > 1:
                self.finding(kind, f"{count - 1} more entries or nodes fail the same way")
        self.report.entries = position
        self._check_end(position, signed)
        self._check_link()
        last_note = notes[max(notes)] if notes else None
        return _Final(position, rng.root(), last_note)

    def _check_time_blocks(self, blocks: Iterator[Any]) -> None:
        """Each complete block of entries has its recorded time span, that of its entries
        (audit queries with a time window skip the blocks whose span misses the window), and
        no block beyond them has one."""
        computed = self._spans
        for block, low, high in blocks:
            first, end = block << AUDIT_BLOCK_BITS, (block + 1) << AUDIT_BLOCK_BITS
            while self._next_block < min(block, len(computed)):
                self._missing_block(self._next_block)
            if block >= len(computed):
                self.once(
                    "block",
                    f"time block {block}",
                    f"records a time span for entries [{first}, {end}), which the shard does "
                    "not hold (yet): not written by the sealer",
                )
                continue
            self._next_block = block + 1
            if computed[block] != (low, high):
                self.once(
                    "block",
                    f"time block {block}",
                    f"records the time span {_span_text((low, high))}, its entries [{first}, "
                    f"{end}) span {_span_text(computed[block])}: audit queries with a time "
                    "window would skip entries",
                )
        while self._next_block < len(computed):
            self._missing_block(self._next_block)
        more = self._repeats.get("block", 0) - 1
        if more > 0:
            self.finding("block", f"{more} more time blocks fail the same way")

    def _missing_block(self, block: int) -> None:
        self._next_block = block + 1
        first, end = block << AUDIT_BLOCK_BITS, (block + 1) << AUDIT_BLOCK_BITS
        self.once(
            "block",
            f"time block {block}",
            f"entries [{first}, {end}) have no recorded time span: removed after sealing",
        )

    def _leaf_differs(self, index: int) -> None:
        self.once(
            "leaf",
            f"entry {index}",
            "does not match the leaf hash stored when it was sealed: edited, inserted or moved "
            "after sealing",
            index,
        )

    def _check_inbox_copy(self, position: int, data: bytes, body: bytes) -> None:
        """The sealed inbox row is, byte for byte, the body inside its entry."""
        try:
            same = compose_entry(body, position, self.origin) == data
        except EntryError:
            same = False
        if not same:
            self.once(
                "inbox",
                f"entry {position}",
                "differs from its inbox row (the second copy of the record): the inbox row "
                "was edited after sealing",
                position,
            )

    def _check_query_columns(
        self, position: int, body: dict[str, Any], when: datetime | None, columns: list[Any]
    ) -> None:
        """The columns audit queries filter on (time, action, actor, subject, tenant) are
        copies of the entry's own fields, kept beside it for its indexes: edited, they would
        hide the entry from a filtered query (another tenant's, another time) or show it under
        a false name while the entry itself still verifies."""
        actor, subject = body.get("actor"), body.get("subject")
        actor = actor if isinstance(actor, dict) else {}
        subject = subject if isinstance(subject, dict) else {}
        expected = (
            body.get("time"),
            body.get("action"),
            actor.get("kind"),
            actor.get("id"),
            subject.get("type"),
            subject.get("id"),
            body.get("tenant"),
        )
        found = (rfc3339(when) if when is not None else None, *columns)
        differ = [name for name, a, b in zip(_COLUMN_NAMES, expected, found, strict=True) if a != b]
        if differ:
            self.once(
                "columns",
                f"entry {position}",
                f"its query columns ({', '.join(differ)}) differ from the entry's own fields: "
                "edited after sealing, so filtered audit queries would miss it or misname it",
                position,
            )

    def _check_envelope(self, position: int, data: bytes) -> ParsedEntry | None:
        try:
            parsed = parse_entry(data)
        except EntryError as exc:
            self.once("envelope", f"entry {position}", f"is not a ledger entry: {exc}", position)
            return None
        if parsed.index != position or parsed.origin != self.origin:
            self.once(
                "envelope",
                f"entry {position}",
                f"names index {parsed.index} of {parsed.origin}: moved, inserted or reordered",
                position,
            )
        if position == 0:
            if parsed.body.get("action") != "ledger.open":
                self.finding("entry 0", "is not the shard's ledger.open entry", 0)
            link = parsed.body.get("data")
            self.link = link if isinstance(link, dict) else {}
        return parsed

    def _check_end(self, count: int, signed: dict[int, list[_Signed]]) -> None:
        tree_size = self.conn.scalar(
            select(AuditTree.size)
            .where(AuditTree.year == self.year)
            .order_by(AuditTree.size.desc())
            .limit(1)
        )
        self.report.tree_size = int(tree_size or 0)
        if self.report.tree_size > count:
            self.finding(
                f"tree head {self.report.tree_size}",
                f"the tree had {self.report.tree_size} entries, the database holds {count}: "
                f"entries [{count}, {self.report.tree_size}) are missing",
                count,
            )
        elif count > self.report.tree_size:
            self.finding(
                f"entry {self.report.tree_size}",
                f"entries [{self.report.tree_size}, {count}) are in no tree head: written "
                "outside the sealer",
                self.report.tree_size,
            )
        beyond = sorted(size for size in signed if size > count)
        if beyond:
            where = ", ".join(cp.where for cp in signed[beyond[-1]])
            self.finding(
                where,
                f"signs {beyond[-1]} entries, the database holds {count}: entries "
                f"[{count}, {beyond[-1]}) are missing (cut off, or the database was rewound "
                "to an earlier copy)",
                count,
            )

    def _check_link(self) -> None:
        """Entry 0 embeds the previous shard's final checkpoint, which matches its tree."""
        link = self.link or {}
        embedded = link.get("previous_checkpoint")
        if self.previous is None:
            if embedded is not None:
                self.finding("entry 0", "links to a previous shard, but there is none", 0)
            return
        if not isinstance(embedded, str) or embedded != self.previous.note:
            self.finding("entry 0", "does not embed the previous shard's final checkpoint", 0)
            return
        try:
            checkpoint, _ = open_checkpoint(embedded, [k.verifier for k in self.keys])
        except NoteError as exc:
            self.finding("entry 0", f"the embedded previous checkpoint does not verify: {exc}", 0)
            return
        if (checkpoint.size, checkpoint.root_hash) != (self.previous.size, self.previous.root):
            self.finding(
                "entry 0", "the embedded checkpoint is not the previous shard's final tree", 0
            )


def _span_text(span: tuple[datetime, datetime] | None) -> str:
    if span is None:
        return "nothing (no entry has a time)"
    return f"{span[0]:%Y-%m-%d %H:%M:%S.%f} .. {span[1]:%Y-%m-%d %H:%M:%S.%f} UTC"


@dataclass
class _StoreListing:
    """What the outside store held before the database was read.

    The sealer publishes a checkpoint only once its transaction has committed, so every
    checkpoint listed here is in the database snapshot taken afterwards. Listing the store
    after reading the database would race a live sealer: a checkpoint committed and
    published in between would read as removed from the database."""

    origins: list[str] = field(default_factory=list)
    checkpoints: dict[str, list[StoredCheckpoint]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    unlisted: str | None = None

    @classmethod
    def take(cls, store: FolderCheckpointStore) -> _StoreListing:
        listing = cls()
        try:
            listing.origins = store.origins()
        except OSError as exc:
            listing.unlisted = f"cannot be listed: {exc}"
            return listing
        for origin in listing.origins:
            try:
                listing.checkpoints[origin] = store.all(origin)
            except CheckpointStoreError as exc:
                listing.errors[origin] = str(exc)
        return listing


def verify_ledger(
    db: Database,
    store: FolderCheckpointStore | None,
    *,
    trusted: Sequence[Verifier] | None = None,
    progress: Progress | None = None,
) -> LedgerReport:
    """Verify every shard of the ledger in ``db`` against the outside ``store``.

    ``trusted``: only these public keys may sign. By default the keys registered in the
    database are trusted, which someone able to rewrite the database could have rewritten
    too: pin the keys you hold when that matters.
    """
    report = LedgerReport(store=str(store.root) if store is not None else None)
    listing = _StoreListing.take(store) if store is not None else None
    with db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # One snapshot for every query below (streams included), as SQLite's read
            # transaction gives: a live sealer's commits in between must not show in one
            # stream and not in another.
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            _verify_shards(conn, report, listing, trusted, progress)
    return report


def _verify_shards(
    conn: Connection,
    report: LedgerReport,
    listing: _StoreListing | None,
    trusted: Sequence[Verifier] | None,
    progress: Progress | None,
) -> None:
    keys = _keys(conn, trusted)
    shards = list(conn.execute(select(AuditShard).order_by(AuditShard.year)))
    if shards and not keys:
        report.findings.append(Finding("keys", "no trusted public key is registered"))
    total = sum(
        int(
            conn.scalar(
                select(AuditTree.size)
                .where(AuditTree.year == shard.year)
                .order_by(AuditTree.size.desc())
                .limit(1)
            )
            or 0
        )
        for shard in shards
    )
    previous: _Final | None = None
    done = 0
    for shard in shards:
        check = _ShardCheck(conn, shard, keys, listing, previous)
        previous = check.run(progress, done, total)
        done += check.report.entries
        report.shards.append(check.report)
    if progress is not None:
        progress(done, total)
    if listing is not None:
        known = {shard.origin for shard in shards}
        if listing.unlisted is not None:
            report.findings.append(Finding("outside store", listing.unlisted))
        for origin in listing.origins:
            if origin not in known:
                report.findings.append(
                    Finding(
                        "outside store",
                        f"holds checkpoints of {origin}, a shard the database does not "
                        "have: dropped, or the database was rewound",
                    )
                )
