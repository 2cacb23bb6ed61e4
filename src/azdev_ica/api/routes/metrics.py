"""Delivery metrics (seed 000 §10, DORA) with versioned definitions, per tenant or fleet-wide."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from azdev_ica.api.deps import Ctx, require
from azdev_ica.api.schemas import Code, Instant
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.domain.metrics import Period
from azdev_ica.errors import ValidationProblem
from azdev_ica.queries.metrics import delivery_metrics
from azdev_ica.services.audit import rfc3339

router = APIRouter(tags=["metrics"])

Reader = Annotated[Principal, Depends(require(Permission.RUN_READ))]


class MetricsOut(BaseModel):
    tenant: str | None = Field(description="null: every tenant the caller may read")
    period_start: str
    period_end: str
    pipeline_success_rate: float | None
    deployment_frequency_per_day: float
    lead_time_for_changes_seconds: float | None
    change_failure_rate: float | None
    mttr_seconds: float | None
    approval_sla_compliance: float | None
    definitions: dict[str, int] = Field(description="Metric name -> definition version used")


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


@router.get(
    "/metrics/delivery",
    response_model=MetricsOut,
    summary="Success rate, deployment frequency, lead time, change failure rate, MTTR, SLA",
)
def delivery_metrics_route(
    ctx: Ctx,
    principal: Reader,
    start: Annotated[Instant, Query(alias="from", description="Period start (inclusive)")],
    end: Annotated[Instant, Query(alias="to", description="Period end (exclusive)")],
    tenant: Annotated[Code | None, Query()] = None,
) -> MetricsOut:
    try:
        period = Period(start, end)
    except ValueError as exc:
        raise ValidationProblem(str(exc)) from None
    if end - start > timedelta(days=3660):
        raise ValidationProblem("a period spans at most ten years")
    with ctx.read() as session:
        metrics = delivery_metrics(session, principal=principal, period=period, tenant=tenant)
    return MetricsOut(
        tenant=tenant,
        period_start=rfc3339(start),
        period_end=rfc3339(end),
        pipeline_success_rate=metrics.pipeline_success_rate,
        deployment_frequency_per_day=metrics.deployment_frequency_per_day,
        lead_time_for_changes_seconds=_seconds(metrics.lead_time_for_changes),
        change_failure_rate=metrics.change_failure_rate,
        mttr_seconds=_seconds(metrics.mttr),
        approval_sla_compliance=metrics.approval_sla_compliance,
        definitions=dict(metrics.definitions),
    )
