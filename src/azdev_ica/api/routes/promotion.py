"""Promotion over HTTP (seed 002): sign-offs bound to tenant, stage and artifact digest, and
data refresh requests from production into a lower stage."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, Field, StrictStr

from azdev_ica.api.deps import Ctx, json_body, require
from azdev_ica.api.schemas import Code, Digest, Name, ShortText, Str, Strict
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import RefreshRequest, Signoff
from azdev_ica.services import refresh as refreshes
from azdev_ica.services.audit import rfc3339
from azdev_ica.services.signoffs import GiveSignoff, give_signoff, list_signoffs

router = APIRouter(tags=["promotion"])

Signer = Annotated[Principal, Depends(require(Permission.SIGNOFF_SIGN))]
SignoffReader = Annotated[Principal, Depends(require(Permission.SIGNOFF_READ))]
Requester = Annotated[Principal, Depends(require(Permission.REFRESH_REQUEST))]
Approver = Annotated[Principal, Depends(require(Permission.REFRESH_APPROVE))]
RefreshReader = Annotated[Principal, Depends(require(Permission.REFRESH_READ))]
RequestId = Annotated[int, Path(ge=1, le=2**53)]


class SignoffRequest(Strict):
    tenant: Code
    stage: Code = Field(description="The stage the artifact is to enter")
    artifact_digest: Digest
    kind: Literal["qa", "uat", "data", "major"] = Field(
        description="qa, uat (the national counterpart), data (data-migration validation), "
        "major (the major-release approver)"
    )
    comment: ShortText | None = None


class SignoffOut(BaseModel):
    id: int
    tenant: str
    stage: str
    artifact_digest: str
    kind: str
    signed_by: str = Field(description="The signer's login")
    role: str
    comment: str | None
    signed_at: str


def _signoff_out(row: Signoff, login: str) -> SignoffOut:
    return SignoffOut(
        id=row.id,
        tenant=row.tenant,
        stage=row.stage,
        artifact_digest=row.artifact_digest,
        kind=row.kind,
        signed_by=login,
        role=row.role,
        comment=row.comment,
        signed_at=rfc3339(row.signed_at),
    )


@router.post(
    "/signoff",
    status_code=201,
    response_model=SignoffOut,
    dependencies=[Depends(json_body)],
    summary="Sign off an artifact for a tenant's stage (a person holding the kind's role)",
    responses={200: {"description": "Already signed off: the recorded sign-off"}},
)
def signoff_give(
    ctx: Ctx, principal: Signer, body: SignoffRequest, response: Response
) -> SignoffOut:
    outcome = give_signoff(ctx, principal=principal, command=GiveSignoff(**body.model_dump()))
    if not outcome.created:
        response.status_code = 200
    return _signoff_out(outcome.signoff, outcome.login)


@router.get(
    "/signoff",
    response_model=list[SignoffOut],
    summary="Sign-offs of the caller's tenants, by tenant, stage and artifact digest",
)
def signoff_list(
    ctx: Ctx,
    principal: SignoffReader,
    tenant: Annotated[Code | None, Query()] = None,
    stage: Annotated[Code | None, Query()] = None,
    digest: Annotated[Digest | None, Query()] = None,
) -> list[SignoffOut]:
    with ctx.read() as session:
        rows = list_signoffs(
            session, principal=principal, tenant=tenant, stage=stage, digest=digest
        )
        return [_signoff_out(row, login) for row, login in rows]


class Evidence(Strict):
    """The masking run's evidence: a checksum of its output or report, where it is kept,
    and what it masked."""

    # StrictStr: over Str the pattern would be left out of the OpenAPI file.
    sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
    uri: Annotated[Str, Field(min_length=1, max_length=2000)]
    description: Annotated[Str, Field(min_length=1, max_length=2000)]


class RefreshBody(Strict):
    tenant: Code
    target_stage: Code = Field(description="A lower (non-production) stage of the same tenant")
    reason: Name
    evidence: Evidence


class DecisionBody(Strict):
    decision: Literal["approve", "reject"]
    comment: ShortText | None = None


class RefreshOut(BaseModel):
    id: int
    tenant: str
    source_stage: str
    target_stage: str
    reason: str
    evidence: dict[str, str]
    status: Literal["requested", "approved", "rejected", "completed"]
    requested_by: str
    requested_at: str
    decided_by: str | None
    decided_at: str | None
    decision_comment: str | None
    completed_by: str | None
    completed_at: str | None


def _refresh_out(row: RefreshRequest) -> RefreshOut:
    return RefreshOut(
        id=row.id,
        tenant=row.tenant,
        source_stage=row.source_stage,
        target_stage=row.target_stage,
        reason=row.reason,
        evidence={
            "sha256": row.evidence_sha256,
            "uri": row.evidence_uri,
            "description": row.evidence_description,
        },
        status=row.status,
        requested_by=row.requested_by,
        requested_at=rfc3339(row.requested_at),
        decided_by=row.decided_by,
        decided_at=rfc3339(row.decided_at) if row.decided_at else None,
        decision_comment=row.decision_comment,
        completed_by=row.completed_by,
        completed_at=rfc3339(row.completed_at) if row.completed_at else None,
    )


@router.post(
    "/refresh",
    status_code=201,
    response_model=RefreshOut,
    dependencies=[Depends(json_body)],
    summary="Ask to copy a tenant's production data into a lower stage (masking evidence)",
)
def refresh_request(ctx: Ctx, principal: Requester, body: RefreshBody) -> RefreshOut:
    row = refreshes.request_refresh(
        ctx,
        principal=principal,
        command=refreshes.RequestRefresh(
            tenant=body.tenant,
            target_stage=body.target_stage,
            reason=body.reason,
            evidence_sha256=body.evidence.sha256,
            evidence_uri=body.evidence.uri,
            evidence_description=body.evidence.description,
        ),
    )
    return _refresh_out(row)


@router.post(
    "/refresh/{request_id}/decide",
    response_model=RefreshOut,
    dependencies=[Depends(json_body)],
    summary="Approve or reject a data refresh (the policy's approver role; not the requester)",
)
def refresh_decide(
    ctx: Ctx, principal: Approver, request_id: RequestId, body: DecisionBody
) -> RefreshOut:
    row = refreshes.decide_refresh(
        ctx,
        principal=principal,
        request_id=request_id,
        approve=body.decision == "approve",
        comment=body.comment,
    )
    return _refresh_out(row)


@router.post(
    "/refresh/{request_id}/complete",
    response_model=RefreshOut,
    summary="Mark an approved data refresh as done",
)
def refresh_complete(ctx: Ctx, principal: Requester, request_id: RequestId) -> RefreshOut:
    return _refresh_out(refreshes.complete_refresh(ctx, principal=principal, request_id=request_id))


@router.get(
    "/refresh",
    response_model=list[RefreshOut],
    summary="Data refresh requests of the caller's tenants",
)
def refresh_list(
    ctx: Ctx,
    principal: RefreshReader,
    tenant: Annotated[Code | None, Query()] = None,
    status: Annotated[
        Literal["requested", "approved", "rejected", "completed"] | None, Query()
    ] = None,
) -> list[RefreshOut]:
    with ctx.read() as session:
        rows = refreshes.list_refreshes(session, principal=principal, tenant=tenant, status=status)
        return [_refresh_out(row) for row in rows]
