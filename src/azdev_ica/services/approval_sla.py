"""The approval SLA (seed 000 §1.4): a warning, then an escalation, and the compliance figure.

A request is due `sla_hours` (policy, default 4) after it was asked; at `warning_hours`
(default 2) the approvers still needed are warned, at the SLA the `azdev_escalation` role (the
Finance Director in the seed) is told. Both times are bound on the request when it is made
(`sla_warning_due_at`, `sla_due_at`), so a later policy change does not move them.

Each step is one action: a conditional UPDATE that stamps `sla_warned_at` / `escalated_at`
only while it is still empty and the request still open, its audit entry and its notification
(an outbox row for the `notify` channel), all in one transaction. Of two schedulers that tick
together the database lets exactly one stamp win; the other changes nothing and writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.auth.roles import Role
from azdev_ica.db.tables import Approval
from azdev_ica.domain.approvals import ApprovalStatus
from azdev_ica.services.approvals import approval_link
from azdev_ica.services.audit import append_audit, rfc3339
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.outbox import NOTIFY_CHANNEL, enqueue

SLA_ACTOR = Actor(kind="system", id="job:approval-sla")
TOPIC_WARNING = "approval.sla_warning"
TOPIC_ESCALATION = "approval.sla_escalation"

# The approvers still needed, by status.
_MISSING = {
    ApprovalStatus.PENDING.value: (Role.APPROVER_TECH, Role.APPROVER_BIZ),
    ApprovalStatus.TECHNICAL_APPROVED.value: (Role.APPROVER_BIZ,),
    ApprovalStatus.BUSINESS_APPROVED.value: (Role.APPROVER_TECH,),
}


@dataclass
class SlaReport:
    warned: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)


def run_sla(ctx: ServiceContext, *, limit: int = 500) -> SlaReport:
    """Warn and escalate every open request whose time has come (each exactly once)."""
    report = SlaReport()
    now = ctx.clock.now()
    with ctx.read() as session:
        to_warn = _due(session, Approval.sla_warned_at, Approval.sla_warning_due_at, now, limit)
        to_escalate = _due(session, Approval.escalated_at, Approval.sla_due_at, now, limit)
    for approval_id in to_warn:
        if ctx.run_action(partial(_step, ctx, approval_id=approval_id, escalate=False)):
            report.warned.append(approval_id)
    for approval_id in to_escalate:
        if ctx.run_action(partial(_step, ctx, approval_id=approval_id, escalate=True)):
            report.escalated.append(approval_id)
    return report


def _due(session: Session, stamp: Any, due_at: Any, now: datetime, limit: int) -> list[int]:
    return list(
        session.scalars(
            select(Approval.id)
            .where(Approval.open_key.is_not(None), stamp.is_(None), due_at <= now)
            .order_by(due_at, Approval.id)
            .limit(limit)
        )
    )


def _step(ctx: ServiceContext, session: Session, *, approval_id: int, escalate: bool) -> bool:
    now = ctx.clock.now()
    stamp = Approval.escalated_at if escalate else Approval.sla_warned_at
    due_at = Approval.sla_due_at if escalate else Approval.sla_warning_due_at
    won = (
        session.connection()
        .execute(
            update(Approval)
            .where(
                Approval.id == approval_id,
                Approval.open_key.is_not(None),
                stamp.is_(None),
                due_at <= now,
            )
            .values({stamp: now})
        )
        .rowcount
    )
    if not won:
        return False
    row = session.get(Approval, approval_id, populate_existing=True)
    assert row is not None
    late = now - row.requested_at
    hours = round(late.total_seconds() / 3600, 2)
    if escalate:
        roles: tuple[Role, ...] = (Role.ESCALATION,)
        topic, action = TOPIC_ESCALATION, "approval.sla_escalate"
        summary = (
            f"Approval {row.id} for {row.tenant}/{row.stage} (run {row.run_key}) missed its "
            f"SLA: still {row.status} {hours:g} h after the request; escalated"
        )
    else:
        roles = _MISSING.get(row.status, (Role.APPROVER_TECH, Role.APPROVER_BIZ))
        topic, action = TOPIC_WARNING, "approval.sla_warning"
        summary = (
            f"Approval {row.id} for {row.tenant}/{row.stage} (run {row.run_key}) is still "
            f"{row.status} {hours:g} h after the request; SLA due {rfc3339(row.sla_due_at)}"
        )
    append_audit(
        session,
        actor=SLA_ACTOR,
        action=action,
        subject_type="approval",
        subject_id=str(row.id),
        tenant=row.tenant,
        data={
            "status": row.status,
            "requested_at": rfc3339(row.requested_at),
            "sla_due_at": rfc3339(row.sla_due_at),
            "notified_roles": [role.value for role in roles],
        },
        at=now,
    )
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
            "summary": summary,
            "link": approval_link(ctx, row.id),
            "roles": [role.value for role in roles],
            "expires_at": rfc3339(row.expires_at),
            "sla_due_at": rfc3339(row.sla_due_at),
        },
        at=now,
    )
    return True


# --- compliance --------------------------------------------------------------------------------

_DECIDED = frozenset({ApprovalStatus.APPROVED.value, ApprovalStatus.REJECTED.value})


@dataclass(frozen=True)
class SlaCompliance:
    """Of the requests made in [since, until) whose SLA outcome is known: how many were decided
    (approved or rejected) by their SLA. Breached: decided late, expired, withdrawn after the
    SLA, or still open past it. Not counted: still open before the SLA, withdrawn before it."""

    since: datetime | None
    until: datetime | None
    within: int
    breached: int
    not_counted: int

    @property
    def total(self) -> int:
        return self.within + self.breached

    @property
    def compliance(self) -> float | None:
        """The share decided within SLA, 0..1 (None when nothing counts yet)."""
        return None if self.total == 0 else self.within / self.total


def classify(
    status: str, decided_at: datetime | None, sla_due_at: datetime, now: datetime
) -> bool | None:
    """True: decided within SLA; False: breached; None: not counted (yet)."""
    if status in _DECIDED and decided_at is not None:
        return decided_at <= sla_due_at
    if status == ApprovalStatus.EXPIRED.value:
        return False
    if status == ApprovalStatus.WITHDRAWN.value:
        return False if decided_at is not None and decided_at > sla_due_at else None
    return False if now >= sla_due_at else None


def sla_compliance(
    ctx: ServiceContext,
    *,
    tenants: Iterable[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> SlaCompliance:
    """The SLA compliance of requests made in [since, until), for `tenants` (None: all)."""
    now = ctx.clock.now()
    query = select(Approval.status, Approval.decided_at, Approval.sla_due_at)
    if tenants is not None:
        query = query.where(Approval.tenant.in_(sorted(set(tenants))))
    if since is not None:
        query = query.where(Approval.requested_at >= since)
    if until is not None:
        query = query.where(Approval.requested_at < until)
    within = breached = not_counted = 0
    with ctx.read() as session:
        for status, decided_at, due in session.execute(query):
            outcome = classify(status, decided_at, due, now)
            if outcome is None:
                not_counted += 1
            elif outcome:
                within += 1
            else:
                breached += 1
    return SlaCompliance(
        since=since, until=until, within=within, breached=breached, not_counted=not_counted
    )
