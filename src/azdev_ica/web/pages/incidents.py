"""Incidents, overrides and DR drills: list pages, and an incident's page with its timeline
and the actions the API offers (status change, note, RCA) as forms that call the same
services (`services/incidents.py`). Reads go through `queries/` with the caller's principal,
so an incident outside the caller's tenants is a 404 like an absent one. The override page
`/overrides/{id}` lives with the approval pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from azdev_ica.api.deps import Ctx, read_form, require
from azdev_ica.api.routes.ui import login_redirect
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.domain.incidents import IncidentStatus
from azdev_ica.errors import Conflict, NoPolicy, ValidationProblem
from azdev_ica.queries.console import list_overrides, recent_drills
from azdev_ica.queries.incidents import IncidentFilter, get_incident, list_incidents
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.dr import dr_status
from azdev_ica.services.incidents import add_note, record_rca, set_status
from azdev_ica.web.pages.forms import field, next_page, positive
from azdev_ica.web.render import page, redirect

router = APIRouter(include_in_schema=False)

IncidentReader = Annotated[Principal, Depends(require(Permission.INCIDENT_READ))]
IncidentWriter = Annotated[Principal, Depends(require(Permission.INCIDENT_WRITE))]
ApprovalReader = Annotated[Principal, Depends(require(Permission.APPROVAL_READ))]
DrReader = Annotated[Principal, Depends(require(Permission.DR_READ))]
IncidentId = Annotated[int, Path(ge=1, le=2**53)]
Form = [Depends(read_form), Depends(login_redirect)]

PAGE_SIZE = 50
MAX_TEXT = 20_000  # as the API's note and RCA bodies
STATUSES = tuple(status.value for status in IncidentStatus)
SEVERITIES = ("critical", "high", "medium", "low")


@router.get("/incidents", dependencies=[Depends(login_redirect)])
def incidents_page(request: Request, ctx: Ctx, principal: IncidentReader) -> Response:
    filters = IncidentFilter(
        tenant=field(request, "tenant"),
        status=field(request, "status", choices=STATUSES),
        severity=field(request, "severity", choices=SEVERITIES),
    )
    with ctx.read() as session:
        rows, after = list_incidents(
            session,
            principal=principal,
            filters=filters,
            after=positive(request, "cursor", maximum=2**53),
            limit=PAGE_SIZE,
        )
    return page(
        request,
        "incidents.html",
        {
            "incidents": rows,
            "filters": filters,
            "statuses": STATUSES,
            "severities": SEVERITIES,
            "pager": next_page(request, after),
        },
    )


def _incident_page(
    request: Request,
    ctx: ServiceContext,
    principal: Principal,
    incident_id: int,
    *,
    refusal: str | None = None,
    status: int = 200,
) -> Response:
    with ctx.read() as session:
        found = get_incident(session, incident_id=incident_id, principal=principal)
    incident = found.incident
    return page(
        request,
        "incident.html",
        {
            "incident": incident,
            "notes": found.notes,
            "tasks": found.tasks,
            "may_act": principal.can_for(Permission.INCIDENT_WRITE, incident.tenant),
            "next_statuses": [s for s in STATUSES if s != incident.status],
            "refusal": refusal,
        },
        status=status,
    )


@router.get("/incidents/{incident_id}", dependencies=[Depends(login_redirect)])
def incident_page(
    request: Request, ctx: Ctx, principal: IncidentReader, incident_id: IncidentId
) -> Response:
    return _incident_page(request, ctx, principal, incident_id)


def _text(request: Request, name: str) -> str:
    value = str(getattr(request.state, "form", {}).get(name, ""))
    if len(value) > MAX_TEXT:
        raise ValidationProblem(f"at most {MAX_TEXT} characters")
    return value


def _act(
    request: Request, ctx: ServiceContext, principal: Principal, incident_id: int, action: object
) -> Response:
    """Run `action` (a service call); a refusal is shown on the incident's page in words."""
    try:
        action()  # type: ignore[operator]
    except (ValidationProblem, Conflict) as refused:
        return _incident_page(
            request, ctx, principal, incident_id, refusal=refused.detail, status=refused.status
        )
    return redirect(f"/incidents/{incident_id}")


@router.post("/incidents/{incident_id}/note", dependencies=Form)
def incident_note(
    request: Request, ctx: Ctx, principal: IncidentWriter, incident_id: IncidentId
) -> Response:
    return _act(
        request,
        ctx,
        principal,
        incident_id,
        lambda: add_note(
            ctx, principal=principal, incident_id=incident_id, text=_text(request, "text")
        ),
    )


@router.post("/incidents/{incident_id}/status", dependencies=Form)
def incident_status(
    request: Request, ctx: Ctx, principal: IncidentWriter, incident_id: IncidentId
) -> Response:
    def change() -> None:
        wanted = _text(request, "status")
        if wanted not in STATUSES:
            raise ValidationProblem(f"the status is one of {', '.join(STATUSES)}")
        comment = _text(request, "comment").strip() or None
        set_status(
            ctx,
            principal=principal,
            incident_id=incident_id,
            status=IncidentStatus(wanted),
            comment=comment,
        )

    return _act(request, ctx, principal, incident_id, change)


@router.post("/incidents/{incident_id}/rca", dependencies=Form)
def incident_rca(
    request: Request, ctx: Ctx, principal: IncidentWriter, incident_id: IncidentId
) -> Response:
    return _act(
        request,
        ctx,
        principal,
        incident_id,
        lambda: record_rca(
            ctx, principal=principal, incident_id=incident_id, rca=_text(request, "rca")
        ),
    )


OVERRIDE_STATUSES = ("pending", "signed", "rejected")


@router.get("/overrides", dependencies=[Depends(login_redirect)])
def overrides_page(request: Request, ctx: Ctx, principal: ApprovalReader) -> Response:
    tenant = field(request, "tenant")
    status = field(request, "status", choices=OVERRIDE_STATUSES)
    with ctx.read() as session:
        rows, after = list_overrides(
            session,
            principal=principal,
            tenant=tenant,
            status=status,
            after=positive(request, "cursor", maximum=2**53),
            limit=PAGE_SIZE,
        )
    return page(
        request,
        "overrides.html",
        {
            "overrides": rows,
            "tenant": tenant,
            "status": status,
            "statuses": OVERRIDE_STATUSES,
            "pager": next_page(request, after),
            "now": ctx.clock.now(),
        },
    )


DRILLS_SHOWN = 50


@router.get("/dr", dependencies=[Depends(login_redirect)])
def dr_page(request: Request, ctx: Ctx, principal: DrReader) -> Response:
    now = ctx.clock.now()
    with ctx.read() as session:
        try:
            tenants = [
                code
                for code in ctx.policies.active(session).tenants
                if principal.can_for(Permission.DR_READ, code)
            ]
        except NoPolicy:
            tenants = []
        status = dr_status(session, principal=principal, tenants=tenants, now=now)
        drills = recent_drills(session, principal=principal, limit=DRILLS_SHOWN)
    return page(request, "dr.html", {"status": status, "drills": drills})
