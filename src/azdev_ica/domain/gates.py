"""Gate evaluation (seed 000 §1.2, §1.4, §5.1): allow, deny or pending, with reasons. Pure.

The service gathers the facts (the run, its `build`, `test` and `scan` events, the approval,
the target's window and lock) and this module decides. Every check that fails adds a reason
with a stable code; the outcome is the worst of them:

- **deny** when a rule is broken (the pipeline should fail: nothing will change by waiting);
- **pending** when only waiting can help (the approval is not signed yet; another run holds
  the target's lock, first come first served);
- **allow** when no reason remains.

There is no skip flag: an emergency override is an approval of its own kind (issue 5),
reflected here only as `override_approved`, which lifts the window rule and nothing else.
(The service lets a signed override lift more, but never the build rule: an emergency changes
when a version may go out, not whether ICA knows where it came from; see `BuildFacts`.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from azdev_ica.domain.approvals import ApprovalStatus
from azdev_ica.domain.windows import WindowState


class GateStatus(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    PENDING = "pending"


class ReasonCode(StrEnum):
    RUN_NOT_FOUND = "run_not_found"
    RUN_FINISHED = "run_finished"
    APPROVAL_MISSING = "approval_missing"
    APPROVAL_PENDING = "approval_pending"
    APPROVAL_REFUSED = "approval_refused"
    SCOPE_MISMATCH = "scope_mismatch"
    BUDGET_EXCEEDED = "budget_exceeded"
    DEPENDENCY_NOT_ALLOWED = "dependency_not_allowed"
    BUILD_MISSING = "build_missing"
    BUILD_FAILED = "build_failed"
    TESTS_MISSING = "tests_missing"
    TESTS_FAILED = "tests_failed"
    COVERAGE_LOW = "coverage_below_minimum"
    SCAN_MISSING = "scan_missing"
    SCAN_FAILED = "scan_failed"
    OUTSIDE_WINDOW = "outside_window"
    FROZEN = "frozen"
    LOCK_HELD = "lock_held"


PENDING_CODES = frozenset({ReasonCode.APPROVAL_PENDING, ReasonCode.LOCK_HELD})


@dataclass(frozen=True)
class Reason:
    code: ReasonCode
    message: str

    @property
    def outcome(self) -> GateStatus:
        return GateStatus.PENDING if self.code in PENDING_CODES else GateStatus.DENY


@dataclass(frozen=True)
class Scope:
    """What a deployment is of and to; an approval binds exactly this."""

    tenant: str
    stage: str
    artifact_digest: str
    commit: str | None = None


@dataclass(frozen=True)
class ApprovalFacts:
    status: ApprovalStatus
    scope: Scope
    budget: Decimal | None = None


@dataclass(frozen=True)
class BuildFacts:
    """What ICA recorded about the build of the artifact being deployed (issue 17).

    A deploy needs a successful build of its artifact digest recorded in ICA: by this run,
    or, for a promotion run that deploys an artifact built elsewhere, by another run of the
    same tenant or by a tenant-less run (a shared build pipeline); never by another tenant's
    run. A successful build is a `build` event that does not say `passed: false`; its digest
    is the event's `artifact_digest`, else its run's.

    An emergency override does not lift this rule: it is about provenance (what is being
    deployed came out of a recorded build), which an emergency does not change; a hotfix
    pipeline builds its artifact like any other run.
    """

    # This run's latest `build` event says `passed: false`.
    failed_here: bool = False
    # This run reported a successful build of the deployed digest.
    built_here: bool = False
    # Else: the run key of another run (same tenant, or tenant-less) that built it.
    built_by: str | None = None
    # The digest of this run's latest successful build, when it is another artifact.
    built_other: str | None = None

    @property
    def built(self) -> bool:
        return self.built_here or self.built_by is not None


@dataclass(frozen=True)
class UnitTestFacts:
    passed: bool
    coverage_percent: float | None


@dataclass(frozen=True)
class ScanFacts:
    passed: bool
    critical: int = 0
    high: int = 0


@dataclass(frozen=True)
class GateRules:
    """The policy's rules for this target (defaults: the seed's)."""

    requires_approval: bool = True
    min_coverage_percent: float = 80.0
    requires_build: bool = True
    requires_tests: bool = True
    requires_scan: bool = True
    dependency_allow_list: frozenset[str] | None = None


@dataclass(frozen=True)
class GateFacts:
    """Everything the gate looks at, gathered for one evaluation."""

    scope: Scope
    run_found: bool = True
    run_finished: bool = False
    cost_impact: Decimal = Decimal(0)
    approval: ApprovalFacts | None = None
    # None: no `build` event of this run and no recorded build of the digest anywhere.
    build: BuildFacts | None = None
    tests: UnitTestFacts | None = None
    scan: ScanFacts | None = None
    dependencies: frozenset[str] = field(default_factory=frozenset)
    window: WindowState = WindowState.OPEN
    window_reason: str = ""
    override_approved: bool = False
    lock_held_by: str | None = None


@dataclass(frozen=True)
class GateDecision:
    status: GateStatus
    reasons: tuple[Reason, ...]

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(reason.code.value for reason in self.reasons)


def evaluate_gate(facts: GateFacts, rules: GateRules) -> GateDecision:
    """The gate's answer for `facts` under `rules`: every failed check is a reason."""
    reasons = list(_reasons(facts, rules))
    if any(reason.outcome is GateStatus.DENY for reason in reasons):
        status = GateStatus.DENY
    elif reasons:
        status = GateStatus.PENDING
    else:
        status = GateStatus.ALLOW
    return GateDecision(status, tuple(reasons))


def _reasons(facts: GateFacts, rules: GateRules) -> Iterable[Reason]:
    if not facts.run_found:
        yield Reason(ReasonCode.RUN_NOT_FOUND, "no run with this key has started")
        return
    if facts.run_finished:
        yield Reason(ReasonCode.RUN_FINISHED, "the run has finished; a deploy runs inside it")
    yield from _approval_reasons(facts, rules)
    if rules.requires_build:
        yield from build_reasons(facts.build, facts.scope.artifact_digest)
    yield from _quality_reasons(facts, rules)
    if rules.dependency_allow_list is not None:
        refused = sorted(facts.dependencies - rules.dependency_allow_list)
        if refused:
            shown = ", ".join(refused[:10]) + (" ..." if len(refused) > 10 else "")
            yield Reason(
                ReasonCode.DEPENDENCY_NOT_ALLOWED,
                f"{len(refused)} dependenc{'y is' if len(refused) == 1 else 'ies are'} "
                f"not on the allow list: {shown}",
            )
    if not facts.override_approved:
        if facts.window is WindowState.FROZEN:
            yield Reason(ReasonCode.FROZEN, facts.window_reason or "the target is frozen")
        elif facts.window is WindowState.OUTSIDE_WINDOW:
            yield Reason(
                ReasonCode.OUTSIDE_WINDOW,
                facts.window_reason or "outside the target's maintenance window",
            )
    if facts.lock_held_by is not None:
        yield Reason(
            ReasonCode.LOCK_HELD, f"run {facts.lock_held_by} is deploying to this target; wait"
        )


def _approval_reasons(facts: GateFacts, rules: GateRules) -> Iterable[Reason]:
    if not rules.requires_approval:
        return
    approval = facts.approval
    if approval is None:
        yield Reason(ReasonCode.APPROVAL_MISSING, "request an approval for this run and target")
        return
    if approval.scope != facts.scope:
        differing = [
            name
            for name in ("tenant", "stage", "artifact_digest", "commit")
            if getattr(approval.scope, name) != getattr(facts.scope, name)
        ]
        yield Reason(
            ReasonCode.SCOPE_MISMATCH,
            f"the approval was given for another {', '.join(differing)}; it is void",
        )
    if approval.status in {
        ApprovalStatus.REJECTED,
        ApprovalStatus.WITHDRAWN,
        ApprovalStatus.EXPIRED,
    }:
        yield Reason(ReasonCode.APPROVAL_REFUSED, f"the approval is {approval.status.value}")
    elif approval.status is not ApprovalStatus.APPROVED:
        yield Reason(ReasonCode.APPROVAL_PENDING, f"the approval is {approval.status.value}")
    if approval.budget is not None and facts.cost_impact > approval.budget:
        yield Reason(
            ReasonCode.BUDGET_EXCEEDED,
            f"cost impact {facts.cost_impact} exceeds the approved budget {approval.budget}",
        )


def build_reasons(build: BuildFacts | None, digest: str) -> Iterable[Reason]:
    """Why the recorded builds do not cover deploying `digest` (nothing when they do)."""
    build = build or BuildFacts()
    if build.failed_here:
        yield Reason(
            ReasonCode.BUILD_FAILED,
            "this run's build failed (its latest `build` event says passed: false); "
            "fix the build and run it again",
        )
        return
    if build.built:
        return
    if not digest:
        yield Reason(
            ReasonCode.BUILD_MISSING,
            "the deploy names no artifact digest, so no build of it can be found: report "
            "the digest at run start, in the `build` event or in the gate request",
        )
        return
    here = "this run reported no `build` event"
    if build.built_other is not None:
        here = f"this run built another artifact ({build.built_other})"
    yield Reason(
        ReasonCode.BUILD_MISSING,
        f"no successful build of artifact {digest} is recorded: {here} and no earlier run "
        "of this tenant (or shared build pipeline) built it",
    )


def _quality_reasons(facts: GateFacts, rules: GateRules) -> Iterable[Reason]:
    if rules.requires_tests:
        if facts.tests is None:
            yield Reason(ReasonCode.TESTS_MISSING, "the run reported no `test` event")
        else:
            if not facts.tests.passed:
                yield Reason(ReasonCode.TESTS_FAILED, "the run's tests failed")
            coverage = facts.tests.coverage_percent
            if coverage is None or coverage < rules.min_coverage_percent:
                shown = "not reported" if coverage is None else f"{coverage:g}%"
                yield Reason(
                    ReasonCode.COVERAGE_LOW,
                    f"unit-test coverage {shown}, the minimum is {rules.min_coverage_percent:g}%",
                )
    if rules.requires_scan:
        if facts.scan is None:
            yield Reason(ReasonCode.SCAN_MISSING, "the run reported no `scan` event")
        elif not facts.scan.passed:
            yield Reason(
                ReasonCode.SCAN_FAILED,
                f"the security scan failed ({facts.scan.critical} critical, "
                f"{facts.scan.high} high)",
            )
