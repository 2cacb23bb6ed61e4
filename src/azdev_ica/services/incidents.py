"""Incidents (seed 000 §6.2): open, note, move through mitigated/resolved, RCA, close, tasks.

Each action is one transaction with its audit entry; opening one also queues a notification
to the tenant's stakeholders (the outbox), as the seed's "email stakeholders" asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor, Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.rows import RunRow
from azdev_ica.db.tables import Incident, IncidentNote, IncidentTask, PipelineRun
from azdev_ica.domain.incidents import (
    IncidentStatus,
    Severity,
    TransitionRefused,
    check_transition,
    restore_due,
)
from azdev_ica.errors import (
    Conflict,
    NotFound,
    OutOfScope,
    UnknownStage,
    UnknownTenant,
    ValidationProblem,
)
from azdev_ica.services.audit import append_audit, rfc3339
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.idempotency import IdempotencyRequest, find_prior, remember
from azdev_ica.services.outbox import enqueue

OPEN_STATUSES = (IncidentStatus.OPEN, IncidentStatus.MITIGATED)


@dataclass(frozen=True)
class OpenIncident:
    title: str
    severity: Severity
    tenant: str | None = None
    stage: str | None = None
    run_key: str | None = None
    detected_at: datetime | None = None
    summary: str | None = None


@dataclass(frozen=True)
class Opened:
    incident: Incident
    created: bool


def _scoped(session: Session, principal: Principal, incident_id: int) -> Incident:
    incident = session.get(Incident, incident_id)
    # Out of scope answers like absent: a scoped caller learns nothing of other tenants.
    if incident is None or not principal.can_on_run(
        Permission.INCIDENT_WRITE, incident.tenant, incident.stage
    ):
        raise NotFound(f"no incident {incident_id}")
    return incident


def _note(
    session: Session, incident: Incident, *, actor: str, kind: str, text: str, at: datetime
) -> None:
    session.add(IncidentNote(incident_id=incident.id, at=at, actor=actor, kind=kind, text=text))


def open_incident(
    ctx: ServiceContext,
    *,
    principal: Principal,
    command: OpenIncident,
    idempotency: IdempotencyRequest | None = None,
) -> Opened:
    """Open an incident, by hand or from a failed deployment (`run_key`). A run with an
    incident still open or mitigated answers with that incident (a retry never duplicates)."""
    title = command.title.strip()
    if not title:
        raise ValidationProblem("an incident needs a title")

    def action(session: Session) -> Opened:
        prior = find_prior(session, idempotency)
        if prior is not None:
            found = session.get(Incident, int(prior.response["incident"]))
            assert found is not None
            return Opened(found, created=False)
        now = ctx.clock.now()
        tenant, stage, run = command.tenant, command.stage, None
        if command.run_key is not None:
            run = session.scalars(
                select(PipelineRun).where(PipelineRun.run_key == command.run_key)
            ).one_or_none()
            if run is None or not principal.can_on_run(
                Permission.INCIDENT_WRITE, run.tenant, run.stage
            ):
                raise NotFound(f"no run {command.run_key!r}")
            if tenant is not None and tenant != run.tenant:
                raise ValidationProblem(f"run {run.run_key} belongs to tenant {run.tenant!r}")
            tenant, stage = run.tenant, stage or run.stage
            existing = session.scalars(
                select(Incident)
                .where(Incident.run_pk == run.id, Incident.status.in_(OPEN_STATUSES))
                .order_by(Incident.id)
            ).first()
            if existing is not None:
                return Opened(existing, created=False)
        if tenant is None:
            raise ValidationProblem("name the tenant (or the run) the incident is about")
        if not principal.can_for(Permission.INCIDENT_WRITE, tenant):
            raise OutOfScope(f"tenant {tenant!r} is outside the caller's scope")
        if not principal.can_on_run(Permission.INCIDENT_WRITE, tenant, stage):
            raise OutOfScope(f"stage {stage!r} is outside the caller's scope")
        policy = ctx.policies.active(session)
        if tenant not in policy.tenants:
            raise UnknownTenant(f"tenant {tenant!r} is not in the active policy")
        if stage is not None and policy.stage(stage) is None:
            raise UnknownStage(f"stage {stage!r} is not in the active policy")
        detected = command.detected_at or (run.end_time if run and run.end_time else now)
        if detected > now:
            raise ValidationProblem("an incident cannot be detected in the future")
        incident = create_incident(
            session,
            actor=principal.actor,
            tenant=tenant,
            stage=stage,
            run=run,
            title=title,
            severity=command.severity,
            detected=detected,
            summary=command.summary,
            now=now,
        )
        remember(session, idempotency, status_code=201, reference={"incident": incident.id}, at=now)
        return Opened(incident, created=True)

    return ctx.run_action(action)


def create_incident(
    session: Session,
    *,
    actor: Actor,
    tenant: str,
    stage: str | None,
    run: PipelineRun | RunRow | None,
    title: str,
    severity: Severity,
    detected: datetime,
    summary: str | None,
    now: datetime,
) -> Incident:
    """The incident row, its summary note, its audit entry and its notification, in the
    caller's transaction (the caller has checked scope and the policy)."""
    incident = Incident(
        tenant=tenant,
        stage=stage,
        run_pk=run.id if run else None,
        run_key=run.run_key if run else None,
        title=title,
        severity=severity.value,
        status=IncidentStatus.OPEN.value,
        opened_at=now,
        opened_by=actor.id,
        detected_at=detected,
        restore_due_at=restore_due(severity, detected),
        updated_at=now,
    )
    session.add(incident)
    session.flush()
    if summary:
        _note(session, incident, actor=actor.id, kind="note", text=summary, at=now)
    append_audit(
        session,
        actor=actor,
        action="incident.open",
        subject_type="incident",
        subject_id=str(incident.id),
        tenant=tenant,
        data={
            "title": title,
            "severity": incident.severity,
            "stage": stage,
            "run_key": incident.run_key,
            "detected_at": rfc3339(detected),
            "summary": summary,
        },
        at=now,
    )
    enqueue(
        session,
        topic="incident.opened",
        channel="notify",
        subject_type="incident",
        subject_id=str(incident.id),
        tenant=tenant,
        payload={
            "topic": "incident.opened",
            "tenant": tenant,
            "stage": stage,
            "incident_id": incident.id,
            "severity": incident.severity,
            "summary": f"[{incident.severity}] incident {incident.id} in {tenant}: {title}",
            "roles": ["azdev_devops", "tenant_admin", "azdev_escalation"],
        },
        at=now,
    )
    return incident


def add_note(ctx: ServiceContext, *, principal: Principal, incident_id: int, text: str) -> Incident:
    text = text.strip()
    if not text:
        raise ValidationProblem("a note needs some text")

    def action(session: Session) -> Incident:
        incident = _scoped(session, principal, incident_id)
        now = ctx.clock.now()
        _note(session, incident, actor=principal.id, kind="note", text=text, at=now)
        incident.updated_at = now
        append_audit(
            session,
            actor=principal.actor,
            action="incident.note",
            subject_type="incident",
            subject_id=str(incident.id),
            tenant=incident.tenant,
            data={"text": text},
            at=now,
        )
        return incident

    return ctx.run_action(action)


def set_status(
    ctx: ServiceContext,
    *,
    principal: Principal,
    incident_id: int,
    status: IncidentStatus,
    comment: str | None = None,
) -> Incident:
    """Move an incident: mitigated, resolved (ends its time to restore), reopened, closed
    (only with an RCA)."""

    def action(session: Session) -> Incident:
        incident = _scoped(session, principal, incident_id)
        current = IncidentStatus(incident.status)
        try:
            check_transition(current, status, has_rca=bool(incident.rca))
        except TransitionRefused as exc:
            raise Conflict(str(exc)) from None
        now = ctx.clock.now()
        incident.status = status.value
        incident.updated_at = now
        if status is IncidentStatus.MITIGATED:
            incident.mitigated_at = now
        elif status is IncidentStatus.RESOLVED:
            incident.resolved_at = now
        elif status is IncidentStatus.CLOSED:
            incident.closed_at = now
        elif status is IncidentStatus.OPEN:  # it came back: restore time runs again
            incident.resolved_at = None
        text = f"{current.value} -> {status.value}" + (f": {comment.strip()}" if comment else "")
        _note(session, incident, actor=principal.id, kind="status", text=text, at=now)
        append_audit(
            session,
            actor=principal.actor,
            action="incident.status",
            subject_type="incident",
            subject_id=str(incident.id),
            tenant=incident.tenant,
            data={"from": current.value, "to": status.value, "comment": comment},
            at=now,
        )
        return incident

    return ctx.run_action(action)


def record_rca(
    ctx: ServiceContext, *, principal: Principal, incident_id: int, rca: str
) -> Incident:
    """Record (or replace, while not closed) the root-cause analysis."""
    rca = rca.strip()
    if len(rca) < 20:
        raise ValidationProblem("a root-cause analysis needs at least 20 characters")

    def action(session: Session) -> Incident:
        incident = _scoped(session, principal, incident_id)
        if incident.status == IncidentStatus.CLOSED.value:
            raise Conflict("the incident is closed; its RCA is final")
        now = ctx.clock.now()
        incident.rca = rca
        incident.rca_by = principal.id
        incident.updated_at = now
        _note(session, incident, actor=principal.id, kind="rca", text=rca, at=now)
        append_audit(
            session,
            actor=principal.actor,
            action="incident.rca",
            subject_type="incident",
            subject_id=str(incident.id),
            tenant=incident.tenant,
            data={"rca": rca},
            at=now,
        )
        return incident

    return ctx.run_action(action)


def add_task(
    ctx: ServiceContext,
    *,
    principal: Principal,
    incident_id: int,
    title: str,
    owner: str | None = None,
    due_at: datetime | None = None,
) -> IncidentTask:
    title = title.strip()
    if not title:
        raise ValidationProblem("a task needs a title")

    def action(session: Session) -> IncidentTask:
        incident = _scoped(session, principal, incident_id)
        now = ctx.clock.now()
        task = IncidentTask(
            incident_id=incident.id,
            title=title,
            owner=owner,
            due_at=due_at,
            created_at=now,
            created_by=principal.id,
        )
        session.add(task)
        session.flush()
        _note(
            session,
            incident,
            actor=principal.id,
            kind="task",
            text=f"task {task.id}: {title}",
            at=now,
        )
        append_audit(
            session,
            actor=principal.actor,
            action="incident.task",
            subject_type="incident",
            subject_id=str(incident.id),
            tenant=incident.tenant,
            data={
                "task": task.id,
                "title": title,
                "owner": owner,
                "due_at": rfc3339(due_at) if due_at else None,
            },
            at=now,
        )
        return task

    return ctx.run_action(action)


def complete_task(
    ctx: ServiceContext, *, principal: Principal, incident_id: int, task_id: int
) -> IncidentTask:
    def action(session: Session) -> IncidentTask:
        incident = _scoped(session, principal, incident_id)
        task = session.get(IncidentTask, task_id)
        if task is None or task.incident_id != incident.id:
            raise NotFound(f"no task {task_id} in incident {incident_id}")
        if task.done_at is not None:
            return task
        now = ctx.clock.now()
        task.done_at = now
        task.done_by = principal.id
        _note(
            session, incident, actor=principal.id, kind="task", text=f"task {task.id} done", at=now
        )
        append_audit(
            session,
            actor=principal.actor,
            action="incident.task_done",
            subject_type="incident",
            subject_id=str(incident.id),
            tenant=incident.tenant,
            data={"task": task.id},
            at=now,
        )
        return task

    return ctx.run_action(action)
