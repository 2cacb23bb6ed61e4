"""The gate, deployment locks and emergency overrides over HTTP (issue 5).

The gate's answer is a 200 with a flat `status` (`allow`, `deny`, `pending`), so an Azure
DevOps Invoke REST API check decides with `eq(root['status'], 'allow')` on the body alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field, StrictBool, StrictStr, model_validator

from azdev_ica.api.deps import Ctx, OneHandOffRoute, json_body, require
from azdev_ica.api.schemas import Code, CommitSha, Digest, JsonInt, RunKey, Str, Strict
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.errors import OutOfScope, UnknownStage, UnknownTenant
from azdev_ica.services import locks, overrides
from azdev_ica.services.gates import EvaluateGate, evaluate

# One hand-off to the thread pool per request: the caller is checked in the endpoint's call.
router = APIRouter(tags=["gates"], route_class=OneHandOffRoute)

Evaluator = Annotated[Principal, Depends(require(Permission.GATE_EVALUATE))]
Releaser = Annotated[Principal, Depends(require(Permission.LOCK_RELEASE))]
Reader = Annotated[Principal, Depends(require(Permission.RUN_READ))]

Dependency = Annotated[Str, Field(min_length=1, max_length=300)]


class SbomComponent(BaseModel):
    """A CycloneDX component: only `purl` (or `name`) is read; other fields are ignored."""

    purl: Annotated[Str, Field(max_length=300)] | None = None
    name: Annotated[Str, Field(max_length=300)] | None = None


class Sbom(BaseModel):
    """A CycloneDX SBOM (JSON): its `components` are the run's dependencies."""

    components: Annotated[list[SbomComponent], Field(max_length=20000)] = Field(
        default_factory=list
    )


class GateRequest(Strict):
    """Ask whether a run may deploy to a target now. Small enough for the 2,000-character
    body of an Azure DevOps check (leave the dependencies to a pipeline step)."""

    run_key: RunKey
    tenant: Code | None = Field(default=None, description="Default: the run's tenant")
    stage: Code | None = Field(default=None, description="Default: the run's stage")
    artifact_digest: Digest | None = Field(
        default=None, description="What is being deployed; default: the run's build digest"
    )
    commit: CommitSha | None = Field(default=None, description="Default: the run's commit")
    cost_impact_minor: Annotated[JsonInt, Field(ge=0, le=10**15)] | None = Field(
        default=None, description="Cost impact in minor units; default: the approval's"
    )
    # StrictStr: over Str the pattern would be left out of the OpenAPI file.
    currency: Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$")] | None = None
    dependencies: Annotated[list[Dependency], Field(max_length=20000)] | None = Field(
        default=None, description="Package identifiers, e.g. pkg:pypi/requests@2.32.3"
    )
    sbom: Sbom | None = Field(default=None, description="Or a CycloneDX SBOM (JSON)")
    version: Annotated[Str, Field(min_length=1, max_length=100)] | None = Field(
        default=None,
        description="Semantic version being deployed; default: what this artifact was "
        "deployed as before in the tenant (a major bump over production needs the "
        "major-release approver)",
    )
    rollback: StrictBool = Field(
        default=False,
        description="A rollback to the target's last good version: allowed without a fresh "
        "approval only where the policy says so; always recorded",
    )

    @model_validator(mode="after")
    def _one_dependency_source(self) -> GateRequest:
        if self.dependencies is not None and self.sbom is not None:
            raise ValueError("give dependencies or an sbom, not both")
        return self

    def dependency_list(self) -> tuple[str, ...] | None:
        if self.sbom is not None:
            return tuple(c.purl or c.name or "" for c in self.sbom.components if c.purl or c.name)
        return None if self.dependencies is None else tuple(self.dependencies)


class ReasonOut(BaseModel):
    code: str = Field(description="Stable code (docs/gates.md)")
    message: str


class GateOut(BaseModel):
    status: Literal["allow", "deny", "pending"] = Field(
        description="allow: deploy now (the lock is yours); deny: fail the deployment; "
        "pending: ask again later"
    )
    reasons: list[ReasonOut]
    decision_id: int
    run_key: str
    tenant: str
    stage: str
    policy_hash: str = Field(description="SHA-256 of the policy version that decided")
    approval_id: int | None
    override_id: int | None
    overridden: list[str] = Field(description="Codes an emergency override lifted")
    lock_holder: str | None = Field(description="The run in the way, while pending on the lock")
    queue_position: int | None
    lock_expires_at: datetime | None = Field(description="The lock's lease, on allow")


class ReleaseBody(Strict):
    tenant: Code
    stage: Code
    reason: Annotated[Str, Field(min_length=1, max_length=1000)]


class LockOut(BaseModel):
    tenant: str
    stage: str
    status: Literal["held", "free"]
    holder_run_key: str | None
    acquired_at: datetime | None
    expires_at: datetime | None
    queue: list[str] = Field(description="Waiting runs, first come first served")
    released: bool | None = Field(default=None, description="On release: whether it was held")


@router.post("/gate/evaluate", response_model=GateOut, dependencies=[Depends(json_body)])
def gate_evaluate(body: GateRequest, ctx: Ctx, principal: Evaluator, request: Request) -> Response:
    """Whether the run may deploy to the target now: `allow` (and the target's lock is taken
    for the run), `deny` (a rule is broken) or `pending` (wait: the approval is not signed
    yet, or another run holds the lock). Every answer is recorded with the policy version."""
    answer = evaluate(
        ctx,
        principal=principal,
        command=EvaluateGate(
            run_key=body.run_key,
            tenant=body.tenant,
            stage=body.stage,
            artifact_digest=body.artifact_digest,
            commit=body.commit,
            cost_impact_minor=body.cost_impact_minor,
            currency=body.currency,
            dependencies=body.dependency_list(),
            version=body.version,
            rollback=body.rollback,
        ),
    )
    request.app.state.instruments.observe_gate(
        tenant=answer.tenant,
        stage=answer.stage,
        status=answer.status.value,
        reasons=[reason.code for reason in answer.reasons],
    )
    # GateOut validates the answer as it is built; it is encoded once, by pydantic, rather
    # than dumped, validated again and encoded by FastAPI's response_model path (70-100 µs of
    # CPU per answer, on the event loop). The bytes are the same.
    out = GateOut(
        status=answer.status.value,
        reasons=[ReasonOut(**reason.as_dict()) for reason in answer.reasons],
        decision_id=answer.decision_id,
        run_key=answer.run_key,
        tenant=answer.tenant,
        stage=answer.stage,
        policy_hash=answer.policy_hash,
        approval_id=answer.approval_id,
        override_id=answer.override_id,
        overridden=list(answer.overridden),
        lock_holder=answer.lock_holder,
        queue_position=answer.queue_position,
        lock_expires_at=answer.lock_expires_at,
    )
    return Response(out.model_dump_json(), media_type="application/json")


def _lock_out(state: locks.LockState, **extra: Any) -> LockOut:
    return LockOut(
        tenant=state.tenant,
        stage=state.stage,
        status="held" if state.holder_run_key else "free",
        holder_run_key=state.holder_run_key,
        acquired_at=state.acquired_at,
        expires_at=state.expires_at,
        queue=list(state.queue),
        **extra,
    )


@router.post("/lock/release", response_model=LockOut, dependencies=[Depends(json_body)])
def lock_release(body: ReleaseBody, ctx: Ctx, principal: Releaser) -> LockOut:
    """Release a stuck deployment lock, with a reason (administrators; a tenant administrator
    for its own tenants). The next run in the queue takes it at its next gate evaluation."""
    state, released = locks.release_lock(
        ctx, principal=principal, tenant=body.tenant, stage=body.stage, reason=body.reason
    )
    return _lock_out(state, released=released)


@router.get("/lock/{tenant}/{stage}", response_model=LockOut)
def lock_detail(
    tenant: Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{1,31}$")],
    stage: Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{1,31}$")],
    ctx: Ctx,
    principal: Reader,
) -> LockOut:
    """A target's deployment lock: who holds it until when, and who waits."""
    if not principal.can_for(Permission.RUN_READ, tenant):
        raise OutOfScope(f"tenant {tenant!r} is outside the caller's scope")
    with ctx.read() as session:
        policy = ctx.policies.active(session)
        if tenant not in policy.tenants:
            raise UnknownTenant(f"tenant {tenant!r} is not in the active policy")
        if policy.stage(stage) is None:
            raise UnknownStage(f"stage {stage!r} is not in the active policy")
        state = locks.lock_state(session, tenant=tenant, stage=stage, now=ctx.clock.now())
    return _lock_out(state)


# --- emergency overrides ---------------------------------------------------------------------

OverrideRequester = Annotated[Principal, Depends(require(Permission.OVERRIDE_REQUEST))]
OverrideSigner = Annotated[Principal, Depends(require(Permission.OVERRIDE_SIGN))]
ApprovalReader = Annotated[Principal, Depends(require(Permission.APPROVAL_READ))]
OverrideId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Text = Annotated[Str, Field(min_length=1, max_length=2000)]


class OverrideRequestBody(Strict):
    run_key: RunKey
    tenant: Code | None = Field(default=None, description="Default: the run's tenant")
    stage: Code | None = Field(default=None, description="Default: the run's stage")
    reason: Text = Field(description="Why the gate must be overridden (kept in the audit trail)")


class OverrideSignBody(Strict):
    decision: Literal["approve", "reject"]
    comment: Annotated[Str, Field(max_length=2000)] | None = None


class OverrideReviewBody(Strict):
    findings: Text


class OverrideSignatureOut(BaseModel):
    person_id: int
    decision: str
    comment: str | None
    signed_at: datetime


class OverrideOut(BaseModel):
    id: int
    status: Literal["pending", "signed", "rejected"]
    run_key: str
    tenant: str
    stage: str
    artifact_digest: str | None
    reason: str
    signatures_required: int
    signatures: list[OverrideSignatureOut]
    requested_by: str
    requested_at: datetime
    signed_at: datetime | None
    policy_hash: str
    review_due_at: datetime | None
    review_escalated_at: datetime | None
    reviewed_at: datetime | None
    review_findings: str | None
    link: str


class QuarterOut(BaseModel):
    quarter: str = Field(description="e.g. 2026-Q4 (UTC)")
    total: int
    by_tenant: dict[str, int]
    target: int = Field(description="The policy's most per quarter (seed: 2)")
    over_target: bool


class OverrideStatsOut(BaseModel):
    quarters: list[QuarterOut] = Field(description="Newest first; the current one always")
    open_reviews: int = Field(description="Signed overrides still awaiting their review")


def _override_out(ctx: Any, override_id: int, principal: Principal) -> OverrideOut:
    with ctx.read() as session:
        view = overrides.get_override(session, override_id=override_id, principal=principal)
        row = view.override
        return OverrideOut(
            id=row.id,
            status=row.status,
            run_key=row.run_key,
            tenant=row.tenant,
            stage=row.stage,
            artifact_digest=row.artifact_digest,
            reason=row.reason,
            signatures_required=row.signatures_required,
            signatures=[
                OverrideSignatureOut.model_validate(s, from_attributes=True)
                for s in view.signatures
            ],
            requested_by=row.requested_by,
            requested_at=row.requested_at,
            signed_at=row.signed_at,
            policy_hash=row.policy_hash,
            review_due_at=row.review_due_at,
            review_escalated_at=row.review_escalated_at,
            reviewed_at=row.reviewed_at,
            review_findings=row.review_findings,
            link=overrides.override_link(ctx, row.id),
        )


@router.post(
    "/override",
    status_code=201,
    response_model=OverrideOut,
    responses={200: {"description": "The open override for this run and target (a retry)"}},
    dependencies=[Depends(json_body)],
)
def override_request(
    body: OverrideRequestBody, response: Response, ctx: Ctx, principal: OverrideRequester
) -> OverrideOut:
    """Ask for an emergency override of the gate for a run and a target, with a reason. An
    override signer must sign it; the gate then answers `allow` with reason `override`."""
    outcome = overrides.request_override(
        ctx,
        principal=principal,
        run_key=body.run_key,
        tenant=body.tenant,
        stage=body.stage,
        reason=body.reason,
    )
    response.status_code = 201 if outcome.created else 200
    return _override_out(ctx, outcome.override.id, principal)


@router.get("/override/{override_id}", response_model=OverrideOut)
def override_detail(override_id: OverrideId, ctx: Ctx, principal: ApprovalReader) -> OverrideOut:
    """One override with its signatures and its review."""
    return _override_out(ctx, override_id, principal)


@router.post(
    "/override/{override_id}/sign", response_model=OverrideOut, dependencies=[Depends(json_body)]
)
def override_sign(
    override_id: OverrideId, body: OverrideSignBody, ctx: Ctx, principal: OverrideSigner
) -> OverrideOut:
    """Sign an override (a person holding azdev_override_signer for the tenant). A refusal is a
    403 problem whose `code` names the rule: role_not_held, requester_cannot_sign,
    already_signed, override_closed."""
    overrides.sign_override(
        ctx,
        principal=principal,
        override_id=override_id,
        approve=body.decision == "approve",
        comment=body.comment,
    )
    return _override_out(ctx, override_id, principal)


@router.post(
    "/override/{override_id}/review", response_model=OverrideOut, dependencies=[Depends(json_body)]
)
def override_review(
    override_id: OverrideId, body: OverrideReviewBody, ctx: Ctx, principal: OverrideSigner
) -> OverrideOut:
    """Close the mandatory after-the-fact review of a signed override (a person who neither
    asked for nor signed it)."""
    overrides.review_override(
        ctx, principal=principal, override_id=override_id, findings=body.findings
    )
    return _override_out(ctx, override_id, principal)


@router.get("/overrides/stats", response_model=OverrideStatsOut)
def override_statistics(ctx: Ctx, principal: ApprovalReader) -> OverrideStatsOut:
    """Signed emergency overrides per quarter against the policy's target (seed: at most 2)."""
    with ctx.read() as session:
        target = ctx.policies.active(session).gates.overrides_per_quarter
        quarters, open_reviews = overrides.override_stats(
            session, principal=principal, now=ctx.clock.now()
        )
    return OverrideStatsOut(
        quarters=[
            QuarterOut(
                quarter=q.quarter,
                total=q.total,
                by_tenant=q.by_tenant,
                target=target,
                over_target=q.total > target,
            )
            for q in quarters
        ],
        open_reviews=open_reviews,
    )
