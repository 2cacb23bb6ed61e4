"""How many statements one gate evaluation sends to the database (each is a round trip):
the facts are read in a few composed statements, not one per fact (issue 21). Counted, on
SQLite and PostgreSQL, for the path every allowed deploy takes: a ready, approved run of
production asking again while it holds the lock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event

from azdev_ica.services.gates import EvaluateGate, evaluate
from tests.gates.conftest import PIPELINE, approve, new_run

# The facts (policy version, run, approval, override, test and scan events) in one; the
# promotion rules' history and sign-offs in two; the lock row and its queue in two; the
# lock's renewal, its audit entry, the decision row and its audit entry in four.
ALLOWED_RENEWAL = 9


def statements(ctx: Any, work: Callable[[], object]) -> list[str]:
    sent: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(ctx.db.engine, "before_cursor_execute", count)
    try:
        work()
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", count)
    return sent


def test_an_allowed_evaluation_reads_its_facts_in_a_few_statements(ctx, approvers):
    run_key = new_run(ctx)
    approve(ctx, approvers, run_key)

    def ask() -> None:
        answer = evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=run_key))
        assert answer.status.value == "allow", answer.reasons

    ask()  # takes the lock (and parses the policy once)
    sent = statements(ctx, ask)
    assert len(sent) <= ALLOWED_RENEWAL, "\n\n".join(sent)
