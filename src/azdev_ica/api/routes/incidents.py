"""Incidents (seed 000 §6.2): open one (by hand or from a failed deployment), work it through
its timeline, record the root-cause analysis, close it, follow up; MTTR per tenant."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, Field

from azdev_ica.api.deps import Ctx, IdempotencyKey, json_body, require
from azdev_ica.api.schemas import Code, Instant, Name, RunKey, ShortText, Str, Strict
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import Incident, IncidentNote, IncidentTask
from azdev_ica.domain.incidents import IncidentStatus, Severity
from azdev_ica.queries.incidents import (
    IncidentFilter,
    get_incident,
    list_incidents,
    restore_summary,
)
from azdev_ica.services.audit import rfc3339
from azdev_ica.services.idempotency import IdempotencyRequest
from azdev_ica.services.incidents import (
    OpenIncident,
    add_note,
    add_task,
    complete_task,
    open_incident,
    record_rca,
    set_status,
)

router = APIRouter(tags=["incidents"])

Writer = Annotated[Principal, Depends(require(Permission.INCIDENT_WRITE))]
Reader = Annotated[Principal, Depends(require(Permission.INCIDENT_READ))]
IncidentId = Annotated[int, Path(ge=1, le=2**53, description="The incident's id")]
LongText = Annotated[Str, Field(min_length=1, max_length=20_000)]


class IncidentRequest(Strict):
    title: Name
    severity: Severity
    tenant: Code | None = Field(
        default=None, description="Taken from the run when `run_key` is given"
    )
    stage: Code | None = None
    run_key: RunKey | None = Field(default=None, description="The failed deployment's run")
    detected_at: Instant | None = Field(
        default=None, description="When the failure began (default: the run's end, or now)"
    )
    summary: ShortText | None = None


class NoteRequest(Strict):
    text: LongText


class StatusRequest(Strict):
    status: Literal["open", "mitigated", "resolved", "closed"]
    comment: ShortText | None = None


class RcaRequest(Strict):
    rca: LongText


class TaskRequest(Strict):
    title: Name
    owner: Name | None = None
    due_at: Instant | None = None


class NoteOut(BaseModel):
    at: str
    actor: str
    kind: str
    text: str


class TaskOut(BaseModel):
    id: int
    title: str
    owner: str | None
    due_at: str | None
    done_at: str | None


class IncidentOut(BaseModel):
    id: int
    tenant: str
    stage: str | None
    run_key: str | None
    title: str
    severity: str
    status: str
    opened_at: str
    opened_by: str
    detected_at: str
    restore_due_at: str | None
    mitigated_at: str | None
    resolved_at: str | None
    closed_at: str | None
    rca: str | None
    time_to_restore_seconds: float | None


class IncidentDetailOut(IncidentOut):
    timeline: list[NoteOut]
    tasks: list[TaskOut]


class IncidentPage(BaseModel):
    items: list[IncidentOut]
    next_cursor: str | None


class RestoreOut(BaseModel):
    resolved: int
    unresolved: int
    mttr_seconds: float | None = Field(
        description="Time to restore, median of detected -> resolved (metrics definition v1)"
    )
    within_target: int = Field(description="Resolved within the severity's restore target")
    breached: int


def _t(value: object) -> str | None:
    from datetime import datetime

    return rfc3339(value) if isinstance(value, datetime) else None


def incident_out(incident: Incident) -> IncidentOut:
    took = (
        (incident.resolved_at - incident.detected_at).total_seconds()
        if incident.resolved_at is not None
        else None
    )
    return IncidentOut(
        id=incident.id,
        tenant=incident.tenant,
        stage=incident.stage,
        run_key=incident.run_key,
        title=incident.title,
        severity=incident.severity,
        status=incident.status,
        opened_at=rfc3339(incident.opened_at),
        opened_by=incident.opened_by,
        detected_at=rfc3339(incident.detected_at),
        restore_due_at=_t(incident.restore_due_at),
        mitigated_at=_t(incident.mitigated_at),
        resolved_at=_t(incident.resolved_at),
        closed_at=_t(incident.closed_at),
        rca=incident.rca,
        time_to_restore_seconds=took,
    )


def _note_out(note: IncidentNote) -> NoteOut:
    return NoteOut(at=rfc3339(note.at), actor=note.actor, kind=note.kind, text=note.text)


def _task_out(task: IncidentTask) -> TaskOut:
    return TaskOut(
        id=task.id,
        title=task.title,
        owner=task.owner,
        due_at=_t(task.due_at),
        done_at=_t(task.done_at),
    )


def _detail(ctx: Ctx, principal: Principal, incident_id: int) -> IncidentDetailOut:
    with ctx.read() as session:
        found = get_incident(session, incident_id=incident_id, principal=principal)
        return IncidentDetailOut(
            **incident_out(found.incident).model_dump(),
            timeline=[_note_out(note) for note in found.notes],
            tasks=[_task_out(task) for task in found.tasks],
        )


@router.post(
    "/incident",
    status_code=201,
    response_model=IncidentDetailOut,
    responses={200: {"description": "The run's incident is open already: that incident"}},
    dependencies=[Depends(json_body)],
    summary="Open an incident (by hand, or from a failed deployment's run)",
)
def incident_open(
    ctx: Ctx,
    principal: Writer,
    body: IncidentRequest,
    response: Response,
    idempotency_key: IdempotencyKey,
) -> IncidentDetailOut:
    idempotency = (
        IdempotencyRequest.of(
            principal=principal.id,
            key=idempotency_key,
            operation="incident.open",
            body=body.model_dump(mode="json"),
        )
        if idempotency_key
        else None
    )
    opened = open_incident(
        ctx,
        principal=principal,
        command=OpenIncident(
            title=body.title,
            severity=body.severity,
            tenant=body.tenant,
            stage=body.stage,
            run_key=body.run_key,
            detected_at=body.detected_at,
            summary=body.summary,
        ),
        idempotency=idempotency,
    )
    if not opened.created:
        response.status_code = 200
    return _detail(ctx, principal, opened.incident.id)


@router.get("/incident/{incident_id}", response_model=IncidentDetailOut)
def incident_show(ctx: Ctx, principal: Reader, incident_id: IncidentId) -> IncidentDetailOut:
    return _detail(ctx, principal, incident_id)


@router.get("/incidents", response_model=IncidentPage, summary="Incidents, newest first")
def incident_listing(
    ctx: Ctx,
    principal: Reader,
    tenant: Annotated[Code | None, Query()] = None,
    status: Annotated[Literal["open", "mitigated", "resolved", "closed"] | None, Query()] = None,
    severity: Annotated[Severity | None, Query()] = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,16}$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> IncidentPage:
    with ctx.read() as session:
        rows, after = list_incidents(
            session,
            principal=principal,
            filters=IncidentFilter(
                tenant=tenant, status=status, severity=severity.value if severity else None
            ),
            after=int(cursor) if cursor else None,
            limit=limit,
        )
        return IncidentPage(
            items=[incident_out(row) for row in rows],
            next_cursor=str(after) if after is not None else None,
        )


@router.get(
    "/incidents/restore",
    response_model=RestoreOut,
    summary="MTTR and restore-target compliance over incidents detected in a period",
)
def incident_restore(
    ctx: Ctx,
    principal: Reader,
    tenant: Annotated[Code | None, Query()] = None,
    detected_from: Annotated[Instant | None, Query(alias="from")] = None,
    detected_to: Annotated[Instant | None, Query(alias="to")] = None,
) -> RestoreOut:
    with ctx.read() as session:
        summary = restore_summary(
            session,
            principal=principal,
            tenant=tenant,
            detected_from=detected_from,
            detected_to=detected_to,
        )
    return RestoreOut(
        resolved=summary.resolved,
        unresolved=summary.unresolved,
        mttr_seconds=summary.mttr.total_seconds() if summary.mttr is not None else None,
        within_target=summary.within_target,
        breached=summary.breached,
    )


@router.post(
    "/incident/{incident_id}/note",
    response_model=IncidentDetailOut,
    dependencies=[Depends(json_body)],
)
def incident_note(
    ctx: Ctx, principal: Writer, incident_id: IncidentId, body: NoteRequest
) -> IncidentDetailOut:
    add_note(ctx, principal=principal, incident_id=incident_id, text=body.text)
    return _detail(ctx, principal, incident_id)


@router.post(
    "/incident/{incident_id}/status",
    response_model=IncidentDetailOut,
    dependencies=[Depends(json_body)],
    summary="Mitigated, resolved (ends the time to restore), reopened, or closed (needs an RCA)",
)
def incident_status(
    ctx: Ctx, principal: Writer, incident_id: IncidentId, body: StatusRequest
) -> IncidentDetailOut:
    set_status(
        ctx,
        principal=principal,
        incident_id=incident_id,
        status=IncidentStatus(body.status),
        comment=body.comment,
    )
    return _detail(ctx, principal, incident_id)


@router.post(
    "/incident/{incident_id}/rca",
    response_model=IncidentDetailOut,
    dependencies=[Depends(json_body)],
)
def incident_rca(
    ctx: Ctx, principal: Writer, incident_id: IncidentId, body: RcaRequest
) -> IncidentDetailOut:
    record_rca(ctx, principal=principal, incident_id=incident_id, rca=body.rca)
    return _detail(ctx, principal, incident_id)


@router.post(
    "/incident/{incident_id}/tasks",
    status_code=201,
    response_model=TaskOut,
    dependencies=[Depends(json_body)],
)
def incident_task(
    ctx: Ctx, principal: Writer, incident_id: IncidentId, body: TaskRequest
) -> TaskOut:
    created = add_task(
        ctx,
        principal=principal,
        incident_id=incident_id,
        title=body.title,
        owner=body.owner,
        due_at=body.due_at,
    )
    return _task_out(created)


@router.post("/incident/{incident_id}/tasks/{task_id}/done", response_model=TaskOut)
def incident_task_done(
    ctx: Ctx,
    principal: Writer,
    incident_id: IncidentId,
    task_id: Annotated[int, Path(ge=1, le=2**53)],
) -> TaskOut:
    return _task_out(
        complete_task(ctx, principal=principal, incident_id=incident_id, task_id=task_id)
    )
