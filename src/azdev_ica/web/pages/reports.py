"""Reports: the monthly compliance reports the scheduler kept (`services/monthly_reports.py`),
newest month first, each linking to its HTML and JSON download (the API's routes, which the
console session reaches). Kept reports cover every tenant, so a person who audits only some
tenants sees none here, and a link to the on-demand report for their own tenants."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from azdev_ica.api.deps import Ctx, require
from azdev_ica.api.routes.report import KEPT
from azdev_ica.api.routes.ui import login_redirect
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.queries.report import month_period
from azdev_ica.services.monthly_reports import (
    get_kept_report,
    list_kept_reports,
    previous_month,
)
from azdev_ica.web.render import page

router = APIRouter(include_in_schema=False)

Auditor = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]


@router.get("/reports", dependencies=[Depends(login_redirect)])
def reports_page(request: Request, ctx: Ctx, principal: Auditor) -> Response:
    with ctx.read() as session:
        kept = list_kept_reports(session, principal=principal)
    last_month = previous_month(ctx.clock.now())
    month_period(last_month)  # the on-demand link names a valid month
    return page(
        request,
        "reports.html",
        {
            "reports": kept,
            "kept_url": KEPT,
            "all_tenants": principal.can_for(Permission.AUDIT_READ, None),
            "last_month": last_month,
        },
    )


@router.get("/reports/{month}", dependencies=[Depends(login_redirect)])
def report_page(
    request: Request,
    ctx: Ctx,
    principal: Auditor,
    month: Annotated[str, Path(pattern=r"^[0-9]{4}-[0-9]{2}$")],
) -> Response:
    """One kept report (the link in the `report.monthly` notification): when it was kept, its
    SHA-256 and its downloads; absent, or out of the reader's scope, it is a 404 page."""
    with ctx.read() as session:
        row = get_kept_report(session, principal=principal, month=month)
        kept = {"month": row.month, "generated_at": row.generated_at, "sha256": row.sha256}
    return page(request, "report_kept.html", {"report": kept, "kept_url": KEPT})
