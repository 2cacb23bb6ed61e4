"""Delivery metrics: hand-computed examples, and properties that tie tenants to the fleet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azdev_ica.domain.metrics import (
    DEFINITIONS,
    ApprovalFact,
    DeploymentFact,
    IncidentFact,
    Period,
    RunFact,
    compute,
)

OCTOBER = Period(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 10, day, hour, tzinfo=UTC)


def test_a_month_computed_by_hand():
    runs = [
        RunFact("ws", "success", at(2)),
        RunFact("ws", "success", at(3)),
        RunFact("ws", "failed", at(4)),
        RunFact("ws", "cancelled", at(5)),  # not counted
        RunFact("ws", "running", None),  # not counted
        RunFact("ws", "success", datetime(2026, 11, 1, tzinfo=UTC)),  # the next period
    ]
    deployments = [
        DeploymentFact("ws", "production", at(5), True, commit_at=at(5) - 10 * HOUR),
        DeploymentFact("ws", "production", at(12), True, commit_at=at(12) - 2 * HOUR),
        DeploymentFact("ws", "production", at(19), True, commit_at=at(19) - 4 * HOUR,
                       caused_incident=True),
        DeploymentFact("ws", "production", at(26), False),
        DeploymentFact("ws", "staging", at(27), True),  # not production
    ]  # fmt: skip
    incidents = [
        IncidentFact("ws", at(19, 13), at(19, 16)),
        IncidentFact("ws", at(20), at(21)),
        IncidentFact("ws", at(30), None),  # still open
    ]
    approvals = [
        ApprovalFact("ws", at(5, 1), at(5, 3), 4 * HOUR),
        ApprovalFact("ws", at(12, 1), at(12, 6), 4 * HOUR),
        ApprovalFact("ws", at(19, 1), at(19, 5), 4 * HOUR),  # exactly on time counts
    ]
    metrics = compute(
        OCTOBER, runs=runs, deployments=deployments, incidents=incidents, approvals=approvals
    )
    assert metrics.pipeline_success_rate == pytest.approx(2 / 3)
    assert metrics.deployment_frequency_per_day == pytest.approx(3 / 31)
    assert metrics.lead_time_for_changes == 4 * HOUR  # median of 10 h, 2 h, 4 h
    assert metrics.change_failure_rate == pytest.approx(2 / 4)
    assert metrics.mttr == timedelta(hours=13, minutes=30)  # median of 3 h and 24 h
    assert metrics.approval_sla_compliance == pytest.approx(2 / 3)
    assert dict(metrics.definitions) == DEFINITIONS


def test_an_empty_period_has_no_rates_rather_than_zero():
    metrics = compute(OCTOBER)
    assert metrics.pipeline_success_rate is None
    assert metrics.change_failure_rate is None
    assert metrics.mttr is None
    assert metrics.deployment_frequency_per_day == 0


TENANTS = ["ck", "ws", "sb", "to", "vu"]
moments = st.datetimes(
    min_value=datetime(2026, 9, 20),  # noqa: DTZ001 - hypothesis attaches the zone
    max_value=datetime(2026, 11, 10),  # noqa: DTZ001
    timezones=st.just(UTC),
)
deployment_facts = st.builds(
    DeploymentFact,
    tenant=st.sampled_from(TENANTS),
    stage=st.sampled_from(["staging", "production"]),
    finished_at=moments,
    succeeded=st.booleans(),
    rolled_back=st.booleans(),
    caused_incident=st.booleans(),
)
run_facts = st.builds(
    RunFact,
    tenant=st.sampled_from(TENANTS),
    status=st.sampled_from(["success", "failed", "cancelled", "running"]),
    finished_at=st.one_of(st.none(), moments),
)


@settings(max_examples=150, deadline=None)
@given(deployments=st.lists(deployment_facts, max_size=40), runs=st.lists(run_facts, max_size=40))
def test_the_fleet_is_the_sum_of_its_tenants(deployments, runs):
    fleet = compute(OCTOBER, deployments=deployments, runs=runs)
    per_tenant = [compute(OCTOBER, deployments=deployments, runs=runs, tenant=t) for t in TENANTS]
    assert fleet.deployment_frequency_per_day == pytest.approx(
        sum(m.deployment_frequency_per_day for m in per_tenant)
    )
    for rate in (fleet.change_failure_rate, fleet.pipeline_success_rate):
        assert rate is None or 0 <= rate <= 1
    # A weighted mean of the tenants' rates lies between their extremes.
    tenant_rates = [m.change_failure_rate for m in per_tenant if m.change_failure_rate is not None]
    if tenant_rates:
        assert min(tenant_rates) - 1e-9 <= fleet.change_failure_rate <= max(tenant_rates) + 1e-9


@settings(max_examples=100, deadline=None)
@given(runs=st.lists(run_facts, max_size=30), day=st.integers(1, 31))
def test_one_more_success_never_lowers_the_success_rate(runs, day):
    before = compute(OCTOBER, runs=runs).pipeline_success_rate
    after = compute(OCTOBER, runs=[*runs, RunFact("ws", "success", at(day))]).pipeline_success_rate
    assert after is not None
    assert before is None or after >= before
