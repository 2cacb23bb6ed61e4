"""Reading incidents: one with its timeline and tasks, a filtered page, MTTR."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import Incident, IncidentNote, IncidentTask
from azdev_ica.domain.incidents import time_to_restore
from azdev_ica.domain.metrics import median_duration
from azdev_ica.errors import NotFound, OutOfScope


@dataclass
class IncidentDetail:
    incident: Incident
    notes: list[IncidentNote]
    tasks: list[IncidentTask]


def get_incident(session: Session, *, incident_id: int, principal: Principal) -> IncidentDetail:
    incident = session.get(Incident, incident_id)
    if incident is None or not principal.can_for(Permission.INCIDENT_READ, incident.tenant):
        raise NotFound(f"no incident {incident_id}")
    notes = list(
        session.scalars(
            select(IncidentNote)
            .where(IncidentNote.incident_id == incident.id)
            .order_by(IncidentNote.id)
        )
    )
    tasks = list(
        session.scalars(
            select(IncidentTask)
            .where(IncidentTask.incident_id == incident.id)
            .order_by(IncidentTask.id)
        )
    )
    return IncidentDetail(incident, notes, tasks)


@dataclass(frozen=True)
class IncidentFilter:
    tenant: str | None = None
    status: str | None = None
    severity: str | None = None
    opened_from: datetime | None = None
    opened_to: datetime | None = None


def list_incidents(
    session: Session,
    *,
    principal: Principal,
    filters: IncidentFilter,
    after: int | None,
    limit: int,
) -> tuple[list[Incident], int | None]:
    """Newest first; the cursor is the last id of the page (ids only grow)."""
    query = select(Incident).order_by(Incident.id.desc()).limit(limit + 1)
    scope = principal.scope(Permission.INCIDENT_READ)
    if scope is not None:
        query = query.where(Incident.tenant.in_(sorted(scope)))
    if filters.tenant is not None:
        query = query.where(Incident.tenant == filters.tenant)
    if filters.status is not None:
        query = query.where(Incident.status == filters.status)
    if filters.severity is not None:
        query = query.where(Incident.severity == filters.severity)
    if filters.opened_from is not None:
        query = query.where(Incident.opened_at >= filters.opened_from)
    if filters.opened_to is not None:
        query = query.where(Incident.opened_at < filters.opened_to)
    if after is not None:
        query = query.where(Incident.id < after)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


@dataclass(frozen=True)
class RestoreSummary:
    resolved: int
    unresolved: int
    mttr: timedelta | None
    within_target: int
    breached: int


def restore_summary(
    session: Session,
    *,
    principal: Principal,
    tenant: str | None,
    detected_from: datetime | None,
    detected_to: datetime | None,
) -> RestoreSummary:
    """MTTR (median, detected -> resolved: the metrics' definition v1) over the incidents
    detected in the period, and how many
    were restored within their severity's target (seed 000 §6.1 rollback SLA)."""
    if tenant is not None and not principal.can_for(Permission.INCIDENT_READ, tenant):
        # Another tenant's figures are a 403 (as the monthly report), never zeros.
        raise OutOfScope(f"tenant {tenant!r} is outside the caller's scope")
    query = select(Incident)
    scope = principal.scope(Permission.INCIDENT_READ)
    if scope is not None:
        query = query.where(Incident.tenant.in_(sorted(scope)))
    if tenant is not None:
        query = query.where(Incident.tenant == tenant)
    if detected_from is not None:
        query = query.where(Incident.detected_at >= detected_from)
    if detected_to is not None:
        query = query.where(Incident.detected_at < detected_to)
    durations = []
    unresolved = within = breached = 0
    for incident in session.scalars(query):
        took = time_to_restore(incident.detected_at, incident.resolved_at)
        if took is None or incident.resolved_at is None:
            unresolved += 1
            continue
        durations.append(took)
        if incident.restore_due_at is not None:
            if incident.resolved_at <= incident.restore_due_at:
                within += 1
            else:
                breached += 1
    return RestoreSummary(
        resolved=len(durations),
        unresolved=unresolved,
        mttr=median_duration(durations),
        within_target=within,
        breached=breached,
    )
