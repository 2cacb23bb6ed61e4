"""The home page: what waits for me (approvals I may sign, oldest first, with the SLA
countdown), the deployment queue per target, and recent denials and alerts; all scoped to the
person's tenants by the same queries the API uses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from azdev_ica.api.deps import Ctx, require
from azdev_ica.api.routes.ui import login_redirect
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import Approval
from azdev_ica.queries.approvals import ApprovalFilter, list_approvals
from azdev_ica.queries.pages import home_overview
from azdev_ica.services.approvals import sign_options
from azdev_ica.services.context import ServiceContext
from azdev_ica.web.render import page

router = APIRouter(include_in_schema=False)

Self = Annotated[Principal, Depends(require(Permission.SELF))]

# How many open requests the home page reads (oldest first after reading newest first).
OPEN_LIMIT = 200


@dataclass(frozen=True)
class Waiting:
    approval: Approval
    halves: list[str]
    sla_seconds: float  # negative: overdue

    @property
    def overdue(self) -> bool:
        return self.sla_seconds < 0


def waiting_for(ctx: ServiceContext, principal: Principal, now: datetime) -> list[Waiting]:
    """Open approvals in the person's scope with a half they may sign, oldest first."""
    if not principal.can(Permission.APPROVAL_READ):
        return []
    with ctx.read() as session:
        rows, _ = list_approvals(
            session,
            principal=principal,
            filters=ApprovalFilter(open_only=True),
            limit=OPEN_LIMIT,
            cursor=None,
            now=now,
        )
        found = []
        for row, _status in reversed(rows):
            halves = sign_options(session, row=row, principal=principal, now=now).halves
            if halves:
                found.append(
                    Waiting(
                        approval=row,
                        halves=[half.value for half in halves],
                        sla_seconds=(row.sla_due_at - now).total_seconds(),
                    )
                )
        return found


@router.get("/ui/", dependencies=[Depends(login_redirect)])
def home(request: Request, ctx: Ctx, principal: Self) -> Response:
    now = ctx.clock.now()
    with ctx.read() as session:
        overview = home_overview(
            session, principal=principal, policy=ctx.policies.active(session), now=now
        )
    return page(
        request,
        "home.html",
        {"waiting": waiting_for(ctx, principal, now), "overview": overview, "now": now},
    )
