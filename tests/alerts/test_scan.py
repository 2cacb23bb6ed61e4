"""Security scan critical vulnerability (seed 000 §7.2): a `scan` event that reports critical
findings alerts, critical, once per run."""

from __future__ import annotations

from typing import Any

import pytest

from azdev_ica.domain.runs import Phase
from azdev_ica.jobs.delivery import deliver_due
from azdev_ica.services.alerts import critical_findings
from tests.alerts.conftest import API, alerts, audited, event, finish, routed, start_run
from tests.conftest import bearer

TOPIC = "scan.critical"


def test_a_scan_with_critical_findings_alerts_once_per_run(ctx):
    run_key = start_run(ctx)
    event(ctx, run_key, Phase.SCAN, {"passed": True, "findings": {"critical": 0, "high": 3}})
    assert alerts(ctx, TOPIC) == []
    event(ctx, run_key, Phase.SCAN, {"passed": False, "findings": {"critical": 2, "high": 1}})
    [row] = alerts(ctx, TOPIC)
    assert (row.subject_type, row.subject_id, row.tenant) == ("run", run_key, "to")
    assert row.payload["severity"] == "critical"
    assert row.payload["critical"] == 2
    assert audited(ctx, TOPIC) == [("run", run_key)]
    event(ctx, run_key, Phase.SCAN, {"passed": False, "findings": {"critical": 5}})
    assert len(alerts(ctx, TOPIC)) == 1


def test_each_run_alerts_on_its_own(ctx):
    first, second = start_run(ctx), start_run(ctx)
    event(ctx, first, Phase.SCAN, {"passed": False, "findings": {"critical": 1}})
    event(ctx, second, Phase.SCAN, {"passed": False, "findings": {"critical": 3}})
    assert [row.subject_id for row in alerts(ctx, TOPIC)] == [first, second]
    assert alerts(ctx, TOPIC)[0].payload["summary"].endswith("1 critical vulnerability")


def test_other_phases_never_alert(ctx):
    run_key = start_run(ctx)
    event(ctx, run_key, Phase.TEST, {"passed": False, "findings": {"critical": 4}})
    event(ctx, run_key, Phase.VERIFY, {"passed": False, "findings": {"critical": 4}})
    assert alerts(ctx, TOPIC) == []


def test_a_rerun_of_the_same_run_does_not_alert_again(ctx):
    run_key = start_run(ctx)
    event(ctx, run_key, Phase.SCAN, {"passed": False, "findings": {"critical": 1}})
    finish(ctx, run_key, "failed")
    event(ctx, run_key, Phase.SCAN, {"passed": False, "findings": {"critical": 1}}, attempt=2)
    assert len(alerts(ctx, TOPIC)) == 1


@pytest.mark.parametrize(
    ("data", "count"),
    [
        ({"passed": False, "findings": {"critical": 3}}, 3),
        ({"passed": True, "findings": {"critical": 0, "high": 9}}, 0),
        ({"critical": 2}, 0),  # not where a scan reports it
        ({"findings": {"critical": True}}, 0),
        ({"findings": {"critical": "many"}}, 0),
        ({"findings": {"critical": -1}}, 0),
        ({"findings": {"critical": 2.5}}, 0),
        ({"findings": ["critical"]}, 0),
        ([], 0),
        (None, 0),
    ],
)
def test_what_counts_as_critical_findings(data, count):
    assert critical_findings(data) == count


def test_scans_through_the_api_alert_and_bad_ones_are_refused(ctx, client, make_key):
    key = make_key("azdev_devops")
    run_key = start_run(ctx)

    def post(data: Any) -> Any:
        return client.post(
            f"{API}/run/event",
            json={"run_key": run_key, "phase": "scan", "data": data},
            headers=bearer(key),
        )

    for bad in ({"passed": False, "critical": 2}, {"passed": False, "findings": {"critical": -1}}):
        response = post(bad)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    assert alerts(ctx, TOPIC) == []
    assert post({"passed": False, "tool": "trivy", "findings": {"critical": 1}}).status_code == 201
    [row] = alerts(ctx, TOPIC)
    assert row.subject_id == run_key


def test_the_alert_reaches_the_webhook(ctx, settings, webhook):
    run_key = start_run(ctx)
    event(ctx, run_key, Phase.SCAN, {"passed": False, "findings": {"critical": 2}})
    report = deliver_due(ctx, routed(settings, webhook, "scan.*"))
    assert report.delivered == 1, report
    text = webhook.requests[0].json()["text"]
    assert text.startswith(f"[ICA] Security scan: run {run_key} (registry-deploy, to/production)")
    assert "2 critical vulnerabilities" in text
