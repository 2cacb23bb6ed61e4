"""The gate with the example policy's promotion rules, over HTTP on both databases: a version
enters a stage of a tenant only after the stage before (same digest, same tenant) with each
sign-off; a major release needs the major-release approver; a rollback to the last good
version passes without a fresh approval only where the policy says so, and is recorded."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.db.tables import AuditInbox
from azdev_ica.queries.deployments import promotion_history, promotion_history_of
from azdev_ica.services.gates import _facts_statement
from tests.promotion.conftest import API, V1, V2, V3, Pipeline, sign_off, use_promotion_policy


@pytest.fixture
def crew(make_person: Any) -> dict[str, Any]:
    return {
        "tech": make_person("tevita", [("azdev_approver_tech", "to")]),
        "biz": make_person("salote", [("azdev_approver_biz", "to")]),
        "qa": make_person("qa-to", [("azdev_signoff_qa", "to")]),
        "uat": make_person("uat-to", [("azdev_signoff_uat", "to")]),
        "data": make_person("data-to", [("azdev_signoff_data", "to")]),
        "fao": make_person("fao", [("azdev_approver_major", None)]),
    }


def approvers(crew: dict[str, Any]) -> list[Any]:
    return [crew["tech"], crew["biz"]]


def to_production(
    pipeline: Pipeline, client: Any, crew: dict[str, Any], digest: str, version: str
) -> None:
    """Promote `digest` through every stage of Tonga with every sign-off."""
    assert pipeline.release("to", "development", digest, version).status == "allow"
    assert pipeline.release("to", "test", digest, version).status == "allow"
    assert sign_off(client, crew["qa"], "to", "staging", digest, "qa").status_code == 201
    assert pipeline.release("to", "staging", digest, version).status == "allow"
    for kind in ("uat", "data"):
        assert sign_off(client, crew[kind], "to", "production", digest, kind).status_code == 201
    done = pipeline.release("to", "production", digest, version, approvers=approvers(crew))
    assert done.status == "allow", done.gate


def test_each_stage_only_after_the_one_before(ctx, client, pipeline, crew):
    use_promotion_policy(ctx)
    assert pipeline.release("to", "development", V1, "1.0.0").status == "allow"
    skipped = pipeline.release("to", "staging", V1, "1.0.0")
    assert (skipped.status, skipped.codes) == (
        "deny",
        ["previous_stage_not_passed", "signoff_missing"],
    )
    # Dev -> Test: a green CI run with unit tests (the run's own test event).
    red = pipeline.start("to", "test", V1, tests_passed=False)
    assert pipeline.gate(red)["status"] == "deny"
    assert "signoff_missing" in [r["code"] for r in pipeline.gate(red)["reasons"]]
    assert pipeline.release("to", "test", V1, "1.0.0").status == "allow"
    # Test -> Staging: QA sign-off.
    unsigned = pipeline.release("to", "staging", V1, "1.0.0")
    assert unsigned.codes == ["signoff_missing"]
    assert "qa" in unsigned.gate["reasons"][0]["message"]
    assert sign_off(client, crew["qa"], "to", "staging", V1, "qa").status_code == 201
    assert pipeline.release("to", "staging", V1, "1.0.0").status == "allow"
    # Staging -> Production: UAT, data migration and the dual approval.
    bare = pipeline.release("to", "production", V1, "1.0.0")
    assert sorted(bare.codes) == ["approval_missing", "signoff_missing", "signoff_missing"]
    assert sign_off(client, crew["uat"], "to", "production", V1, "uat").status_code == 201
    assert sign_off(client, crew["data"], "to", "production", V1, "data").status_code == 201
    ready = pipeline.release("to", "production", V1, "1.0.0", approvers=approvers(crew))
    assert (ready.status, ready.codes) == ("allow", [])
    # DR mirrors production.
    assert pipeline.release("to", "dr", V1, "1.0.0", approvers=approvers(crew)).status == "allow"
    # Nothing crosses tenants: Samoa has not seen this artifact.
    assert pipeline.release("ws", "test", V1, "1.0.0").codes == ["previous_stage_not_passed"]


def test_a_promotion_run_deploys_what_an_earlier_run_of_its_tenant_built(ctx, pipeline):
    use_promotion_policy(ctx)
    # Samoa's CI run built and deployed V1: that build is Samoa's, never Tonga's.
    assert pipeline.release("ws", "development", V1, "1.0.0").status == "allow"
    borrowed = pipeline.release("to", "development", V1, "1.0.0", build=False)
    assert (borrowed.status, borrowed.codes) == ("deny", ["build_missing"])
    assert "ws" not in borrowed.gate["reasons"][0]["message"]
    # Tonga's own CI run builds it; the test-stage run that promotes it builds nothing.
    assert pipeline.release("to", "development", V1, "1.0.0").status == "allow"
    promoted = pipeline.release("to", "test", V1, "1.0.0", build=False)
    assert (promoted.status, promoted.codes) == ("allow", [])
    # A build of V1 does not cover V2.
    other = pipeline.release("to", "development", V2, "2.0.0", build=False)
    assert (other.status, other.codes) == ("deny", ["build_missing"])


def test_a_major_release_needs_the_major_release_approver(ctx, client, pipeline, crew):
    use_promotion_policy(ctx)
    to_production(pipeline, client, crew, V1, "1.4.0")
    assert pipeline.release("to", "development", V2, "2.0.0").status == "allow"
    assert pipeline.release("to", "test", V2, "2.0.0").status == "allow"
    assert sign_off(client, crew["qa"], "to", "staging", V2, "qa").status_code == 201
    assert pipeline.release("to", "staging", V2, "2.0.0").status == "allow"
    for kind in ("uat", "data"):
        assert sign_off(client, crew[kind], "to", "production", V2, kind).status_code == 201
    # The version comes from the artifact's earlier deployments in the tenant (2.0.0).
    major = pipeline.release("to", "production", V2, "2.0.0", approvers=approvers(crew))
    assert major.codes == ["major_release_approval_missing"]
    assert sign_off(client, crew["fao"], "to", "production", V2, "major").status_code == 201
    again = pipeline.gate(major.run_key)
    assert (again["status"], again["reasons"]) == ("allow", [])
    # Saying the version explicitly works the same (a minor bump needs no approver).
    pipeline.deploy(major.run_key, V2, "2.0.0")
    pipeline.finish(major.run_key)


@pytest.mark.parametrize("without_approval", [True, False])
def test_a_rollback_to_the_last_good_version(ctx, client, pipeline, crew, without_approval):
    use_promotion_policy(ctx, rollback="{production: true}" if without_approval else "false")
    to_production(pipeline, client, crew, V1, "1.0.0")
    to_production(pipeline, client, crew, V2, "1.1.0")
    [bad] = [
        item["run_key"]
        for item in client.get(
            f"{API}/inventory?tenant=to&stage=production", headers=pipeline.headers
        ).json()
    ]
    # Monitoring: the 5xx rate went over 5 %. The deployment is failed; the inventory
    # falls back to the last good version.
    pipeline.event(bad, "monitor", {"trigger": "error_rate", "value": 7.5, "threshold": 5.0})
    shown = client.get(f"{API}/inventory?tenant=to&stage=production", headers=pipeline.headers)
    assert [(i["artifact_digest"], i["version"]) for i in shown.json()] == [(V1, "1.0.0")]
    pipeline.event(bad, "rollback_initiated", {"reason": "5xx over 5%", "to_artifact_digest": V1})
    # Not the last good version: refused whatever the policy says.
    wrong = pipeline.release("to", "production", V3, "0.9.0", rollback=True)
    assert wrong.status == "deny"
    [refusal] = [r for r in wrong.gate["reasons"] if r["code"] == "rollback_not_last_good"]
    assert V1 in refusal["message"]
    back = pipeline.release("to", "production", V1, "1.0.0", rollback=True)
    if without_approval:
        assert (back.status, back.codes) == ("allow", ["rollback"])
        assert "without a fresh approval" in back.gate["reasons"][0]["message"]
    else:
        assert back.codes == ["approval_missing"]
        pipeline.approve(back.run_key, approvers(crew))
        allowed = pipeline.gate(back.run_key, rollback=True)
        assert [r["code"] for r in allowed["reasons"]] == ["rollback"]
        pipeline.deploy(back.run_key, V1, "1.0.0")
        pipeline.finish(back.run_key)
    pipeline.event(bad, "rollback_completed", {"passed": True})
    with ctx.read() as session:
        bodies = [
            json.loads(bytes(body))["data"]
            for body in session.scalars(
                select(AuditInbox.body)
                .where(AuditInbox.action == "gate.decide")
                .order_by(AuditInbox.id)
            )
        ]
    rollbacks = [data["rollback"] for data in bodies if data.get("rollback")]
    assert [r["valid"] for r in rollbacks] == [False, True] + ([] if without_approval else [True])
    assert rollbacks[1]["last_good_digest"] == V1
    assert rollbacks[1]["without_approval"] is without_approval
    # A plain redeploy of the same version is no rollback: it needs its approval as always.
    redeploy = pipeline.release("to", "production", V1, "1.0.0")
    assert "approval_missing" in redeploy.codes


def test_without_a_promotion_section_nothing_changes(ctx, client, make_key):
    # The default test policy has no promotion section: straight to production, as before.
    pipeline = Pipeline(client, make_key("azdev_devops"))
    attempt = pipeline.release("to", "staging", V1, "1.0.0")
    assert (attempt.status, attempt.codes) == ("allow", [])


def test_only_failure_triggers_fail_a_deployment(ctx, client, pipeline):
    attempt = pipeline.release("to", "staging", V1, "1.0.0")
    listing = f"{API}/inventory?tenant=to&stage=staging"

    def shown() -> list[str]:
        return [i["artifact_digest"] for i in client.get(listing, headers=pipeline.headers).json()]

    pipeline.event(attempt.run_key, "monitor", {"trigger": "alert", "notes": "disk at 70%"})
    assert shown() == [V1]
    pipeline.event(attempt.run_key, "monitor", {"trigger": "crash_loop"})
    assert shown() == []


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_promotion_rows_read_with_the_facts_are_the_history(ctx, client, pipeline, crew):
    """On PostgreSQL the gate reads the promotion rules' rows in its facts statement, as JSON:
    decoded, they are what the history's own statement reads (deployments good, failed,
    spoiled and never allowed; the sign-offs), for the target and digest of the run named.
    (SQLite reads them with that statement itself: nothing to compare there.)"""
    assert ctx.db.dialect == "postgresql"
    use_promotion_policy(ctx)
    to_production(pipeline, client, crew, V1, "1.0.0")
    spoiled = pipeline.release("to", "development", V2, "2.0.0")  # deployed, finished
    pipeline.event(spoiled.run_key, "monitor", {"trigger": "crash_loop"})
    unasked = pipeline.start("to", "production", V2)
    pipeline.deploy(unasked, V2, "2.0.0", outcome="failed")  # never allowed by the gate
    assert sign_off(client, crew["uat"], "to", "production", V2, "uat").status_code == 201
    run_key = pipeline.start("to", "production", V2)
    statement = _facts_statement(False, False, False, postgresql=True, promotion=True)
    with ctx.read() as session:
        row = session.execute(statement, {"run_key": run_key, "other_stage": "production"}).first()
        read = promotion_history_of(row.promotion_rows, tenant="to")
        expected = promotion_history(
            session, tenant="to", stage="production", digest=V2, other_stage="production"
        )
    assert read[0] == expected[0]
    assert sorted(read[1]) == sorted(expected[1]) == ["uat"]
    assert {(r.artifact_digest, r.good, r.authorised, r.spoiled_by) for r in read[0]} == {
        (V1, True, True, None),
        (V2, False, True, "monitor:crash_loop"),
        (V2, False, False, None),
    }
