"""Governed policy changes (seed 000 §8.1): propose a policy version, two approvers sign it,
the second signature activates it; the versions kept with their hashes, and diffs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, Field

from azdev_ica.api.deps import Ctx, json_body, require
from azdev_ica.api.schemas import ShortText, Str, Strict
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.services.audit import rfc3339
from azdev_ica.services.policy_changes import (
    ProposalView,
    diff_refs,
    get_proposal,
    list_proposals,
    list_versions,
    propose_policy,
    sign_proposal,
    withdraw_proposal,
)

router = APIRouter(tags=["policy"])

Reader = Annotated[Principal, Depends(require(Permission.POLICY_READ))]
Proposer = Annotated[Principal, Depends(require(Permission.POLICY_PROPOSE))]
Signer = Annotated[Principal, Depends(require(Permission.POLICY_SIGN))]
ProposalId = Annotated[int, Path(ge=1, le=2**53, description="The proposal's id")]
Reason = Annotated[Str, Field(min_length=1, max_length=2000)]
# A version id, a sha256 (or a prefix of 7+ hex digits), or `proposal:ID`.
REF_PATTERN = r"^([0-9]{1,6}|[0-9a-fA-F]{7,64}|proposal:[0-9]{1,16})$"


class ProposeBody(Strict):
    document: Annotated[Str, Field(min_length=1, max_length=250_000)] = Field(
        description="The policy file (YAML), as `ica policy validate` reads it"
    )
    reason: Reason


class SignBody(Strict):
    decision: Literal["approve", "reject"]
    comment: ShortText | None = None


class WithdrawBody(Strict):
    reason: Reason


class SignatureOut(BaseModel):
    person_id: int
    decision: str
    comment: str | None
    signed_at: str


class ProposalOut(BaseModel):
    id: int
    sha256: str
    status: str = Field(description="pending | active | rejected | withdrawn")
    stale: bool = Field(
        description="Pending, but its base is no longer the active version: propose again"
    )
    reason: str
    base_version_id: int | None
    base_sha256: str | None
    signatures_required: int
    proposed_by: str
    proposed_at: str
    version_id: int | None = Field(description="The policy version it became, once active")
    closed_at: str | None
    closed_by: str | None
    close_reason: str | None
    signatures: list[SignatureOut]


class ProposalDetailOut(ProposalOut):
    document: str


class ProposalPage(BaseModel):
    items: list[ProposalOut]


class VersionOut(BaseModel):
    id: int
    sha256: str
    applied_at: str
    applied_by: str
    active: bool


class VersionPage(BaseModel):
    items: list[VersionOut]


class DiffSide(BaseModel):
    label: str
    sha256: str


class DiffOut(BaseModel):
    from_: DiffSide = Field(alias="from")
    to: DiffSide
    identical: bool
    summary: dict[str, list[str]]
    unified_diff: str


def _proposal_out(view: ProposalView) -> dict[str, Any]:
    row = view.proposal
    return {
        "id": row.id,
        "sha256": row.sha256,
        "status": row.status,
        "stale": view.stale,
        "reason": row.reason,
        "base_version_id": row.base_version_id,
        "base_sha256": row.base_sha256,
        "signatures_required": row.signatures_required,
        "proposed_by": row.proposed_by,
        "proposed_at": rfc3339(row.proposed_at),
        "version_id": row.version_id,
        "closed_at": rfc3339(row.closed_at) if row.closed_at else None,
        "closed_by": row.closed_by,
        "close_reason": row.close_reason,
        "signatures": [
            SignatureOut(
                person_id=s.person_id,
                decision=s.decision,
                comment=s.comment,
                signed_at=rfc3339(s.signed_at),
            )
            for s in view.signatures
        ],
    }


def _detail(ctx: Ctx, proposal_id: int) -> ProposalDetailOut:
    with ctx.read() as session:
        view = get_proposal(session, proposal_id)
        return ProposalDetailOut(**_proposal_out(view), document=view.proposal.document)


@router.post(
    "/policy/proposal",
    status_code=201,
    response_model=ProposalDetailOut,
    responses={200: {"description": "The same document is pending already: that proposal"}},
    dependencies=[Depends(json_body)],
    summary="Propose a new policy version (validated; two approvers must sign it)",
)
def policy_propose(
    ctx: Ctx, principal: Proposer, body: ProposeBody, response: Response
) -> ProposalDetailOut:
    """Needs `policy:propose` for every tenant. An invalid document is a 422 problem listing
    each error with its line; the active document again is a 409 (`already_active`)."""
    outcome = propose_policy(ctx, principal=principal, document=body.document, reason=body.reason)
    if not outcome.created:
        response.status_code = 200
    return _detail(ctx, outcome.proposal.id)


@router.get("/policy/proposal", response_model=ProposalPage, summary="Policy proposals")
def policy_proposals(
    ctx: Ctx,
    principal: Reader,
    status: Annotated[Literal["pending", "active", "rejected", "withdrawn"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ProposalPage:
    with ctx.read() as session:
        views = list_proposals(session, status=status, limit=limit)
        return ProposalPage(items=[ProposalOut(**_proposal_out(view)) for view in views])


@router.get("/policy/proposal/{proposal_id}", response_model=ProposalDetailOut)
def policy_proposal(ctx: Ctx, principal: Reader, proposal_id: ProposalId) -> ProposalDetailOut:
    return _detail(ctx, proposal_id)


@router.post(
    "/policy/proposal/{proposal_id}/sign",
    response_model=ProposalDetailOut,
    dependencies=[Depends(json_body)],
    summary="Sign a policy proposal; the second approval activates it",
)
def policy_sign(
    ctx: Ctx, principal: Signer, proposal_id: ProposalId, body: SignBody
) -> ProposalDetailOut:
    """A person only, holding `policy:sign` for every tenant. A refusal is a 403 problem whose
    `code` names the rule: role_not_held, all_tenants_required, proposer_cannot_sign,
    already_signed, proposal_closed; a proposal whose base version is no longer active is a
    409 (`stale_base`): propose it again."""
    sign_proposal(
        ctx,
        principal=principal,
        proposal_id=proposal_id,
        approve=body.decision == "approve",
        comment=body.comment,
    )
    return _detail(ctx, proposal_id)


@router.post(
    "/policy/proposal/{proposal_id}/withdraw",
    response_model=ProposalDetailOut,
    dependencies=[Depends(json_body)],
)
def policy_withdraw(
    ctx: Ctx, principal: Proposer, proposal_id: ProposalId, body: WithdrawBody
) -> ProposalDetailOut:
    """Withdraw a pending proposal (the proposer, or anyone who may propose for every tenant)."""
    withdraw_proposal(ctx, principal=principal, proposal_id=proposal_id, reason=body.reason)
    return _detail(ctx, proposal_id)


@router.get("/policy/versions", response_model=VersionPage, summary="Every policy version")
def policy_versions(ctx: Ctx, principal: Reader) -> VersionPage:
    with ctx.read() as session:
        rows = list_versions(session)
        return VersionPage(
            items=[
                VersionOut(
                    id=row.id,
                    sha256=row.sha256,
                    applied_at=rfc3339(row.applied_at),
                    applied_by=row.applied_by,
                    active=index == 0,
                )
                for index, row in enumerate(rows)
            ]
        )


@router.get(
    "/policy/diff",
    response_model=DiffOut,
    response_model_by_alias=True,
    summary="Diff two policy versions (or a proposal against its base)",
)
def policy_diff(
    ctx: Ctx,
    principal: Reader,
    to: Annotated[str | None, Query(pattern=REF_PATTERN)] = None,
    from_: Annotated[str | None, Query(alias="from", pattern=REF_PATTERN)] = None,
) -> dict[str, Any]:
    """`to` defaults to the active version; `from` to the version before `to` (for a
    `proposal:ID`, the version it was based on). Refs: a version id, a sha256 (prefix of 7+
    hex digits), or `proposal:ID`."""
    with ctx.read() as session:
        return diff_refs(session, from_ref=from_, to_ref=to).as_dict()
