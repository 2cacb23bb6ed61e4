"""The monthly compliance report (seed 000 §4.1), as JSON (schema `ica-monthly-compliance`
v1, docs/report.md) or as one self-contained HTML page: built on demand, or as the scheduler
kept it on the first of the month after (`services/monthly_reports.py`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from azdev_ica.api.deps import Ctx, require
from azdev_ica.api.schemas import Code
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.queries.report import monthly_report, render_html
from azdev_ica.services.monthly_reports import get_kept_report, list_kept_reports

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


class KeptReportItem(BaseModel):
    month: str
    generated_at: datetime
    json_sha256: str
    json_bytes: int
    html_bytes: int
    json_url: str
    html_url: str


class KeptReportList(BaseModel):
    reports: list[KeptReportItem]


KEPT = "/api/v1/azdev/report/monthly/kept"
Month = Annotated[str, Path(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="YYYY-MM (UTC)")]


@router.get(
    "/report/monthly/kept",
    response_model=KeptReportList,
    summary="The monthly compliance reports the scheduler kept, newest month first",
)
def kept_reports_route(ctx: Ctx, principal: Auditor) -> KeptReportList:
    """Kept reports cover every tenant: a caller whose audit scope is only some tenants gets
    an empty list (and uses `GET /report/monthly` for their tenants)."""
    with ctx.read() as session:
        kept = list_kept_reports(session, principal=principal)
    return KeptReportList(
        reports=[
            KeptReportItem(
                month=item.month,
                generated_at=item.generated_at,
                json_sha256=item.sha256,
                json_bytes=item.json_bytes,
                html_bytes=item.html_bytes,
                json_url=f"{KEPT}/{item.month}?format=json",
                html_url=f"{KEPT}/{item.month}?format=html",
            )
            for item in kept
        ]
    )


@router.get(
    "/report/monthly/kept/{month}",
    response_model=None,
    summary="A kept monthly compliance report, byte for byte as kept (JSON or HTML)",
    responses={
        200: {
            "description": "The kept report (JSON: schema ica-monthly-compliance v1, its SHA-256 "
            "in the listing and in the ledger's report.monthly_kept entry)",
            "content": {"application/json": {}, "text/html": {}},
        },
        404: {
            "description": "No report kept for that month, or the caller's audit scope is "
            "not every tenant"
        },
    },
)
def kept_report_route(
    ctx: Ctx,
    principal: Auditor,
    month: Month,
    format: Annotated[Literal["json", "html"], Query()] = "json",
) -> Response:
    with ctx.read() as session:
        row = get_kept_report(session, principal=principal, month=month)
        json_text, html_text = row.json_text, row.html_text
    if format == "html":
        return HTMLResponse(html_text, headers=HTML_HEADERS)
    return Response(json_text.encode("utf-8"), media_type="application/json")
