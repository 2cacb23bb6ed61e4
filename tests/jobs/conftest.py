"""An open approval request to run the SLA against."""

from __future__ import annotations

from typing import Any

import pytest

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Role
from azdev_ica.domain.runs import Provider
from azdev_ica.services.approvals import RequestApproval, request_approval
from azdev_ica.services.runs import StartRun, start_run

PROJECT = "6c3f0e1a-2222-4c2b-9d1e-0123456789ab"
PIPELINE = Principal.with_role(
    kind="api_key", id="api_key:ci", name="ci", role=Role.DEVOPS, tenants=None
)


@pytest.fixture
def ask(ctx: Any) -> Any:
    """ask(run_id) starts a production run for Samoa and requests its approval; the id."""

    def make(run_id: str = "100", tenant: str = "ws") -> int:
        start_run(
            ctx,
            principal=PIPELINE,
            command=StartRun(
                provider=Provider.AZURE,
                project_id=PROJECT,
                run_id=run_id,
                pipeline_name="farmer-registry-ci",
                commit="0123456789abcdef0123456789abcdef01234567",
                tenant=tenant,
                stage="production",
                artifact_digest="sha256:" + "cd" * 32,
            ),
        )
        outcome = request_approval(
            ctx, principal=PIPELINE, command=RequestApproval(run_key=f"ado:{PROJECT}:{run_id}")
        )
        return int(outcome.approval.id)

    return make
