"""Dual approval and segregation of duties, as properties over any sequence of actions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from azdev_ica.domain.approvals import (
    Approval,
    ApprovalStatus,
    Decision,
    Half,
    RefusalCode,
    Refused,
    Signer,
    expire,
    sign,
    withdraw,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
EXPIRES = T0 + timedelta(hours=24)
TECH, BIZ = "azdev_approver_tech", "azdev_approver_biz"
PEOPLE = ["alice", "bob", "carol", "dave", "erin"]

people = st.sampled_from(PEOPLE)
signers = st.builds(
    Signer,
    person_id=st.one_of(people, st.none()),
    roles=st.frozensets(st.sampled_from([TECH, BIZ, "azdev_devops", "admin"])),
)
minutes = st.integers(min_value=0, max_value=2 * 24 * 60)
sign_actions = st.tuples(
    st.just("sign"), signers, st.sampled_from(list(Half)), st.sampled_from(list(Decision)), minutes
)
withdraw_actions = st.tuples(st.just("withdraw"), st.one_of(people, st.none()), minutes)
actions = st.lists(
    st.one_of(sign_actions, sign_actions, sign_actions, withdraw_actions), max_size=12
)
requests = st.builds(
    Approval,
    # The requester side: who asked, and whoever triggered any attempt of the run (a re-run
    # started by someone else adds one); none of them may ever sign.
    requesters=st.frozensets(people, min_size=1, max_size=4),
    expires_at=st.just(EXPIRES),
    business_first=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(approval=requests, steps=actions)
def test_any_sequence_keeps_the_rules(approval, steps):
    steps = sorted(steps, key=lambda step: step[-1])  # time moves forward
    accepted: list[tuple[Signer, Half, Decision]] = []
    codes_seen: list[tuple[RefusalCode, bool]] = []
    for step in steps:
        now = T0 + timedelta(minutes=step[-1])
        before = approval
        try:
            if step[0] == "sign":
                _, signer, half, decision, _ = step
                approval = sign(approval, signer, half, decision, now)
                accepted.append((signer, half, decision))
            else:
                approval = withdraw(approval, step[1], now)
                assert step[1] in approval.requesters
        except Refused as refused:
            codes_seen.append((refused.code, now >= EXPIRES and not before.status.final))
            assert approval is before
            continue
        # Nothing changes a decided or expired request.
        assert not before.status.final
        assert now < EXPIRES

    # Past the expiry of an undecided request, every refusal says it expired.
    assert all(code is RefusalCode.EXPIRED for code, late in codes_seen if late)
    for signer, half, _ in accepted:
        assert signer.person_id is not None
        assert signer.person_id not in approval.requesters
        assert half.role in signer.roles
    halves = [half for _, half, _ in accepted]
    assert len(halves) == len(set(halves)) <= 2
    assert len({signer.person_id for signer, _, _ in accepted}) == len(accepted)

    if approval.status is ApprovalStatus.APPROVED:
        assert sorted(halves) == sorted(Half)
        assert all(decision is Decision.APPROVE for _, _, decision in accepted)
    if approval.status is ApprovalStatus.REJECTED:
        assert accepted[-1][2] is Decision.REJECT
    if not approval.business_first and accepted:
        _, first_half, first_decision = accepted[0]
        assert not (first_half is Half.BUSINESS and first_decision is Decision.APPROVE)
    assert [s.person_id for s in approval.signatures] == [s.person_id for s, _, _ in accepted]


@settings(max_examples=200, deadline=None)
@given(
    requesters=st.frozensets(people, min_size=1, max_size=2),
    pair=st.lists(people, min_size=2, max_size=2, unique=True),
    business_first=st.booleans(),
    tech_at=st.integers(min_value=0, max_value=24 * 60 - 1),
    biz_at=st.integers(min_value=0, max_value=24 * 60 - 1),
)
def test_two_eligible_people_before_expiry_always_approve(
    requesters, pair, business_first, tech_at, biz_at
):
    tech_person, biz_person = pair
    assume(not requesters & set(pair))
    if not business_first and biz_at < tech_at:
        tech_at, biz_at = biz_at, tech_at
    approval = Approval(requesters=requesters, expires_at=EXPIRES, business_first=business_first)
    order = sorted(
        [
            (tech_at, 0, Signer(tech_person, frozenset({TECH})), Half.TECHNICAL),
            (biz_at, 1, Signer(biz_person, frozenset({BIZ})), Half.BUSINESS),
        ]
    )
    for at, _, signer, half in order:
        approval = sign(approval, signer, half, Decision.APPROVE, T0 + timedelta(minutes=at))
    assert approval.status is ApprovalStatus.APPROVED


def _pending(**kwargs):
    return Approval(requesters=frozenset({"rita"}), expires_at=EXPIRES, **kwargs)


ALICE_TECH = Signer("alice", frozenset({TECH}))
BOB_BIZ = Signer("bob", frozenset({BIZ}))
BOTH_ROLES = Signer("carol", frozenset({TECH, BIZ}))


@pytest.mark.parametrize(
    ("approval", "signer", "half", "code"),
    [
        (_pending(), Signer(None, frozenset({TECH})), Half.TECHNICAL, RefusalCode.NOT_A_PERSON),
        (
            _pending(),
            Signer("rita", frozenset({TECH})),
            Half.TECHNICAL,
            RefusalCode.REQUESTER_SIGNS,
        ),
        (_pending(), BOB_BIZ, Half.TECHNICAL, RefusalCode.ROLE_NOT_HELD),
        (_pending(), BOB_BIZ, Half.BUSINESS, RefusalCode.TECHNICAL_FIRST),
    ],
)
def test_each_refusal_names_its_code(approval, signer, half, code):
    with pytest.raises(Refused) as refused:
        sign(approval, signer, half, Decision.APPROVE, T0)
    assert refused.value.code is code


def test_one_person_never_signs_both_halves():
    half_done = sign(_pending(), BOTH_ROLES, Half.TECHNICAL, Decision.APPROVE, T0)
    assert half_done.status is ApprovalStatus.TECHNICAL_APPROVED
    with pytest.raises(Refused) as refused:
        sign(half_done, BOTH_ROLES, Half.BUSINESS, Decision.APPROVE, T0)
    assert refused.value.code is RefusalCode.SAME_PERSON_BOTH_HALVES


def test_a_half_is_signed_once():
    half_done = sign(_pending(), ALICE_TECH, Half.TECHNICAL, Decision.APPROVE, T0)
    with pytest.raises(Refused) as refused:
        sign(half_done, BOTH_ROLES, Half.TECHNICAL, Decision.APPROVE, T0)
    assert refused.value.code is RefusalCode.HALF_ALREADY_SIGNED


def test_business_first_where_the_policy_allows_it():
    first = sign(_pending(business_first=True), BOB_BIZ, Half.BUSINESS, Decision.APPROVE, T0)
    assert first.status is ApprovalStatus.BUSINESS_APPROVED
    done = sign(first, ALICE_TECH, Half.TECHNICAL, Decision.APPROVE, T0)
    assert done.status is ApprovalStatus.APPROVED


def test_a_business_rejection_needs_no_technical_signature_first():
    rejected = sign(_pending(), BOB_BIZ, Half.BUSINESS, Decision.REJECT, T0)
    assert rejected.status is ApprovalStatus.REJECTED
    with pytest.raises(Refused) as refused:
        sign(rejected, ALICE_TECH, Half.TECHNICAL, Decision.APPROVE, T0)
    assert refused.value.code is RefusalCode.DECIDED


def test_expiry_is_exact_and_final():
    approval = _pending()
    just_before = EXPIRES - timedelta(microseconds=1)
    assert approval.status_at(just_before) is ApprovalStatus.PENDING
    assert approval.status_at(EXPIRES) is ApprovalStatus.EXPIRED
    assert expire(approval, just_before) is approval
    assert expire(approval, EXPIRES).status is ApprovalStatus.EXPIRED
    with pytest.raises(Refused) as refused:
        sign(approval, ALICE_TECH, Half.TECHNICAL, Decision.APPROVE, EXPIRES)
    assert refused.value.code is RefusalCode.EXPIRED
    approved = sign(
        sign(approval, ALICE_TECH, Half.TECHNICAL, Decision.APPROVE, T0),
        BOB_BIZ,
        Half.BUSINESS,
        Decision.APPROVE,
        T0,
    )
    assert approved.status_at(EXPIRES + timedelta(days=1)) is ApprovalStatus.APPROVED


def test_only_the_requester_withdraws():
    with pytest.raises(Refused) as refused:
        withdraw(_pending(), "alice", T0)
    assert refused.value.code is RefusalCode.NOT_THE_REQUESTER
    assert withdraw(_pending(), "rita", T0).status is ApprovalStatus.WITHDRAWN
