"""How sealed entries are stored (0007_ledger_speed), on SQLite and PostgreSQL: every entry row
carries its leaf hash, only nodes of level `STORED_LEVEL` and up are stored, and proofs read
from that layout (or from a shard sealed in the older one, every node stored) are exactly the
proofs of the tree the entries make."""

from __future__ import annotations

import random
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from azdev_ica.audit.verify import verify_ledger
from azdev_ica.auth.principal import Actor
from azdev_ica.db.tables import (
    AUDIT_BLOCK_SIZE,
    AuditEntry,
    AuditInbox,
    AuditNode,
    AuditTimeBlock,
)
from azdev_ica.jobs.sealer import STORED_LEVEL, checkpoint_store, node_reader, seal_now
from azdev_ica.ledger.entry import EntryError
from azdev_ica.ledger.merkle import (
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_nodes,
    stored_hash_index,
)
from azdev_ica.services.audit import append_audit
from tests.audit.ledgerdb import unguarded, with_ledger
from tests.ledger import reference

OPERATOR = Actor(kind="operator", id="layout")


def records(ctx: Any, count: int) -> None:
    def act(session: Session) -> None:
        for n in range(count):
            append_audit(
                session,
                actor=OPERATOR,
                action="test.layout",
                subject_type="test",
                subject_id=str(n),
                tenant=None,
                data={"n": n, "text": 'quote " backslash \\ é ☃'},
                at=ctx.clock.now(),
            )

    ctx.run_action(act)


def stored(ctx: Any) -> tuple[MemoryTree, list[Any], set[int]]:
    with ctx.read() as session:
        rows = list(
            session.execute(
                select(AuditEntry.idx, AuditEntry.entry, AuditEntry.leaf)
                .where(AuditEntry.year == 2026)
                .order_by(AuditEntry.idx)
            )
        )
        seqs = set(session.scalars(select(AuditNode.seq).where(AuditNode.year == 2026)))
    tree = MemoryTree()
    for _, entry, _ in rows:
        tree.append(bytes(entry))
    return tree, rows, seqs


def check_proofs(ctx: Any, tree: MemoryTree, picks: int = 60) -> None:
    rng = random.Random(7)
    size = tree.size
    with ctx.read() as session:
        nodes = node_reader(session, 2026)
        for _ in range(picks):
            n = rng.randint(1, size)
            index = rng.randrange(n)
            assert inclusion_proof(index, n, nodes) == tree.inclusion_proof(index, n)
            assert root_from_nodes(n, nodes) == tree.root(n)
            m = rng.randint(1, n)
            assert consistency_proof(m, n, nodes) == tree.consistency_proof(m, n)
        assert inclusion_proof(size - 1, size, nodes) == tree.inclusion_proof(size - 1, size)


def test_entries_carry_their_leaf_and_only_upper_nodes_are_stored(ctx):
    small = with_ledger(ctx, batch_size=37)  # batches end in the middle of subtrees
    records(small, 100)
    seal_now(small)
    records(small, 100)
    seal_now(small)
    tree, rows, seqs = stored(small)
    assert tree.size >= 201  # ledger.open, the fixture's records and 200
    assert all(bytes(leaf) == leaf_hash(bytes(entry)) for _, entry, leaf in rows)
    expected = {
        stored_hash_index(level, index)
        for level in range(STORED_LEVEL, tree.size.bit_length())
        for index in range(tree.size >> level)
    }
    assert seqs == expected
    check_proofs(small, tree)
    assert verify_ledger(small.db, checkpoint_store(small.ledger)).ok


def test_low_nodes_over_several_blocks_of_leaves_are_read_whole(ctx):
    """Adjacent nodes below `STORED_LEVEL` (as a consistency proof asks for) whose leaves span
    more than one block of ``2**STORED_LEVEL``: every leaf under them is read, none cut off by
    the bound each range of the read has."""
    records(ctx, 3 << STORED_LEVEL)
    seal_now(ctx)
    tree, _, _ = stored(ctx)
    below = STORED_LEVEL - 1
    wanted = [(below, i) for i in range(1, 6)] + [(0, 1), (1, 1), (below - 1, 10)]
    assert (6 << below) <= tree.size
    with ctx.read() as session:
        found = node_reader(session, 2026)(wanted)
    assert found == [tree.nodes[node] for node in wanted]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_on_postgresql_the_primary_key_carries_the_leaf_hash(ctx, database):
    """A proof's leaf hashes are read from the primary key's index alone (migration 0031):
    the table's metadata cannot say so, the schema must."""
    with database.engine.connect() as conn:
        definition = conn.execute(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = 'pk_azdev_audit_entry'")
        ).scalar_one()
    assert definition.endswith("(year, idx) INCLUDE (leaf)"), definition


def test_a_shard_sealed_in_the_older_layout_still_proves_and_verifies(ctx, database):
    """Entries sealed before 0007 have no leaf column value; their leaves and every lower node
    are rows of azdev_audit_node. Sealing goes on in the new layout on top of them."""
    records(ctx, 70)
    seal_now(ctx)
    old, _, seqs = stored(ctx)
    lower = [
        (2026, stored_hash_index(node[0], node[1]), h)
        for node, h in old.nodes.items()
        if stored_hash_index(*node) not in seqs
    ]
    with unguarded(database, "azdev_audit_entry") as conn:
        conn.execute(text("UPDATE azdev_audit_entry SET leaf = NULL"))
        conn.execute(
            AuditNode.__table__.insert(), [{"year": y, "seq": s, "hash": h} for y, s, h in lower]
        )
    records(ctx, 90)
    seal_now(ctx)
    tree, rows, _ = stored(ctx)
    assert [leaf is None for _, _, leaf in rows] == [i < old.size for i in range(tree.size)]
    assert tree.size == old.size + 90
    check_proofs(ctx, tree)
    assert verify_ledger(ctx.db, checkpoint_store(ctx.ledger)).ok


def test_a_body_that_is_not_a_json_object_is_refused(ctx):
    records(ctx, 3)
    seal_now(ctx)
    before = stored(ctx)[0].size

    def bad(session: Session) -> None:
        session.execute(
            AuditInbox.__table__.insert().values(
                txid=0,
                created_at=ctx.clock.now(),
                action="test.bad",
                actor_kind="operator",
                actor_id="x",
                subject_type="test",
                subject_id="x",
                tenant=None,
                body=b'["not an object"]',
            )
        )

    ctx.run_action(bad)
    with pytest.raises(EntryError, match="JSON object"):
        seal_now(ctx)
    assert stored(ctx)[0].size == before


def test_an_inclusion_proof_is_one_read_and_the_rfc_9162_path_for_any_size(ctx, monkeypatch):
    """Property: for random tree sizes and leaves, the proof read from the database is the
    literal RFC 9162 PATH (tests/ledger/reference.py), and reading it is a single statement
    (stored nodes by key and, below `STORED_LEVEL`, one block of leaf hashes)."""
    small = with_ledger(ctx, batch_size=29)  # batches end in the middle of subtrees
    records(small, 140)
    seal_now(small)
    records(small, 60)
    seal_now(small)
    tree, rows, _ = stored(small)
    entries = [bytes(entry) for _, entry, _ in rows]
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
        derandomize=True,
    )
    @given(st.data())
    def check(data: st.DataObject) -> None:
        size = data.draw(st.integers(1, tree.size), label="size")
        index = data.draw(st.integers(0, size - 1), label="index")
        with small.read() as session:
            nodes = node_reader(session, 2026)
            session.connection()  # the transaction's own statements are not the proof's
            statements.clear()
            proof = inclusion_proof(index, size, nodes)
        assert proof == reference.path(index, entries[:size])
        assert len(statements) == (1 if proof else 0), statements

    if small.db.dialect == "postgresql":
        # The node read goes to the driver itself (no engine event): count at the driver.
        execute = psycopg.Cursor.execute

        def counted(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            statements.append(str(query))
            return execute(cursor, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", counted)
        check()
        return
    event.listen(small.db.engine, "before_cursor_execute", count)
    try:
        check()
    finally:
        event.remove(small.db.engine, "before_cursor_execute", count)


def test_the_sealer_records_the_time_span_of_each_block_it_completes(ctx):
    """Migration 0029: a batch that completes a block of `AUDIT_BLOCK_SIZE` entries writes the
    block's earliest and latest action time (audit queries with a window read by them)."""
    records(ctx, AUDIT_BLOCK_SIZE + 10)
    seal_now(ctx)
    with ctx.read() as session:
        blocks = list(
            session.execute(
                select(AuditTimeBlock.block, AuditTimeBlock.min_time, AuditTimeBlock.max_time)
                .where(AuditTimeBlock.year == 2026)
                .order_by(AuditTimeBlock.block)
            )
        )
        times = list(
            session.scalars(
                select(AuditEntry.time)
                .where(AuditEntry.year == 2026, AuditEntry.idx < AUDIT_BLOCK_SIZE)
                .order_by(AuditEntry.idx)
            )
        )
    assert [tuple(b) for b in blocks] == [(0, min(times), max(times))]
