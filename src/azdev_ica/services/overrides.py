"""Emergency overrides (seed 000 §1.2, §1.5, §7.1): the governed way past the gate.

There is no skip flag. An override is a request with a reason for one run and one target,
signed by a person holding `azdev_override_signer` for the tenant (two different people when
the policy asks). Once signed, the gate answers `allow` with reason code `override` (the
lock still applies). Signing alerts at once and opens a mandatory review after the fact,
due `review_hours` later; a review still open when due escalates (`review_due`, called by
the scheduler). Signed overrides are counted per quarter against the policy's target.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor, Principal
from azdev_ica.auth.roles import Permission, Role
from azdev_ica.db.tables import Override, OverrideSignature, PipelineRun
from azdev_ica.errors import (
    NotFound,
    OutOfScope,
    OverrideRefused,
    PersonRequired,
    UnknownStage,
    UnknownTenant,
    ValidationProblem,
)
from azdev_ica.services.audit import append_audit, rfc3339
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.outbox import enqueue
from azdev_ica.services.requesters import run_requester_people

PENDING, SIGNED, REJECTED = "pending", "signed", "rejected"
REVIEW_ACTOR = Actor(kind="system", id="job:override-review")


@dataclass(frozen=True)
class OverrideOutcome:
    override: Override
    created: bool


def _reason(text: str, what: str = "reason") -> str:
    text = text.strip()
    if not text or len(text) > 2000:
        raise ValidationProblem(f"give a {what} of 1 to 2000 characters")
    return text


def request_override(
    ctx: ServiceContext,
    *,
    principal: Principal,
    run_key: str,
    reason: str,
    tenant: str | None = None,
    stage: str | None = None,
) -> OverrideOutcome:
    """Ask for an emergency override of the gate for a run and a target; asking again while
    one is open (pending or signed) answers with it."""
    reason = _reason(reason)

    def action(session: Session) -> OverrideOutcome:
        # Locking the run serialises two requests for it: one override, never two.
        run = session.scalars(
            select(PipelineRun).where(PipelineRun.run_key == run_key).with_for_update()
        ).one_or_none()
        if run is None or not principal.can_on_run(
            Permission.OVERRIDE_REQUEST, run.tenant, run.stage
        ):
            raise NotFound(f"no run {run_key!r}")
        target_tenant = tenant or run.tenant
        target_stage = stage or run.stage
        if target_tenant is None or target_stage is None:
            raise ValidationProblem("name the target: the tenant and the stage of the deployment")
        if not principal.can_for(Permission.OVERRIDE_REQUEST, target_tenant):
            raise OutOfScope(f"tenant {target_tenant!r} is outside the caller's scope")
        if not principal.can_at(Permission.OVERRIDE_REQUEST, target_tenant, target_stage):
            raise OutOfScope(f"stage {target_stage!r} is outside the caller's scope")
        policy = ctx.policies.active(session)
        if target_tenant not in policy.tenants:
            raise UnknownTenant(f"tenant {target_tenant!r} is not in the active policy")
        if policy.stage(target_stage) is None:
            raise UnknownStage(f"stage {target_stage!r} is not in the active policy")
        existing = session.scalars(
            select(Override).where(
                Override.run_pk == run.id,
                Override.tenant == target_tenant,
                Override.stage == target_stage,
                Override.status.in_((PENDING, SIGNED)),
            )
        ).first()
        if existing is not None:
            return OverrideOutcome(existing, created=False)
        now = ctx.clock.now()
        row = Override(
            run_pk=run.id,
            run_key=run.run_key,
            tenant=target_tenant,
            stage=target_stage,
            artifact_digest=run.artifact_digest,
            reason=reason,
            status=PENDING,
            signatures_required=policy.gates.override_signatures,
            requested_by=principal.id,
            requested_at=now,
            policy_hash=policy.sha256,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        append_audit(
            session,
            actor=principal.actor,
            action="override.request",
            subject_type="override",
            subject_id=str(row.id),
            tenant=target_tenant,
            data={
                "run_key": run.run_key,
                "stage": target_stage,
                "artifact_digest": row.artifact_digest,
                "reason": reason,
                "signatures_required": row.signatures_required,
                "policy_sha256": policy.sha256,
            },
            at=now,
        )
        _notify(ctx, session, row, "override.requested", [Role.OVERRIDE_SIGNER], now, "warning")
        return OverrideOutcome(row, created=True)

    return ctx.run_action(action)


def sign_override(
    ctx: ServiceContext,
    *,
    principal: Principal,
    override_id: int,
    approve: bool,
    comment: str | None = None,
) -> Override:
    """An override signer signs (approve or reject). The requester's side never signs, and
    one person signs once; with the signatures the policy asks for, the override is signed."""
    if not principal.is_person or principal.person_id is None:
        raise PersonRequired("an override is signed by a person, never by a key or a pipeline")
    person_id = principal.person_id

    def action(session: Session) -> Override:
        row = _visible(session, override_id, principal, lock=True)
        now = ctx.clock.now()
        if not principal.holds(Role.OVERRIDE_SIGNER, row.tenant, row.stage):
            raise OverrideRefused(
                f"signing needs the azdev_override_signer role for {row.tenant!r}",
                code="role_not_held",
            )
        if principal.id in _requesters(session, row):
            raise OverrideRefused(
                "the requester's side never signs its own override", code="requester_cannot_sign"
            )
        signatures = _signatures(session, row.id)
        if any(s.person_id == person_id for s in signatures):
            raise OverrideRefused("you have signed this override already", code="already_signed")
        if row.status != PENDING:
            raise OverrideRefused(f"the override is {row.status}", code="override_closed")
        decision = "approve" if approve else "reject"
        session.add(
            OverrideSignature(
                override_id=row.id,
                person_id=person_id,
                decision=decision,
                comment=comment,
                signed_at=now,
            )
        )
        approvals = 1 + sum(1 for s in signatures if s.decision == "approve")
        if not approve:
            row.status = REJECTED
        elif approvals >= row.signatures_required:
            row.status = SIGNED
            row.signed_at = now
            policy = ctx.policies.active(session)
            row.review_due_at = now + policy.gates.override_review
        row.updated_at = now
        append_audit(
            session,
            actor=principal.actor,
            action="override.sign",
            subject_type="override",
            subject_id=str(row.id),
            tenant=row.tenant,
            data={
                "decision": decision,
                "comment": comment,
                "person_id": person_id,
                "status": row.status,
                "review_due_at": rfc3339(row.review_due_at) if row.review_due_at else None,
            },
            at=now,
        )
        if row.status == SIGNED:
            # Alert at once: an override is an exception everyone accountable must see.
            roles = [Role.ADMIN, Role.AUDITOR, Role.ESCALATION, Role.OVERRIDE_SIGNER]
            _notify(ctx, session, row, "override.signed", roles, now, "critical")
        elif row.status == REJECTED:
            _notify(ctx, session, row, "override.rejected", [Role.DEVOPS], now, "info")
        return row

    try:
        return ctx.run_action(action)
    except OverrideRefused as refused:
        _record_refusal(ctx, principal, override_id, refused, attempted="sign")
        raise


def review_override(
    ctx: ServiceContext, *, principal: Principal, override_id: int, findings: str
) -> Override:
    """Close the mandatory after-the-fact review of a signed override with findings. The
    reviewer is an override signer (or administrator) who neither asked for nor signed it."""
    findings = _reason(findings, "finding")
    if not principal.is_person or principal.person_id is None:
        raise PersonRequired("a review is a person's, never a key's or a pipeline's")
    person_id = principal.person_id

    def action(session: Session) -> Override:
        row = _visible(session, override_id, principal, lock=True)
        now = ctx.clock.now()
        if not principal.can_at(Permission.OVERRIDE_SIGN, row.tenant, row.stage):
            raise OutOfScope(f"the target {row.tenant}/{row.stage} is outside the caller's scope")
        if row.status != SIGNED:
            raise OverrideRefused("only a signed override is reviewed", code="not_signed")
        if row.reviewed_at is not None:
            if row.reviewed_by == person_id and row.review_findings == findings:
                return row  # a retried review
            raise OverrideRefused("the override was reviewed already", code="override_closed")
        signers = {s.person_id for s in _signatures(session, row.id)}
        if person_id in signers or principal.id in _requesters(session, row):
            raise OverrideRefused(
                "the review is independent: not by a signer or the requester",
                code="signer_cannot_review",
            )
        row.reviewed_at = now
        row.reviewed_by = person_id
        row.review_findings = findings
        row.updated_at = now
        append_audit(
            session,
            actor=principal.actor,
            action="override.review",
            subject_type="override",
            subject_id=str(row.id),
            tenant=row.tenant,
            data={
                "findings": findings,
                "person_id": person_id,
                "late": row.review_due_at is not None and now > row.review_due_at,
            },
            at=now,
        )
        return row

    try:
        return ctx.run_action(action)
    except OverrideRefused as refused:
        _record_refusal(ctx, principal, override_id, refused, attempted="review")
        raise


def review_due(ctx: ServiceContext, *, limit: int = 500) -> list[int]:
    """Escalate every signed override whose review is overdue (once each); return their ids.
    Safe with several processes: each escalates in its own transaction, re-checked there."""
    now = ctx.clock.now()
    with ctx.read() as session:
        due = list(
            session.scalars(
                select(Override.id)
                .where(
                    Override.status == SIGNED,
                    Override.reviewed_at.is_(None),
                    Override.review_escalated_at.is_(None),
                    Override.review_due_at <= now,
                )
                .order_by(Override.review_due_at, Override.id)
                .limit(limit)
            )
        )
    escalated: list[int] = []
    for override_id in due:

        def action(session: Session, override_id: int = override_id) -> bool:
            row = session.scalars(
                select(Override).where(Override.id == override_id).with_for_update()
            ).one()
            at = ctx.clock.now()
            if row.reviewed_at is not None or row.review_escalated_at is not None:
                return False
            row.review_escalated_at = at
            row.updated_at = at
            append_audit(
                session,
                actor=REVIEW_ACTOR,
                action="override.review_escalate",
                subject_type="override",
                subject_id=str(row.id),
                tenant=row.tenant,
                data={"review_due_at": rfc3339(row.review_due_at) if row.review_due_at else None},
                at=at,
            )
            roles = [Role.ESCALATION, Role.ADMIN]
            _notify(ctx, session, row, "override.review_overdue", roles, at, "critical")
            return True

        if ctx.run_action(action):
            escalated.append(override_id)
    return escalated


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverrideView:
    override: Override
    signatures: list[OverrideSignature]


def get_override(session: Session, *, override_id: int, principal: Principal) -> OverrideView:
    row = _visible(session, override_id, principal, lock=False)
    return OverrideView(row, _signatures(session, row.id))


def quarter_of(at: datetime) -> str:
    at = at.astimezone(UTC)
    return f"{at.year}-Q{(at.month - 1) // 3 + 1}"


@dataclass(frozen=True)
class QuarterCount:
    quarter: str
    total: int
    by_tenant: dict[str, int]


def override_stats(
    session: Session, *, principal: Principal, now: datetime
) -> tuple[list[QuarterCount], int]:
    """Signed overrides per quarter (UTC) and tenant in the caller's scope, the current
    quarter always included; and how many signed overrides still await their review."""
    scope = principal.scope(Permission.APPROVAL_READ)
    signed = select(Override.tenant, Override.signed_at).where(Override.status == SIGNED)
    unreviewed = (
        select(func.count())
        .select_from(Override)
        .where(Override.status == SIGNED, Override.reviewed_at.is_(None))
    )
    if scope is not None:
        signed = signed.where(Override.tenant.in_(sorted(scope)))
        unreviewed = unreviewed.where(Override.tenant.in_(sorted(scope)))
    counts: dict[str, dict[str, int]] = {quarter_of(now): {}}
    for tenant, signed_at in session.execute(signed):
        if signed_at is None:
            continue
        by_tenant = counts.setdefault(quarter_of(signed_at), {})
        by_tenant[tenant] = by_tenant.get(tenant, 0) + 1
    quarters = [
        QuarterCount(quarter, sum(by_tenant.values()), dict(sorted(by_tenant.items())))
        for quarter, by_tenant in sorted(counts.items(), reverse=True)
    ]
    return quarters, int(session.scalar(unreviewed) or 0)


# --- shared -------------------------------------------------------------------------------------


def _visible(session: Session, override_id: int, principal: Principal, *, lock: bool) -> Override:
    query = select(Override).where(Override.id == override_id)
    row = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if row is None or not principal.in_scope(row.tenant):
        raise NotFound(f"no override {override_id}")
    return row


def _signatures(session: Session, override_id: int) -> list[OverrideSignature]:
    return list(
        session.scalars(
            select(OverrideSignature)
            .where(OverrideSignature.override_id == override_id)
            .order_by(OverrideSignature.id)
        )
    )


def _requesters(session: Session, row: Override) -> frozenset[str]:
    """The requesting side as principal ids: who asked, and everyone who triggered any attempt
    of the run (a re-run started by someone else included)."""
    ids = {row.requested_by}
    run = session.get(PipelineRun, row.run_pk)
    if run is not None:
        ids.update(f"person:{person_id}" for person_id in run_requester_people(session, run))
    return frozenset(ids)


def override_link(ctx: ServiceContext, override_id: int) -> str:
    return f"{ctx.public_url.rstrip('/')}/overrides/{override_id}"


def _notify(
    ctx: ServiceContext,
    session: Session,
    row: Override,
    topic: str,
    roles: list[Role],
    at: datetime,
    severity: str,
) -> None:
    enqueue(
        session,
        topic=topic,
        channel="notify",
        subject_type="override",
        subject_id=str(row.id),
        tenant=row.tenant,
        payload={
            "topic": topic,
            "severity": severity,
            "tenant": row.tenant,
            "stage": row.stage,
            "override_id": row.id,
            "run_key": row.run_key,
            "status": row.status,
            "reason": row.reason,
            "roles": [role.value for role in roles],
            "link": override_link(ctx, row.id),
            "review_due_at": rfc3339(row.review_due_at) if row.review_due_at else None,
        },
        at=at,
    )


def _record_refusal(
    ctx: ServiceContext,
    principal: Principal,
    override_id: int,
    refused: OverrideRefused,
    *,
    attempted: str,
) -> None:
    """The refusal's own audit entry: the refused action rolled back, its trace does not."""

    def action(session: Session) -> None:
        row = _visible(session, override_id, principal, lock=False)
        append_audit(
            session,
            actor=principal.actor,
            action="override.refuse",
            subject_type="override",
            subject_id=str(row.id),
            tenant=row.tenant,
            data={"attempted": attempted, "code": refused.extensions.get("code")},
            at=ctx.clock.now(),
        )

    ctx.run_action(action)
