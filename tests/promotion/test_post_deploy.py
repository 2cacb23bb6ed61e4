"""A failed post-deploy verification or a monitoring trigger (seed 000 §5.2, §6.1) at the HTTP
and CLI boundaries: the deployment is failed, the alert is raised and an incident opened
exactly once, and the answer names the rollback (the target's last good version, and whether
the policy lets it go without a fresh approval), which the gate's rollback rule then allows."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.cli.main import main
from azdev_ica.db.tables import AuditInbox, OutboxMessage
from tests.conftest import bearer
from tests.promotion.conftest import API, V1, V2, Pipeline, use_promotion_policy
from tests.promotion.test_gate_promotion import approvers, crew, to_production

__all__ = ["crew"]  # the fixture
from tests.support.liveserver import LiveServer

FAILED_CHECKS = {
    "passed": False,
    "checks": [{"name": "health", "passed": True}, {"name": "smoke", "passed": False}],
}


def deployed(pipeline: Pipeline, crew: dict[str, Any], digest: str, version: str) -> str:
    """A production release of `digest`, approved, allowed and deployed; not finished."""
    attempt = pipeline.release(
        "to", "production", digest, version, approvers=approvers(crew), finish=False
    )
    assert attempt.status == "allow", attempt.gate
    return attempt.run_key


def event(pipeline: Pipeline, run_key: str, phase: str, data: dict[str, Any]) -> Any:
    response = pipeline.post("/run/event", {"run_key": run_key, "phase": phase, "data": data})
    assert response.status_code in (200, 201), response.text
    return response.json()


def production(client: Any, pipeline: Pipeline) -> list[str]:
    """The run whose deployment Tonga's production runs now (the inventory)."""
    shown = client.get(f"{API}/inventory?tenant=to&stage=production", headers=pipeline.headers)
    return [item["run_key"] for item in shown.json()]


def alerts(ctx: Any) -> list[dict[str, Any]]:
    with ctx.read() as session:
        return [
            dict(payload)
            for payload in session.scalars(
                select(OutboxMessage.payload)
                .where(OutboxMessage.topic == "deployment.failed")
                .order_by(OutboxMessage.id)
            )
        ]


def incidents(client: Any, make_key: Any, run_key: str) -> list[dict[str, Any]]:
    page = client.get(f"{API}/incidents?tenant=to", headers=bearer(make_key("admin"))).json()
    return [item for item in page["items"] if item["run_key"] == run_key]


@pytest.mark.parametrize("without_approval", [True, False])
def test_a_failed_verification_fails_the_deployment_once_and_names_the_rollback(
    ctx, client, pipeline, crew, make_key, without_approval
):
    use_promotion_policy(ctx, rollback="{production: true}" if without_approval else "false")
    to_production(pipeline, client, crew, V1, "1.0.0")
    [good] = production(client, pipeline)
    to_production(pipeline, client, crew, V2, "1.1.0")
    [bad] = production(client, pipeline)
    passing = event(
        pipeline, bad, "verify", {"passed": True, "checks": [{"name": "health", "passed": True}]}
    )
    assert (passing["deployment_failed"], passing["rollback"]) == (False, None)

    answer = event(pipeline, bad, "verify", FAILED_CHECKS)
    assert answer["deployment_failed"] is True
    assert answer["rollback"] == {
        "available": True,
        "tenant": "to",
        "stage": "production",
        "artifact_digest": V1,
        "version": "1.0.0",
        "run_key": good,
        "without_approval": without_approval,
    }
    shown = client.get(f"{API}/inventory?tenant=to&stage=production", headers=pipeline.headers)
    assert [(i["artifact_digest"], i["version"]) for i in shown.json()] == [(V1, "1.0.0")]
    # Once: a second failed verification (and a monitoring trigger) of the same deployment
    # answers the rollback again, and raises nothing more.
    again = event(pipeline, bad, "verify", {"passed": False})
    assert again["rollback"] == answer["rollback"]
    event(pipeline, bad, "monitor", {"trigger": "crash_loop"})
    [alert] = alerts(ctx)
    assert (alert["severity"], alert["run_key"], alert["cause"]) == (
        "critical",
        bad,
        "verify:failed",
    )
    assert alert["rollback"] == answer["rollback"]
    assert V1 in alert["summary"]
    [incident] = incidents(client, make_key, bad)
    assert (incident["status"], incident["stage"]) == ("open", "production")
    assert "verification failed" in incident["title"]
    # The kit's next step: the rollback through the gate's rollback rule.
    back = pipeline.start("to", "production", V1)
    if not without_approval:
        pipeline.approve(back, approvers(crew))
    allowed = pipeline.gate(back, rollback=True)
    assert (allowed["status"], [r["code"] for r in allowed["reasons"]]) == ("allow", ["rollback"])


def test_a_monitoring_trigger_after_the_run_ended_fails_the_target_and_names_the_rollback(
    ctx, client, pipeline, crew, make_key
):
    good = deployed(pipeline, crew, V1, "1.0.0")
    pipeline.finish(good)
    bad = deployed(pipeline, crew, V2, "1.1.0")
    pipeline.finish(bad)
    below = event(pipeline, bad, "monitor", {"trigger": "error_rate", "value": 4.0})
    assert below["deployment_failed"] is False  # not over the seed's 5 %
    answer = event(pipeline, bad, "monitor", {"trigger": "error_rate", "value": 7.5})
    assert answer["deployment_failed"] is True
    assert (answer["rollback"]["artifact_digest"], answer["rollback"]["version"]) == (V1, "1.0.0")
    assert answer["rollback"]["without_approval"] is False  # the example policy: approve again
    event(pipeline, bad, "monitor", {"trigger": "error_rate", "value": 9.0})
    [alert] = alerts(ctx)
    assert alert["cause"] == "monitor:error_rate"
    assert "roll back to the last good version " + V1 in alert["summary"]
    [incident] = incidents(client, make_key, bad)
    detail = client.get(
        f"{API}/incident/{incident['id']}", headers=bearer(make_key("admin"))
    ).json()
    assert any(V1 in note["text"] for note in detail["timeline"])  # the incident names it
    with ctx.read() as session:
        actions = list(
            session.scalars(select(AuditInbox.action).where(AuditInbox.subject_id == bad))
        )
    assert actions.count("deployment.failed") == 1


def test_a_first_deployment_that_fails_has_nothing_to_roll_back_to(ctx, pipeline, crew):
    bad = deployed(pipeline, crew, V1, "1.0.0")
    answer = event(pipeline, bad, "verify", {"passed": False})
    assert answer["deployment_failed"] is True
    assert answer["rollback"]["available"] is False
    assert answer["rollback"]["artifact_digest"] is None
    [alert] = alerts(ctx)
    assert "no earlier good version" in alert["summary"]


@pytest.fixture
def ica(monkeypatch: pytest.MonkeyPatch, app: Any, capsys: Any) -> Any:
    live = LiveServer(app).start()
    for name in ("TF_BUILD", "BUILD_BUILDID", "GITHUB_ACTIONS", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ICA_URL", live.url)

    def run(*argv: str, token: str) -> tuple[int, str, str]:
        monkeypatch.setenv("ICA_TOKEN", token)
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    live.stop()


def test_ica_run_event_verify_exits_6_with_the_rollback_when_verification_failed(
    ica, pipeline, crew, make_key
):
    good = deployed(pipeline, crew, V1, "1.0.0")
    pipeline.finish(good)
    bad = deployed(pipeline, crew, V2, "1.1.0")
    token = make_key("azdev_devops")
    code, out, _ = ica("run", "event", "verify", "--run-key", bad, "--set",
                       "passed=true", token=token)  # fmt: skip
    assert code == 0, out
    code, out, _ = ica("run", "event", "verify", "--run-key", bad, "--set", "passed=false",
                       "--output", "json", token=token)  # fmt: skip
    assert code == 6, out
    assert '"artifact_digest": "' + V1 in out
    code, out, _ = ica("run", "event", "verify", "--run-key", bad, "--set", "passed=false",
                       token=token)  # fmt: skip
    assert code == 6
    assert f"roll back to {V1} (version 1.0.0)" in out
    code, out, _ = ica("run", "event", "--help", token=token)
    assert "6   event verify/monitor" in out
