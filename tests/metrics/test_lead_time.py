"""Lead time for changes from the commit times pipelines report at a run's start
(`commit_at`): validated at the door, stored on the run, in the run's audit entry (so replay
rebuilds it), and the median computed exactly, per tenant and fleet-wide, on both databases."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from azdev_ica.audit.replay import replay_ledger
from azdev_ica.db.tables import AuditInbox
from azdev_ica.jobs.sealer import seal_now
from azdev_ica.services.audit import rfc3339
from tests.conftest import T0, bearer

API = "/api/v1/azdev"
PERIOD = "from=2026-11-01T00:00:00Z&to=2026-11-08T00:00:00Z"
HOUR = timedelta(hours=1)


@pytest.fixture
def ci(make_key: Any) -> dict[str, str]:
    return bearer(make_key("azdev_devops"))


def start(
    client: Any,
    headers: dict[str, str],
    run_id: str,
    *,
    commit_at: Any,
    tenant: str = "to",
    stage: str = "production",
) -> Any:
    body: dict[str, Any] = {
        "provider": "ado",
        "project_id": "proj",
        "run_id": run_id,
        "pipeline_name": "farmer-registry-cd",
        "tenant": tenant,
        "stage": stage,
        "commit": "abcdef0",
    }
    if commit_at is not None:
        body["commit_at"] = rfc3339(commit_at) if isinstance(commit_at, datetime) else commit_at
    return client.post(f"{API}/run/start", json=body, headers=headers)


def release(
    client: Any,
    headers: dict[str, str],
    run_id: str,
    *,
    commit_at: datetime | None,
    tenant: str = "to",
    stage: str = "production",
    deployed: str = "succeeded",
) -> str:
    answer = start(client, headers, run_id, commit_at=commit_at, tenant=tenant, stage=stage)
    assert answer.status_code == 201, answer.text
    run_key = str(answer.json()["run_key"])
    event = {"run_key": run_key, "phase": "deploy", "data": {"status": deployed}}
    assert client.post(f"{API}/run/event", json=event, headers=headers).status_code == 201
    return run_key


def test_lead_time_is_the_median_from_commit_to_production_deploy(client, ci, clock, make_key):
    # Deployed at T0: committed 10 h before.
    release(client, ci, "1", commit_at=T0 - 10 * HOUR)
    clock.advance(HOUR)  # the rest deploy at T0 + 1 h
    release(client, ci, "2", commit_at=T0 - 1 * HOUR)  # 2 h
    release(client, ci, "3", commit_at=T0 - 3 * HOUR)  # 4 h
    # Not counted: a failed deployment, one without a commit time, a staging deployment.
    release(client, ci, "4", commit_at=T0 - 100 * HOUR, deployed="failed")
    release(client, ci, "5", commit_at=None)
    release(client, ci, "6", commit_at=T0 - 50 * HOUR, stage="staging")
    # Samoa: 1 h; and a commit time a little ahead of ICA's clock (accepted within the skew,
    # but a commit after its deployment is not a lead time).
    release(client, ci, "7", commit_at=T0, tenant="ws")
    release(client, ci, "8", commit_at=clock.now() + timedelta(minutes=4), tenant="ws")

    tonga = client.get(f"{API}/metrics/delivery?{PERIOD}&tenant=to", headers=ci).json()
    assert tonga["lead_time_for_changes_seconds"] == 4 * 3600  # median of 10 h, 2 h, 4 h
    assert tonga["definitions"]["lead_time_for_changes"] == 1
    samoa = client.get(f"{API}/metrics/delivery?{PERIOD}&tenant=ws", headers=ci).json()
    assert samoa["lead_time_for_changes_seconds"] == 3600
    fleet = client.get(f"{API}/metrics/delivery?{PERIOD}", headers=ci).json()
    assert fleet["lead_time_for_changes_seconds"] == 3 * 3600  # median of 1, 2, 4, 10 h
    samoa_reader = bearer(make_key("azdev_auditor", ["ws"]))
    seen = client.get(f"{API}/metrics/delivery?{PERIOD}", headers=samoa_reader).json()
    assert seen["lead_time_for_changes_seconds"] == 3600


def test_the_run_keeps_its_commit_time_and_replay_rebuilds_it(ctx, client, ci, database):
    committed = T0 - 90 * timedelta(minutes=1)  # 20:30 in Tonga (+13:00) is 07:30 UTC
    run_key = release(client, ci, "1", commit_at="2026-11-02T20:30:00+13:00")
    release(client, ci, "2", commit_at=None)
    run = client.get(f"{API}/run/{run_key}", headers=ci).json()
    assert datetime.fromisoformat(run["commit_at"]) == committed
    assert client.get(f"{API}/run/ado:proj:2", headers=ci).json()["commit_at"] is None
    with ctx.read() as session:
        bodies = session.scalars(
            select(AuditInbox.body).where(AuditInbox.action == "run.start").order_by(AuditInbox.id)
        )
        data = [json.loads(bytes(body))["data"] for body in bodies]
    assert [d["commit_at"] for d in data] == ["2026-11-02T07:30:00.000000Z", None]
    seal_now(ctx)
    report = replay_ledger(ctx.db)
    assert report.ok, report.text()
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE azdev_pipeline_run SET commit_at = NULL"))
    report = replay_ledger(ctx.db)
    assert {(d.table, d.column) for d in report.differences} == {
        ("azdev_pipeline_run", "commit_at")
    }


@pytest.mark.parametrize(
    ("commit_at", "why"),
    [
        ("yesterday", "not a time"),
        ("2026-11-02T08:00:00", "no offset"),
        ("2026-11-02T09:06:00Z", "six minutes ahead of ICA's clock"),
        ("2030-01-01T00:00:00Z", "years ahead"),
        ("9999-12-31T23:59:59-12:00", "out of range in UTC"),
        (1762074000, "a number"),
    ],
)
def test_an_impossible_commit_time_is_a_422_problem(client, ci, commit_at, why):
    answer = start(client, ci, "1", commit_at=commit_at)
    assert answer.status_code == 422, why
    assert answer.headers["content-type"] == "application/problem+json"
    assert client.get(f"{API}/run/ado:proj:1", headers=ci).status_code == 404


def test_a_commit_time_within_the_skew_is_accepted(client, ci, clock):
    answer = start(client, ci, "1", commit_at=clock.now() + timedelta(minutes=5))
    assert answer.status_code == 201, answer.text
