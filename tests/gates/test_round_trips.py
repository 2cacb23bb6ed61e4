"""How many statements one gate evaluation sends to the database (each is a round trip):
the facts are read in a few composed statements, not one per fact (issue 21). Counted, on
SQLite and PostgreSQL, for the path every allowed deploy takes: a ready, approved run of
production asking again while it holds the lock."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, select

from azdev_ica.db.tables import AuditInbox, GateEvaluation
from azdev_ica.services.gates import EvaluateGate, evaluate
from azdev_ica.services.locks import lock_state
from azdev_ica.services.policies import apply_policy
from azdev_ica.services.runs import FinishRun, finish_run
from tests.conftest import example_policy
from tests.gates.conftest import OPERATOR, PIPELINE, approve, new_run

# The facts (policy version, run, approval, override, test and scan events, and the recorded
# builds of the artifact: this run's build events and another run's of the same digest, issue
# 17) in one; the lock row and its queue in two (on PostgreSQL the facts lock the row and
# read the queue in their snapshot, used when no change committed before the lock: none);
# the lock's renewal, the decision row, and the audit entries of both: on SQLite in three (the
# entries in one INSERT), on PostgreSQL in one (data-modifying CTEs; the facts draw the
# decision's id). The promotion rules add one on SQLite: the deployment history (with what
# spoiled it) and the sign-offs; on PostgreSQL the facts read them too (as JSON), once the
# policy that decided last has promotion rules. The code before this restructuring sent 12
# and 14 (without the build rule), then 8 and 10 (the builds and the sign-offs each in their
# own), then 7 and 8 (an INSERT per audit entry), then 6 and 7.
ALLOWED_RENEWAL = {"sqlite": 6, "postgresql": 2}
PROMOTION = {"sqlite": 1, "postgresql": 0}


def statements(ctx: Any, work: Callable[[], object]) -> list[str]:
    """The statements `work` sends; on PostgreSQL counted at the driver (psycopg's cursors),
    so that those sent straight through it (`db.engine.driver_rows`) count too."""
    sent: list[str] = []
    if ctx.db.dialect == "postgresql":
        import psycopg

        execute = psycopg.Cursor.execute

        def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            sent.append(query.decode() if isinstance(query, bytes) else str(query))
            return execute(self, query, *args, **kwargs)

        psycopg.Cursor.execute = counted  # type: ignore[method-assign]
        try:
            work()
        finally:
            psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        return sent

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
    assert len(sent) <= ALLOWED_RENEWAL[ctx.db.dialect], "\n\n".join(sent)


def test_the_promotion_rules_add_one_statement(ctx):
    apply_policy(ctx, actor=OPERATOR, document=example_policy(promotion=True), source="test")
    # Development is the chain's first stage: no stage before it, no sign-off, no approval.
    run_key = new_run(ctx, stage="development")
    sent = statements(ctx, _asking(ctx, run_key))
    bound = ALLOWED_RENEWAL[ctx.db.dialect] + PROMOTION[ctx.db.dialect]
    assert len(sent) <= bound, "\n\n".join(sent)


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


def test_a_free_lock_taken_is_written_with_its_decision(ctx, approvers):
    """A run taking a target's free lock (its row exists: another run held it before) on the
    path every allowed deploy takes: the lock names the run, the records are in order (the
    lock's change, then the decision), and the decision's record names the decision row (on
    PostgreSQL its id is drawn with the facts, before the row is written)."""
    first, second = new_run(ctx), new_run(ctx)
    approve(ctx, approvers, first)
    approve(ctx, approvers, second)
    evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=first))
    finish_run(ctx, principal=PIPELINE, command=FinishRun(first, "success"))
    sent = statements(
        ctx, lambda: evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=second))
    )
    answer = evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=second))  # renewed
    assert answer.status.value == "allow", answer.reasons
    with ctx.read() as session:
        state = lock_state(session, tenant="to", stage="production", now=ctx.clock.now())
        decisions = session.execute(
            select(GateEvaluation.id, GateEvaluation.status)
            .where(GateEvaluation.run_key == second)
            .order_by(GateEvaluation.id)
        ).all()
        rows = session.execute(
            select(AuditInbox.action, AuditInbox.body)
            .where(AuditInbox.action.in_(["gate.decide", "lock.acquire", "lock.release"]))
            .order_by(AuditInbox.id)
        ).all()
    assert (state.holder_run_key, state.queue) == (second, ())
    assert [status for _, status in decisions] == ["allow", "allow"]
    assert decisions[-1].id == answer.decision_id
    records = [(action, json.loads(bytes(body))["data"]) for action, body in rows]
    assert [(action, data["run_key"] if action != "gate.decide" else None)
            for action, data in records[-5:]] == [
        ("lock.release", first),
        ("lock.acquire", second),
        ("gate.decide", None),
        ("lock.acquire", second),
        ("gate.decide", None),
    ]  # fmt: skip
    assert [records[-4][1]["renewed"], records[-2][1]["renewed"]] == [False, True]
    assert [records[-3][1]["decision"], records[-1][1]["decision"]] == [
        decision_id for decision_id, _ in decisions
    ]
    assert len(sent) <= ALLOWED_RENEWAL[ctx.db.dialect], "\n\n".join(sent)
