"""Delivery metrics over HTTP from what pipelines reported: runs, deploy events, rollbacks and
incidents, per tenant and fleet-wide, on both databases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import bearer

API = "/api/v1/azdev"
PERIOD = "from=2026-11-01T00:00:00Z&to=2026-11-08T00:00:00Z"


@pytest.fixture
def ci(make_key: Any) -> dict[str, str]:
    return bearer(make_key("azdev_devops"))


def release(
    client: Any,
    headers: dict[str, str],
    run_id: str,
    *,
    tenant: str,
    deployed: str | None,
    finish: str,
    rollback: bool = False,
) -> str:
    start = {
        "provider": "ado",
        "project_id": "proj",
        "run_id": run_id,
        "pipeline_name": "farmer-registry-cd",
        "tenant": tenant,
        "stage": "production",
    }
    run_key = str(client.post(f"{API}/run/start", json=start, headers=headers).json()["run_key"])
    if deployed is not None:
        event = {"run_key": run_key, "phase": "deploy", "data": {"status": deployed}}
        assert client.post(f"{API}/run/event", json=event, headers=headers).status_code == 201
    if rollback:
        event = {"run_key": run_key, "phase": "rollback_initiated", "data": {"reason": "5xx"}}
        assert client.post(f"{API}/run/event", json=event, headers=headers).status_code == 201
    finished = client.post(
        f"{API}/run/finish", json={"run_key": run_key, "status": finish}, headers=headers
    )
    assert finished.status_code in (200, 201), finished.text
    return run_key


def test_metrics_from_what_was_reported(client, ci, clock):
    release(client, ci, "1", tenant="to", deployed="succeeded", finish="Succeeded")
    release(client, ci, "2", tenant="to", deployed="failed", finish="Failed")
    rolled = release(
        client, ci, "3", tenant="to", deployed="succeeded", finish="Succeeded", rollback=True
    )
    release(client, ci, "4", tenant="to", deployed=None, finish="Canceled")
    release(client, ci, "5", tenant="ws", deployed="succeeded", finish="Succeeded")
    incident = client.post(
        f"{API}/incident",
        json={"title": "5xx after release", "severity": "high", "run_key": rolled},
        headers=ci,
    ).json()["id"]
    clock.advance(timedelta(minutes=30))
    client.post(f"{API}/incident/{incident}/status", json={"status": "resolved"}, headers=ci)

    tonga = client.get(f"{API}/metrics/delivery?{PERIOD}&tenant=to", headers=ci).json()
    assert tonga["pipeline_success_rate"] == pytest.approx(2 / 3)  # cancelled excluded
    assert tonga["deployment_frequency_per_day"] == pytest.approx(2 / 7)
    assert tonga["change_failure_rate"] == pytest.approx(2 / 3)  # failed + rolled back
    assert tonga["mttr_seconds"] == 30 * 60
    assert tonga["lead_time_for_changes_seconds"] is None  # no commit times reported
    assert tonga["approval_sla_compliance"] is None
    assert tonga["definitions"]["mttr"] == 1

    fleet = client.get(f"{API}/metrics/delivery?{PERIOD}", headers=ci).json()
    assert fleet["tenant"] is None
    assert fleet["deployment_frequency_per_day"] == pytest.approx(3 / 7)
    assert fleet["change_failure_rate"] == pytest.approx(2 / 4)


def test_a_scoped_reader_sees_its_tenants_only(client, ci, make_key):
    release(client, ci, "1", tenant="to", deployed="failed", finish="Failed")
    release(client, ci, "2", tenant="ws", deployed="succeeded", finish="Succeeded")
    samoa = bearer(make_key("azdev_auditor", ["ws"]))
    seen = client.get(f"{API}/metrics/delivery?{PERIOD}", headers=samoa).json()
    assert seen["change_failure_rate"] == 0.0
    assert seen["pipeline_success_rate"] == 1.0


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-11-08T00:00:00Z&to=2026-11-01T00:00:00Z",
        "from=2026-11-01T00:00:00Z",
        "from=yesterday&to=2026-11-01T00:00:00Z",
        "from=1900-01-01T00:00:00Z&to=2026-11-01T00:00:00Z",
        f"{PERIOD}&tenant=NOT A CODE",
    ],
)
def test_bad_periods_are_problems(client, ci, query):
    answer = client.get(f"{API}/metrics/delivery?{query}", headers=ci)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"


def test_a_deployment_failed_by_verification_or_monitoring_is_a_failed_change(client, ci):
    """Seed 000 §5.2, §6.1: a failed verification or a monitoring trigger marks the deployment
    failed, and the change failure rate counts it; an error rate within the seed's 5 % is no
    failure, and neither is a verification that passed."""

    def post_deploy(run_key: str, phase: str, data: dict[str, Any]) -> None:
        event = {"run_key": run_key, "phase": phase, "data": data}
        response = client.post(f"{API}/run/event", json=event, headers=ci)
        assert response.status_code == 201, response.text

    verified = release(client, ci, "1", tenant="to", deployed="succeeded", finish="Succeeded")
    post_deploy(verified, "verify", {"passed": True})
    calm = release(client, ci, "2", tenant="to", deployed="succeeded", finish="Succeeded")
    post_deploy(calm, "monitor", {"trigger": "error_rate", "value": 2.0})
    failed = release(client, ci, "3", tenant="to", deployed="succeeded", finish="Succeeded")
    post_deploy(failed, "verify", {"passed": False, "checks": [{"name": "smoke", "passed": False}]})
    crashing = release(client, ci, "4", tenant="to", deployed="succeeded", finish="Succeeded")
    post_deploy(crashing, "monitor", {"trigger": "crash_loop"})

    tonga = client.get(f"{API}/metrics/delivery?{PERIOD}&tenant=to", headers=ci).json()
    assert tonga["change_failure_rate"] == pytest.approx(2 / 4)
    assert tonga["deployment_frequency_per_day"] == pytest.approx(2 / 7)
