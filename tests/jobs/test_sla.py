"""The approval SLA: a warning at 2 h, an escalation at 4 h, each once; the compliance figure."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from azdev_ica.db.tables import Approval, AuditInbox, OutboxMessage
from azdev_ica.domain.approvals import Decision
from azdev_ica.jobs.scheduler import tick
from azdev_ica.services.approval_sla import classify, run_sla, sla_compliance
from azdev_ica.services.approvals import sign_approval
from tests.conftest import T0
from tests.notify.conftest import with_notify
from tests.notify.listeners import SmtpListener

TECH, BIZ, ESCALATION = "azdev_approver_tech", "azdev_approver_biz", "azdev_escalation"


def sla_notes(ctx: Any) -> list[tuple[str, list[str]]]:
    with ctx.read() as session:
        return [
            (row.topic, row.payload["roles"])
            for row in session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.topic.like("approval.sla%"))
                .order_by(OutboxMessage.id)
            )
        ]


def sla_audit(ctx: Any) -> list[str]:
    with ctx.read() as session:
        return list(
            session.scalars(
                select(AuditInbox.action)
                .where(AuditInbox.action.like("approval.sla%"))
                .order_by(AuditInbox.id)
            )
        )


def sign(ctx: Any, person: Any, approval_id: int, decision: str = "approve") -> Any:
    return sign_approval(
        ctx,
        principal=person.principal(ctx),
        approval_id=approval_id,
        decision=Decision(decision),
        comment="ok",
    )


def test_warning_at_two_hours_and_escalation_at_four(ctx, clock, ask):
    approval_id = ask()
    clock.advance(timedelta(hours=2) - timedelta(seconds=1))
    assert run_sla(ctx).warned == []
    clock.advance(timedelta(seconds=1))
    assert run_sla(ctx).warned == [approval_id]
    assert run_sla(ctx).warned == []  # once
    assert sla_notes(ctx) == [("approval.sla_warning", [TECH, BIZ])]
    clock.advance(timedelta(hours=2) - timedelta(seconds=1))
    assert run_sla(ctx).escalated == []
    clock.advance(timedelta(seconds=1))
    report = run_sla(ctx)
    assert report.escalated == [approval_id]
    assert report.warned == []
    assert run_sla(ctx).escalated == []
    assert sla_notes(ctx)[1] == ("approval.sla_escalation", [ESCALATION])
    assert sla_audit(ctx) == ["approval.sla_warning", "approval.sla_escalate"]
    with ctx.read() as session:
        row = session.get(Approval, approval_id)
        assert row.sla_warned_at == T0 + timedelta(hours=2)
        assert row.escalated_at == T0 + timedelta(hours=4)


def test_the_warning_names_only_the_missing_half(ctx, clock, ask, make_person):
    alice = make_person("alice", [(TECH, "ws")])
    approval_id = ask()
    assert sign(ctx, alice, approval_id).status == "technical_approved"
    clock.advance(timedelta(hours=3))
    run_sla(ctx)
    assert sla_notes(ctx) == [("approval.sla_warning", [BIZ])]


def test_decided_requests_are_neither_warned_nor_escalated(ctx, clock, ask, make_person):
    alice = make_person("alice", [(TECH, "ws")])
    approval_id = ask()
    sign(ctx, alice, approval_id, "reject")
    clock.advance(timedelta(hours=5))
    report = run_sla(ctx)
    assert (report.warned, report.escalated) == ([], [])
    assert sla_notes(ctx) == []


def test_two_schedulers_ticking_together_act_once(ctx, clock, ask):
    ids = [ask(str(n)) for n in range(4)]
    clock.advance(timedelta(hours=5))
    barrier = threading.Barrier(2)
    reports: list[Any] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            reports.append(run_sla(ctx))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(i for r in reports for i in r.warned) == sorted(ids)
    assert sorted(i for r in reports for i in r.escalated) == sorted(ids)
    assert sorted(sla_audit(ctx)) == ["approval.sla_escalate"] * 4 + ["approval.sla_warning"] * 4
    assert len(sla_notes(ctx)) == 8


def test_the_escalation_reaches_the_escalation_role_by_mail(ctx, clock, settings, ask, make_person):
    make_person("fd", [(ESCALATION, "ws")], email="fd@example.org")
    make_person("other-fd", [(ESCALATION, "ck")], email="ck-fd@example.org")
    make_person("tina", [(TECH, "ws")], email="tina@example.org")
    listener = SmtpListener().start()
    try:
        configured = with_notify(
            settings,
            {
                "channels": {"mail": {"type": "email"}},
                "routes": [{"topics": ["approval.sla_*"], "channels": ["mail"]}],
                "smtp": {"host": "127.0.0.1", "port": listener.port, "from_address": "i@e.org"},
            },
        )
        approval_id = ask()
        clock.advance(timedelta(hours=4))
        result = tick(ctx, configured, holder="h")
        assert result.failed == {}
        recipients = [(m.rcpt_tos, m.content.decode()) for m in listener.messages]
    finally:
        listener.stop()
    by_address = {tuple(to): text for to, text in recipients}
    assert set(by_address) == {("fd@example.org",), ("tina@example.org",)}
    assert "missed its SLA" in by_address[("fd@example.org",)]
    assert f"/approvals/{approval_id}" in by_address[("fd@example.org",)]
    assert "is still pending" in by_address[("tina@example.org",)]


def test_compliance_counts_decisions_within_the_sla(ctx, clock, ask, make_person):
    alice = make_person("alice", [(TECH, "ws"), (TECH, "ck")])
    bob = make_person("bob", [(BIZ, "ws"), (BIZ, "ck")])
    quick, slow = ask("1"), ask("2", "ck")
    ask("3")  # still open past its SLA at the end: breached
    sign(ctx, alice, quick)
    sign(ctx, bob, quick)  # approved at T0: within
    clock.advance(timedelta(hours=5))
    sign(ctx, alice, slow, "reject")  # decided after 5 h: breached
    ask("4")  # asked at T0+5h: not counted yet
    figure = sla_compliance(ctx)
    assert (figure.within, figure.breached, figure.not_counted) == (1, 2, 1)
    assert figure.compliance == 1 / 3
    assert sla_compliance(ctx, tenants=["ck"]).compliance == 0.0
    assert sla_compliance(ctx, since=T0 + timedelta(hours=1)).total == 0


@given(
    status=st.sampled_from(
        ["pending", "technical_approved", "approved", "rejected", "withdrawn", "expired"]
    ),
    decided=st.one_of(st.none(), st.integers(min_value=0, max_value=600)),
    now=st.integers(min_value=0, max_value=600),
)
def test_classify_is_total_and_consistent(status: str, decided: int | None, now: int):
    due = T0 + timedelta(minutes=240)
    decided_at = None if decided is None else T0 + timedelta(minutes=decided)
    outcome = classify(status, decided_at, due, T0 + timedelta(minutes=now))
    if outcome is True:  # only a decision by the SLA counts as met
        assert status in {"approved", "rejected"}
        assert decided_at is not None
        assert decided_at <= due
    if status in {"pending", "technical_approved"}:
        assert outcome is (None if now < 240 else False)
    if status == "expired":
        assert outcome is False
