"""The fleet's inventory: which version runs in each tenant x stage (seed 002)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from azdev_ica.api.deps import Ctx, require
from azdev_ica.api.schemas import Code
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.queries.inventory import inventory
from azdev_ica.services.audit import rfc3339

router = APIRouter(tags=["inventory"])

Reader = Annotated[Principal, Depends(require(Permission.RUN_READ))]


class SignerOut(BaseModel):
    half: str
    role: str
    login: str


class DeployedOut(BaseModel):
    tenant: str
    stage: str
    artifact_digest: str | None
    version: str | None
    commit: str | None
    run_key: str
    pipeline_name: str
    deployed_at: str = Field(description="Since when (the successful deploy event)")
    authorised: bool = Field(
        description="False: the gate never allowed this deploy (an unauthorised change); it "
        "runs there but is never the target's good version"
    )
    approval_id: int | None
    approved_by: list[SignerOut]


@router.get(
    "/inventory",
    response_model=list[DeployedOut],
    summary="What runs in each tenant x stage, since when, from which run, approved by whom",
)
def inventory_listing(
    ctx: Ctx,
    principal: Reader,
    tenant: Annotated[Code | None, Query()] = None,
    stage: Annotated[Code | None, Query()] = None,
) -> list[DeployedOut]:
    with ctx.read() as session:
        items = inventory(session, principal=principal, tenant=tenant, stage=stage)
    return [
        DeployedOut(
            tenant=item.tenant,
            stage=item.stage,
            artifact_digest=item.artifact_digest,
            version=item.version,
            commit=item.commit,
            run_key=item.run_key,
            pipeline_name=item.pipeline_name,
            deployed_at=rfc3339(item.deployed_at),
            authorised=item.authorised,
            approval_id=item.approval_id,
            approved_by=[SignerOut(**signer) for signer in item.approved_by],
        )
        for item in items
    ]
