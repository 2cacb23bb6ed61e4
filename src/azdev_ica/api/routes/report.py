"""The monthly compliance report (seed 000 §4.1), as JSON (schema `ica-monthly-compliance`
v1, docs/report.md) or as one self-contained HTML page."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from azdev_ica.api.deps import Ctx, require
from azdev_ica.api.schemas import Code
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.queries.report import monthly_report, render_html

router = APIRouter(tags=["report"])

Auditor = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]

# The HTML page loads nothing and runs nothing.
HTML_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}


@router.get(
    "/report/monthly",
    response_model=None,
    summary="Monthly compliance report, per tenant and fleet-wide (JSON or HTML)",
    responses={
        200: {
            "description": "The report (schema ica-monthly-compliance v1, see docs/report.md)",
            "content": {"application/json": {}, "text/html": {}},
        }
    },
)
def monthly_report_route(
    ctx: Ctx,
    principal: Auditor,
    month: Annotated[str, Query(pattern=r"^[0-9]{4}-[0-9]{2}$", description="YYYY-MM (UTC)")],
    tenant: Annotated[Code | None, Query()] = None,
    format: Annotated[Literal["json", "html"], Query()] = "json",
) -> Response:
    """Tenants outside the caller's audit scope are left out (a named one is a 403)."""
    with ctx.read() as session:
        report: dict[str, Any] = monthly_report(
            ctx, session, principal=principal, month=month, tenant=tenant
        )
    if format == "html":
        return HTMLResponse(render_html(report), headers=HTML_HEADERS)
    return JSONResponse(report)
