"""How many statements one gate evaluation sends to the database (each is a round trip):
the facts are read in a few composed statements, not one per fact (issue 21). Counted, on
SQLite and PostgreSQL, for the path every allowed deploy takes: a ready, approved run of
production asking again while it holds the lock."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, select

from azdev_ica.db.tables import AuditInbox
from azdev_ica.services.gates import EvaluateGate, evaluate
from azdev_ica.services.policies import apply_policy
from tests.conftest import example_policy
from tests.gates.conftest import OPERATOR, PIPELINE, approve, new_run

# The facts (policy version, run, approval, override, test and scan events, and the recorded
# builds of the artifact: this run's build events and another run's of the same digest, issue
# 17) in one; the lock row and its queue in two; the lock's renewal, the decision row, and the
# audit entries of both (one INSERT) in three. The promotion rules add one: the deployment
# history (with what spoiled it) and the sign-offs. The code before this restructuring sent 12
# and 14 (without the build rule), then 8 and 10 (the builds and the sign-offs each in their
# own), then 7 and 8 (an INSERT per audit entry).
ALLOWED_RENEWAL = 6
WITH_PROMOTION = ALLOWED_RENEWAL + 1


def statements(ctx: Any, work: Callable[[], object]) -> list[str]:
    sent: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.startswith("BEGIN"):  # SQLite's BEGIN IMMEDIATE is not a fact
            sent.append(statement)

    event.listen(ctx.db.engine, "before_cursor_execute", count)
    try:
        work()
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", count)
    return sent


def _asking(ctx: Any, run_key: str) -> Callable[[], None]:
    def ask() -> None:
        answer = evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=run_key))
        assert answer.status.value == "allow", answer.reasons

    ask()  # takes the lock (and parses the policy once)
    return ask


def test_an_allowed_evaluation_reads_its_facts_in_a_few_statements(ctx, approvers):
    run_key = new_run(ctx)
    approve(ctx, approvers, run_key)
    sent = statements(ctx, _asking(ctx, run_key))
    assert len(sent) <= ALLOWED_RENEWAL, "\n\n".join(sent)


def test_the_promotion_rules_add_one_statement(ctx):
    apply_policy(ctx, actor=OPERATOR, document=example_policy(promotion=True), source="test")
    # Development is the chain's first stage: no stage before it, no sign-off, no approval.
    run_key = new_run(ctx, stage="development")
    sent = statements(ctx, _asking(ctx, run_key))
    assert len(sent) <= WITH_PROMOTION, "\n\n".join(sent)


def test_the_lock_records_and_the_decision_record_are_written_in_order(ctx, approvers):
    """Written in one INSERT, the records keep the order of the steps: the lock's change,
    then the decision that made it (and a second run's queueing, then its decision)."""
    first, second = new_run(ctx), new_run(ctx)
    approve(ctx, approvers, first)
    approve(ctx, approvers, second)
    for run_key in (first, second, first):
        evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=run_key))
    with ctx.read() as session:
        rows = session.execute(
            select(AuditInbox.action, AuditInbox.subject_id, AuditInbox.body)
            .where(AuditInbox.action.in_(["gate.decide", "lock.acquire", "lock.queue"]))
            .order_by(AuditInbox.id)
        ).all()
    seen = [
        (action, json.loads(bytes(body))["data"].get("run_key", subject))
        for action, subject, body in rows
    ]
    assert seen == [
        ("lock.acquire", first),
        ("gate.decide", first),
        ("lock.queue", second),
        ("gate.decide", second),
        ("lock.acquire", first),  # renewed
        ("gate.decide", first),
    ]
