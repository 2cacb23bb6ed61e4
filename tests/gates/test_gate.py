"""The gate over HTTP, on SQLite and PostgreSQL: each rule answers with its stable code, an
allow takes the target's lock, and every decision is recorded with the policy version."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.db.tables import AuditInbox, DeployLock, GateEvaluation
from azdev_ica.services.runs import FinishRun, finish_run
from tests.gates.conftest import (
    API,
    COMMIT,
    DIGEST,
    OTHER_DIGEST,
    PIPELINE,
    approve,
    codes,
    gate,
    new_run,
    use_policy,
)


@pytest.fixture
def devops(make_key: Any) -> str:
    return str(make_key("azdev_devops"))


def event(client: Any, key: str, run_key: str, phase: str, data: dict[str, Any]) -> None:
    response = client.post(
        f"{API}/run/event",
        json={"run_key": run_key, "phase": phase, "data": data},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 201, response.text


def decisions(ctx: Any) -> list[dict[str, Any]]:
    with ctx.read() as session:
        bodies = session.scalars(
            select(AuditInbox.body)
            .where(AuditInbox.action == "gate.decide")
            .order_by(AuditInbox.id)
        )
        return [json.loads(bytes(body)) for body in bodies]


class TestAllow:
    def test_an_approved_ready_run_is_allowed_and_takes_the_lock(
        self, ctx, client, devops, approvers
    ):
        run_key = new_run(ctx)
        approval = approve(ctx, approvers, run_key, cost_impact_minor=100, budget_minor=500,
                           currency="NZD")  # fmt: skip
        answer = gate(client, devops, run_key)
        assert (answer["status"], answer["reasons"]) == ("allow", [])
        assert (answer["tenant"], answer["stage"]) == ("to", "production")
        assert answer["approval_id"] == approval.id
        assert answer["lock_expires_at"] is not None
        with ctx.read() as session:
            lock = session.scalars(select(DeployLock)).one()
            assert (lock.tenant, lock.stage, lock.holder_run_key) == ("to", "production", run_key)
            row = session.scalars(select(GateEvaluation)).one()
            assert (row.status, row.approval_id) == ("allow", approval.id)
        [entry] = decisions(ctx)
        assert entry["data"]["status"] == "allow"
        assert entry["data"]["policy_sha256"] == answer["policy_hash"]
        assert len(answer["policy_hash"]) == 64

    def test_the_unversioned_alias_answers_the_same(self, ctx, client, devops):
        run_key = new_run(ctx, stage="staging")
        response = client.post(
            "/api/azdev/gate/evaluate",
            json={"run_key": run_key},
            headers={"Authorization": f"Bearer {devops}"},
        )
        assert response.status_code == 200
        assert response.json()["status"] == "allow"

    def test_a_stage_that_is_not_production_needs_no_approval(self, ctx, client, devops):
        assert gate(client, devops, new_run(ctx, stage="test"))["status"] == "allow"


class TestBuild:
    """A deploy needs a successful build of its artifact digest recorded in ICA: by this run,
    or by an earlier run of the same tenant or a tenant-less one (issue 17). The test stage
    needs no approval, so the build rule is the only one left."""

    def test_a_run_without_a_build_event_is_denied(self, ctx, client, devops):
        answer = gate(client, devops, new_run(ctx, stage="test", build_passed=None))
        assert (answer["status"], codes(answer)) == ("deny", ["build_missing"])
        [reason] = answer["reasons"]
        assert DIGEST in reason["message"]
        assert "this run reported no `build` event" in reason["message"]

    def test_a_run_whose_build_failed_is_denied(self, ctx, client, devops):
        # Even when an earlier run built the same artifact: this run's build is broken.
        new_run(ctx, stage="test")
        answer = gate(client, devops, new_run(ctx, stage="test", build_passed=False))
        assert (answer["status"], codes(answer)) == ("deny", ["build_failed"])
        assert "this run's build failed" in answer["reasons"][0]["message"]

    def test_a_later_successful_build_of_the_run_counts(self, ctx, client, devops):
        run_key = new_run(ctx, stage="test", build_passed=False)
        event(client, devops, run_key, "build", {"artifact_digest": DIGEST})
        assert gate(client, devops, run_key)["status"] == "allow"

    def test_a_run_with_its_own_successful_build_is_allowed(self, ctx, client, devops):
        run_key = new_run(ctx, stage="test", build_passed=None)
        event(
            client, devops, run_key, "build", {"artifact_digest": DIGEST, "image": "registry/app:1"}
        )
        assert (gate(client, devops, run_key)["status"]) == "allow"

    def test_a_build_of_another_artifact_does_not_cover_the_deploy(self, ctx, client, devops):
        run_key = new_run(ctx, stage="test", build_passed=None)
        event(client, devops, run_key, "build", {"artifact_digest": OTHER_DIGEST})
        answer = gate(client, devops, run_key)
        assert (answer["status"], codes(answer)) == ("deny", ["build_missing"])
        assert (
            f"this run built another artifact ({OTHER_DIGEST})" in answer["reasons"][0]["message"]
        )

    def test_a_promotion_run_may_deploy_what_an_earlier_run_of_its_tenant_built(
        self, ctx, client, devops
    ):
        new_run(ctx, stage="test")  # the CI run of Tonga built DIGEST
        answer = gate(client, devops, new_run(ctx, stage="staging", build_passed=None))
        assert (answer["status"], answer["reasons"]) == ("allow", [])

    def test_a_shared_build_pipeline_without_a_tenant_counts(self, ctx, client, devops):
        shared = new_run(ctx, tenant=None, stage=None, coverage=None, scan_passed=None)
        assert shared
        answer = gate(client, devops, new_run(ctx, stage="staging", build_passed=None))
        assert answer["status"] == "allow"

    def test_another_tenants_build_never_counts(self, ctx, client, devops):
        new_run(ctx, tenant="ws", stage="test")  # Samoa built the same digest
        answer = gate(client, devops, new_run(ctx, stage="staging", build_passed=None))
        assert (answer["status"], codes(answer)) == ("deny", ["build_missing"])
        assert "ws" not in answer["reasons"][0]["message"]

    def test_an_earlier_build_of_another_digest_does_not_count(self, ctx, client, devops):
        new_run(ctx, stage="test", digest=OTHER_DIGEST)
        answer = gate(client, devops, new_run(ctx, stage="staging", build_passed=None))
        assert (answer["status"], codes(answer)) == ("deny", ["build_missing"])

    def test_an_earlier_failed_build_does_not_count(self, ctx, client, devops):
        new_run(ctx, stage="test", build_passed=False)
        answer = gate(client, devops, new_run(ctx, stage="staging", build_passed=None))
        assert (answer["status"], codes(answer)) == ("deny", ["build_missing"])

    def test_a_deploy_that_names_no_digest_is_denied(self, ctx, client, devops):
        answer = gate(client, devops, new_run(ctx, stage="test", digest=None))
        assert (answer["status"], codes(answer)) == ("deny", ["build_missing"])
        assert "names no artifact digest" in answer["reasons"][0]["message"]

    def test_the_policy_can_turn_the_rule_off(self, ctx, client, devops):
        use_policy(ctx, "gates:\n  require_build: false\n")
        answer = gate(client, devops, new_run(ctx, stage="test", build_passed=None))
        assert (answer["status"], answer["reasons"]) == ("allow", [])


class TestApproval:
    def test_without_an_approval_it_is_denied(self, ctx, client, devops):
        answer = gate(client, devops, new_run(ctx))
        assert (answer["status"], codes(answer)) == ("deny", ["approval_missing"])

    def test_a_half_signed_approval_is_pending_and_takes_no_lock(
        self, ctx, client, devops, approvers
    ):
        run_key = new_run(ctx)
        approve(ctx, approvers, run_key, sign=1)
        answer = gate(client, devops, run_key)
        assert (answer["status"], codes(answer)) == ("pending", ["approval_pending"])
        with ctx.read() as session:
            lock = session.scalars(select(DeployLock)).one_or_none()
            assert lock is None or lock.holder_run_key is None

    @pytest.mark.parametrize(
        "request_scope",
        [{"artifact_digest": OTHER_DIGEST}, {"commit": "f" * 40}, {"stage": "dr"}],
    )
    def test_a_scope_other_than_the_approved_one_voids_it(
        self, ctx, client, devops, approvers, request_scope
    ):
        run_key = new_run(ctx)
        approve(ctx, approvers, run_key)
        if request_scope.get("stage") == "dr":
            # The approval was for production: none exists for dr.
            answer = gate(client, devops, run_key, **request_scope)
            assert codes(answer) == ["approval_missing"]
            return
        answer = gate(client, devops, run_key, **request_scope)
        assert answer["status"] == "deny"
        # Nothing built the other digest either.
        unbuilt = ["build_missing"] if "artifact_digest" in request_scope else []
        assert codes(answer) == ["scope_mismatch", *unbuilt]

    def test_cost_over_the_approved_budget_is_denied(self, ctx, client, devops, approvers):
        run_key = new_run(ctx)
        approve(ctx, approvers, run_key, cost_impact_minor=100, budget_minor=500, currency="NZD")
        over = gate(client, devops, run_key, cost_impact_minor=501, currency="NZD")
        assert (over["status"], codes(over)) == ("deny", ["budget_exceeded"])
        other = gate(client, devops, run_key, cost_impact_minor=10, currency="USD")
        assert codes(other) == ["currency_mismatch"]
        within = gate(client, devops, run_key, cost_impact_minor=500, currency="NZD")
        assert within["status"] == "allow"


class TestQuality:
    def test_each_broken_rule_denies_with_its_code(self, ctx, client, devops):
        cases = [
            ({"coverage": 79.9}, ["coverage_below_minimum"]),
            ({"tests_passed": False}, ["tests_failed"]),
            ({"coverage": None}, ["tests_missing"]),
            ({"scan_passed": False, "critical": 2}, ["scan_failed"]),
            ({"scan_passed": None}, ["scan_missing"]),
        ]
        for run, expected in cases:
            answer = gate(client, devops, new_run(ctx, stage="staging", **run))
            assert (answer["status"], codes(answer)) == ("deny", expected), run

    def test_exactly_eighty_percent_passes(self, ctx, client, devops):
        assert gate(client, devops, new_run(ctx, stage="staging", coverage=80))["status"] == "allow"

    def test_the_threshold_comes_from_the_policy(self, ctx, client, devops):
        use_policy(ctx, "gates:\n  min_coverage_percent: 90\n")
        answer = gate(client, devops, new_run(ctx, stage="staging", coverage=85))
        assert codes(answer) == ["coverage_below_minimum"]
        assert "90%" in answer["reasons"][0]["message"]


class TestDependencies:
    @pytest.fixture(autouse=True)
    def _allow_list(self, ctx: Any) -> None:
        use_policy(
            ctx,
            "gates:\n  dependency_allow_list: [pkg:pypi/fastapi, pkg:pypi/sqlalchemy, "
            "pkg:npm/%40scope/ui]\n",
        )

    def test_listed_packages_pass_whatever_their_version(self, ctx, client, devops):
        deps = ["pkg:pypi/FastAPI@0.115.0", "pkg:pypi/sqlalchemy@2.0.36", "pkg:npm/%40scope/ui@1.2"]
        answer = gate(client, devops, new_run(ctx, stage="staging"), dependencies=deps)
        assert answer["status"] == "allow"

    def test_an_unlisted_package_is_denied_and_named(self, ctx, client, devops):
        deps = ["pkg:pypi/fastapi@0.115.0", "pkg:pypi/leftpad@1.0"]
        answer = gate(client, devops, new_run(ctx, stage="staging"), dependencies=deps)
        assert (answer["status"], codes(answer)) == ("deny", ["dependency_not_allowed"])
        assert "pkg:pypi/leftpad" in answer["reasons"][0]["message"]

    def test_a_cyclonedx_sbom_is_read(self, ctx, client, devops):
        sbom = {"bomFormat": "CycloneDX", "components": [{"purl": "pkg:pypi/evil@6.6.6"}]}
        answer = gate(client, devops, new_run(ctx, stage="staging"), sbom=sbom)
        assert codes(answer) == ["dependency_not_allowed"]

    def test_no_list_at_all_is_denied(self, ctx, client, devops):
        answer = gate(client, devops, new_run(ctx, stage="staging"))
        assert (answer["status"], codes(answer)) == ("deny", ["dependencies_missing"])


class TestWindows:
    @pytest.fixture(autouse=True)
    def _windows(self, ctx: Any) -> None:
        use_policy(
            ctx,
            "windows:\n"
            "  - stage: staging\n"
            "    tenant: to\n"
            "    open: ['sun 00:00-04:00']\n"
            "    freezes:\n"
            "      - {reason: year end, start: '2026-12-20T00:00', hours: 24}\n",
        )

    def test_outside_the_window_in_the_tenants_time_is_denied(self, ctx, client, devops, clock):
        # T0 is Monday 09:00 UTC: Monday 22:00 in Tonga (UTC+13).
        answer = gate(client, devops, new_run(ctx, stage="staging"))
        assert (answer["status"], codes(answer)) == ("deny", ["outside_window"])
        assert "Pacific/Tongatapu" in answer["reasons"][0]["message"]

    def test_inside_the_window_it_is_allowed(self, ctx, client, devops, clock):
        clock.set(datetime(2026, 11, 7, 12, 30, tzinfo=UTC))  # Sunday 01:30 in Tonga
        assert gate(client, devops, new_run(ctx, stage="staging"))["status"] == "allow"

    def test_a_freeze_wins_over_the_window(self, ctx, client, devops, clock):
        clock.set(datetime(2026, 12, 19, 12, 30, tzinfo=UTC))  # Sunday 20 Dec 01:30 in Tonga
        answer = gate(client, devops, new_run(ctx, stage="staging"))
        assert codes(answer) == ["frozen"]
        assert "year end" in answer["reasons"][0]["message"]

    def test_other_tenants_are_not_concerned(self, ctx, client, devops):
        assert gate(client, devops, new_run(ctx, tenant="ws", stage="staging"))["status"] == "allow"


class TestRun:
    def test_an_unknown_run_is_denied_and_recorded(self, ctx, client, devops):
        answer = gate(client, devops, "ado:nope:1", tenant="to", stage="production")
        assert (answer["status"], codes(answer)) == ("deny", ["run_not_found"])
        assert [d["data"]["status"] for d in decisions(ctx)] == ["deny"]

    def test_an_unknown_run_without_a_target_is_404(self, client, devops):
        response = client.post(f"{API}/gate/evaluate", json={"run_key": "ado:nope:1"},
                               headers={"Authorization": f"Bearer {devops}"})  # fmt: skip
        assert response.status_code == 404

    def test_a_finished_run_is_denied(self, ctx, client, devops):
        run_key = new_run(ctx, stage="staging")
        finish_run(ctx, principal=PIPELINE, command=FinishRun(run_key, "success"))
        assert codes(gate(client, devops, run_key)) == ["run_finished"]

    def test_a_run_of_another_tenant_looks_absent(self, ctx, client, make_key):
        samoa = make_key("azdev_devops", ["ws"])
        run_key = new_run(ctx, stage="staging")
        response = client.post(f"{API}/gate/evaluate", json={"run_key": run_key},
                               headers={"Authorization": f"Bearer {samoa}"})  # fmt: skip
        assert response.status_code == 404
        answer = gate(client, samoa, run_key, tenant="ws", stage="staging")
        assert codes(answer) == ["run_not_found"]

    def test_bad_input_is_a_problem_not_a_500(self, ctx, client, devops):
        run_key = new_run(ctx, stage="staging")
        for body in [
            {"tenant": "xx"},
            {"tenant": "ws"},
            {"stage": "moon"},
            {"artifact_digest": "sha256:short"},
            {"dependencies": ["a"], "sbom": {"components": []}},
            {"cost_impact_minor": "5"},
            {"skip": True},
        ]:
            response = client.post(
                f"{API}/gate/evaluate",
                json={"run_key": run_key, **body},
                headers={"Authorization": f"Bearer {devops}"},
            )
            assert response.status_code == 422, body
            assert response.headers["content-type"] == "application/problem+json"

    def test_the_run_digest_and_commit_are_the_defaults(self, ctx, client, devops):
        answer = gate(client, devops, new_run(ctx, stage="staging"))
        with ctx.read() as session:
            row = session.get(GateEvaluation, answer["decision_id"])
            assert (row.artifact_digest, row.commit) == (DIGEST, COMMIT)
