"""The inventory (seed 002 "core codebase version deployed per instance"): what runs in each
tenant x stage, since when, deployed by which run, approved by whom.

A projection of what pipelines reported: the newest deploy event that says `succeeded` per
target (and that monitoring did not mark failed nor a rollback undo since: see
`queries/deployments.py`), with the artifact digest and version it named (else the run's),
the run's commit, and the signatures of the run's approval for that target. A deploy the gate
never allowed is shown as what runs there, marked `authorised: false`.
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
    PipelineRun,
)
from azdev_ica.queries.deployments import DeploymentRecord, deployment_history


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
    # False when the gate never allowed this deploy: it runs there, but as an unauthorised
    # change, never as the target's good version.
    authorised: bool = True
    approval_id: int | None = None
    approved_by: list[dict[str, str]] = field(default_factory=list)


def inventory(
    session: Session,
    *,
    principal: Principal,
    tenant: str | None = None,
    stage: str | None = None,
) -> list[Deployed]:
    # One projection of deployments (queries/deployments.py) for the gate, the rollback rule
    # and this listing, so they cannot disagree about what was deployed where.
    newest: dict[tuple[str, str], DeploymentRecord] = {}
    for record in deployment_history(session, tenant=tenant, stage=stage):
        if not record.succeeded or record.spoiled_by is not None:
            continue
        if not principal.can_for(Permission.RUN_READ, record.tenant):
            continue
        newest[(record.tenant, record.stage)] = record
    runs = {
        run.id: run
        for run in session.scalars(
            select(PipelineRun).where(
                PipelineRun.id.in_(sorted({record.run_pk for record in newest.values()}))
            )
        )
    }
    out = []
    for (target_tenant, target_stage), record in sorted(newest.items()):
        run = runs[record.run_pk]
        item = Deployed(
            tenant=target_tenant,
            stage=target_stage,
            artifact_digest=record.artifact_digest,
            version=record.version,
            commit=run.commit,
            run_key=run.run_key,
            pipeline_name=run.pipeline_name,
            deployed_at=record.deployed_at,
            authorised=record.authorised,
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
