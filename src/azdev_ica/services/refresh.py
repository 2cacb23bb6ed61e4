"""Data refresh requests (seed 002 cross-environment policy): copying a tenant's production
data into a lower stage of the same tenant.

A request names the target stage and carries the evidence of the masking run (checksum,
where it is kept, what it did). A person holding the approver role the policy names
(`promotion.refresh_approver_role`, default `azdev_approver_tech`) for that tenant, who is
not the requester, approves or rejects it; the requesting side then marks it completed.
States: requested -> approved | rejected; approved -> completed. Nothing crosses tenants:
the copy stays inside one tenant, and a scoped caller sees only its tenants' requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission, Role
from azdev_ica.db.tables import RefreshRequest
from azdev_ica.errors import (
    Conflict,
    NotFound,
    OutOfScope,
    PersonRequired,
    RefreshRefused,
    UnknownStage,
    UnknownTenant,
    ValidationProblem,
)
from azdev_ica.policy.promotion import DEFAULT_REFRESH_APPROVER
from azdev_ica.services.audit import append_audit
from azdev_ica.services.context import ServiceContext


class RefreshStatus(StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    COMPLETED = "completed"


@dataclass(frozen=True)
class RequestRefresh:
    tenant: str
    target_stage: str
    reason: str
    evidence_sha256: str
    evidence_uri: str
    evidence_description: str


def request_refresh(
    ctx: ServiceContext, *, principal: Principal, command: RequestRefresh
) -> RefreshRequest:
    if not principal.can_for(Permission.REFRESH_REQUEST, command.tenant):
        raise OutOfScope(f"tenant {command.tenant!r} is outside the caller's scope")
    if not principal.can_at(Permission.REFRESH_REQUEST, command.tenant, command.target_stage):
        raise OutOfScope(f"stage {command.target_stage!r} is outside the caller's scope")

    def action(session: Session) -> RefreshRequest:
        policy = ctx.policies.active(session)
        if command.tenant not in policy.tenants:
            raise UnknownTenant(f"tenant {command.tenant!r} is not in the active policy")
        target = policy.stage(command.target_stage)
        if target is None:
            raise UnknownStage(f"stage {command.target_stage!r} is not in the active policy")
        if target.production:
            raise ValidationProblem(
                f"{command.target_stage} serves real users: a refresh copies production data "
                "into a lower (non-production) stage"
            )
        source = next((stage.name for stage in policy.stages if stage.production), "production")
        now = ctx.clock.now()
        row = RefreshRequest(
            tenant=command.tenant,
            source_stage=source,
            target_stage=command.target_stage,
            reason=command.reason,
            evidence_sha256=command.evidence_sha256,
            evidence_uri=command.evidence_uri,
            evidence_description=command.evidence_description,
            status=RefreshStatus.REQUESTED.value,
            requested_by=principal.id,
            requested_at=now,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        append_audit(
            session,
            actor=principal.actor,
            action="refresh.request",
            subject_type="refresh",
            subject_id=str(row.id),
            tenant=command.tenant,
            data={
                "source_stage": source,
                "target_stage": command.target_stage,
                "reason": command.reason,
                "evidence": {
                    "sha256": command.evidence_sha256,
                    "uri": command.evidence_uri,
                    "description": command.evidence_description,
                },
                "policy_sha256": policy.sha256,
            },
            at=now,
        )
        return row

    return ctx.run_action(action)


def _visible(
    session: Session, principal: Principal, request_id: int, *, lock: bool = False
) -> RefreshRequest:
    query = select(RefreshRequest).where(RefreshRequest.id == request_id)
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    # Out of scope answers exactly like absent.
    if row is None or not principal.in_scope(row.tenant):
        raise NotFound(f"no refresh request {request_id}")
    return row


def decide_refresh(
    ctx: ServiceContext,
    *,
    principal: Principal,
    request_id: int,
    approve: bool,
    comment: str | None = None,
) -> RefreshRequest:
    """Approve or reject a requested refresh (a person with the approver role, not the
    requester). Deciding again the same way is answered with the recorded decision."""
    if not principal.is_person:
        raise PersonRequired("only a person approves a data refresh")
    decision = RefreshStatus.APPROVED if approve else RefreshStatus.REJECTED

    def action(session: Session) -> RefreshRequest:
        row = _visible(session, principal, request_id, lock=True)
        if row.status == decision.value and row.decided_by == principal.id:
            return row
        if row.status != RefreshStatus.REQUESTED.value:
            raise Conflict(f"refresh request {row.id} is {row.status}, not requested")
        policy = ctx.policies.active(session)
        role_name = (
            policy.promotion.refresh_approver_role if policy.promotion else DEFAULT_REFRESH_APPROVER
        )
        role = Role(role_name)
        if not principal.holds(role, row.tenant, row.target_stage):
            raise RefreshRefused(
                f"approving a data refresh for {row.tenant} needs the {role.value} role "
                "for that tenant",
                code="role_not_held",
            )
        if row.requested_by == principal.id:
            raise RefreshRefused(
                "the requester never approves their own data refresh",
                code="requester_cannot_approve",
            )
        now = ctx.clock.now()
        row.status = decision.value
        row.decided_by = principal.id
        row.decided_at = now
        row.decision_comment = comment
        row.updated_at = now
        append_audit(
            session,
            actor=principal.actor,
            action="refresh.decide",
            subject_type="refresh",
            subject_id=str(row.id),
            tenant=row.tenant,
            data={
                "decision": decision.value,
                "role": role.value,
                "comment": comment,
                "policy_sha256": policy.sha256,
            },
            at=now,
        )
        return row

    return ctx.run_action(action)


def complete_refresh(
    ctx: ServiceContext, *, principal: Principal, request_id: int
) -> RefreshRequest:
    """Mark an approved refresh as done (the copy was made); again: answered, not refused."""

    def action(session: Session) -> RefreshRequest:
        row = _visible(session, principal, request_id, lock=True)
        if not principal.can_at(Permission.REFRESH_REQUEST, row.tenant, row.target_stage):
            raise NotFound(f"no refresh request {request_id}")
        if row.status == RefreshStatus.COMPLETED.value:
            return row
        if row.status != RefreshStatus.APPROVED.value:
            raise Conflict(
                f"refresh request {row.id} is {row.status}: only an approved refresh is done"
            )
        now = ctx.clock.now()
        row.status = RefreshStatus.COMPLETED.value
        row.completed_by = principal.id
        row.completed_at = now
        row.updated_at = now
        append_audit(
            session,
            actor=principal.actor,
            action="refresh.complete",
            subject_type="refresh",
            subject_id=str(row.id),
            tenant=row.tenant,
            data={"target_stage": row.target_stage},
            at=now,
        )
        return row

    return ctx.run_action(action)


def list_refreshes(
    session: Session, *, principal: Principal, tenant: str | None = None, status: str | None = None
) -> list[RefreshRequest]:
    query = select(RefreshRequest)
    scope = principal.scope(Permission.REFRESH_READ)
    if scope is not None:
        query = query.where(RefreshRequest.tenant.in_(sorted(scope)))
    if tenant is not None:
        query = query.where(RefreshRequest.tenant == tenant)
    if status is not None:
        query = query.where(RefreshRequest.status == status)
    return list(session.scalars(query.order_by(RefreshRequest.id)))
