"""PostgreSQL: the gate's facts statement reads the target's queue in its snapshot and locks
the lock row afterwards (waiting for a concurrent evaluation to commit). A queue change that
commits while it waits bumps the lock row's version, so the evaluation reads the queue again
instead of deciding on the one its snapshot saw: first come, first served holds."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table, insert, select, text, update

from azdev_ica.db.tables import DeployLock, LockWaiter, PipelineRun
from azdev_ica.services.gates import EvaluateGate, GateAnswer, evaluate
from azdev_ica.services.locks import lock_state
from azdev_ica.services.runs import FinishRun, finish_run
from tests.gates.conftest import PIPELINE, new_run, use_policy

POSTGRESQL_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
_LOCK = cast(Table, DeployLock.__table__)
TARGET = {"tenant": "to", "stage": "staging"}


def _ask(ctx: Any, run_key: str) -> GateAnswer:
    return evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=run_key))


def _waiting_for_a_lock(ctx: Any) -> bool:
    with ctx.db.engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return bool(waiting)


@POSTGRESQL_ONLY
def test_a_run_queued_while_the_facts_wait_for_the_lock_goes_first(ctx):
    use_policy(ctx, "gates:\n  require_tests: false\n  require_scan: false\n")
    ready = {"stage": "staging", "coverage": None, "scan_passed": None}
    first = new_run(ctx, **ready)
    assert _ask(ctx, first).status.value == "allow"
    finish_run(ctx, principal=PIPELINE, command=FinishRun(first, "success"))  # frees the lock
    waiting, late = new_run(ctx, **ready), new_run(ctx, **ready)
    with ctx.read() as session:
        waiting_pk = session.scalar(select(PipelineRun.id).where(PipelineRun.run_key == waiting))
    now = ctx.clock.now()
    where = (_LOCK.c.tenant == TARGET["tenant"], _LOCK.c.stage == TARGET["stage"])
    with ThreadPoolExecutor(1) as pool, ctx.db.engine.connect() as other:
        # Another evaluation holds the lock row and queues `waiting`, as locks.apply does.
        other.execute(select(_LOCK.c.id).where(*where).with_for_update())
        other.execute(
            insert(LockWaiter).values(
                **TARGET, run_pk=waiting_pk, run_key=waiting, queued_at=now, last_seen_at=now
            )
        )
        other.execute(update(_LOCK).where(*where).values(version=_LOCK.c.version + 1))
        asked = pool.submit(_ask, ctx, late)  # its snapshot: no one waits, the lock is free
        deadline = time.monotonic() + 60
        while not _waiting_for_a_lock(ctx):
            assert not asked.done(), asked.result()
            assert time.monotonic() < deadline, "the evaluation never waited for the lock"
            threading.Event().wait(0.02)
        other.commit()
        answer = asked.result(timeout=60)
    assert answer.status.value == "pending", answer.reasons
    with ctx.read() as session:
        state = lock_state(session, **TARGET, now=ctx.clock.now())
    assert (state.holder_run_key, state.queue) == (None, (waiting, late))
    assert _ask(ctx, waiting).status.value == "allow"


def test_every_change_of_the_lock_or_its_queue_bumps_its_version(ctx):
    use_policy(ctx, "gates:\n  require_tests: false\n  require_scan: false\n")
    ready = {"stage": "staging", "coverage": None, "scan_passed": None}
    first, second = new_run(ctx, **ready), new_run(ctx, **ready)

    def version() -> int:
        with ctx.read() as session:
            return int(session.scalars(select(DeployLock.version)).one())

    assert _ask(ctx, first).status.value == "allow"  # the row created, the lock taken
    seen = [version()]
    steps = [
        lambda: _ask(ctx, second),  # queued
        lambda: _ask(ctx, second),  # seen again in the queue (a touch)
        lambda: finish_run(ctx, principal=PIPELINE, command=FinishRun(first, "success")),
        lambda: _ask(ctx, second),  # leaves the queue, takes the lock
        lambda: finish_run(ctx, principal=PIPELINE, command=FinishRun(second, "success")),
    ]
    for step in steps:
        ctx.clock.advance(timedelta(seconds=1))
        step()
        seen.append(version())
    assert seen == sorted(set(seen)), seen  # strictly increasing
