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
from azdev_ica.queries.metrics import delivery_metrics, override_target
from azdev_ica.services.audit import rfc3339

router = APIRouter(tags=["metrics"])

Reader = Annotated[Principal, Depends(require(Permission.RUN_READ))]


class OverrideQuarterOut(BaseModel):
    quarter: str = Field(description='Calendar quarter (UTC), e.g. "2026-Q4"')
    count: int = Field(description="Signed overrides, quarter to date at the period's end")
    target: int | None = Field(description="The policy's overrides.max_per_quarter (seed: 2)")
    within_target: bool | None


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
    override_count_per_quarter: list[OverrideQuarterOut] = Field(
        description="Each calendar quarter the period touches, oldest first"
    )
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
        target = override_target(ctx, session)
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
        override_count_per_quarter=[
            OverrideQuarterOut(
                quarter=quarter,
                count=count,
                target=target,
                within_target=None if target is None else count <= target,
            )
            for quarter, count in metrics.overrides_per_quarter
        ],
        definitions=dict(metrics.definitions),
    )
