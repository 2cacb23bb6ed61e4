"""`GET /metrics` over HTTP, on SQLite and PostgreSQL: who may scrape, requests counted per
route template, and the gauges read from the database at scrape time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from azdev_ica.jobs import scheduler
from azdev_ica.jobs.sealer import seal_now
from azdev_ica.services.approvals import RequestApproval, request_approval
from azdev_ica.services.runs import FinishRun, finish_run
from tests.conftest import bearer
from tests.gates.conftest import API, PIPELINE, gate, new_run

# The samples of a scrape: {(sample name, frozenset(labels)): value}.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: Any, key: str) -> Samples:
    response = client.get("/metrics", headers=bearer(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def monitor(make_key: Any) -> str:
    return make_key("azdev_monitoring")


class TestWhoMayScrape:
    def test_no_credentials_is_401(self, client):
        response = client.get("/metrics")
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"

    @pytest.mark.parametrize("role", ["azdev_devops", "azdev_auditor", "azdev_approver_tech"])
    def test_other_roles_are_refused(self, client, make_key, role):
        assert client.get("/metrics", headers=bearer(make_key(role))).status_code == 403

    def test_a_tenant_scoped_monitoring_key_is_refused(self, client, make_key):
        # The metrics name every tenant; a key for some tenants must not read them.
        key = make_key("azdev_monitoring", ["to"])
        response = client.get("/metrics", headers=bearer(key))
        assert response.status_code == 403
        assert "all-tenants" in response.json()["detail"]

    def test_monitoring_and_admin_keys_scrape(self, client, monitor, make_key):
        assert value(scrape(client, monitor), "ica_database_up") == 1
        assert value(scrape(client, make_key("admin")), "ica_build_info", version="0.1.0") == 1

    def test_a_monitoring_key_reads_nothing_else(self, client, monitor):
        assert client.get(f"{API}/runs", headers=bearer(monitor)).status_code == 403
        assert client.get(f"{API}/audit/entries", headers=bearer(monitor)).status_code in (
            403,
            404,
        )


def test_requests_count_per_route_template_not_per_path(client, ctx, monitor, make_key):
    reader = make_key("azdev_auditor")
    first, second = new_run(ctx), new_run(ctx)
    for run_key in (first, second, first):
        assert client.get(f"{API}/run/{run_key}", headers=bearer(reader)).status_code == 200
    assert client.get(f"{API}/run/ado:nope:1", headers=bearer(reader)).status_code == 404
    assert client.get("/no/such/page/4711").status_code == 404
    samples = scrape(client, monitor)
    route = f"{API}/run/{{run_key}}"
    ok = value(samples, "ica_http_requests_total", route=route, method="GET", status="200")
    assert ok == 3
    missing = value(samples, "ica_http_requests_total", route=route, method="GET", status="404")
    assert missing == 1
    latency = value(samples, "ica_http_request_duration_seconds_count", route=route, method="GET")
    assert latency == 4
    unmatched = value(
        samples, "ica_http_requests_total", route="<unmatched>", method="GET", status="404"
    )
    assert unmatched == 1
    raw_paths = [labels for (name, labels) in samples if ("route", f"{API}/run/{first}") in labels]
    assert raw_paths == []


def test_gate_decisions_by_status_and_reason_and_the_lock_queue(client, ctx, monitor, make_key):
    devops = make_key("azdev_devops")
    holder, waiter = new_run(ctx, stage="staging"), new_run(ctx, stage="staging")
    unready = new_run(ctx, stage="staging", coverage=10)
    assert gate(client, devops, holder)["status"] == "allow"
    assert gate(client, devops, waiter)["status"] == "pending"
    denied = gate(client, devops, unready)
    assert denied["status"] == "deny"
    samples = scrape(client, monitor)
    target = {"tenant": "to", "stage": "staging"}
    assert value(samples, "ica_gate_decisions_total", **target, status="allow") == 1
    assert value(samples, "ica_gate_decisions_total", **target, status="pending") == 1
    assert value(samples, "ica_gate_decisions_total", **target, status="deny") == 1
    assert value(samples, "ica_gate_decision_reasons_total", status="pending", reason="lock_held")
    for reason in denied["reasons"]:
        code = reason["code"]
        assert value(samples, "ica_gate_decision_reasons_total", status="deny", reason=code) == 1
    assert value(samples, "ica_lock_queue_length", **target) == 1
    # The waiting run finishes: it leaves the queue.
    finish_run(ctx, principal=PIPELINE, command=FinishRun(waiter, "success"))
    assert value(scrape(client, monitor), "ica_lock_queue_length", **target) is None


def test_approvals_pending_their_age_sla_and_budget(client, ctx, clock, monitor):
    run_key = new_run(ctx)
    request_approval(
        ctx,
        principal=PIPELINE,
        command=RequestApproval(
            run_key=run_key, cost_impact_minor=850, budget_minor=1000, currency="NZD"
        ),
    )
    target = {"tenant": "to", "stage": "production"}
    fresh = scrape(client, monitor)
    assert value(fresh, "ica_approvals_pending", **target) == 1
    assert value(fresh, "ica_approval_pending_oldest_age_seconds", **target) == 0
    assert value(fresh, "ica_approvals_sla_warning", **target) == 0
    assert value(fresh, "ica_approvals_sla_breached", **target) == 0
    assert value(fresh, "ica_approval_budget_used_ratio", **target) == pytest.approx(0.85)
    # The example policy: warn at 2 h, escalate at 4 h.
    clock.advance(timedelta(hours=2, minutes=30))
    later = scrape(client, monitor)
    assert value(later, "ica_approval_pending_oldest_age_seconds", **target) == 9000
    assert value(later, "ica_approvals_sla_warning", **target) == 1
    assert value(later, "ica_approvals_sla_breached", **target) == 0
    clock.advance(timedelta(hours=2))
    late = scrape(client, monitor)
    assert value(late, "ica_approvals_sla_breached", **target) == 1


def test_ledger_jobs_and_outbox(client, ctx, clock, settings, monitor):
    new_run(ctx)
    before = scrape(client, monitor)
    waiting = value(before, "ica_ledger_unsealed_entries")
    assert waiting is not None
    assert waiting > 0
    assert value(before, "ica_ledger_stalled") == 0
    clock.advance(timedelta(minutes=5))
    stalled = scrape(client, monitor)
    assert value(stalled, "ica_ledger_unsealed_oldest_age_seconds") == pytest.approx(300)
    # Older than ICA_LEDGER_STALL_AFTER_SECONDS (60): the ledger counts as stalled.
    assert value(stalled, "ica_ledger_stalled") == 1
    assert value(stalled, "ica_ledger_stall_reason", source="backlog") == 1
    seal_now(ctx)
    clock.advance(timedelta(seconds=42))
    sealed = scrape(client, monitor)
    year = str(clock.now().year)
    entries = value(sealed, "ica_ledger_entries", year=year)
    assert entries is not None
    assert entries >= waiting
    assert value(sealed, "ica_ledger_checkpoint_age_seconds", year=year) == 42
    assert value(sealed, "ica_ledger_stalled") == 0
    # Jobs: seconds since each last ran.
    scheduler.tick(ctx, settings, holder="test")
    clock.advance(timedelta(seconds=90))
    jobs = scrape(client, monitor)
    assert value(jobs, "ica_job_lag_seconds", job="outbox-delivery") == 90
    assert value(jobs, "ica_job_lag_seconds", job="approval-sla") == 90


def test_failure_streak_per_pipeline(client, ctx, monitor):
    for _ in range(3):
        run_key = new_run(ctx)
        finish_run(ctx, principal=PIPELINE, command=FinishRun(run_key, "failed"))
    samples = scrape(client, monitor)
    labels = {"tenant": "to", "pipeline": "registry-deploy"}
    assert value(samples, "ica_pipeline_failure_streak", **labels) == 3
    run_key = new_run(ctx)
    finish_run(ctx, principal=PIPELINE, command=FinishRun(run_key, "success"))
    assert value(scrape(client, monitor), "ica_pipeline_failure_streak", **labels) == 0
