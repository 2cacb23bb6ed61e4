"""Deployment queue > 5 pending (seed 000 §7.2): the run whose joining makes a target's lock
queue hold more than 5 waiting runs warns; not again until the queue is back to 5 or fewer."""

from __future__ import annotations

from typing import Any

from azdev_ica.domain.runs import Phase
from azdev_ica.services.gates import EvaluateGate, evaluate
from tests.alerts.conftest import PIPELINE, alerts, audited, event, finish, start_run

TOPIC = "lock.queue_long"


def ready_run(ctx: Any, tenant: str = "to") -> str:
    """A staging run with its build, passing tests and scan: only the lock can hold it back."""
    run_key = start_run(ctx, tenant=tenant, stage="staging")
    event(ctx, run_key, Phase.BUILD, {"passed": True})
    event(ctx, run_key, Phase.TEST, {"passed": True, "coverage_percent": 90})
    event(ctx, run_key, Phase.SCAN, {"passed": True, "findings": {"critical": 0}})
    return run_key


def ask(ctx: Any, run_key: str) -> Any:
    return evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=run_key))


def test_the_sixth_waiting_run_warns_once_per_crossing(ctx):
    holder = ready_run(ctx)
    assert ask(ctx, holder).status.value == "allow"
    waiting = [ready_run(ctx) for _ in range(7)]
    for run_key in waiting[:5]:
        assert ask(ctx, run_key).queue_position is not None
    assert alerts(ctx, TOPIC) == []
    assert ask(ctx, waiting[5]).queue_position == 6
    [row] = alerts(ctx, TOPIC)
    assert (row.subject_type, row.subject_id, row.tenant) == ("lock", "to/staging", "to")
    assert row.payload["severity"] == "warning"
    assert row.payload["waiting"] == 6
    assert row.payload["queue"] == waiting[:6]
    assert row.payload["run_key"] == waiting[5]
    assert audited(ctx, TOPIC) == [("lock", "to/staging")]
    assert ask(ctx, waiting[6]).queue_position == 7  # still above: no new warning
    for run_key in waiting[:6]:  # asking again keeps a place, it is not a new join
        ask(ctx, run_key)
    assert len(alerts(ctx, TOPIC)) == 1
    # Two runs give up: the queue is back to 5; the next one to join crosses again.
    finish(ctx, waiting[0], "cancelled")
    finish(ctx, waiting[1], "cancelled")
    assert len(alerts(ctx, TOPIC)) == 1
    late = ready_run(ctx)
    assert ask(ctx, late).queue_position == 6
    assert len(alerts(ctx, TOPIC)) == 2
    assert alerts(ctx, TOPIC)[1].payload["run_key"] == late


def test_queues_of_other_targets_are_counted_apart(ctx):
    assert ask(ctx, ready_run(ctx, "to")).status.value == "allow"
    assert ask(ctx, ready_run(ctx, "ws")).status.value == "allow"
    for index in range(6):
        ask(ctx, ready_run(ctx, "to" if index % 2 else "ws"))
    assert alerts(ctx, TOPIC) == []
