"""Gate evaluation: each defect gives its own reason; deny beats pending beats allow."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azdev_ica.domain.approvals import ApprovalStatus
from azdev_ica.domain.gates import (
    ApprovalFacts,
    BuildFacts,
    GateFacts,
    GateRules,
    GateStatus,
    ReasonCode,
    ScanFacts,
    Scope,
    UnitTestFacts,
    evaluate_gate,
)
from azdev_ica.domain.windows import WindowState

SCOPE = Scope("ws", "production", "sha256:" + "a" * 64, "0123456789abcdef")
RULES = GateRules(dependency_allow_list=frozenset({"fastapi", "sqlalchemy"}))
GOOD = GateFacts(
    scope=SCOPE,
    cost_impact=Decimal("120.00"),
    approval=ApprovalFacts(ApprovalStatus.APPROVED, SCOPE, budget=Decimal("500")),
    build=BuildFacts(built_here=True),
    tests=UnitTestFacts(passed=True, coverage_percent=86.5),
    scan=ScanFacts(passed=True),
    dependencies=frozenset({"fastapi"}),
)

# Each single defect, and the one reason (and outcome) it must produce on its own.
DEFECTS = {
    "run_finished": ({"run_finished": True}, ReasonCode.RUN_FINISHED, GateStatus.DENY),
    "no_approval": ({"approval": None}, ReasonCode.APPROVAL_MISSING, GateStatus.DENY),
    "half_signed": (
        {"approval": ApprovalFacts(ApprovalStatus.TECHNICAL_APPROVED, SCOPE, Decimal(500))},
        ReasonCode.APPROVAL_PENDING,
        GateStatus.PENDING,
    ),
    "rejected": (
        {"approval": ApprovalFacts(ApprovalStatus.REJECTED, SCOPE, Decimal(500))},
        ReasonCode.APPROVAL_REFUSED,
        GateStatus.DENY,
    ),
    "other_digest": (
        {
            "approval": ApprovalFacts(
                ApprovalStatus.APPROVED,
                replace(SCOPE, artifact_digest="sha256:" + "b" * 64),
                Decimal(500),
            )
        },
        ReasonCode.SCOPE_MISMATCH,
        GateStatus.DENY,
    ),
    "over_budget": (
        {"cost_impact": Decimal("500.01")},
        ReasonCode.BUDGET_EXCEEDED,
        GateStatus.DENY,
    ),
    "no_build": ({"build": None}, ReasonCode.BUILD_MISSING, GateStatus.DENY),
    "build_failed": (
        {"build": BuildFacts(failed_here=True, built_by="ado:p:7")},
        ReasonCode.BUILD_FAILED,
        GateStatus.DENY,
    ),
    "no_tests": ({"tests": None}, ReasonCode.TESTS_MISSING, GateStatus.DENY),
    "tests_failed": (
        {"tests": UnitTestFacts(passed=False, coverage_percent=90)},
        ReasonCode.TESTS_FAILED,
        GateStatus.DENY,
    ),
    "low_coverage": (
        {"tests": UnitTestFacts(passed=True, coverage_percent=79.9)},
        ReasonCode.COVERAGE_LOW,
        GateStatus.DENY,
    ),
    "no_scan": ({"scan": None}, ReasonCode.SCAN_MISSING, GateStatus.DENY),
    "scan_failed": (
        {"scan": ScanFacts(passed=False, critical=1)},
        ReasonCode.SCAN_FAILED,
        GateStatus.DENY,
    ),
    "unlisted_dependency": (
        {"dependencies": frozenset({"fastapi", "leftpad"})},
        ReasonCode.DEPENDENCY_NOT_ALLOWED,
        GateStatus.DENY,
    ),
    "outside_window": (
        {"window": WindowState.OUTSIDE_WINDOW},
        ReasonCode.OUTSIDE_WINDOW,
        GateStatus.DENY,
    ),
    "frozen": ({"window": WindowState.FROZEN}, ReasonCode.FROZEN, GateStatus.DENY),
    "lock_held": ({"lock_held_by": "ado:p:41"}, ReasonCode.LOCK_HELD, GateStatus.PENDING),
}
RANK = {GateStatus.ALLOW: 0, GateStatus.PENDING: 1, GateStatus.DENY: 2}


def test_a_clean_deploy_is_allowed_with_no_reasons():
    decision = evaluate_gate(GOOD, RULES)
    assert (decision.status, decision.reasons) == (GateStatus.ALLOW, ())


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_each_defect_alone_gives_its_reason(name):
    change, code, status = DEFECTS[name]
    decision = evaluate_gate(replace(GOOD, **change), RULES)
    assert decision.status is status
    assert decision.codes == (code,)
    assert all(reason.message for reason in decision.reasons)


@settings(max_examples=300, deadline=None)
@given(
    names=st.sets(st.sampled_from(sorted(DEFECTS)), max_size=6),
    override=st.booleans(),
    requires_approval=st.booleans(),
)
def test_any_combination_of_defects(names, override, requires_approval):
    facts = GOOD
    for name in sorted(names):
        facts = replace(facts, **DEFECTS[name][0])
    facts = replace(facts, override_approved=override)
    rules = replace(RULES, requires_approval=requires_approval)
    decision = evaluate_gate(facts, rules)

    approval_defects = {"no_approval", "half_signed", "rejected", "other_digest", "over_budget"}
    window_defects = {"outside_window", "frozen"}
    effective = {
        name
        for name in names
        if (requires_approval or name not in approval_defects)
        and not (override and name in window_defects)
    }
    # The combination's approval replaces earlier ones: only the last approval change counts.
    if requires_approval:
        approval_changes = sorted(names & (approval_defects - {"over_budget"}))
        effective -= set(approval_changes[:-1])
    # Likewise the build: only the last build change counts.
    effective -= set(sorted(names & {"no_build", "build_failed"})[:-1])
    # Deny beats pending beats allow.
    expected = max((DEFECTS[name][2] for name in effective), key=RANK.get, default=GateStatus.ALLOW)
    if "other_digest" in effective and "over_budget" in names:
        expected = GateStatus.DENY
    assert decision.status is expected, (names, decision.codes)
    assert (decision.status is GateStatus.ALLOW) == (decision.reasons == ())
    if override:
        assert not {ReasonCode.OUTSIDE_WINDOW, ReasonCode.FROZEN} & set(decision.codes)
    if not requires_approval:
        assert not any(code.startswith("approval") for code in decision.codes)
    assert len(decision.codes) == len(set(decision.codes))


@settings(max_examples=200, deadline=None)
@given(names=st.sets(st.sampled_from(sorted(DEFECTS)), min_size=1, max_size=6))
def test_fixing_a_defect_never_makes_the_answer_worse(names):
    def facts_of(selected):
        facts = GOOD
        for name in sorted(selected):
            facts = replace(facts, **DEFECTS[name][0])
        return facts

    worse = evaluate_gate(facts_of(names), RULES)
    for fixed in names:
        better = evaluate_gate(facts_of(names - {fixed}), RULES)
        assert RANK[better.status] <= RANK[worse.status]


def test_a_run_that_never_started_is_denied_for_that_reason_alone():
    decision = evaluate_gate(replace(GOOD, run_found=False, approval=None, tests=None), RULES)
    assert (decision.status, decision.codes) == (GateStatus.DENY, (ReasonCode.RUN_NOT_FOUND,))


@settings(max_examples=300, deadline=None)
@given(
    failed_here=st.booleans(),
    built_here=st.booleans(),
    built_by=st.none() | st.just("ado:p:7"),
    built_other=st.none() | st.just("sha256:" + "c" * 64),
    digest=st.sampled_from(["", SCOPE.artifact_digest]),
    requires_build=st.booleans(),
    override=st.booleans(),
)
def test_a_deploy_needs_a_successful_build_of_its_digest(
    failed_here, built_here, built_by, built_other, digest, requires_build, override
):
    build = BuildFacts(
        failed_here=failed_here, built_here=built_here, built_by=built_by, built_other=built_other
    )
    facts = replace(
        GOOD, build=build, scope=replace(SCOPE, artifact_digest=digest), override_approved=override
    )
    decision = evaluate_gate(
        facts, replace(RULES, requires_approval=False, requires_build=requires_build)
    )
    found = [
        r for r in decision.reasons if r.code in {ReasonCode.BUILD_MISSING, ReasonCode.BUILD_FAILED}
    ]
    if not requires_build:
        expected: tuple[ReasonCode, ...] = ()
    elif failed_here:
        # This run's own build failing denies, whatever else built the artifact.
        expected = (ReasonCode.BUILD_FAILED,)
    elif built_here or built_by is not None:
        expected = ()
    else:
        expected = (ReasonCode.BUILD_MISSING,)
    assert tuple(r.code for r in found) == expected
    # The override flag never lifts it (it lifts the window rule only).
    assert (decision.status is GateStatus.ALLOW) == (expected == ())
    for reason in found:
        if reason.code is ReasonCode.BUILD_MISSING and digest:
            assert digest in reason.message
            assert ("another artifact" in reason.message) == (built_other is not None)
