"""Promotion through the stages of one tenant, with sign-offs bound to tenant, stage, digest."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azdev_ica.domain.promotion import (
    Deployment,
    PromotionCode,
    Signoff,
    SignoffKind,
    StageRule,
    check_promotion,
    is_major_bump,
)

STAGES = [
    StageRule("development"),
    StageRule("test", requires=frozenset({SignoffKind.CI})),
    StageRule("staging", requires=frozenset({SignoffKind.QA})),
    StageRule("production", requires=frozenset({SignoffKind.UAT, SignoffKind.DATA_MIGRATION})),
    StageRule("dr", promotion=False),
]
CHAIN = ["development", "test", "staging", "production"]
NEEDS = {stage.name: stage.requires for stage in STAGES}
TENANTS = ["ck", "ws", "sb", "to", "vu"]
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def check(stage, deployments=(), signoffs=(), tenant="ws", digest=D1, version="1.4.0"):
    return check_promotion(
        stages=STAGES,
        tenant=tenant,
        stage=stage,
        digest=digest,
        version=version,
        deployments=deployments,
        signoffs=signoffs,
    )


def test_a_release_promoted_through_every_stage_of_one_tenant():
    deployed: list[Deployment] = []
    for stage in [*CHAIN, "dr"]:
        signoffs = [Signoff("ws", stage, D1, kind) for kind in NEEDS[stage]]
        result = check(stage, deployed, signoffs)
        assert result.allowed, result.missing
        assert not check(stage, deployed, []).allowed or not NEEDS[stage]
        deployed.append(Deployment("ws", stage, D1, "1.4.0"))


@settings(max_examples=200, deadline=None)
@given(
    target=st.sampled_from(CHAIN[1:]),
    other_tenant=st.sampled_from(TENANTS[:1] + TENANTS[2:]),
    passed_elsewhere=st.booleans(),
    signed_elsewhere=st.booleans(),
)
def test_nothing_crosses_tenants_or_artifacts(
    target, other_tenant, passed_elsewhere, signed_elsewhere
):
    previous = CHAIN[CHAIN.index(target) - 1]
    # Everything is in place, but for another tenant or another digest.
    deployments = [Deployment(other_tenant, previous, D1), Deployment("ws", previous, D2)]
    signoffs = [Signoff(other_tenant, target, D1, kind) for kind in NEEDS[target]]
    signoffs += [Signoff("ws", target, D2, kind) for kind in NEEDS[target]]
    if passed_elsewhere:
        deployments.append(Deployment("ws", "development" if target != "test" else "test", D1))
    if signed_elsewhere:
        signoffs += [Signoff("ws", previous, D1, kind) for kind in NEEDS[target]]
    result = check(target, deployments, signoffs)
    codes = [m.code for m in result.missing]
    assert PromotionCode.PREVIOUS_STAGE_NOT_PASSED in codes
    assert codes.count(PromotionCode.SIGNOFF_MISSING) == len(NEEDS[target])


@pytest.mark.parametrize(
    ("stage", "kind"), [(stage, kind) for stage in CHAIN[1:] for kind in sorted(NEEDS[stage])]
)
def test_each_missing_signoff_is_named(stage, kind):
    previous = CHAIN[CHAIN.index(stage) - 1]
    signoffs = [Signoff("ws", stage, D1, k) for k in NEEDS[stage] if k is not kind]
    result = check(stage, [Deployment("ws", previous, D1)], signoffs)
    assert [m.code for m in result.missing] == [PromotionCode.SIGNOFF_MISSING]
    assert kind.value in result.missing[0].message


def test_a_major_release_needs_the_major_release_approver():
    history = [Deployment("to", "staging", D2), Deployment("to", "production", D1, "1.9.3")]
    signoffs = [Signoff("to", "production", D2, k) for k in NEEDS["production"]]
    major = check("production", history, signoffs, tenant="to", digest=D2, version="2.0.0")
    assert [m.code for m in major.missing] == [PromotionCode.MAJOR_RELEASE_APPROVAL_MISSING]
    signed = [*signoffs, Signoff("to", "production", D2, SignoffKind.MAJOR_RELEASE)]
    assert check("production", history, signed, tenant="to", digest=D2, version="2.0.0").allowed
    assert check("production", history, signoffs, tenant="to", digest=D2, version="1.10.0").allowed


def test_dr_mirrors_production_and_unknown_stages_are_refused():
    assert [m.code for m in check("dr").missing] == [PromotionCode.PREVIOUS_STAGE_NOT_PASSED]
    assert check("dr", [Deployment("ws", "production", D1)]).allowed
    assert [m.code for m in check("qa").missing] == [PromotionCode.UNKNOWN_STAGE]


@pytest.mark.parametrize(
    ("new", "current", "major"),
    [
        ("2.0.0", "1.9.9", True),
        ("v3.0.0-rc.1", "2.4.0", True),
        ("1.10.0", "1.9.0", False),
        ("1.0.0", "2.0.0", False),
        ("2.0.0", None, False),
        ("latest", "1.0.0", False),
        ("01.0.0", "0.9.0", False),  # not semantic versioning: leading zero
    ],
)
def test_major_bump(new, current, major):
    assert is_major_bump(new, current) is major
