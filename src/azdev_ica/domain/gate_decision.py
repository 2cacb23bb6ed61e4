"""The gate's whole decision for one evaluation (seed 000 §5.1, §6.1; seed 002). Pure.

`services/gates.py` gathers the facts of one evaluation (the run, its latest `test` and
`scan` events, its approval and signed override for the target, the target's window, the
promotion and rollback history, the target's lock and queue) into :class:`EvaluationFacts`
and records what :func:`decide` returns; nothing here reads or writes anything, and only
the standard library and other pure `domain/` modules are used, so the auditor's
re-performance can replay a recorded decision with the same code.

On top of the rules of `domain/gates.py` (:func:`~azdev_ica.domain.gates.evaluate_gate`),
in this order:

1. `dependencies_missing`: the policy has an allow list and the request listed nothing;
2. `currency_mismatch`: the cost is in another currency than the approved budget (the
   budget is then not compared);
3. `rollback_not_last_good`: a request flagged as a rollback that does not deploy the
   target's last good version; a valid rollback skips the promotion rules and, where the
   policy says so, the approval;
4. the promotion rules (`domain/promotion.py`): `previous_stage_not_passed`,
   `signoff_missing`, `major_release_approval_missing`;
5. a signed emergency override lifts every reason except `run_not_found`, `run_finished`,
   `build_missing` and `build_failed` (listed in `overridden`);
6. the lock (`domain/locks.py`): a denied run leaves the target's queue; any other run
   takes its turn (an allow takes or renews the lock; a held lock answers `lock_held`,
   pending, with the run's place in the queue);
7. on allow, `override` (what the override lifted) and `rollback` (to which version) are
   added as reasons of kind allow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from azdev_ica.domain import gates, locks
from azdev_ica.domain import promotion as promotion_rules
from azdev_ica.domain.approvals import ApprovalStatus
from azdev_ica.domain.gates import GateStatus, ReasonCode
from azdev_ica.domain.windows import WindowState

DEPENDENCIES_MISSING = "dependencies_missing"
CURRENCY_MISMATCH = "currency_mismatch"
OVERRIDE = "override"
ROLLBACK = "rollback"
ROLLBACK_NOT_LAST_GOOD = "rollback_not_last_good"
# What an override never lifts: a deployment happens inside a running run, one at a time.
# What an override never lifts: a deployment happens inside a running run, one at a time,
# and deploys an artifact that a recorded build produced (domain/gates.py `BuildFacts`).
NOT_OVERRIDABLE = frozenset(
    {
        ReasonCode.RUN_NOT_FOUND.value,
        ReasonCode.RUN_FINISHED.value,
        ReasonCode.BUILD_MISSING.value,
        ReasonCode.BUILD_FAILED.value,
    }
)


@dataclass(frozen=True)
class Reason:
    code: str
    message: str
    outcome: GateStatus = GateStatus.DENY

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class ApprovalRecord:
    """The run's latest approval request for the target, as stored."""

    id: int
    status: ApprovalStatus
    expires_at: datetime
    scope: gates.Scope
    budget_minor: int | None
    currency: str | None
    cost_impact_minor: int | None

    def status_at(self, now: datetime) -> ApprovalStatus:
        """An open request past its expiry has expired, even before the job wrote it."""
        if not self.status.final and now >= self.expires_at:
            return ApprovalStatus.EXPIRED
        return self.status


@dataclass(frozen=True)
class DeploymentFact:
    """A finished deployment of the tenant (oldest first in a history)."""

    tenant: str
    stage: str
    artifact_digest: str | None
    version: str | None
    run_key: str
    good: bool


@dataclass(frozen=True)
class PromotionFacts:
    """What the promotion rules read (present only with a `promotion` policy section)."""

    stages: tuple[promotion_rules.StageRule, ...]
    production_stage: str
    # The tenant's deployments of this artifact or to its production stage, oldest first.
    deployments: tuple[DeploymentFact, ...]
    # The sign-offs given for this tenant, stage and artifact (the `ci` one comes from the
    # run's own passed `test` event and is added here).
    signoffs: tuple[promotion_rules.SignoffKind, ...]


@dataclass(frozen=True)
class RollbackFacts:
    """For a request flagged as a rollback: the target's deployments, oldest first."""

    history: tuple[DeploymentFact, ...]
    # The policy lets a valid rollback to this stage go without a fresh approval.
    without_approval_allowed: bool


@dataclass(frozen=True)
class RollbackVerdict:
    valid: bool
    last_good: DeploymentFact | None
    without_approval: bool

    def as_record(self) -> dict[str, object]:
        good = self.last_good
        return {
            "valid": self.valid,
            "without_approval": self.without_approval,
            "last_good_digest": good.artifact_digest if good else None,
            "last_good_version": good.version if good else None,
            "last_good_run_key": good.run_key if good else None,
        }


@dataclass(frozen=True)
class EvaluationFacts:
    """Everything one evaluation of a found run looks at."""

    now: datetime
    scope: gates.Scope
    run_pk: int
    run_key: str
    run_running: bool
    rules: gates.GateRules
    # The request: the cost and its currency, the dependencies (None: not sent), the version.
    cost_impact_minor: int | None = None
    currency: str | None = None
    dependencies: frozenset[str] | None = None
    version: str | None = None
    approval: ApprovalRecord | None = None
    # The recorded build of the artifact (None: none found; see gates.BuildFacts).
    build: gates.BuildFacts | None = None
    tests: gates.UnitTestFacts | None = None
    scan: gates.ScanFacts | None = None
    window: WindowState = WindowState.OPEN
    window_reason: str = ""
    override_id: int | None = None
    promotion: PromotionFacts | None = None
    rollback: RollbackFacts | None = None
    lock: locks.LockFacts = field(default_factory=locks.LockFacts)
    lease: timedelta = timedelta(minutes=30)
    stale: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class Decision:
    status: GateStatus
    reasons: tuple[Reason, ...]
    overridden: tuple[str, ...] = ()
    # What to do with the target's lock and queue, in order (empty: nothing).
    lock_steps: tuple[locks.Step, ...] = ()
    turn: locks.Turn | None = None
    rollback: RollbackVerdict | None = None
    # The lock's new expiry when the run holds it after this decision.
    lock_expires_at: datetime | None = None

    @property
    def codes(self) -> list[str]:
        return [reason.code for reason in self.reasons]


def run_not_found(scope: gates.Scope) -> Decision:
    """The decision for a run key no run has (or none the caller may see)."""
    facts = gates.GateFacts(scope=scope, run_found=False)
    found = gates.evaluate_gate(facts, gates.GateRules()).reasons
    return Decision(GateStatus.DENY, tuple(_from_domain(r) for r in found))


def decide(facts: EvaluationFacts) -> Decision:
    """The gate's answer for one evaluation of a found run, with what to do with the lock."""
    approval_facts, currency_reasons = _approval_facts(facts)
    rollback = _rollback(facts)
    gate_rules = facts.rules
    if rollback is not None and rollback.without_approval:
        gate_rules = replace(gate_rules, requires_approval=False)
    gate_facts = gates.GateFacts(
        scope=facts.scope,
        run_finished=not facts.run_running,
        cost_impact=_cost(facts),
        approval=approval_facts,
        build=facts.build,
        tests=facts.tests,
        scan=facts.scan,
        dependencies=facts.dependencies or frozenset(),
        window=facts.window,
        window_reason=facts.window_reason,
    )
    reasons = [_from_domain(r) for r in gates.evaluate_gate(gate_facts, gate_rules).reasons]
    if gate_rules.dependency_allow_list is not None and facts.dependencies is None:
        reasons.append(
            Reason(
                DEPENDENCIES_MISSING,
                "the policy has a dependency allow list: send the run's dependencies (or its SBOM)",
            )
        )
    reasons.extend(currency_reasons)
    if rollback is not None and not rollback.valid:
        reasons.append(Reason(ROLLBACK_NOT_LAST_GOOD, rollback_refusal(rollback, facts.scope)))
    if rollback is None or not rollback.valid:
        tests_passed = facts.tests is not None and facts.tests.passed
        reasons.extend(
            Reason(m.code.value, m.message) for m in _promotion_missing(facts, tests_passed)
        )
    overridden: tuple[str, ...] = ()
    if facts.override_id is not None:
        overridden = tuple(r.code for r in reasons if r.code not in NOT_OVERRIDABLE)
        reasons = [r for r in reasons if r.code in NOT_OVERRIDABLE]
    denied = any(r.outcome is GateStatus.DENY for r in reasons)
    turn: locks.Turn | None = None
    if denied:
        steps = locks.leave(facts.lock, run_pk=facts.run_pk)
    else:
        plan = locks.take_turn(
            facts.lock,
            run_pk=facts.run_pk,
            run_key=facts.run_key,
            now=facts.now,
            lease=facts.lease,
            stale=facts.stale,
            ready=not reasons,
        )
        steps, turn = plan.steps, plan.turn
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
    if facts.override_id is not None and status is GateStatus.ALLOW:
        lifted = ", ".join(overridden) or "nothing"
        reasons.append(
            Reason(
                OVERRIDE,
                f"emergency override {facts.override_id} is signed; it lifts: {lifted}",
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
                ROLLBACK,
                f"rollback to the last good version {good.artifact_digest} {fresh}",
                GateStatus.ALLOW,
            )
        )
    return Decision(
        status=status,
        reasons=tuple(reasons),
        overridden=overridden,
        lock_steps=tuple(steps),
        turn=turn,
        rollback=rollback,
        lock_expires_at=facts.now + facts.lease if status is GateStatus.ALLOW else None,
    )


def _from_domain(reason: gates.Reason) -> Reason:
    return Reason(reason.code.value, reason.message, reason.outcome)


def _approval_facts(facts: EvaluationFacts) -> tuple[gates.ApprovalFacts | None, list[Reason]]:
    approval = facts.approval
    if approval is None:
        return None, []
    extra: list[Reason] = []
    budget: Decimal | None = None
    if approval.budget_minor is not None:
        if facts.currency is not None and facts.currency != approval.currency:
            extra.append(
                Reason(
                    CURRENCY_MISMATCH,
                    f"the cost is in {facts.currency}; the approved "
                    f"budget is in {approval.currency}",
                )
            )
        else:
            budget = Decimal(approval.budget_minor)
    status = approval.status_at(facts.now)
    return gates.ApprovalFacts(status=status, scope=approval.scope, budget=budget), extra


def _cost(facts: EvaluationFacts) -> Decimal:
    if facts.cost_impact_minor is not None:
        return Decimal(facts.cost_impact_minor)
    if facts.approval is not None and facts.approval.cost_impact_minor is not None:
        return Decimal(facts.approval.cost_impact_minor)
    return Decimal(0)


def last_good(
    history: Sequence[DeploymentFact], *, tenant: str, stage: str
) -> DeploymentFact | None:
    """The version to roll `tenant`/`stage` back to: the newest good deployment before the
    newest deployment of the target, with another artifact than that newest one."""
    target = [d for d in history if (d.tenant, d.stage) == (tenant, stage)]
    if not target:
        return None
    current = target[-1]
    for record in reversed(target[:-1]):
        if record.good and record.artifact_digest != current.artifact_digest:
            return record
    return None


def _rollback(facts: EvaluationFacts) -> RollbackVerdict | None:
    if facts.rollback is None:
        return None
    return rollback_verdict(facts.rollback, facts.scope)


def rollback_verdict(rollback: RollbackFacts, scope: gates.Scope) -> RollbackVerdict:
    """Whether a rollback request deploys the target's last good version."""
    good = last_good(rollback.history, tenant=scope.tenant, stage=scope.stage)
    digest = scope.artifact_digest or None
    valid = good is not None and digest is not None and good.artifact_digest == digest
    return RollbackVerdict(
        valid=valid,
        last_good=good,
        without_approval=valid and rollback.without_approval_allowed,
    )


def rollback_is_valid(rollback: RollbackFacts | None, scope: gates.Scope) -> bool:
    """A valid rollback skips the promotion rules (the service need not read their facts)."""
    return rollback is not None and rollback_verdict(rollback, scope).valid


def rollback_refusal(verdict: RollbackVerdict, scope: gates.Scope) -> str:
    good = verdict.last_good
    if good is None:
        return "this target has no earlier good version to roll back to"
    return (
        f"a rollback deploys the target's last good version ({good.artifact_digest}"
        + (f", {good.version}" if good.version else "")
        + f", run {good.run_key}), not {scope.artifact_digest or 'an unknown artifact'}"
    )


def _promotion_missing(
    facts: EvaluationFacts, tests_passed: bool
) -> tuple[promotion_rules.Missing, ...]:
    promotion = facts.promotion
    if promotion is None:
        return ()
    scope = facts.scope
    digest = scope.artifact_digest
    wanted = digest or None  # the artifact's digest as the deployments record it
    history = [d for d in promotion.deployments if d.good]
    version = facts.version
    if version is None:
        # The version this artifact was deployed with before in the tenant, if it said.
        version = next(
            (d.version for d in reversed(history) if d.artifact_digest == wanted and d.version),
            None,
        )
    kinds = list(promotion.signoffs)
    if tests_passed:
        kinds.append(promotion_rules.SignoffKind.CI)
    check = promotion_rules.check_promotion(
        stages=promotion.stages,
        tenant=scope.tenant,
        stage=scope.stage,
        digest=digest,
        version=version,
        deployments=[
            promotion_rules.Deployment(d.tenant, d.stage, d.artifact_digest or "", d.version)
            for d in history
        ],
        signoffs=[
            promotion_rules.Signoff(scope.tenant, scope.stage, digest, kind) for kind in kinds
        ],
        production_stage=promotion.production_stage,
    )
    return check.missing
