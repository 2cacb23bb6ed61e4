"""Dual approval over HTTP (seed 000 §1.4, issue 5): ask, read, sign, withdraw, list, delegate.

Every business outcome is a 200 with a flat `status`, so an Azure DevOps Invoke REST API check
can decide on the body alone: `eq(root['approved'], true)` (both halves signed).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field, StrictStr

from azdev_ica.adapters.notify._common import credential_url_problem
from azdev_ica.api.deps import Ctx, IdempotencyKey, OneHandOffRoute, json_body, require
from azdev_ica.api.schemas import (
    Code,
    CommitSha,
    Digest,
    Instant,
    JsonInt,
    Name,
    RunKey,
    ShortText,
    Str,
    Strict,
)
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission, Role
from azdev_ica.domain.approvals import Decision, Half
from azdev_ica.errors import ValidationProblem
from azdev_ica.queries.approvals import (
    ApprovalFilter,
    ApprovalVersion,
    ApprovalView,
    approval_etag,
    approval_version,
    effective_status,
    etag_matches,
    get_approval,
    list_approvals,
    poll_after,
    poll_version,
)
from azdev_ica.services.approvals import (
    AdoCallback,
    RequestApproval,
    approval_link,
    delegate_approver_role,
    request_approval,
    sign_approval,
    withdraw_approval,
)
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.idempotency import IdempotencyRequest

# One hand-off to the thread pool per request: the caller is checked in the endpoint's call
# (a poller's conditional GET is most of this router's traffic).
router = APIRouter(tags=["approvals"], route_class=OneHandOffRoute)

Requester = Annotated[Principal, Depends(require(Permission.APPROVAL_REQUEST))]
Reader = Annotated[Principal, Depends(require(Permission.APPROVAL_READ))]
Signer = Annotated[Principal, Depends(require(Permission.APPROVAL_SIGN))]
Delegator = Annotated[Principal, Depends(require(Permission.APPROVAL_DELEGATE))]
ApprovalId = Annotated[int, Path(ge=1, le=2**63 - 1)]

Minor = Annotated[JsonInt, Field(ge=0, le=10**15)]
# StrictStr, not Str: a pattern laid over Str's validator is enforced but left out of the
# OpenAPI file (pydantic), and the pattern excludes U+0000 already.
Currency = Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$")]
Status = Literal[
    "pending",
    "technical_approved",
    "business_approved",
    "approved",
    "rejected",
    "withdrawn",
    "expired",
]


class ApprovalRequestBody(Strict):
    """Ask for the dual approval of a run's deployment to a target. Small enough for the
    2,000-character body of an Azure DevOps check."""

    run_key: RunKey
    tenant: Code | None = Field(default=None, description="Default: the run's tenant")
    stage: Code | None = Field(default=None, description="Default: the run's stage")
    artifact_digest: Digest | None = Field(
        default=None, description="sha256 of the image; default: the run's build digest"
    )
    commit: CommitSha | None = Field(default=None, description="Default: the run's commit")
    cost_impact_minor: Minor | None = Field(
        default=None, description="Cost impact in minor units (cents) of `currency`"
    )
    budget_minor: Minor | None = Field(default=None, description="Approved budget, minor units")
    currency: Currency | None = Field(default=None, description="ISO 4217 code, e.g. NZD")
    callback: bool = Field(
        default=False,
        description="Azure DevOps check in callback mode: post TaskCompleted when decided "
        "(needs the check's PlanUrl, ProjectId, HubName, PlanId, JobId, TaskInstanceId and "
        "AuthToken headers; set the check's time between evaluations to 0)",
    )


class SignBody(Strict):
    decision: Decision
    half: Half | None = Field(
        default=None, description="technical or business; default: the one your roles leave"
    )
    comment: ShortText | None = None


class WithdrawBody(Strict):
    reason: Annotated[Str, Field(min_length=1, max_length=1000)]


class DelegateBody(Strict):
    to_login: Name
    role: Literal["azdev_approver_tech", "azdev_approver_biz"]
    tenant: Code
    until: Instant
    reason: Annotated[Str, Field(min_length=1, max_length=1000)]


class SignatureOut(BaseModel):
    half: str
    role: str
    decision: str
    comment: str | None
    signed_at: datetime
    person_id: int
    login: str


class ApprovalOut(BaseModel):
    id: int
    status: Status = Field(description="Flat status: approved is the only one that deploys")
    approved: bool = Field(
        description="True only when both halves are signed (status approved): the field for "
        "an Invoke REST API check's success criteria, eq(root['approved'], true); a "
        "contains() or endsWith() on status would pass on technical_approved"
    )
    run_key: str
    tenant: str
    stage: str
    artifact_digest: str | None
    commit: str | None
    cost_impact_minor: int | None
    budget_minor: int | None
    currency: str | None
    policy_hash: str
    business_first: bool
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    sla_due_at: datetime
    decided_at: datetime | None
    closed_reason: str | None
    awaiting: list[str] = Field(description="Halves still to sign while the request is open")
    signatures: list[SignatureOut]
    link: str = Field(description="The page where people read and sign the request")


class ApprovalSummary(BaseModel):
    id: int
    status: Status
    run_key: str
    tenant: str
    stage: str
    requested_at: datetime
    expires_at: datetime
    sla_due_at: datetime
    link: str


class ApprovalPage(BaseModel):
    items: list[ApprovalSummary]
    next_cursor: str | None


class DelegationOut(BaseModel):
    grant_id: int
    to_login: str
    role: str
    tenant: str | None
    expires_at: datetime | None
    delegated_from: int | None


def _view(ctx: ServiceContext, approval_id: int, principal: Principal) -> ApprovalOut:
    with ctx.read() as session:
        view = get_approval(
            session, approval_id=approval_id, principal=principal, now=ctx.clock.now()
        )
        return _out(ctx, view)


def _out(ctx: ServiceContext, view: ApprovalView) -> ApprovalOut:
    row = view.approval
    return ApprovalOut(
        id=row.id,
        status=view.status.value,
        approved=view.status.value == "approved",
        run_key=row.run_key,
        tenant=row.tenant,
        stage=row.stage,
        artifact_digest=row.artifact_digest,
        commit=row.commit,
        cost_impact_minor=row.cost_impact_minor,
        budget_minor=row.budget_minor,
        currency=row.currency,
        policy_hash=row.policy_hash,
        business_first=row.business_first,
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        expires_at=row.expires_at,
        sla_due_at=row.sla_due_at,
        decided_at=row.decided_at,
        closed_reason=row.closed_reason,
        awaiting=view.awaiting,
        signatures=[
            SignatureOut(
                half=s.signature.half,
                role=s.signature.role,
                decision=s.signature.decision,
                comment=s.signature.comment,
                signed_at=s.signature.signed_at,
                person_id=s.signature.person_id,
                login=s.login,
            )
            for s in view.signatures
        ],
        link=approval_link(ctx, row.id),
    )


def _idempotency(
    principal: Principal, key: str | None, operation: str, body: BaseModel
) -> IdempotencyRequest | None:
    if key is None:
        return None
    return IdempotencyRequest.of(
        principal=principal.id, key=key, operation=operation, body=body.model_dump(mode="json")
    )


@router.post(
    "/approval",
    status_code=201,
    response_model=ApprovalOut,
    responses={200: {"description": "The open request for this run and target (a retry)"}},
    dependencies=[Depends(json_body)],
)
def approval_request(
    body: ApprovalRequestBody,
    request: Request,
    response: Response,
    ctx: Ctx,
    principal: Requester,
    idempotency_key: IdempotencyKey,
    # Plain strings here, checked below only in callback mode: a polling check sends the same
    # headers template (values ICA does not use, some `$(...)` left unexpanded), and refusing
    # them would be a 422 that no re-evaluation can ever pass.
    plan_url: Annotated[str | None, Header(alias="PlanUrl", max_length=2000)] = None,
    project_id: Annotated[str | None, Header(alias="ProjectId", max_length=200)] = None,
    hub_name: Annotated[str | None, Header(alias="HubName", max_length=200)] = None,
    plan_id: Annotated[str | None, Header(alias="PlanId", max_length=200)] = None,
    job_id: Annotated[str | None, Header(alias="JobId", max_length=200)] = None,
    timeline_id: Annotated[str | None, Header(alias="TimelineId", max_length=200)] = None,
    task_instance_id: Annotated[str | None, Header(alias="TaskInstanceId", max_length=200)] = None,
    auth_token: Annotated[
        str | None, Header(alias="AuthToken", max_length=8000, include_in_schema=False)
    ] = None,
) -> ApprovalOut:
    """Create the approval request for a run and a target, or return the one that stands."""
    callback = None
    if body.callback:
        headers = {
            "PlanUrl": plan_url,
            "ProjectId": project_id,
            "HubName": hub_name,
            "PlanId": plan_id,
            "JobId": job_id,
            "TaskInstanceId": task_instance_id,
            "AuthToken": auth_token,
        }
        given = {name: value for name, value in headers.items() if value}
        missing = [name for name in headers if name not in given]
        if missing:
            raise ValidationProblem(f"callback mode needs the headers {', '.join(missing)}")
        malformed = [
            name
            for name, value in given.items()
            if name != "AuthToken" and not (_URL if name == "PlanUrl" else _ADO_ID).fullmatch(value)
        ]
        if timeline_id and not _ADO_ID.fullmatch(timeline_id):
            timeline_id = None  # not used to call back: ignored rather than refused
        if malformed:
            raise ValidationProblem(
                f"callback mode: malformed headers {', '.join(malformed)} (an Azure DevOps "
                "variable left unexpanded in the check's headers?)"
            )
        _check_plan_url(given["PlanUrl"], request.app.state.settings.ado_callback_hosts)
        callback = AdoCallback(
            plan_url=given["PlanUrl"],
            project_id=given["ProjectId"],
            hub_name=given["HubName"],
            plan_id=given["PlanId"],
            job_id=given["JobId"],
            timeline_id=timeline_id,
            task_instance_id=given["TaskInstanceId"],
            auth_token=given["AuthToken"],
        )
    scope = body.model_dump(exclude={"callback"})
    outcome = request_approval(
        ctx,
        principal=principal,
        command=RequestApproval(**scope),
        idempotency=_idempotency(principal, idempotency_key, "approval.request", body),
        callback=callback,
    )
    response.status_code = 201 if outcome.created else 200
    return _view(ctx, outcome.approval.id, principal)


_ADO_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
_URL = re.compile(r"https?://[^\s\x00]+")


def _check_plan_url(plan_url: str, allowed: list[str]) -> None:
    """ICA posts the check's token to PlanUrl: only to Azure DevOps hosts from settings, so a
    caller cannot make ICA send anything to a host of its choosing; and over https (plain
    http to loopback only, where a stand-in runs), so the token never travels in clear."""
    host = (urlsplit(plan_url).hostname or "").lower()
    for entry in allowed:
        entry = entry.lower()
        if host == entry or (entry.startswith(".") and host.endswith(entry)):
            problem = credential_url_problem(plan_url)
            if problem is not None:
                raise ValidationProblem(f"PlanUrl: {problem}")
            return
    raise ValidationProblem(
        f"PlanUrl host {host!r} is not an Azure DevOps host ICA calls back (ICA_ADO_CALLBACK_HOSTS)"
    )


_POLL_HEADERS = {
    "ETag": {
        "description": "The answer's version: send it back as If-None-Match to be told "
        "304 Not Modified while nothing changed",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "While the request is open: seconds to wait before asking again "
        "(5 in its first minute, 15 until ten minutes, 30 after); absent once final",
        "schema": {"type": "integer"},
    },
}


@router.get(
    "/approval/{approval_id}",
    response_model=ApprovalOut,
    responses={
        200: {"headers": _POLL_HEADERS},
        304: {"description": "Not modified since the ETag sent", "headers": _POLL_HEADERS},
    },
)
def approval_detail(
    approval_id: ApprovalId,
    response: Response,
    ctx: Ctx,
    principal: Reader,
    if_none_match: Annotated[
        str | None,
        Header(
            alias="If-None-Match",
            max_length=1000,
            description="The ETag of the answer already held: 304 while nothing changed",
        ),
    ] = None,
) -> ApprovalOut | Response:
    """The request with its flat `status`, the signatures so far and the expiry.

    For pollers: the answer carries an `ETag` and, while the request is open, `Retry-After`
    (the server's back-off). With `If-None-Match` set to the ETag held, an unchanged request
    answers 304 with no body after a single primary-key read."""
    now = ctx.clock.now()
    if if_none_match is not None:
        # The poller's usual case: one statement, on PostgreSQL without BEGIN and ROLLBACK
        # around it (1 round trip instead of 3), straight through the driver.
        row = poll_version(ctx.db, approval_id=approval_id, principal=principal)
        headers = _poll_headers(row, now)
        if etag_matches(if_none_match, headers["ETag"]):
            return Response(status_code=304, headers=headers)
    with ctx.read() as session:
        # Read again in the snapshot the body comes from, so that the ETag names this body.
        row = approval_version(session, approval_id=approval_id, principal=principal)
        headers = _poll_headers(row, now)
        if etag_matches(if_none_match, headers["ETag"]):
            return Response(status_code=304, headers=headers)
        view = get_approval(session, approval_id=approval_id, principal=principal, now=now)
        response.headers.update(headers)
        return _out(ctx, view)


def _poll_headers(row: ApprovalVersion, now: datetime) -> dict[str, str]:
    """ETag, and Retry-After while the request is open (the server's back-off)."""
    status = effective_status(row, now)
    headers = {"ETag": approval_etag(row, status)}
    wait = poll_after(row, status, now)
    if wait is not None:
        headers["Retry-After"] = str(wait)
    return headers


@router.post(
    "/approval/{approval_id}/sign",
    response_model=ApprovalOut,
    dependencies=[Depends(json_body)],
)
def approval_sign(
    approval_id: ApprovalId, body: SignBody, ctx: Ctx, principal: Signer
) -> ApprovalOut:
    """Sign one half (a person only). A refusal is a 403 problem whose `code` names the rule:
    requester_cannot_sign, same_person_both_halves, role_not_held, signer_not_a_person,
    technical_half_first, half_already_signed, approval_decided, approval_expired."""
    sign_approval(
        ctx,
        principal=principal,
        approval_id=approval_id,
        decision=body.decision,
        half=body.half,
        comment=body.comment,
    )
    return _view(ctx, approval_id, principal)


@router.post(
    "/approval/{approval_id}/withdraw",
    response_model=ApprovalOut,
    dependencies=[Depends(json_body)],
)
def approval_withdraw(
    approval_id: ApprovalId, body: WithdrawBody, ctx: Ctx, principal: Requester
) -> ApprovalOut:
    """Withdraw an open request (the requesting side only)."""
    withdraw_approval(ctx, principal=principal, approval_id=approval_id, reason=body.reason)
    return _view(ctx, approval_id, principal)


@router.get("/approvals", response_model=ApprovalPage)
def approvals_list(
    ctx: Ctx,
    principal: Reader,
    tenant: Annotated[Str | None, Query(max_length=32)] = None,
    stage: Annotated[Str | None, Query(max_length=32)] = None,
    status: Status | None = None,
    run_key: Annotated[Str | None, Query(max_length=200)] = None,
    open: Annotated[bool, Query(description="Only requests still open")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[Str | None, Query(max_length=200)] = None,
) -> ApprovalPage:
    """Approval requests, newest first, filtered; follow `next_cursor` for more."""
    filters = ApprovalFilter(
        tenant=tenant, stage=stage, status=status, run_key=run_key, open_only=open
    )
    now = ctx.clock.now()
    with ctx.read() as session:
        rows, next_cursor = list_approvals(
            session, principal=principal, filters=filters, limit=limit, cursor=cursor, now=now
        )
        items = [
            ApprovalSummary(
                id=row.id,
                status=shown.value,
                run_key=row.run_key,
                tenant=row.tenant,
                stage=row.stage,
                requested_at=row.requested_at,
                expires_at=row.expires_at,
                sla_due_at=row.sla_due_at,
                link=approval_link(ctx, row.id),
            )
            for row, shown in rows
        ]
    return ApprovalPage(items=items, next_cursor=next_cursor)


@router.post(
    "/approval/delegation",
    status_code=201,
    response_model=DelegationOut,
    dependencies=[Depends(json_body)],
)
def approval_delegate(body: DelegateBody, ctx: Ctx, principal: Delegator) -> DelegationOut:
    """Delegate your own approver role for a tenant to another person, for a limited time."""
    grant = delegate_approver_role(
        ctx,
        principal=principal,
        to_login=body.to_login,
        role=Role(body.role),
        tenant=body.tenant,
        until=body.until,
        reason=body.reason,
    )
    return DelegationOut(
        grant_id=grant.id,
        to_login=body.to_login,
        role=grant.role,
        tenant=grant.tenant,
        expires_at=grant.expires_at,
        delegated_from=grant.delegated_from,
    )
