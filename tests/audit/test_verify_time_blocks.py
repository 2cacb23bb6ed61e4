"""`ica audit verify` recomputes the recorded time span of each complete block of entries
(`azdev_audit_time_block`, migration 0029) from the entries, on SQLite and PostgreSQL: audit
queries with a time window skip the blocks whose span misses the window, so a span narrowed,
removed or made up (as only a database superuser can) would hide entries from them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, text

from azdev_ica.audit.verify import LedgerReport, verify_ledger
from azdev_ica.db.tables import AUDIT_BLOCK_SIZE, AuditInbox
from azdev_ica.jobs.sealer import checkpoint_store, seal_now
from azdev_ica.services.audit import record_body
from azdev_ica.services.ledger import SEALER_ACTOR
from tests.audit.ledgerdb import unguarded

BLOCKS = "azdev_audit_time_block"


@pytest.fixture
def ledger(ctx: Any) -> Any:
    """One complete block of sealed entries (a second apart) and a few more."""
    start = ctx.clock.now()
    rows = []
    for n in range(AUDIT_BLOCK_SIZE + 10):
        at = start + timedelta(seconds=n)
        body = record_body(
            actor=SEALER_ACTOR,
            action="test.tick",
            subject_type="test",
            subject_id=str(n),
            tenant=None,
            data={"n": n},
            at=at,
        )
        rows.append(
            {
                "txid": 0,
                "created_at": at,
                "action": "test.tick",
                "actor_kind": SEALER_ACTOR.kind,
                "actor_id": SEALER_ACTOR.id,
                "subject_type": "test",
                "subject_id": str(n),
                "tenant": None,
                "body": body,
            }
        )
    with ctx.db.write() as session:
        session.execute(insert(AuditInbox), rows)
    seal_now(ctx)
    return ctx


def verify(ctx: Any) -> LedgerReport:
    return verify_ledger(ctx.db, checkpoint_store(ctx.ledger))


def block_findings(report: LedgerReport) -> list[str]:
    return [str(f) for s in report.shards for f in s.findings if f.where.startswith("time block")]


def test_the_sealers_time_blocks_verify(ledger):
    with ledger.db.engine.connect() as conn:
        recorded = conn.scalar(text("SELECT count(*) FROM azdev_audit_time_block"))
    assert recorded == 1  # the complete block; the incomplete one has none yet
    report = verify(ledger)
    assert report.ok, report.text()


def test_a_narrowed_time_span(ledger, database):
    with unguarded(database, BLOCKS) as conn:
        changed = conn.execute(
            text("UPDATE azdev_audit_time_block SET min_time = max_time WHERE block = 0")
        ).rowcount
    assert changed == 1
    report = verify(ledger)
    assert not report.ok
    (found,) = block_findings(report)
    assert "time block 0: records the time span" in found
    assert "would skip entries" in found


def test_a_removed_time_span(ledger, database):
    with unguarded(database, BLOCKS) as conn:
        conn.execute(text("DELETE FROM azdev_audit_time_block WHERE block = 0"))
    report = verify(ledger)
    assert not report.ok
    assert block_findings(report) == [
        f"time block 0: entries [0, {AUDIT_BLOCK_SIZE}) have no recorded time span: removed "
        "after sealing"
    ]


def test_a_made_up_time_span(ledger, database):
    with unguarded(database, BLOCKS) as conn:
        conn.execute(
            text(
                "INSERT INTO azdev_audit_time_block (year, block, min_time, max_time) "
                "SELECT year, 1, min_time, min_time FROM azdev_audit_time_block WHERE block = 0"
            )
        )
    report = verify(ledger)
    assert not report.ok
    (found,) = block_findings(report)
    assert found.startswith(f"time block 1: records a time span for entries [{AUDIT_BLOCK_SIZE},")
