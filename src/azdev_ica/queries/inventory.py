"""The inventory (seed 002 "core codebase version deployed per instance"): what runs in each
tenant x stage, since when, deployed by which run, approved by whom.

A projection of what pipelines reported: the newest deploy event that says `succeeded` per
target (and that monitoring did not mark failed nor a rollback undo since: see
`queries/deployments.py`), with the artifact digest and version it named (else the run's),
the run's commit, and the signatures of the run's approval for that target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import (
    Approval,
    ApprovalSignature,
    Person,
    PipelineEvent,
    PipelineRun,
)
from azdev_ica.queries.deployments import spoiled, spoilers


@dataclass
class Deployed:
    tenant: str
    stage: str
    artifact_digest: str | None
    version: str | None
    commit: str | None
    run_key: str
    pipeline_name: str
    deployed_at: datetime
    approval_id: int | None = None
    approved_by: list[dict[str, str]] = field(default_factory=list)


def inventory(
    session: Session,
    *,
    principal: Principal,
    tenant: str | None = None,
    stage: str | None = None,
) -> list[Deployed]:
    newest: dict[tuple[str, str], tuple[PipelineEvent, PipelineRun]] = {}
    rows = session.execute(
        select(PipelineEvent, PipelineRun)
        .join(PipelineRun, PipelineRun.id == PipelineEvent.run_pk)
        .where(PipelineEvent.phase == "deploy")
        .order_by(PipelineEvent.occurred_at, PipelineEvent.id)
    ).all()
    found = spoilers(session, (run.id for _, run in rows))
    for event, run in rows:
        data = event.data or {}
        if data.get("status") != "succeeded":
            continue
        if spoiled(found, run.id, event.occurred_at) is not None:
            continue
        target_tenant = data.get("tenant") or run.tenant
        target_stage = data.get("stage") or run.stage
        if target_tenant is None or target_stage is None:
            continue
        if tenant is not None and target_tenant != tenant:
            continue
        if stage is not None and target_stage != stage:
            continue
        if not principal.can_for(Permission.RUN_READ, target_tenant):
            continue
        newest[(target_tenant, target_stage)] = (event, run)
    out = []
    for (target_tenant, target_stage), (event, run) in sorted(newest.items()):
        data = event.data or {}
        item = Deployed(
            tenant=target_tenant,
            stage=target_stage,
            artifact_digest=data.get("artifact_digest") or run.artifact_digest,
            version=data.get("version"),
            commit=run.commit,
            run_key=run.run_key,
            pipeline_name=run.pipeline_name,
            deployed_at=event.occurred_at,
        )
        approval = session.scalars(
            select(Approval)
            .where(
                Approval.run_pk == run.id,
                Approval.tenant == target_tenant,
                Approval.stage == target_stage,
                Approval.status == "approved",
            )
            .order_by(Approval.id.desc())
        ).first()
        if approval is not None:
            item.approval_id = approval.id
            item.approved_by = [
                {"half": signature.half, "role": signature.role, "login": login}
                for signature, login in session.execute(
                    select(ApprovalSignature, Person.login)
                    .join(Person, Person.id == ApprovalSignature.person_id)
                    .where(ApprovalSignature.approval_id == approval.id)
                    .order_by(ApprovalSignature.id)
                )
            ]
        out.append(item)
    return out
