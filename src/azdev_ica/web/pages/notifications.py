"""Notifications: what ICA told whom, and what it could not (`ica outbox list` in the browser).

People administrators see the outbox's newest rows with their state; a tenant administrator
sees only its tenants' rows (a row of no tenant, such as a ledger alert, only an
administrator for every tenant). A notification that no route of `ICA_NOTIFY` sends anywhere
is shown as "no route", with a sentence saying that nobody was told, never as delivered. The
page never shows a payload (it may carry addresses or tokens), as the CLI does not.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from azdev_ica.api.deps import Ctx, require
from azdev_ica.api.routes.ui import login_redirect
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.services.outbox import NO_ROUTE, STATES, list_messages
from azdev_ica.web.render import page

router = APIRouter(include_in_schema=False)
UserAdmin = Annotated[Principal, Depends(require(Permission.USER_ADMIN))]
NOTIFICATIONS = "/ui/admin/notifications"
STATE_LABELS = {state: state.replace("_", " ") for state in STATES}


@router.get(NOTIFICATIONS, dependencies=[Depends(login_redirect)])
def notifications(
    request: Request,
    ctx: Ctx,
    principal: UserAdmin,
    state: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    chosen = state if state in STATES else None
    scope = principal.scope(Permission.USER_ADMIN)
    rows = list_messages(ctx, state=chosen, limit=200, tenants=scope)
    unrouted = (
        rows if chosen == NO_ROUTE else list_messages(ctx, state=NO_ROUTE, limit=200, tenants=scope)
    )
    return page(
        request,
        "notifications.html",
        {
            "rows": rows,
            "state": chosen,
            "states": STATE_LABELS,
            "unrouted": len(unrouted),
            "routes_configured": bool(request.app.state.settings.notify.routes),
        },
    )
