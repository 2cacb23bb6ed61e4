"""The approval lifecycle through the service layer, on SQLite and PostgreSQL: binding the scope,
segregation of duties as people, refusals that leave a trace, notifications in the same
transaction, expiry and delegation with the injected clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.auth.principal import Actor, Principal
from azdev_ica.auth.roles import Role
from azdev_ica.db.tables import (
    Approval,
    ApprovalSignature,
    AuditInbox,
    OutboxMessage,
    RoleGrant,
)
from azdev_ica.domain.approvals import Decision, Half
from azdev_ica.errors import ApprovalRefused, Conflict, Forbidden, NotFound, ValidationProblem
from azdev_ica.services.approvals import (
    RequestApproval,
    delegate_approver_role,
    expire_due,
    request_approval,
    sign_approval,
    withdraw_approval,
)
from azdev_ica.services.people import revoke_grant
from azdev_ica.services.policies import apply_policy
from tests.approvals.conftest import COMMIT, DIGEST, PIPELINE, RUN_KEY
from tests.conftest import EXAMPLE_POLICY

OPERATOR = Actor(kind="operator", id="test")


def ask(ctx: Any, **overrides: Any) -> Any:
    command = RequestApproval(**{"run_key": RUN_KEY, **overrides})
    return request_approval(ctx, principal=PIPELINE, command=command)


def sign(ctx: Any, person: Any, approval_id: int, decision: str = "approve", half: Any = None):
    return sign_approval(
        ctx,
        principal=person.principal(ctx),
        approval_id=approval_id,
        decision=Decision(decision),
        half=half,
        comment=f"{decision} by {person.login}",
    )


def audit(ctx: Any, action_prefix: str = "approval.") -> list[tuple[str, str]]:
    with ctx.read() as session:
        rows = session.execute(select(AuditInbox.action, AuditInbox.body).order_by(AuditInbox.id))
        return [
            (a, b.decode() if isinstance(b, bytes) else b)
            for a, b in rows
            if a.startswith(action_prefix)
        ]


def outbox(ctx: Any) -> list[OutboxMessage]:
    with ctx.read() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def stored(ctx: Any, approval_id: int) -> Approval:
    with ctx.read() as session:
        row = session.get(Approval, approval_id)
        assert row is not None
        return row


def refused(call: Any) -> str:
    with pytest.raises(ApprovalRefused) as caught:
        call()
    assert caught.value.status == 403
    return str(caught.value.extensions["code"])


class TestRequest:
    def test_binds_the_scope_and_notifies_the_approvers(self, ctx, run_key, people, clock):
        rita = people["rita"]  # linked to the run's requested_for before the request
        outcome = ask(ctx, cost_impact_minor=125_000, budget_minor=500_000, currency="NZD")
        assert outcome.created
        row = outcome.approval
        assert (row.tenant, row.stage, row.status) == ("to", "production", "pending")
        assert (row.artifact_digest, row.commit) == (DIGEST, COMMIT)
        assert (row.cost_impact_minor, row.budget_minor, row.currency) == (125_000, 500_000, "NZD")
        assert row.requester_person_id == rita.person_id
        assert row.expires_at == clock.now() + timedelta(hours=24)
        assert row.sla_due_at == clock.now() + timedelta(hours=4)
        assert row.sla_warning_due_at == clock.now() + timedelta(hours=2)
        assert len(row.policy_hash) == 64
        [message] = outbox(ctx)
        assert (message.topic, message.channel, message.tenant) == (
            "approval.requested",
            "notify",
            "to",
        )
        assert message.payload["roles"] == ["azdev_approver_tech", "azdev_approver_biz"]
        assert message.payload["link"] == f"https://ica.localhost/approvals/{row.id}"
        assert message.payload["run_key"] == RUN_KEY
        [(action, body)] = audit(ctx)
        assert action == "approval.request"
        # The requester's provider id enters the ledger only as a salted commitment.
        assert "salted-sha256:" in body
        assert "rita" not in body

    def test_asking_again_returns_the_open_request(self, ctx, run_key, people):
        first = ask(ctx)
        again = ask(ctx)
        assert not again.created
        assert again.approval.id == first.approval.id
        assert [a for a, _ in audit(ctx)] == ["approval.request"]

    def test_another_scope_while_one_is_open_is_a_conflict(self, ctx, run_key, people):
        first = ask(ctx, cost_impact_minor=100, budget_minor=200, currency="NZD")
        with pytest.raises(Conflict) as caught:
            ask(ctx, cost_impact_minor=999, budget_minor=200, currency="NZD")
        assert caught.value.extensions["approval_id"] == first.approval.id

    def test_asking_after_a_decision_reads_the_decision_for_the_same_scope(
        self, ctx, run_key, people
    ):
        money = {"cost_impact_minor": 100, "budget_minor": 200, "currency": "NZD"}
        approval_id = ask(ctx, **money).approval.id
        sign(ctx, people["alice"], approval_id)
        sign(ctx, people["bob"], approval_id)
        again = ask(ctx, **money)
        assert (again.created, again.approval.id, again.approval.status) == (
            False,
            approval_id,
            "approved",
        )
        # A decision binds its scope only: a higher cost is a new request.
        other = ask(ctx, **{**money, "cost_impact_minor": 150})
        assert other.created
        sign(ctx, people["bob"], other.approval.id, "reject")
        assert ask(ctx, **{**money, "cost_impact_minor": 150}).approval.status == "rejected"

    def test_a_digest_the_run_did_not_build_is_refused(self, ctx, run_key):
        with pytest.raises(Conflict):
            ask(ctx, artifact_digest="sha256:" + "cd" * 32)

    def test_money_needs_a_currency(self, ctx, run_key):
        with pytest.raises(ValidationProblem):
            ask(ctx, cost_impact_minor=5)

    def test_an_out_of_scope_run_answers_like_absent(self, ctx, run_key):
        samoa = Principal.with_role(
            kind="api_key", id="api_key:ws", name="ws", role=Role.DEVOPS, tenants=frozenset({"ws"})
        )
        with pytest.raises(NotFound):
            request_approval(ctx, principal=samoa, command=RequestApproval(run_key=RUN_KEY))
        with pytest.raises(NotFound):
            ask(ctx, run_key="ado:nope:1")


class TestSigning:
    def test_technical_then_business_approves(self, ctx, run_key, people):
        approval_id = ask(ctx).approval.id
        assert sign(ctx, people["alice"], approval_id).status == "technical_approved"
        done = sign(ctx, people["bob"], approval_id)
        assert done.status == "approved"
        assert done.open_key is None
        assert done.decided_at is not None
        with ctx.read() as session:
            signatures = list(session.scalars(select(ApprovalSignature)))
        assert [(s.half, s.role, s.person_id) for s in signatures] == [
            ("technical", "azdev_approver_tech", people["alice"].person_id),
            ("business", "azdev_approver_biz", people["bob"].person_id),
        ]
        assert [m.topic for m in outbox(ctx)] == [
            "approval.requested",
            "approval.signed",
            "approval.decided",
        ]
        assert outbox(ctx)[1].payload["roles"] == ["azdev_approver_biz"]
        assert [a for a, _ in audit(ctx)] == ["approval.request", "approval.sign", "approval.sign"]

    def test_a_retried_signature_is_answered_not_refused(self, ctx, run_key, people):
        approval_id = ask(ctx).approval.id
        sign(ctx, people["alice"], approval_id)
        assert sign(ctx, people["alice"], approval_id).status == "technical_approved"
        assert [a for a, _ in audit(ctx)].count("approval.sign") == 1

    def test_either_approver_rejects(self, ctx, run_key, people):
        approval_id = ask(ctx).approval.id
        assert sign(ctx, people["bob"], approval_id, "reject").status == "rejected"
        assert refused(lambda: sign(ctx, people["alice"], approval_id)) == "approval_decided"

    def test_the_requester_never_signs_and_the_refusal_is_audited(self, ctx, run_key, people):
        approval_id = ask(ctx).approval.id
        code = refused(lambda: sign(ctx, people["rita"], approval_id))
        assert code == "requester_cannot_sign"
        assert stored(ctx, approval_id).status == "pending"
        [(_, body)] = [entry for entry in audit(ctx) if entry[0] == "approval.refuse"]
        assert '"code":"requester_cannot_sign"' in body
        assert '"attempted":"sign"' in body

    def test_a_requester_linked_after_the_request_is_still_the_requester(
        self, ctx, run_key, make_person
    ):
        approval_id = ask(ctx).approval.id
        assert stored(ctx, approval_id).requester_person_id is None  # nobody linked yet
        from tests.approvals.conftest import RITA_ADO_ID

        rita = make_person("rita", [("azdev_approver_tech", "to")], [("ado", RITA_ADO_ID)])
        assert refused(lambda: sign(ctx, rita, approval_id)) == "requester_cannot_sign"

    def test_one_person_never_signs_both_halves(self, ctx, run_key, people):
        approval_id = ask(ctx).approval.id
        sign(ctx, people["carol"], approval_id, half=Half.TECHNICAL)
        code = refused(lambda: sign(ctx, people["carol"], approval_id, half=Half.BUSINESS))
        assert code == "same_person_both_halves"

    def test_the_signer_holds_the_role_of_the_half(self, ctx, run_key, people):
        approval_id = ask(ctx).approval.id
        code = refused(lambda: sign(ctx, people["bob"], approval_id, half=Half.TECHNICAL))
        assert code == "role_not_held"

    def test_business_waits_for_technical_by_default(self, ctx, run_key, people):
        approval_id = ask(ctx).approval.id
        assert refused(lambda: sign(ctx, people["bob"], approval_id)) == "technical_half_first"

    def test_an_approver_of_another_tenant_does_not_even_see_it(self, ctx, run_key, people):
        approval_id = ask(ctx).approval.id
        with pytest.raises(NotFound):
            sign(ctx, people["walt"], approval_id)

    def test_a_key_never_signs_even_with_an_approver_role(self, ctx, run_key, people):
        approval_id = ask(ctx).approval.id
        key = Principal.with_role(
            kind="api_key", id="api_key:x", name="x", role=Role.APPROVER_TECH, tenants=None
        )
        code = refused(
            lambda: sign_approval(
                ctx, principal=key, approval_id=approval_id, decision=Decision.APPROVE
            )
        )
        assert code == "signer_not_a_person"

    def test_the_role_is_checked_at_signing_time(self, ctx, run_key, people):
        carol = people["carol"]
        approval_id = ask(ctx).approval.id
        revoke_grant(
            ctx, actor=OPERATOR, login="carol", role=Role.APPROVER_TECH, tenant="to", reason="moved"
        )
        code = refused(lambda: sign(ctx, carol, approval_id, half=Half.TECHNICAL))
        assert code == "role_not_held"
        # Holding no role for the tenant at all, one does not even see the request.
        revoke_grant(
            ctx, actor=OPERATOR, login="carol", role=Role.APPROVER_BIZ, tenant="to", reason="left"
        )
        with pytest.raises(NotFound):
            sign(ctx, carol, approval_id, half=Half.TECHNICAL)

    def test_business_first_where_the_policy_allows_it(self, ctx, run_key, people):
        document = EXAMPLE_POLICY.read_text().replace(
            "business_first_stages: []", "business_first_stages: [production]"
        )
        apply_policy(ctx, actor=OPERATOR, document=document, source="test")
        approval_id = ask(ctx).approval.id
        assert sign(ctx, people["bob"], approval_id).status == "business_approved"
        assert sign(ctx, people["alice"], approval_id).status == "approved"


class TestWithdrawAndExpiry:
    def test_the_requesting_side_withdraws(self, ctx, run_key, people):
        approval_id = ask(ctx).approval.id
        row = withdraw_approval(ctx, principal=PIPELINE, approval_id=approval_id, reason="cancel")
        assert (row.status, row.closed_reason, row.open_key) == ("withdrawn", "cancel", None)
        assert outbox(ctx)[-1].topic == "approval.withdrawn"
        # The person who triggered the run may withdraw too (a fresh request).
        second = ask(ctx).approval.id
        assert second != approval_id
        rita = people["rita"].principal(ctx)
        assert withdraw_approval(ctx, principal=rita, approval_id=second, reason="x").status == (
            "withdrawn"
        )

    def test_an_approver_cannot_withdraw(self, ctx, run_key, people):
        approval_id = ask(ctx).approval.id
        alice = people["alice"].principal(ctx)
        code = refused(
            lambda: withdraw_approval(ctx, principal=alice, approval_id=approval_id, reason="no")
        )
        assert code == "only_requester_withdraws"
        assert [a for a, _ in audit(ctx)][-1] == "approval.refuse"

    def test_expiry_closes_the_request_at_its_time(self, ctx, run_key, people, clock):
        approval_id = ask(ctx).approval.id
        clock.advance(timedelta(hours=24) - timedelta(microseconds=1))
        assert expire_due(ctx) == []
        clock.advance(timedelta(microseconds=1))
        assert refused(lambda: sign(ctx, people["alice"], approval_id)) == "approval_expired"
        assert expire_due(ctx) == [approval_id]
        assert expire_due(ctx) == []
        row = stored(ctx, approval_id)
        assert (row.status, row.open_key) == ("expired", None)
        assert outbox(ctx)[-1].topic == "approval.expired"
        assert "approval.expire" in [a for a, _ in audit(ctx)]

    def test_asking_after_expiry_opens_a_new_request(self, ctx, run_key, clock):
        first = ask(ctx).approval.id
        clock.advance(timedelta(hours=25))
        second = ask(ctx)
        assert second.created
        assert second.approval.id != first
        assert stored(ctx, first).status == "expired"


class TestDelegation:
    def test_a_delegated_role_signs_until_it_ends(self, ctx, run_key, people, make_person, clock):
        dave = make_person("dave", [("azdev_auditor", "to")])
        grant = delegate_approver_role(
            ctx,
            principal=people["alice"].principal(ctx),
            to_login="dave",
            role=Role.APPROVER_TECH,
            tenant="to",
            until=clock.now() + timedelta(hours=2),
            reason="on leave",
        )
        assert grant.delegated_from is not None
        assert "grant.delegate" in [a for a, _ in audit(ctx, "grant.")]
        approval_id = ask(ctx).approval.id
        clock.advance(timedelta(hours=2) - timedelta(seconds=1))
        assert dave.principal(ctx).holds(Role.APPROVER_TECH, "to")
        assert not dave.principal(ctx).holds(Role.APPROVER_TECH, "ws")
        clock.advance(timedelta(seconds=1))
        assert refused(lambda: sign(ctx, dave, approval_id)) == "role_not_held"
        assert sign(ctx, people["alice"], approval_id).status == "technical_approved"

    def test_only_ones_own_role_is_delegated(self, ctx, people, make_person, clock):
        make_person("dave")
        bob = people["bob"].principal(ctx)
        with pytest.raises(Forbidden):
            delegate_approver_role(
                ctx,
                principal=bob,
                to_login="dave",
                role=Role.APPROVER_TECH,
                tenant="to",
                until=clock.now() + timedelta(hours=1),
                reason="x",
            )
        with ctx.read() as session:
            assert (
                session.scalars(
                    select(RoleGrant).where(RoleGrant.delegated_from.is_not(None))
                ).all()
                == []
            )

    def test_a_delegation_is_time_limited(self, ctx, people, make_person, clock):
        make_person("dave")
        with pytest.raises(ValidationProblem):
            delegate_approver_role(
                ctx,
                principal=people["alice"].principal(ctx),
                to_login="dave",
                role=Role.APPROVER_TECH,
                tenant="to",
                until=clock.now() + timedelta(days=15),
                reason="x",
            )
