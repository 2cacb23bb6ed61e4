"""Pipeline failure (seed 000 §7.2): a run that fails after its pipeline's two previous
finished runs failed alerts, critical, once per streak; a run that did not fail ends it."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from azdev_ica.jobs.delivery import deliver_due
from tests.alerts.conftest import (
    API,
    PROJECT,
    alerts,
    audited,
    finish,
    routed,
    start_run,
)
from tests.conftest import bearer

TOPIC = "pipeline.failure_streak"


def run_and_finish(ctx: Any, clock: Any, status: str, **kwargs: Any) -> str:
    clock.advance(timedelta(minutes=10))
    key = start_run(ctx, **kwargs)
    clock.advance(timedelta(minutes=5))
    finish(ctx, key, status)
    return key


def test_the_third_failure_in_a_row_alerts_once(ctx, clock):
    first = run_and_finish(ctx, clock, "failed")
    run_and_finish(ctx, clock, "failed")
    assert alerts(ctx, TOPIC) == []
    third = run_and_finish(ctx, clock, "failed")
    [row] = alerts(ctx, TOPIC)
    assert (row.subject_type, row.subject_id) == ("run", first)
    assert row.payload["severity"] == "critical"
    assert row.payload["run_key"] == third
    assert row.payload["failures"] == 3
    assert row.payload["failed_runs"][0] == third
    assert audited(ctx, TOPIC) == [("run", third)]
    run_and_finish(ctx, clock, "failed")  # the fourth: the same streak
    run_and_finish(ctx, clock, "failed")
    assert len(alerts(ctx, TOPIC)) == 1


def test_a_success_resets_the_streak(ctx, clock):
    run_and_finish(ctx, clock, "failed")
    run_and_finish(ctx, clock, "failed")
    run_and_finish(ctx, clock, "succeeded")
    run_and_finish(ctx, clock, "failed")
    run_and_finish(ctx, clock, "failed")
    assert alerts(ctx, TOPIC) == []
    run_and_finish(ctx, clock, "failed")
    assert len(alerts(ctx, TOPIC)) == 1
    run_and_finish(ctx, clock, "succeeded")
    start = run_and_finish(ctx, clock, "failed")
    run_and_finish(ctx, clock, "failed")
    run_and_finish(ctx, clock, "failed")
    second = alerts(ctx, TOPIC)[1:]
    assert [row.subject_id for row in second] == [start]  # a new streak, a new alert


def test_a_cancelled_run_ends_the_streak(ctx, clock):
    run_and_finish(ctx, clock, "failed")
    run_and_finish(ctx, clock, "failed")
    run_and_finish(ctx, clock, "cancelled")
    run_and_finish(ctx, clock, "failed")
    assert alerts(ctx, TOPIC) == []


def test_only_runs_of_the_same_pipeline_count(ctx, clock):
    run_and_finish(ctx, clock, "failed")
    run_and_finish(ctx, clock, "failed", pipeline="other-pipeline")
    run_and_finish(ctx, clock, "failed", project_id="another-project")
    run_and_finish(ctx, clock, "failed")
    assert alerts(ctx, TOPIC) == []
    run_and_finish(ctx, clock, "failed")
    assert len(alerts(ctx, TOPIC)) == 1


def test_a_run_still_running_is_not_a_previous_finished_run(ctx, clock):
    run_and_finish(ctx, clock, "failed")
    start_run(ctx)  # still running
    run_and_finish(ctx, clock, "failed")
    assert alerts(ctx, TOPIC) == []


def test_a_rerun_failing_again_does_not_alert_again(ctx, clock):
    run_and_finish(ctx, clock, "failed")
    run_and_finish(ctx, clock, "failed")
    third = run_and_finish(ctx, clock, "failed")
    clock.advance(timedelta(minutes=5))
    finish(ctx, third, "failed", attempt=2)  # a re-run (attempt 2) fails too
    assert len(alerts(ctx, TOPIC)) == 1


def test_finishing_through_the_api_alerts_and_reaches_the_webhook(
    ctx, clock, client, make_key, settings, webhook
):
    key = make_key("azdev_devops")
    keys = []
    for _ in range(3):
        clock.advance(timedelta(minutes=10))
        run_key = start_run(ctx)
        response = client.post(
            f"{API}/run/finish", json={"run_key": run_key, "status": "failed"}, headers=bearer(key)
        )
        assert response.status_code == 200, response.text
        keys.append(run_key)
    [row] = alerts(ctx, TOPIC)
    assert row.payload["failed_runs"] == list(reversed(keys))
    report = deliver_due(ctx, routed(settings, webhook, "pipeline.*"))
    assert report.delivered == 1, report
    text = webhook.requests[0].json()["text"]
    assert text.startswith(f"[ICA] Pipeline failure: registry-deploy (ado:{PROJECT}) failed 3")
    assert f"/runs/{keys[-1]}" in text


def test_two_failures_finishing_together_alert_once(ctx, clock):
    for round_ in range(3):  # a few rounds: a lost race does not show every time
        pipeline = f"race-{round_}"
        run_and_finish(ctx, clock, "failed", pipeline=pipeline)
        run_and_finish(ctx, clock, "failed", pipeline=pipeline)
        racing = [start_run(ctx, pipeline=pipeline), start_run(ctx, pipeline=pipeline)]
        clock.advance(timedelta(minutes=5))
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def worker(run_key: str, barrier: Any = barrier, errors: Any = errors) -> None:
            try:
                barrier.wait()
                finish(ctx, run_key, "failed")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(key,)) for key in racing]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        rows = [r for r in alerts(ctx, TOPIC) if r.payload["pipeline_name"] == pipeline]
        assert len(rows) == 1, rows
        assert rows[0].payload["run_key"] in racing
