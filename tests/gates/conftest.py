"""Shared set-up for the gate, the locks and the overrides: runs of Tonga that are ready to
deploy (artifact built, tests passed, scan passed), approvals signed by people, policies with
extra sections."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from azdev_ica.auth.principal import Actor, Principal
from azdev_ica.auth.roles import Role
from azdev_ica.domain.approvals import Decision
from azdev_ica.domain.runs import Phase, Provider
from azdev_ica.services.approvals import RequestApproval, request_approval, sign_approval
from azdev_ica.services.policies import apply_policy
from azdev_ica.services.runs import RecordEvent, StartRun, record_event, start_run
from tests.conftest import example_policy

API = "/api/v1/azdev"
PROJECT = "6c3f0e1a-2222-4c2b-9d1e-0123456789ab"
DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OPERATOR = Actor(kind="operator", id="test")
PIPELINE = Principal.with_role(
    kind="api_key", id="api_key:ci", name="ci", role=Role.DEVOPS, tenants=None
)
_run_ids = itertools.count(100)


def use_policy(ctx: Any, extra_yaml: str) -> None:
    """Apply the example policy with `extra_yaml` (whole top-level sections) appended."""
    document = example_policy() + "\n" + extra_yaml
    apply_policy(ctx, actor=OPERATOR, document=document, source="test-policy")


def new_run(
    ctx: Any,
    *,
    tenant: str = "to",
    stage: str = "production",
    coverage: float | None = 85.0,
    tests_passed: bool = True,
    scan_passed: bool | None = True,
    critical: int = 0,
    requested_for: str | None = None,
    build_passed: bool | None = True,
    digest: str | None = DIGEST,
) -> str:
    """Start a run of `digest`, report its build, tests and scan (None: no such event);
    return its key."""
    run_id = str(next(_run_ids))
    outcome = start_run(
        ctx,
        principal=PIPELINE,
        command=StartRun(
            provider=Provider.AZURE,
            project_id=PROJECT,
            run_id=run_id,
            pipeline_name="registry-deploy",
            commit=COMMIT,
            tenant=tenant,
            stage=stage,
            artifact_digest=digest,
            requested_for=requested_for,
        ),
    )
    key = outcome.run.run_key
    data: dict[str, Any]
    if build_passed is not None:
        data = {"passed": build_passed}
        record_event(ctx, principal=PIPELINE, command=RecordEvent(key, Phase.BUILD, data=data))
    if coverage is not None:
        data = {"passed": tests_passed, "coverage_percent": coverage}
        record_event(ctx, principal=PIPELINE, command=RecordEvent(key, Phase.TEST, data=data))
    if scan_passed is not None:
        data = {"passed": scan_passed, "findings": {"critical": critical, "high": 0}}
        record_event(ctx, principal=PIPELINE, command=RecordEvent(key, Phase.SCAN, data=data))
    return str(key)


@pytest.fixture
def approvers(make_person: Any) -> dict[str, Any]:
    return {
        "alice": make_person("alice", [("azdev_approver_tech", "to")]),
        "bob": make_person("bob", [("azdev_approver_biz", "to")]),
    }


def approve(ctx: Any, approvers: dict[str, Any], run_key: str, *, sign: int = 2, **scope: Any):
    """Ask for the run's approval (with `scope` overrides) and have `sign` halves approved."""
    approval = request_approval(
        ctx, principal=PIPELINE, command=RequestApproval(run_key=run_key, **scope)
    ).approval
    for person in [approvers["alice"], approvers["bob"]][:sign]:
        sign_approval(
            ctx,
            principal=person.principal(ctx),
            approval_id=approval.id,
            decision=Decision.APPROVE,
            comment="ok",
        )
    return approval


def gate(client: Any, key: str, run_key: str, **body: Any) -> dict[str, Any]:
    response = client.post(
        f"{API}/gate/evaluate",
        json={"run_key": run_key, **body},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def codes(answer: dict[str, Any]) -> list[str]:
    return [reason["code"] for reason in answer["reasons"]]
