"""The gate's statements go straight through the driver on PostgreSQL (`db.engine.driver_rows`)
inside the action's Session transaction: a connection lost before or during the COMMIT must
behave as it does for every other action (repeated on a fresh connection; the outcome said to
be unknown, never that nothing changed)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.pool import NullPool

from azdev_ica.db.tables import GateEvaluation
from azdev_ica.errors import CommitOutcomeUnknown
from azdev_ica.services.gates import EvaluateGate, evaluate
from tests.gates.conftest import PIPELINE, approve, new_run

POSTGRESQL_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def _decisions(ctx: Any) -> int:
    with ctx.read() as session:
        return session.scalar(select(func.count()).select_from(GateEvaluation)) or 0


@POSTGRESQL_ONLY
def test_an_evaluation_on_a_dropped_connection_is_repeated_on_a_fresh_one(ctx, approvers, db_url):
    run_key = new_run(ctx)
    approve(ctx, approvers, run_key)
    assert (
        evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=run_key)).status.value
        == "allow"
    )
    other = create_engine(db_url, poolclass=NullPool)
    with other.connect() as conn:
        conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    other.dispose()
    # Every pooled connection is dead: the facts statement (the driver's) fails first.
    answer = evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=run_key))
    assert answer.status.value == "allow", answer.reasons
    assert _decisions(ctx) == 2


@POSTGRESQL_ONLY
def test_a_connection_lost_during_commit_is_an_unknown_outcome(ctx, approvers, db_url):
    run_key = new_run(ctx)
    approve(ctx, approvers, run_key)
    evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=run_key))
    killer = create_engine(db_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    armed = {"once": True}

    def lose_connection(conn: Any) -> None:
        if armed["once"] and conn.get_execution_options().get("ica_write"):
            armed["once"] = False
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with killer.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})

    event.listen(ctx.db.engine, "commit", lose_connection)
    try:
        with pytest.raises(CommitOutcomeUnknown):
            evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=run_key))
    finally:
        event.remove(ctx.db.engine, "commit", lose_connection)
        killer.dispose()
    assert not armed["once"]
    # The commit never reached the server: the next evaluation answers as before.
    answer = evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=run_key))
    assert answer.status.value == "allow", answer.reasons
    assert _decisions(ctx) == 2
