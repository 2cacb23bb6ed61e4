"""The run page (`/runs/{key}`, linked from alerts) and the override page (`/overrides/{id}`,
linked from override notifications): minimal read-only views over the API's own queries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from sqlalchemy import select

from azdev_ica.api.deps import Ctx, require
from azdev_ica.api.routes.ui import login_redirect
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import Person
from azdev_ica.queries.approvals import ApprovalFilter, list_approvals
from azdev_ica.queries.pages import run_facts
from azdev_ica.services.overrides import get_override
from azdev_ica.web.render import page

router = APIRouter(include_in_schema=False)

RunReader = Annotated[Principal, Depends(require(Permission.RUN_READ))]
# As the API's GET /override/{id}: approval readers read overrides.
OverrideReader = Annotated[Principal, Depends(require(Permission.APPROVAL_READ))]
RunKey = Annotated[str, Path(min_length=1, max_length=200)]
OverrideId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/runs/{run_key}", dependencies=[Depends(login_redirect)])
def run_page(request: Request, ctx: Ctx, principal: RunReader, run_key: RunKey) -> Response:
    now = ctx.clock.now()
    with ctx.read() as session:
        facts = run_facts(session, run_key=run_key, principal=principal)
        approvals = []
        if principal.can(Permission.APPROVAL_READ):
            rows, _ = list_approvals(
                session,
                principal=principal,
                filters=ApprovalFilter(run_key=run_key),
                limit=100,
                cursor=None,
                now=now,
            )
            approvals = [(row, status.value) for row, status in rows]
    return page(
        request,
        "run.html",
        {"facts": facts, "run": facts.detail.run if facts.detail else None, "approvals": approvals},
    )


@router.get("/overrides/{override_id}", dependencies=[Depends(login_redirect)])
def override_page(
    request: Request, ctx: Ctx, principal: OverrideReader, override_id: OverrideId
) -> Response:
    with ctx.read() as session:
        view = get_override(session, override_id=override_id, principal=principal)
        people = {
            person.id: person.login
            for person in session.scalars(
                select(Person).where(
                    Person.id.in_(
                        [s.person_id for s in view.signatures]
                        + ([view.override.reviewed_by] if view.override.reviewed_by else [])
                    )
                )
            )
        }
    return page(request, "override.html", {"view": view, "o": view.override, "people": people})
