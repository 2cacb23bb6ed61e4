"""Cost threshold exceeded (seed 000 §7.2): a cost impact at 80 % (policy
`budgets.warn_percent`) of the approved budget warns once per approval."""

from __future__ import annotations

from typing import Any

import pytest

from azdev_ica.auth.principal import Actor
from azdev_ica.errors import PolicyError
from azdev_ica.jobs.delivery import deliver_due
from azdev_ica.policy import parse_policy
from azdev_ica.services.approvals import RequestApproval, request_approval
from azdev_ica.services.policies import apply_policy
from tests.alerts.conftest import API, PIPELINE, alerts, audited, routed, start_run
from tests.conftest import bearer, example_policy

TOPIC = "budget.threshold"


def ask(ctx: Any, run_key: str, cost: int | None, budget: int | None = 10_000) -> int:
    command = RequestApproval(
        run_key=run_key, cost_impact_minor=cost, budget_minor=budget, currency="NZD"
    )
    return int(request_approval(ctx, principal=PIPELINE, command=command).approval.id)


def gate(client: Any, key: str, run_key: str, **body: Any) -> dict[str, Any]:
    response = client.post(
        f"{API}/gate/evaluate", json={"run_key": run_key, **body}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_a_request_at_80_percent_of_its_budget_warns_once(ctx):
    below = ask(ctx, start_run(ctx), cost=7_999)
    assert alerts(ctx, TOPIC) == []
    at = ask(ctx, start_run(ctx), cost=8_000)
    [row] = alerts(ctx, TOPIC)
    assert (row.subject_type, row.subject_id, row.tenant) == ("approval", str(at), "to")
    assert row.payload["severity"] == "warning"
    assert row.payload["percent"] == 80.0
    assert row.payload["source"] == "approval.request"
    assert "approver" in " ".join(row.payload["roles"])
    assert audited(ctx, TOPIC) == [("approval", str(at))]
    assert below != at


def test_asking_again_for_the_same_request_does_not_warn_again(ctx):
    run_key = start_run(ctx)
    first = ask(ctx, run_key, cost=9_000)
    assert ask(ctx, run_key, cost=9_000) == first  # the open request answers
    assert len(alerts(ctx, TOPIC)) == 1


def test_no_budget_or_no_cost_never_warns(ctx):
    ask(ctx, start_run(ctx), cost=50_000, budget=None)
    ask(ctx, start_run(ctx), cost=None, budget=10_000)
    ask(ctx, start_run(ctx), cost=0, budget=0)
    assert alerts(ctx, TOPIC) == []


def test_a_gate_call_with_a_higher_cost_warns_once_per_approval(ctx, client, make_key):
    key = make_key("azdev_devops")
    run_key = start_run(ctx)
    approval_id = ask(ctx, run_key, cost=1_000)
    assert alerts(ctx, TOPIC) == []
    gate(client, key, run_key, cost_impact_minor=5_000)
    assert alerts(ctx, TOPIC) == []
    for _ in range(3):
        gate(client, key, run_key, cost_impact_minor=8_500, currency="NZD")
    gate(client, key, run_key, cost_impact_minor=12_000)  # over budget: denied, still once
    [row] = alerts(ctx, TOPIC)
    assert row.subject_id == str(approval_id)
    assert row.payload["source"] == "gate.evaluate"
    assert row.payload["cost_impact_minor"] == 8_500
    assert audited(ctx, TOPIC) == [("approval", str(approval_id))]


def test_a_gate_cost_in_another_currency_is_not_compared(ctx, client, make_key):
    key = make_key("azdev_devops")
    run_key = start_run(ctx)
    ask(ctx, run_key, cost=1_000)
    gate(client, key, run_key, cost_impact_minor=9_000, currency="USD")
    assert alerts(ctx, TOPIC) == []


def test_an_approval_warned_at_request_is_not_warned_again_by_the_gate(ctx, client, make_key):
    key = make_key("azdev_devops")
    run_key = start_run(ctx)
    ask(ctx, run_key, cost=9_000)
    gate(client, key, run_key)
    gate(client, key, run_key, cost_impact_minor=9_500)
    assert [row.payload["source"] for row in alerts(ctx, TOPIC)] == ["approval.request"]


def test_the_policy_sets_the_share(ctx):
    apply_policy(
        ctx,
        actor=Actor(kind="operator", id="test"),
        document=example_policy() + "\nbudgets:\n  warn_percent: 50\n",
        source="test-policy",
    )
    ask(ctx, start_run(ctx), cost=4_999)
    assert alerts(ctx, TOPIC) == []
    ask(ctx, start_run(ctx), cost=5_000)
    [row] = alerts(ctx, TOPIC)
    assert row.payload["warn_percent"] == 50.0


@pytest.mark.parametrize("value", ["0", "101", "-5", "eighty"])
def test_the_share_must_be_a_percentage(value):
    with pytest.raises(PolicyError, match="warn_percent"):
        parse_policy(example_policy() + f"\nbudgets:\n  warn_percent: {value}\n")


def test_the_default_is_80_percent():
    assert parse_policy(example_policy()).budgets.warn_percent == 80


def test_the_warning_reaches_the_webhook(ctx, settings, webhook):
    ask(ctx, start_run(ctx), cost=8_800)
    report = deliver_due(ctx, routed(settings, webhook, "budget.*"))
    assert report.delivered == 1, report
    [request] = webhook.requests
    text = request.json()["text"]
    assert text.startswith("[ICA] Cost threshold: approval ")
    assert "88 % of its budget of 10000" in text
