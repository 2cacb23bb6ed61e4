"""The deployment gate: allow, deny or pending for one run and one target (seed 000 §5.1).

One evaluation is one transaction: gather the facts (the run, its `test` and `scan` events,
its approval for the target, a signed emergency override, the target's window), let the pure
rules of `domain/gates.py` decide, deal with the target's lock (`services/locks.py`: an allow
takes it, a held lock answers pending), and record the decision (a row and an audit entry
naming the policy version). Nothing here waits for the ledger's sealer.

Reason codes are stable (docs/gates.md lists them). Beyond the domain's codes, the service
adds `dependencies_missing` (the policy has an allow list and the request listed nothing),
`currency_mismatch` (the cost is in another currency than the approved budget) and
`override` (a signed emergency override lifted the rules listed in `overridden`). With a
`promotion` section in the policy, the promotion rules add `previous_stage_not_passed`,
`signoff_missing` and `major_release_approval_missing`; a request flagged as a rollback adds
`rollback_not_last_good`, or on allow `rollback` (`services/promotion_gate.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import Approval, GateEvaluation, Override, PipelineEvent, PipelineRun
from azdev_ica.domain import gates as rules
from azdev_ica.domain.approvals import ApprovalStatus
from azdev_ica.domain.gates import GateStatus, ReasonCode
from azdev_ica.errors import (
    NotFound,
    OutOfScope,
    UnknownStage,
    UnknownTenant,
    ValidationProblem,
)
from azdev_ica.policy import Policy
from azdev_ica.policy.gates import normalise_dependency
from azdev_ica.queries.approvals import effective_status
from azdev_ica.services import alerts, locks, promotion_gate
from azdev_ica.services.audit import append_audit
from azdev_ica.services.context import ServiceContext

DEPENDENCIES_MISSING = "dependencies_missing"
CURRENCY_MISMATCH = "currency_mismatch"
OVERRIDE = "override"
# What an override never lifts: a deployment happens inside a running run, one at a time.
NOT_OVERRIDABLE = frozenset({ReasonCode.RUN_NOT_FOUND.value, ReasonCode.RUN_FINISHED.value})


@dataclass(frozen=True)
class EvaluateGate:
    run_key: str
    tenant: str | None = None
    stage: str | None = None
    artifact_digest: str | None = None
    commit: str | None = None
    cost_impact_minor: int | None = None
    currency: str | None = None
    dependencies: tuple[str, ...] | None = None
    # The semantic version being deployed (default: what that artifact was deployed as before
    # in the tenant); a major bump over production needs the major-release approver.
    version: str | None = None
    # A rollback to the target's last good version (seed 000 §6.1).
    rollback: bool = False


@dataclass(frozen=True)
class Reason:
    code: str
    message: str
    outcome: GateStatus = GateStatus.DENY

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class GateAnswer:
    decision_id: int
    status: GateStatus
    reasons: tuple[Reason, ...]
    run_key: str
    tenant: str
    stage: str
    policy_hash: str
    approval_id: int | None = None
    override_id: int | None = None
    overridden: tuple[str, ...] = ()
    lock_holder: str | None = None
    queue_position: int | None = None
    lock_expires_at: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate(ctx: ServiceContext, *, principal: Principal, command: EvaluateGate) -> GateAnswer:
    """Answer the gate for a run and a target; record the decision; take the lock on allow."""

    def action(session: Session) -> GateAnswer:
        now = ctx.clock.now()
        policy = ctx.policies.active(session)
        run = session.scalars(
            select(PipelineRun).where(PipelineRun.run_key == command.run_key)
        ).one_or_none()
        if run is not None and not principal.can_on_run(
            Permission.GATE_EVALUATE, run.tenant, run.stage
        ):
            run = None  # out of scope answers exactly like absent
        if run is not None and run.tenant is not None and command.tenant not in (None, run.tenant):
            raise ValidationProblem(
                f"run {run.run_key} deploys for tenant {run.tenant!r}, not {command.tenant!r}"
            )
        tenant = command.tenant or (run.tenant if run else None)
        stage = command.stage or (run.stage if run else None)
        if tenant is None or stage is None:
            if run is None:
                raise NotFound(f"no run {command.run_key!r}")
            raise ValidationProblem("name the target: the tenant and the stage of the deployment")
        if not principal.can_for(Permission.GATE_EVALUATE, tenant):
            raise OutOfScope(f"tenant {tenant!r} is outside the caller's scope")
        if not principal.can_at(Permission.GATE_EVALUATE, tenant, stage):
            raise OutOfScope(f"stage {stage!r} is outside the caller's scope")
        _check_target(policy, tenant, stage)
        digest = command.artifact_digest or (run.artifact_digest if run else None)
        commit = command.commit or (run.commit if run else None)
        scope = rules.Scope(tenant=tenant, stage=stage, artifact_digest=digest or "", commit=commit)
        if run is None:
            facts = rules.GateFacts(scope=scope, run_found=False)
            missing = rules.evaluate_gate(facts, rules.GateRules()).reasons
            found = tuple(_from_domain(r) for r in missing)
            return _record(
                ctx,
                session,
                now,
                principal,
                command.run_key,
                None,
                scope,
                policy,
                GateStatus.DENY,
                found,
            )

        gate_policy = policy.gates
        approval = _approval(session, run, tenant, stage)
        approval_facts, extra = _approval_facts(approval, command, now)
        if approval is not None and command.currency in (None, approval.currency):
            # A cost near the approved budget warns (seed 000 §7.2), once per approval.
            cost = command.cost_impact_minor
            alerts.check_budget(ctx, session, policy=policy, approval=approval,
                                cost_minor=cost if cost is not None else approval.cost_impact_minor,
                                actor=principal.actor, source="gate.evaluate")  # fmt: skip
        override = _signed_override(session, run, tenant, stage, digest)
        timezone = policy.tenants[tenant].timezone
        window = gate_policy.schedule(tenant=tenant, stage=stage, timezone=timezone).evaluate(now)
        dependencies = frozenset(normalise_dependency(d) for d in command.dependencies or ())
        facts = rules.GateFacts(
            scope=scope,
            run_finished=run.status != "running",
            cost_impact=_cost(command, approval),
            approval=approval_facts,
            tests=_tests(session, run),
            scan=_scan(session, run),
            dependencies=dependencies,
            window=window.state,
            window_reason=window.reason,
        )
        approval_stages = gate_policy.approval_stages
        if approval_stages is None:
            approval_stages = frozenset(s.name for s in policy.stages if s.production)
        requires_approval = stage in approval_stages
        rollback = None
        if command.rollback:
            rollback = promotion_gate.rollback_facts(
                session, policy, tenant=tenant, stage=stage, digest=digest
            )
            if rollback.without_approval:
                requires_approval = False
        domain_rules = rules.GateRules(
            requires_approval=requires_approval,
            min_coverage_percent=gate_policy.min_coverage_percent,
            requires_tests=gate_policy.require_tests,
            requires_scan=gate_policy.require_scan,
            dependency_allow_list=gate_policy.dependency_allow_list,
        )
        reasons = [_from_domain(r) for r in rules.evaluate_gate(facts, domain_rules).reasons]
        if gate_policy.dependency_allow_list is not None and command.dependencies is None:
            reasons.append(
                Reason(
                    DEPENDENCIES_MISSING,
                    "the policy has a dependency allow list: send the "
                    "run's dependencies (or its SBOM)",
                )
            )
        reasons.extend(extra)
        if rollback is not None and not rollback.valid:
            reasons.append(
                Reason(
                    promotion_gate.ROLLBACK_NOT_LAST_GOOD,
                    promotion_gate.rollback_refusal(rollback, digest),
                )
            )
        if rollback is None or not rollback.valid:
            unmet = promotion_gate.promotion_missing(
                session,
                policy,
                tenant=tenant,
                stage=stage,
                digest=digest,
                version=command.version,
                tests_passed=facts.tests is not None and facts.tests.passed,
            )
            reasons.extend(Reason(m.code.value, m.message) for m in unmet)
        overridden: tuple[str, ...] = ()
        if override is not None:
            overridden = tuple(r.code for r in reasons if r.code not in NOT_OVERRIDABLE)
            reasons = [r for r in reasons if r.code in NOT_OVERRIDABLE]
        denied = any(r.outcome is GateStatus.DENY for r in reasons)
        turn: locks.Turn | None = None
        if denied:
            locks.leave_queue(session, run=run, tenant=tenant, stage=stage,
                              actor=principal.actor, now=now)  # fmt: skip
        else:
            turn = locks.take_turn(
                session,
                run=run,
                tenant=tenant,
                stage=stage,
                actor=principal.actor,
                now=now,
                lease=gate_policy.lock_lease,
                stale=gate_policy.queue_stale,
                ready=not reasons,
            )
            if turn.blocked_by is not None:
                where = f" (you are number {turn.position} in the queue)" if turn.position else ""
                reasons.append(
                    Reason(
                        ReasonCode.LOCK_HELD.value,
                        f"run {turn.blocked_by} has this target's deployment lock; "
                        f"wait your turn{where}",
                        GateStatus.PENDING,
                    )
                )
        if denied:
            status = GateStatus.DENY
        elif reasons:
            status = GateStatus.PENDING
        else:
            status = GateStatus.ALLOW
        if override is not None and status is GateStatus.ALLOW:
            lifted = ", ".join(overridden) or "nothing"
            reasons.append(
                Reason(
                    OVERRIDE,
                    f"emergency override {override.id} is signed; it lifts: {lifted}",
                    GateStatus.ALLOW,
                )
            )
        good = rollback.last_good if rollback is not None and rollback.valid else None
        if rollback is not None and good is not None and status is GateStatus.ALLOW:
            fresh = "without a fresh approval (the policy allows it)"
            if not rollback.without_approval:
                fresh = "with its approval"
            reasons.append(
                Reason(
                    promotion_gate.ROLLBACK,
                    f"rollback to the last good version {good.artifact_digest} {fresh}",
                    GateStatus.ALLOW,
                )
            )
        return _record(
            ctx,
            session,
            now,
            principal,
            run.run_key,
            run,
            scope,
            policy,
            status,
            tuple(reasons),
            approval_id=approval.id if approval else None,
            override_id=override.id if override else None,
            overridden=overridden,
            turn=turn,
            rollback=rollback.as_record() if rollback is not None else None,
        )

    return ctx.run_action(action)


def _check_target(policy: Policy, tenant: str, stage: str) -> None:
    if tenant not in policy.tenants:
        raise UnknownTenant(f"tenant {tenant!r} is not in the active policy")
    if policy.stage(stage) is None:
        raise UnknownStage(f"stage {stage!r} is not in the active policy")


def _from_domain(reason: rules.Reason) -> Reason:
    return Reason(reason.code.value, reason.message, reason.outcome)


def _approval(session: Session, run: PipelineRun, tenant: str, stage: str) -> Approval | None:
    """The run's latest approval request for the target."""
    return session.scalars(
        select(Approval)
        .where(Approval.run_pk == run.id, Approval.tenant == tenant, Approval.stage == stage)
        .order_by(Approval.id.desc())
        .limit(1)
    ).one_or_none()


def _approval_facts(
    approval: Approval | None, command: EvaluateGate, now: Any
) -> tuple[rules.ApprovalFacts | None, list[Reason]]:
    if approval is None:
        return None, []
    extra: list[Reason] = []
    budget: Decimal | None = None
    if approval.budget_minor is not None:
        if command.currency is not None and command.currency != approval.currency:
            extra.append(
                Reason(
                    CURRENCY_MISMATCH,
                    f"the cost is in {command.currency}; the approved "
                    f"budget is in {approval.currency}",
                )
            )
        else:
            budget = Decimal(approval.budget_minor)
    scope = rules.Scope(
        tenant=approval.tenant,
        stage=approval.stage,
        artifact_digest=approval.artifact_digest or "",
        commit=approval.commit,
    )
    status: ApprovalStatus = effective_status(approval, now)
    return rules.ApprovalFacts(status=status, scope=scope, budget=budget), extra


def _cost(command: EvaluateGate, approval: Approval | None) -> Decimal:
    if command.cost_impact_minor is not None:
        return Decimal(command.cost_impact_minor)
    if approval is not None and approval.cost_impact_minor is not None:
        return Decimal(approval.cost_impact_minor)
    return Decimal(0)


def _latest_event(session: Session, run: PipelineRun, phase: str) -> dict[str, Any] | None:
    """The data of the run's latest event of `phase` in its current attempt."""
    data = session.scalar(
        select(PipelineEvent.data)
        .where(
            PipelineEvent.run_pk == run.id,
            PipelineEvent.phase == phase,
            PipelineEvent.attempt == run.attempt,
        )
        .order_by(PipelineEvent.id.desc())
        .limit(1)
    )
    return data if isinstance(data, dict) else None


def _tests(session: Session, run: PipelineRun) -> rules.UnitTestFacts | None:
    data = _latest_event(session, run, "test")
    if data is None:
        return None
    coverage = data.get("coverage_percent")
    return rules.UnitTestFacts(
        passed=data.get("passed") is True,
        coverage_percent=float(coverage) if isinstance(coverage, int | float) else None,
    )


def _scan(session: Session, run: PipelineRun) -> rules.ScanFacts | None:
    data = _latest_event(session, run, "scan")
    if data is None:
        return None
    findings = data.get("findings") or {}
    return rules.ScanFacts(
        passed=data.get("passed") is True,
        critical=int(findings.get("critical", 0)),
        high=int(findings.get("high", 0)),
    )


def _signed_override(
    session: Session, run: PipelineRun, tenant: str, stage: str, digest: str | None
) -> Override | None:
    """A signed emergency override of this run and target, bound to the same artifact."""
    found = session.scalars(
        select(Override)
        .where(
            Override.run_pk == run.id,
            Override.tenant == tenant,
            Override.stage == stage,
            Override.status == "signed",
        )
        .order_by(Override.id.desc())
    ).all()
    return next((o for o in found if o.artifact_digest in (None, digest)), None)


def _record(
    ctx: ServiceContext,
    session: Session,
    decided_at: datetime,
    principal: Principal,
    run_key: str,
    run: PipelineRun | None,
    scope: rules.Scope,
    policy: Policy,
    status: GateStatus,
    reasons: tuple[Reason, ...],
    *,
    approval_id: int | None = None,
    override_id: int | None = None,
    overridden: tuple[str, ...] = (),
    turn: locks.Turn | None = None,
    rollback: dict[str, Any] | None = None,
) -> GateAnswer:
    # The evaluation's own instant (the lock changes were stamped with it too).
    now = decided_at
    row = GateEvaluation(
        run_pk=run.id if run else None,
        run_key=run_key,
        tenant=scope.tenant,
        stage=scope.stage,
        artifact_digest=scope.artifact_digest or None,
        commit=scope.commit,
        status=status.value,
        codes=[r.code for r in reasons],
        approval_id=approval_id,
        override_id=override_id,
        policy_hash=policy.sha256,
        decided_at=now,
        decided_by=principal.id,
    )
    session.add(row)
    session.flush()
    append_audit(
        session,
        actor=principal.actor,
        action="gate.decide",
        subject_type="run",
        subject_id=run_key,
        tenant=scope.tenant,
        data={
            "decision": row.id,
            "stage": scope.stage,
            "artifact_digest": row.artifact_digest,
            "commit": scope.commit,
            "status": status.value,
            "reasons": [r.as_dict() for r in reasons],
            "approval_id": approval_id,
            "override_id": override_id,
            "overridden": list(overridden),
            "policy_sha256": policy.sha256,
            "queue_position": turn.position if turn else None,
            # A rollback request is always recorded as one (seed 000 §6.1).
            "rollback": rollback,
        },
        at=now,
    )
    holder = turn.blocked_by if turn else None
    expires = None
    if status is GateStatus.ALLOW:
        expires = now + policy.gates.lock_lease
    return GateAnswer(
        decision_id=row.id,
        status=status,
        reasons=reasons,
        run_key=run_key,
        tenant=scope.tenant,
        stage=scope.stage,
        policy_hash=policy.sha256,
        approval_id=approval_id,
        override_id=override_id,
        overridden=overridden,
        lock_holder=holder,
        queue_position=turn.position if turn else None,
        lock_expires_at=expires,
    )


def has_allow(session: Session, *, run_pk: int, tenant: str | None, stage: str | None) -> bool:
    """Whether the gate ever allowed this run to deploy to this target."""
    if tenant is None or stage is None:
        return False
    found = session.scalar(
        select(GateEvaluation.id)
        .where(
            GateEvaluation.run_pk == run_pk,
            GateEvaluation.tenant == tenant,
            GateEvaluation.stage == stage,
            GateEvaluation.status == GateStatus.ALLOW.value,
        )
        .limit(1)
    )
    return found is not None
