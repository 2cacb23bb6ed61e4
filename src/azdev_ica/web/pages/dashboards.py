"""Dashboards: the delivery metrics of `GET /metrics/delivery` (pipeline success rate,
deployment frequency, lead time, change failure rate, MTTR, approval SLA compliance,
overrides per quarter against the policy's target), fleet-wide and per tenant, over a period
the person chooses. Charts are drawn by `static/dashboards.js` with the vendored ECharts from
the JSON in the chart's `data-chart` attribute (no inline script: the CSP forbids it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from azdev_ica.api.deps import Ctx, require
from azdev_ica.api.routes.ui import login_redirect
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.domain.metrics import Metrics, Period
from azdev_ica.errors import NoPolicy, NotFound, ValidationProblem
from azdev_ica.queries.metrics import delivery_metrics, override_target
from azdev_ica.queries.runs import RunFilter, list_runs
from azdev_ica.services.context import ServiceContext
from azdev_ica.web.pages.forms import day, field
from azdev_ica.web.render import page

router = APIRouter(include_in_schema=False)

Reader = Annotated[Principal, Depends(require(Permission.RUN_READ))]

DEFAULT_DAYS = 30
MAX_DAYS = 3660  # as the API: a period spans at most ten years


@dataclass(frozen=True)
class Row:
    """One line of the table: fleet-wide (tenant None) or one tenant's metrics."""

    tenant: str | None
    metrics: Metrics

    @property
    def label(self) -> str:
        return self.tenant or "Fleet (all your tenants)"

    @staticmethod
    def percent(value: float | None) -> str:
        return "–" if value is None else f"{value * 100:.1f} %"

    @property
    def success(self) -> str:
        return self.percent(self.metrics.pipeline_success_rate)

    @property
    def failure(self) -> str:
        return self.percent(self.metrics.change_failure_rate)

    @property
    def sla(self) -> str:
        return self.percent(self.metrics.approval_sla_compliance)

    @property
    def frequency(self) -> str:
        return f"{self.metrics.deployment_frequency_per_day:.2f}"

    @property
    def lead_time(self) -> float | None:
        value = self.metrics.lead_time_for_changes
        return None if value is None else value.total_seconds()

    @property
    def mttr(self) -> float | None:
        value = self.metrics.mttr
        return None if value is None else value.total_seconds()


@dataclass(frozen=True)
class Quarter:
    quarter: str
    count: int
    target: int | None

    @property
    def within(self) -> bool | None:
        return None if self.target is None else self.count <= self.target


def _tenants(ctx: ServiceContext, session: Session, principal: Principal) -> list[str]:
    """The tenants the person may read runs of: the policy's, else those runs name."""
    try:
        codes = sorted(ctx.policies.active(session).tenants)
    except NoPolicy:
        rows, _ = list_runs(
            session, principal=principal, filters=RunFilter(), limit=500, cursor=None
        )
        codes = sorted({run.tenant for run in rows if run.tenant})
    return [code for code in codes if principal.can_for(Permission.RUN_READ, code)]


def _percent_or_none(value: float | None) -> float | None:
    return None if value is None else round(value * 100, 1)


def _hours_or_none(value: timedelta | None) -> float | None:
    return None if value is None else round(value.total_seconds() / 3600, 2)


def chart_data(rows: list[Row], quarters: list[Quarter]) -> dict[str, Any]:
    """What dashboards.js draws: one category per tenant row, and the override quarters."""
    tenants = [row for row in rows if row.tenant is not None] or rows
    labels = [row.label for row in tenants]
    return {
        "rates": {
            "categories": labels,
            "series": {
                "Pipeline success rate": [
                    _percent_or_none(r.metrics.pipeline_success_rate) for r in tenants
                ],
                "Change failure rate": [
                    _percent_or_none(r.metrics.change_failure_rate) for r in tenants
                ],
                "Approval SLA compliance": [
                    _percent_or_none(r.metrics.approval_sla_compliance) for r in tenants
                ],
            },
        },
        "flow": {
            "categories": labels,
            "series": {
                "Deployments per day": [
                    round(r.metrics.deployment_frequency_per_day, 3) for r in tenants
                ],
                "Lead time (h)": [_hours_or_none(r.metrics.lead_time_for_changes) for r in tenants],
                "MTTR (h)": [_hours_or_none(r.metrics.mttr) for r in tenants],
            },
        },
        "overrides": {
            "categories": [q.quarter for q in quarters],
            "counts": [q.count for q in quarters],
            "target": quarters[0].target if quarters else None,
        },
    }


@router.get("/dashboards", dependencies=[Depends(login_redirect)])
def dashboards_page(request: Request, ctx: Ctx, principal: Reader) -> Response:
    today = ctx.clock.now().astimezone(UTC).date()
    since = day(request, "from") or today - timedelta(days=DEFAULT_DAYS - 1)
    until = day(request, "to") or today
    if until < since:
        raise ValidationProblem("the period ends before it starts")
    if (until - since).days >= MAX_DAYS:
        raise ValidationProblem("a period spans at most ten years")
    period = Period(_midnight(since), _midnight(until) + timedelta(days=1))
    chosen = field(request, "tenant")
    with ctx.read() as session:
        tenants = _tenants(ctx, session, principal)
        if chosen is not None and not principal.can_for(Permission.RUN_READ, chosen):
            raise NotFound(f"no tenant {chosen!r}")
        shown = [chosen] if chosen is not None else tenants
        fleet = Row(
            chosen, delivery_metrics(session, principal=principal, period=period, tenant=chosen)
        )
        rows = (
            [fleet]
            if chosen is not None
            else [fleet]
            + [
                Row(
                    code, delivery_metrics(session, principal=principal, period=period, tenant=code)
                )
                for code in shown
            ]
        )
        target = override_target(ctx, session)
    quarters = [Quarter(q, count, target) for q, count in fleet.metrics.overrides_per_quarter]
    return page(
        request,
        "dashboards.html",
        {
            "rows": rows,
            "quarters": quarters,
            "tenants": tenants,
            "chosen": chosen,
            "since": since,
            "until": until,
            "charts": chart_data(rows, quarters),
            "report_month": _month(until),
            "can_report": principal.can(Permission.AUDIT_READ),
        },
    )


def _month(value: date) -> str:
    return datetime(value.year, value.month, 1, tzinfo=UTC).strftime("%Y-%m")


def _midnight(value: date) -> datetime:
    return datetime(value.year, value.month, value.day, tzinfo=UTC)
