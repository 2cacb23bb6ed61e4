"""`ica audit replay` rebuilds approvals and signatures from the ledger alone: the live tables
equal the rebuilt ones after a whole lifecycle, and a status changed behind the service's back
is a difference."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from azdev_ica.audit.replay import replay_ledger
from azdev_ica.auth.roles import Role
from azdev_ica.domain.approvals import Decision
from azdev_ica.errors import ApprovalRefused
from azdev_ica.jobs.sealer import seal_now
from azdev_ica.services.approvals import (
    RequestApproval,
    delegate_approver_role,
    expire_due,
    request_approval,
    sign_approval,
    withdraw_approval,
)
from tests.approvals.conftest import PIPELINE, RUN_KEY


def lifecycle(ctx: Any, clock: Any, people: Any, make_person: Any) -> int:
    """Approved, then a new scope withdrawn, then one that expires; a refusal and a
    delegation on the way. Returns the id of the approved request."""

    def ask(**money: Any) -> int:
        command = RequestApproval(run_key=RUN_KEY, currency="NZD", **money)
        return request_approval(ctx, principal=PIPELINE, command=command).approval.id

    def sign(person: Any, approval_id: int, decision: Decision = Decision.APPROVE) -> None:
        sign_approval(
            ctx,
            principal=person.principal(ctx),
            approval_id=approval_id,
            decision=decision,
            comment="checked",
        )

    approved = ask(cost_impact_minor=100, budget_minor=1000)
    with pytest.raises(ApprovalRefused):
        sign(people["rita"], approved)  # the requester: refused, and audited
    sign(people["alice"], approved)
    make_person("dave", [("azdev_auditor", "to")])
    delegate_approver_role(
        ctx,
        principal=people["bob"].principal(ctx),
        to_login="dave",
        role=Role.APPROVER_BIZ,
        tenant="to",
        until=clock.now() + timedelta(hours=4),
        reason="travelling",
    )
    seal_now(ctx)
    clock.advance(timedelta(minutes=10))
    sign(people["bob"], approved)
    withdrawn = ask(cost_impact_minor=200, budget_minor=1000)
    withdraw_approval(ctx, principal=PIPELINE, approval_id=withdrawn, reason="recosted")
    ask(cost_impact_minor=300, budget_minor=1000)
    clock.advance(timedelta(hours=25))
    assert len(expire_due(ctx)) == 1
    return approved


def test_the_ledger_rebuilds_approvals_and_signatures(ctx, clock, run_key, people, make_person):
    lifecycle(ctx, clock, people, make_person)
    report = replay_ledger(ctx.db)
    assert report.ok, report.text()
    assert report.rows["azdev_approval"] == (3, 3)
    assert report.rows["azdev_approval_signature"] == (2, 2)
    assert report.pending >= 1
    assert report.other_actions.get("approval.refuse") == 1


def test_a_status_changed_behind_the_service_is_a_difference(
    ctx, clock, run_key, people, make_person, database
):
    approved = lifecycle(ctx, clock, people, make_person)
    with database.engine.begin() as conn:
        conn.execute(
            text("UPDATE azdev_approval SET status = 'approved' WHERE id <> :id"), {"id": approved}
        )
    report = replay_ledger(ctx.db)
    assert not report.ok
    assert {(d.table, d.column) for d in report.differences} == {("azdev_approval", "status")}
    assert len(report.differences) == 2
