"""Approval requests: ask, sign, withdraw, expire, and delegate an approver role (seed 000 §1.4).

Each function is one action: the state change, its audit entry and its notifications (outbox
rows for the `notify` channel) commit together. The rules themselves are the pure ones of
`domain/approvals.py`; this module gathers what they need from the database at the time of the
action: who requested the change (as people, through provider links), which roles the signer
holds for the tenant right now, and the signatures so far.

A refused signature or withdrawal is a 403 problem naming the rule, and it still leaves a trace:
the refusal is written to the audit trail in a transaction of its own, after the action's own
transaction rolled back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor, Principal
from azdev_ica.auth.roles import Permission, Role
from azdev_ica.auth.secretbox import ADO_CALLBACK_TOKEN, seal
from azdev_ica.db.tables import (
    Approval,
    ApprovalCallback,
    ApprovalSignature,
    PipelineRun,
    RoleGrant,
)
from azdev_ica.domain import approvals as rules
from azdev_ica.domain.approvals import ApprovalStatus, Decision, Half
from azdev_ica.errors import (
    ApprovalRefused,
    Conflict,
    Forbidden,
    NotFound,
    OutOfScope,
    PersonRequired,
    UnknownStage,
    UnknownTenant,
    ValidationProblem,
)
from azdev_ica.services.alerts import check_budget
from azdev_ica.services.audit import append_audit, rfc3339
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.github_reviews import answer_reviews
from azdev_ica.services.idempotency import IdempotencyRequest, find_prior, remember
from azdev_ica.services.outbox import enqueue
from azdev_ica.services.people import active_grants, get_person, person_for_provider_id
from azdev_ica.services.requesters import LINK_PROVIDER, requester_people, run_triggers

NOTIFY_CHANNEL = "notify"
ADO_CALLBACK_CHANNEL = "ado_callback"
ADO_TOKEN_LIFE = timedelta(hours=48)
TOPIC_REQUESTED = "approval.requested"
TOPIC_SIGNED = "approval.signed"  # one half signed, the other half is awaited
TOPIC_DECIDED = "approval.decided"  # approved or rejected
TOPIC_WITHDRAWN = "approval.withdrawn"
TOPIC_EXPIRED = "approval.expired"

APPROVER_ROLES = (Role.APPROVER_TECH, Role.APPROVER_BIZ)
MAX_DELEGATION = timedelta(days=14)
EXPIRY_ACTOR = Actor(kind="system", id="job:approval-expiry")

# The person-link provider of a run's provider (run keys say `gh`, links say `github`).


@dataclass(frozen=True)
class RequestApproval:
    """What a request binds. Unset scope fields default to what the run reported."""

    run_key: str
    tenant: str | None = None
    stage: str | None = None
    artifact_digest: str | None = None
    commit: str | None = None
    cost_impact_minor: int | None = None
    budget_minor: int | None = None
    currency: str | None = None


@dataclass(frozen=True)
class AdoCallback:
    """The headers of an Azure DevOps check in callback mode: where and how to post
    `TaskCompleted` when the approval is decided. `auth_token` is a secret."""

    plan_url: str
    project_id: str
    hub_name: str
    plan_id: str
    job_id: str
    task_instance_id: str
    auth_token: str = field(repr=False)
    timeline_id: str | None = None

    def events_url(self) -> str:
        return ado_events_url(self.plan_url, self.project_id, self.hub_name, self.plan_id)


def ado_events_url(plan_url: str, project_id: str, hub_name: str, plan_id: str) -> str:
    """Azure DevOps' Post Event URL (PlanUrl is System.CollectionUri, with its trailing slash)."""
    base = plan_url if plan_url.endswith("/") else plan_url + "/"
    return (
        f"{base}{project_id}/_apis/distributedtask/hubs/{hub_name}/plans/{plan_id}/events"
        "?api-version=2.0-preview.1"
    )


@dataclass(frozen=True)
class ApprovalOutcome:
    approval: Approval
    created: bool


# --- request ----------------------------------------------------------------------------------


def request_approval(
    ctx: ServiceContext,
    *,
    principal: Principal,
    command: RequestApproval,
    idempotency: IdempotencyRequest | None = None,
    callback: AdoCallback | None = None,
    then: Callable[[Session, Approval], None] | None = None,
) -> ApprovalOutcome:
    """Create the request for a run and a target, or answer with the one that stands: the open
    one, or the last decision (approved or rejected) for the same scope, so that a check asking
    again reads the outcome. `then` runs in the same transaction with the request that stands
    (a GitHub protection rule records itself there: services/github_reviews.py).

    A request whose expiry has passed is closed as expired first, so a new one opens. An open
    request bound to another scope (digest, commit, money) is a conflict: withdraw it first. A
    decision for another scope does not stand for this one: a new request opens.
    """
    money = (command.cost_impact_minor, command.budget_minor)
    if any(value is not None for value in money) and command.currency is None:
        raise ValidationProblem("give the currency (ISO 4217, e.g. NZD) of the cost and budget")

    def action(session: Session) -> ApprovalOutcome:
        outcome = ask(session)
        if callback is not None:
            _register_callback(ctx, session, principal, outcome.approval, callback)
        if then is not None:
            then(session, outcome.approval)
        return outcome

    def ask(session: Session) -> ApprovalOutcome:
        prior = find_prior(session, idempotency)
        if prior is not None:
            return ApprovalOutcome(_get(session, prior.response["approval_id"]), created=False)
        run = session.scalars(
            select(PipelineRun).where(PipelineRun.run_key == command.run_key)
        ).one_or_none()
        # Out of scope answers exactly like absent.
        if run is None or not principal.can_on_run(
            Permission.APPROVAL_REQUEST, run.tenant, run.stage
        ):
            raise NotFound(f"no run {command.run_key!r}")
        tenant, stage = _target(ctx, session, run, command, principal)
        digest = command.artifact_digest or run.artifact_digest
        if run.artifact_digest and digest != run.artifact_digest:
            raise Conflict(
                f"the run built {run.artifact_digest}; an approval cannot bind {digest}",
                run_artifact_digest=run.artifact_digest,
            )
        scope = {
            "artifact_digest": digest,
            "commit": command.commit or run.commit,
            "cost_impact_minor": command.cost_impact_minor,
            "budget_minor": command.budget_minor,
            "currency": command.currency,
        }
        now = ctx.clock.now()
        open_key = f"{run.id}:{tenant}:{stage}"
        existing = session.scalars(
            select(Approval).where(Approval.open_key == open_key).with_for_update()
        ).one_or_none()
        if existing is not None and now >= existing.expires_at:
            _expire(ctx, session, existing, actor=EXPIRY_ACTOR, now=now)
            existing = None
        if existing is not None:
            bound = {name: getattr(existing, name) for name in scope}
            if bound != scope:
                changed = sorted(name for name in scope if bound[name] != scope[name])
                raise Conflict(
                    f"approval {existing.id} is open for this run and target with another "
                    f"{', '.join(changed)}; withdraw it before asking again",
                    approval_id=existing.id,
                )
            remember(session, idempotency, status_code=200, reference=_ref(existing), at=now)
            return ApprovalOutcome(existing, created=False)
        decided = _latest_decision(session, run, tenant, stage)
        if decided is not None and {name: getattr(decided, name) for name in scope} == scope:
            # A check that asks again after the decision reads the decision, not a new request.
            remember(session, idempotency, status_code=200, reference=_ref(decided), at=now)
            return ApprovalOutcome(decided, created=False)

        policy = ctx.policies.active(session)
        approval_policy = policy.approvals
        provider, provider_user_id = _requester_of(run, principal)
        person = (
            person_for_provider_id(session, provider, provider_user_id)
            if provider and provider_user_id
            else None
        )
        row = Approval(
            run_pk=run.id,
            run_key=run.run_key,
            tenant=tenant,
            stage=stage,
            status=ApprovalStatus.PENDING.value,
            open_key=open_key,
            requested_by=principal.id,
            requester_person_id=person.id if person else None,
            requester_provider=provider,
            requester_provider_id=provider_user_id,
            policy_hash=policy.sha256,
            business_first=stage in approval_policy.business_first_stages,
            requested_at=now,
            expires_at=now + timedelta(hours=approval_policy.expiry_hours),
            sla_warning_due_at=now + timedelta(hours=approval_policy.warning_hours),
            sla_due_at=now + timedelta(hours=approval_policy.sla_hours),
            updated_at=now,
            **scope,
        )
        session.add(row)
        session.flush()
        append_audit(
            session,
            actor=principal.actor,
            action="approval.request",
            subject_type="approval",
            subject_id=str(row.id),
            tenant=tenant,
            data={
                "run_key": run.run_key,
                "stage": stage,
                **scope,
                "policy_sha256": policy.sha256,
                "business_first": row.business_first,
                "expires_at": rfc3339(row.expires_at),
                "sla_warning_due_at": rfc3339(row.sla_warning_due_at),
                "sla_due_at": rfc3339(row.sla_due_at),
                "requester_provider": provider,
                "requester_person_id": row.requester_person_id,
            },
            personal={"requester_provider_id": ("provider_user", provider_user_id)},
            at=now,
        )
        _notify(ctx, session, row, TOPIC_REQUESTED, roles=APPROVER_ROLES, at=now)
        # A cost near its budget warns (seed 000 §7.2), once per approval.
        check_budget(ctx, session, policy=policy, approval=row, cost_minor=row.cost_impact_minor,
                     actor=principal.actor, source="approval.request")  # fmt: skip
        remember(session, idempotency, status_code=201, reference=_ref(row), at=now)
        return ApprovalOutcome(row, created=True)

    return ctx.run_action(action)


def _target(
    ctx: ServiceContext,
    session: Session,
    run: PipelineRun,
    command: RequestApproval,
    principal: Principal,
) -> tuple[str, str]:
    """The tenant and stage of the request: named, or the run's; both known to the policy."""
    if run.tenant is not None and command.tenant not in (None, run.tenant):
        raise ValidationProblem(
            f"run {run.run_key} deploys for tenant {run.tenant!r}, not {command.tenant!r}"
        )
    tenant = command.tenant or run.tenant
    stage = command.stage or run.stage
    if tenant is None or stage is None:
        raise ValidationProblem("name the target: the tenant and the stage of the deployment")
    if not principal.can_for(Permission.APPROVAL_REQUEST, tenant):
        raise OutOfScope(f"tenant {tenant!r} is outside the caller's scope")
    if not principal.can_at(Permission.APPROVAL_REQUEST, tenant, stage):
        raise OutOfScope(f"stage {stage!r} is outside the caller's scope")
    policy = ctx.policies.active(session)
    if tenant not in policy.tenants:
        raise UnknownTenant(f"tenant {tenant!r} is not in the active policy")
    if policy.stage(stage) is None:
        raise UnknownStage(f"stage {stage!r} is not in the active policy")
    return tenant, stage


def _latest_decision(
    session: Session, run: PipelineRun, tenant: str, stage: str
) -> Approval | None:
    """The run's last request for the target, when it ended in a decision (approved or
    rejected); a withdrawn or expired one leaves the way open to ask again."""
    latest = session.scalars(
        select(Approval)
        .where(Approval.run_pk == run.id, Approval.tenant == tenant, Approval.stage == stage)
        .order_by(Approval.id.desc())
        .limit(1)
    ).first()
    decisions = (ApprovalStatus.APPROVED.value, ApprovalStatus.REJECTED.value)
    return latest if latest is not None and latest.status in decisions else None


def _requester_of(run: PipelineRun, principal: Principal) -> tuple[str | None, str | None]:
    """Who triggered the run, as (person-link provider, provider user id).

    A signed GitHub token of this very run carries `actor_id`, which beats what the pipeline
    reported; otherwise the run's `requested_for` (Azure `Build.RequestedForId`,
    `GITHUB_ACTOR_ID`) stands (DESIGN.md "Identity and roles").
    """
    actor_id = principal.claim("actor_id")
    if (
        run.provider == "gh"
        and actor_id
        and principal.claim("run_id") == run.run_id
        and principal.claim("repository_id") == run.project_id
    ):
        return "github", actor_id
    if run.requested_for:
        return LINK_PROVIDER.get(run.provider), run.requested_for
    return None, None


# --- sign and withdraw ------------------------------------------------------------------------


def sign_approval(
    ctx: ServiceContext,
    *,
    principal: Principal,
    approval_id: int,
    decision: Decision,
    half: Half | None = None,
    comment: str | None = None,
) -> Approval:
    """Sign one half with approve or reject. `half` may be left out when the signer's roles
    leave only one half to sign. Signing again what one signed already is answered, not
    refused (a retried call)."""

    def action(session: Session) -> Approval:
        row = _visible(session, approval_id, principal, lock=True)
        now = ctx.clock.now()
        state = _state(session, row)
        if principal.is_person and any(
            s.person_id == principal.id and s.decision is decision and half in (None, s.half)
            for s in state.signatures
        ):
            return row
        signer = rules.Signer(
            person_id=principal.id if principal.is_person else None,
            roles=frozenset(
                r.value for r in APPROVER_ROLES if principal.holds(r, row.tenant, row.stage)
            ),
        )
        chosen = half or _half_for(state, signer, decision)
        after = rules.sign(state, signer, chosen, decision, now, comment or "")
        assert principal.person_id is not None  # rules.sign refuses anyone else
        session.add(
            ApprovalSignature(
                approval_id=row.id,
                person_id=principal.person_id,
                half=chosen.value,
                role=chosen.role,
                decision=decision.value,
                comment=comment,
                signed_at=now,
            )
        )
        _finish(ctx, session, row, after.status, now)
        append_audit(
            session,
            actor=principal.actor,
            action="approval.sign",
            subject_type="approval",
            subject_id=str(row.id),
            tenant=row.tenant,
            data={
                "half": chosen.value,
                "role": chosen.role,
                "decision": decision.value,
                "comment": comment,
                "status": row.status,
                "person_id": principal.person_id,
            },
            at=now,
        )
        if after.status.final:
            _notify(ctx, session, row, TOPIC_DECIDED, roles=APPROVER_ROLES, at=now)
        else:
            _notify(ctx, session, row, TOPIC_SIGNED, roles=(Role(chosen.other.role),), at=now)
        return row

    try:
        return ctx.run_action(action)
    except rules.Refused as refused:
        _record_refusal(
            ctx,
            principal,
            approval_id,
            refused,
            attempted="sign",
            extra={"half": half.value if half else None, "decision": decision.value},
        )
        raise ApprovalRefused(refused.message, code=refused.code.value) from None


def _half_for(state: rules.Approval, signer: rules.Signer, decision: Decision) -> Half:
    """The half a signer means when they do not say: the one their roles leave open."""
    held = [h for h in Half if h.role in signer.roles]
    open_halves = [h for h in held if state.signed(h) is None]
    if len(open_halves) == 1:
        return open_halves[0]
    if len(open_halves) == 2:
        if decision is Decision.APPROVE and not state.business_first:
            return Half.TECHNICAL
        raise ValidationProblem("you hold both approver roles: say which half you sign")
    # Nothing open to this signer: let the rules name why (role not held, half signed...).
    return held[0] if held else Half.TECHNICAL


def withdraw_approval(
    ctx: ServiceContext, *, principal: Principal, approval_id: int, reason: str
) -> Approval:
    """Withdraw an open request: only the requester's side (the caller that asked, or the
    person who triggered the run) may."""
    reason = reason.strip()
    if not reason or len(reason) > 1000:
        raise ValidationProblem("give a reason of 1 to 1000 characters")

    def action(session: Session) -> Approval:
        row = _visible(session, approval_id, principal, lock=True)
        now = ctx.clock.now()
        if row.status == ApprovalStatus.WITHDRAWN.value and principal.id in _requesters(
            session, row
        ):
            return row  # a retried withdrawal
        after = rules.withdraw(_state(session, row), principal.id, now)
        _finish(ctx, session, row, after.status, now)
        row.closed_reason = reason
        append_audit(
            session,
            actor=principal.actor,
            action="approval.withdraw",
            subject_type="approval",
            subject_id=str(row.id),
            tenant=row.tenant,
            data={"reason": reason, "status": row.status},
            at=now,
        )
        _notify(ctx, session, row, TOPIC_WITHDRAWN, roles=APPROVER_ROLES, at=now)
        return row

    try:
        return ctx.run_action(action)
    except rules.Refused as refused:
        _record_refusal(ctx, principal, approval_id, refused, attempted="withdraw", extra={})
        raise ApprovalRefused(refused.message, code=refused.code.value) from None


def withdraw_for_finished_run(
    ctx: ServiceContext,
    session: Session,
    *,
    run: PipelineRun,
    run_status: str,
    actor: Actor,
    now: datetime,
) -> list[int]:
    """Withdraw every open request of `run`, which just finished as `run_status` (called by
    `finish_run` inside its transaction). A finished run deploys nothing more, so what it
    asked for is withdrawn: the SLA stops escalating it, a polling pipeline reads a final
    status, and a waiting Azure DevOps check or GitHub review is answered. Returns the ids."""
    withdrawn: list[int] = []
    reason = f"run {run.run_key} finished: {run_status}"
    open_rows = session.scalars(
        select(Approval)
        .where(Approval.run_pk == run.id, Approval.open_key.is_not(None))
        .order_by(Approval.id)
        .with_for_update()
    ).all()
    for row in open_rows:
        _finish(ctx, session, row, ApprovalStatus.WITHDRAWN, now)
        row.closed_reason = reason
        append_audit(
            session,
            actor=actor,
            action="approval.withdraw",
            subject_type="approval",
            subject_id=str(row.id),
            tenant=row.tenant,
            data={"reason": reason, "status": row.status, "run_status": run_status},
            at=now,
        )
        _notify(ctx, session, row, TOPIC_WITHDRAWN, roles=APPROVER_ROLES, at=now)
        withdrawn.append(row.id)
    return withdrawn


# --- expiry -----------------------------------------------------------------------------------


def expire_due(ctx: ServiceContext, *, limit: int = 500) -> list[int]:
    """Close every open request whose `expires_at` has passed; return their ids. Each closes in
    its own transaction (safe with several processes: a row already closed is skipped)."""
    now = ctx.clock.now()
    with ctx.read() as session:
        due = list(
            session.scalars(
                select(Approval.id)
                .where(Approval.open_key.is_not(None), Approval.expires_at <= now)
                .order_by(Approval.expires_at, Approval.id)
                .limit(limit)
            )
        )
    closed: list[int] = []
    for approval_id in due:

        def action(session: Session, approval_id: int = approval_id) -> bool:
            row = session.scalars(
                select(Approval).where(Approval.id == approval_id).with_for_update()
            ).one()
            at = ctx.clock.now()
            if row.open_key is None or at < row.expires_at:
                return False
            _expire(ctx, session, row, actor=EXPIRY_ACTOR, now=at)
            return True

        if ctx.run_action(action):
            closed.append(approval_id)
    return closed


def _expire(
    ctx: ServiceContext, session: Session, row: Approval, *, actor: Actor, now: datetime
) -> None:
    _finish(ctx, session, row, ApprovalStatus.EXPIRED, now)
    row.closed_reason = "expired"
    append_audit(
        session,
        actor=actor,
        action="approval.expire",
        subject_type="approval",
        subject_id=str(row.id),
        tenant=row.tenant,
        data={"expires_at": rfc3339(row.expires_at), "status": row.status},
        at=now,
    )
    _notify(ctx, session, row, TOPIC_EXPIRED, roles=APPROVER_ROLES, at=now)


# --- delegation -------------------------------------------------------------------------------


def delegate_approver_role(
    ctx: ServiceContext,
    *,
    principal: Principal,
    to_login: str,
    role: Role,
    tenant: str,
    until: datetime,
    reason: str,
) -> RoleGrant:
    """Hand one's own approver role for a tenant to another person until `until` (at most
    MAX_DELEGATION ahead, never past one's own grant). A delegated grant is not delegated on."""
    if role not in APPROVER_ROLES:
        raise ValidationProblem("only the approver roles are delegated")
    reason = reason.strip()
    if not reason or len(reason) > 1000:
        raise ValidationProblem("give a reason of 1 to 1000 characters")
    now = ctx.clock.now()
    if not now < until <= now + MAX_DELEGATION:
        raise ValidationProblem(
            f"a delegation ends in the future, within {MAX_DELEGATION.days} days"
        )
    if not principal.is_person or principal.person_id is None:
        raise PersonRequired("a person delegates their own role; a key or a pipeline has none")
    delegator_id = principal.person_id

    def action(session: Session) -> RoleGrant:
        own = [
            grant
            for grant in active_grants(session, delegator_id, now)
            if grant.role == role.value
            and grant.tenant in (None, tenant)
            and grant.delegated_from is None
        ]
        if not own:
            raise Forbidden(f"you hold no {role.value} grant of your own for {tenant!r}")
        source = max(own, key=lambda g: (g.expires_at is None, g.expires_at or now))
        if source.expires_at is not None and until > source.expires_at:
            raise ValidationProblem(
                f"your own grant ends at {rfc3339(source.expires_at)}; delegate until then"
            )
        delegate = get_person(session, to_login)
        if delegate.id == delegator_id:
            raise ValidationProblem("delegate to someone else")
        if delegate.disabled_at is not None:
            raise Conflict(f"{delegate.login!r} is disabled")
        row = RoleGrant(
            person_id=delegate.id,
            role=role.value,
            tenant=tenant,
            granted_at=now,
            granted_by=principal.id,
            expires_at=until,
            delegated_from=source.id,
            reason=reason,
            # A delegation reaches no further than the delegator's own grant.
            stages=source.stages,
        )
        session.add(row)
        session.flush()
        append_audit(
            session,
            actor=principal.actor,
            action="grant.delegate",
            subject_type="person",
            subject_id=str(delegate.id),
            tenant=tenant,
            data={
                "grant": row.id,
                "role": role.value,
                "tenant": tenant,
                "expires_at": rfc3339(until),
                "reason": reason,
                "delegated_from": source.id,
                **({"stages": source.stages} if source.stages is not None else {}),
            },
            at=now,
        )
        return row

    return ctx.run_action(action)


# --- shared -----------------------------------------------------------------------------------


def _get(session: Session, approval_id: int) -> Approval:
    row = session.get(Approval, approval_id)
    if row is None:
        raise NotFound(f"no approval {approval_id}")
    return row


def _visible(session: Session, approval_id: int, principal: Principal, *, lock: bool) -> Approval:
    query = select(Approval).where(Approval.id == approval_id)
    row = session.scalars(query.with_for_update() if lock else query).one_or_none()
    # Out of scope answers exactly like absent.
    if row is None or not principal.can_for(Permission.APPROVAL_READ, row.tenant):
        raise NotFound(f"no approval {approval_id}")
    return row


def _requesters(session: Session, row: Approval) -> frozenset[str]:
    """Whoever is on the requesting side, as principal ids: the caller that asked, the person
    who triggered the run (linked now or when asked), and whoever triggered any attempt of the
    run (a re-run started by someone else, before or after the request). None of them ever
    signs."""
    ids = {row.requested_by}
    if row.requester_person_id is not None:
        ids.add(f"person:{row.requester_person_id}")
    run = session.get(PipelineRun, row.run_pk)
    triggers = run_triggers(session, run) if run is not None else set()
    if row.requester_provider and row.requester_provider_id:
        triggers.add((row.requester_provider, row.requester_provider_id))
    ids.update(f"person:{person_id}" for person_id in requester_people(session, triggers))
    return frozenset(ids)


def signatures_of(session: Session, approval_id: int) -> list[ApprovalSignature]:
    return list(
        session.scalars(
            select(ApprovalSignature)
            .where(ApprovalSignature.approval_id == approval_id)
            .order_by(ApprovalSignature.id)
        )
    )


def _state(session: Session, row: Approval) -> rules.Approval:
    return rules.Approval(
        requesters=_requesters(session, row),
        expires_at=row.expires_at,
        business_first=row.business_first,
        status=ApprovalStatus(row.status),
        signatures=tuple(
            rules.Signature(
                person_id=f"person:{s.person_id}",
                half=Half(s.half),
                decision=Decision(s.decision),
                at=s.signed_at,
                comment=s.comment or "",
            )
            for s in signatures_of(session, row.id)
        ),
    )


def _finish(
    ctx: ServiceContext, session: Session, row: Approval, status: ApprovalStatus, now: datetime
) -> None:
    """Move to `status`; a final one closes the request and calls waiting checks back."""
    row.status = status.value
    row.updated_at = now
    if status.final:
        row.decided_at = now
        row.open_key = None
        for waiting in session.scalars(
            select(ApprovalCallback).where(
                ApprovalCallback.approval_id == row.id, ApprovalCallback.notified_at.is_(None)
            )
        ):
            _call_back(session, row, waiting, now)
        answer_reviews(session, row, link=approval_link(ctx, row.id), now=now)


def _register_callback(
    ctx: ServiceContext,
    session: Session,
    principal: Principal,
    row: Approval,
    callback: AdoCallback,
) -> None:
    """Keep the check's callback (its token sealed); answer it at once if already decided."""
    existing = session.scalars(
        select(ApprovalCallback).where(
            ApprovalCallback.approval_id == row.id,
            ApprovalCallback.plan_id == callback.plan_id,
            ApprovalCallback.job_id == callback.job_id,
            ApprovalCallback.task_instance_id == callback.task_instance_id,
        )
    ).one_or_none()
    if existing is not None:
        return
    now = ctx.clock.now()
    waiting = ApprovalCallback(
        approval_id=row.id,
        plan_url=callback.plan_url,
        project_id=callback.project_id,
        hub_name=callback.hub_name,
        plan_id=callback.plan_id,
        job_id=callback.job_id,
        timeline_id=callback.timeline_id,
        task_instance_id=callback.task_instance_id,
        token_sealed=seal(ctx.pepper, ADO_CALLBACK_TOKEN, callback.auth_token),
        created_at=now,
        token_expires_at=now + ADO_TOKEN_LIFE,
    )
    session.add(waiting)
    session.flush()
    append_audit(
        session,
        actor=principal.actor,
        action="approval.callback",
        subject_type="approval",
        subject_id=str(row.id),
        tenant=row.tenant,
        # Where the answer goes, never the token.
        data={
            "callback": waiting.id,
            "hub_name": callback.hub_name,
            "plan_id": callback.plan_id,
            "job_id": callback.job_id,
            "task_instance_id": callback.task_instance_id,
        },
        at=now,
    )
    if ApprovalStatus(row.status).final:
        _call_back(session, row, waiting, now)


def _call_back(session: Session, row: Approval, waiting: ApprovalCallback, now: datetime) -> None:
    waiting.notified_at = now
    enqueue(
        session,
        topic="approval.callback",
        channel=ADO_CALLBACK_CHANNEL,
        subject_type="approval",
        subject_id=str(row.id),
        tenant=row.tenant,
        payload={
            "approval_id": row.id,
            "callback_id": waiting.id,
            "status": row.status,
            "url": ado_events_url(
                waiting.plan_url, waiting.project_id, waiting.hub_name, waiting.plan_id
            ),
            "task_id": waiting.task_instance_id,
            "job_id": waiting.job_id,
            "result": "succeeded" if row.status == ApprovalStatus.APPROVED.value else "failed",
            "token_sealed": waiting.token_sealed,
        },
        at=now,
    )


def forget_callback_token(session: Session, payload: dict[str, Any]) -> None:
    """Delete the sealed AuthToken of the check a delivered callback answered (called by the
    delivery job in the transaction that records the delivery). Rows queued before the
    payload named its callback are found by approval, job and task."""
    where = (
        [ApprovalCallback.id == int(payload["callback_id"])]
        if "callback_id" in payload
        else [
            ApprovalCallback.approval_id == int(payload["approval_id"]),
            ApprovalCallback.job_id == str(payload["job_id"]),
            ApprovalCallback.task_instance_id == str(payload["task_id"]),
        ]
    )
    session.execute(update(ApprovalCallback).where(*where).values(token_sealed=None))


def _ref(row: Approval) -> dict[str, Any]:
    return {"approval_id": row.id}


def approval_link(ctx: ServiceContext, approval_id: int) -> str:
    """The page a person opens to read and sign the request."""
    return f"{ctx.public_url.rstrip('/')}/approvals/{approval_id}"


def _notify(
    ctx: ServiceContext,
    session: Session,
    row: Approval,
    topic: str,
    *,
    roles: tuple[Role, ...],
    at: datetime,
) -> None:
    enqueue(
        session,
        topic=topic,
        channel=NOTIFY_CHANNEL,
        subject_type="approval",
        subject_id=str(row.id),
        tenant=row.tenant,
        payload={
            "topic": topic,
            "tenant": row.tenant,
            "stage": row.stage,
            "approval_id": row.id,
            "run_key": row.run_key,
            "status": row.status,
            "link": approval_link(ctx, row.id),
            "roles": [role.value for role in roles],
            "expires_at": rfc3339(row.expires_at),
            "sla_due_at": rfc3339(row.sla_due_at),
        },
        at=at,
    )


def _record_refusal(
    ctx: ServiceContext,
    principal: Principal,
    approval_id: int,
    refused: rules.Refused,
    *,
    attempted: str,
    extra: dict[str, Any],
) -> None:
    """The refusal's own audit entry: the refused action rolled back, its trace does not."""

    def action(session: Session) -> None:
        row = _get(session, approval_id)
        append_audit(
            session,
            actor=principal.actor,
            action="approval.refuse",
            subject_type="approval",
            subject_id=str(row.id),
            tenant=row.tenant,
            data={"attempted": attempted, "code": refused.code.value, **extra},
            at=ctx.clock.now(),
        )

    ctx.run_action(action)


@dataclass(frozen=True)
class SignOptions:
    """What a person may sign on a request now, or the rule that stops them, in words."""

    halves: list[Half]
    refusal: str | None


_REFUSAL_ORDER = (
    rules.RefusalCode.EXPIRED,
    rules.RefusalCode.DECIDED,
    rules.RefusalCode.REQUESTER_SIGNS,
    rules.RefusalCode.SAME_PERSON_BOTH_HALVES,
    rules.RefusalCode.TECHNICAL_FIRST,
    rules.RefusalCode.HALF_ALREADY_SIGNED,
    rules.RefusalCode.ROLE_NOT_HELD,
    rules.RefusalCode.NOT_A_PERSON,
)


def sign_options(
    session: Session, *, row: Approval, principal: Principal, now: datetime
) -> SignOptions:
    """The halves `principal` may sign now (approve or reject), by the same rules signing
    applies, else the refusal that signing would answer; read-only (the console's "waiting
    for me" and its sign form)."""
    if not principal.is_person or not principal.can_for(Permission.APPROVAL_SIGN, row.tenant):
        return SignOptions([], None)
    state = _state(session, row)
    signer = rules.Signer(
        person_id=principal.id,
        roles=frozenset(r.value for r in APPROVER_ROLES if principal.holds(r, row.tenant)),
    )
    open_halves: list[Half] = []
    refusals: list[rules.Refused] = []
    for half in Half:
        for decision in (Decision.APPROVE, Decision.REJECT):
            try:
                rules.sign(state, signer, half, decision, now)
            except rules.Refused as refused:
                refusals.append(refused)
                continue
            open_halves.append(half)
            break
    if open_halves:
        return SignOptions(open_halves, None)
    refusals.sort(key=lambda r: _REFUSAL_ORDER.index(r.code) if r.code in _REFUSAL_ORDER else 99)
    return SignOptions([], refusals[0].message if refusals else None)
