"""Delivery metrics read from the recorded facts (runs, deploy events, incidents, approvals),
computed with the versioned definitions of `domain/metrics.py`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import Approval, Incident, Override, PipelineEvent, PipelineRun
from azdev_ica.domain.metrics import (
    ApprovalFact,
    DeploymentFact,
    IncidentFact,
    Metrics,
    OverrideFact,
    Period,
    RunFact,
    compute,
    quarter_start,
)
from azdev_ica.domain.runs import deployment_failure
from azdev_ica.errors import NoPolicy, OutOfScope
from azdev_ica.services.context import ServiceContext

ROLLBACK_PHASES = ("rollback_initiated", "rollback_completed")


def _scoped(
    query: Select[Any], column: InstrumentedAttribute[Any], principal: Principal, tenant: str | None
) -> Select[Any]:
    """`query` limited to the tenants the caller may read runs of (and to `tenant`)."""
    scope = principal.scope(Permission.RUN_READ)
    if scope is not None:
        query = query.where(column.in_(sorted(scope)))
    if tenant is not None:
        query = query.where(column == tenant)
    return query


@dataclass(frozen=True)
class DeliveryFacts:
    """The facts the metrics of a period are computed from (also counted by the monthly
    report, `queries/report.py`)."""

    runs: list[RunFact]
    deployments: list[DeploymentFact]
    incidents: list[IncidentFact]
    approvals: list[ApprovalFact]
    overrides: list[OverrideFact]


def delivery_metrics(
    session: Session,
    *,
    principal: Principal,
    period: Period,
    tenant: str | None,
    production_stage: str = "production",
) -> Metrics:
    """The metrics of `period` for one tenant, or for every tenant the caller may read.

    Another tenant's metrics are a 403, as the monthly report answers, never zeros."""
    if tenant is not None and not principal.can_for(Permission.RUN_READ, tenant):
        raise OutOfScope(f"tenant {tenant!r} is outside the caller's scope")
    facts = delivery_facts(session, principal=principal, period=period, tenant=tenant)
    return compute(
        period,
        runs=facts.runs,
        deployments=facts.deployments,
        incidents=facts.incidents,
        approvals=facts.approvals,
        overrides=facts.overrides,
        tenant=tenant,
        production_stage=production_stage,
    )


def delivery_facts(
    session: Session, *, principal: Principal, period: Period, tenant: str | None
) -> DeliveryFacts:
    """The facts of `period` for one tenant, or for every tenant the caller may read."""
    runs = [
        RunFact(tenant=run.tenant, status=run.status, finished_at=run.end_time)
        for run in session.scalars(
            _scoped(
                select(PipelineRun).where(
                    PipelineRun.end_time >= period.start, PipelineRun.end_time < period.end
                ),
                PipelineRun.tenant,
                principal,
                tenant,
            )
        )
    ]
    # A deployment is a deploy event that says how it ended (succeeded or failed); its target
    # is the event's, else the run's. Rolled back: a rollback event on the same run after it.
    # Caused an incident: an incident opened from that run.
    incident_runs = set(
        session.scalars(select(Incident.run_pk).where(Incident.run_pk.is_not(None)))
    )
    deployments = []
    # The target's tenant is checked per event below (an event may name its own target).
    events = session.execute(
        select(PipelineEvent, PipelineRun)
        .join(PipelineRun, PipelineRun.id == PipelineEvent.run_pk)
        .where(
            PipelineEvent.phase == "deploy",
            PipelineEvent.occurred_at >= period.start,
            PipelineEvent.occurred_at < period.end,
        )
    ).all()
    # Post-deploy verification or monitoring marked the deployment failed (a failed `verify`,
    # a monitoring failure trigger: `domain/runs.deployment_failure`, as the deployment
    # queries read it) or it was rolled back: an event of that kind on the same run after it.
    deployed_runs = select(PipelineEvent.run_pk).where(
        PipelineEvent.phase == "deploy",
        PipelineEvent.occurred_at >= period.start,
        PipelineEvent.occurred_at < period.end,
    )
    marked_failed: dict[int, list[datetime]] = defaultdict(list)
    rolled_back: dict[int, list[datetime]] = defaultdict(list)
    for run_pk, phase, occurred, data in session.execute(
        select(
            PipelineEvent.run_pk, PipelineEvent.phase, PipelineEvent.occurred_at, PipelineEvent.data
        ).where(
            PipelineEvent.run_pk.in_(deployed_runs),
            PipelineEvent.phase.in_(("verify", "monitor", *ROLLBACK_PHASES)),
        )
    ):
        if phase in ROLLBACK_PHASES:
            rolled_back[run_pk].append(occurred)
        elif deployment_failure(phase, data) is not None:
            marked_failed[run_pk].append(occurred)

    def after(moments: dict[int, list[datetime]], run_pk: int, deployed_at: datetime) -> bool:
        return any(moment >= deployed_at for moment in moments.get(run_pk, ()))

    for event, run in events:
        outcome = (event.data or {}).get("status")
        if outcome not in ("succeeded", "failed"):
            continue
        target_tenant = (event.data or {}).get("tenant") or run.tenant
        if target_tenant is None or (tenant is not None and target_tenant != tenant):
            continue
        if not principal.can_for(Permission.RUN_READ, target_tenant):
            continue
        deployments.append(
            DeploymentFact(
                tenant=target_tenant,
                stage=(event.data or {}).get("stage") or run.stage or "",
                finished_at=event.occurred_at,
                succeeded=outcome == "succeeded"
                and not after(marked_failed, run.id, event.occurred_at),
                # The run's commit time as its pipeline reported it (None: not reported).
                commit_at=run.commit_at,
                rolled_back=after(rolled_back, run.id, event.occurred_at),
                caused_incident=run.id in incident_runs,
            )
        )
    incidents = [
        IncidentFact(tenant=row.tenant, detected_at=row.detected_at, resolved_at=row.resolved_at)
        for row in session.scalars(
            _scoped(
                select(Incident).where(Incident.resolved_at.is_not(None)),
                Incident.tenant,
                principal,
                tenant,
            )
        )
    ]
    approvals = [
        ApprovalFact(
            tenant=row.tenant,
            requested_at=row.requested_at,
            decided_at=row.decided_at,
            sla=row.sla_due_at - row.requested_at,
        )
        for row in session.scalars(
            _scoped(
                select(Approval).where(Approval.decided_at.is_not(None)),
                Approval.tenant,
                principal,
                tenant,
            )
        )
    ]
    # Signed emergency overrides, from the start of the period's first quarter.
    overrides = [
        OverrideFact(tenant=row.tenant, signed_at=row.signed_at)
        for row in session.scalars(
            _scoped(
                select(Override).where(
                    Override.status == "signed",
                    Override.signed_at >= quarter_start(period.start),
                    Override.signed_at < period.end,
                ),
                Override.tenant,
                principal,
                tenant,
            )
        )
        if row.signed_at is not None
    ]
    return DeliveryFacts(
        runs=runs,
        deployments=deployments,
        incidents=incidents,
        approvals=approvals,
        overrides=overrides,
    )


def override_target(ctx: ServiceContext, session: Session) -> int | None:
    """The active policy's most signed overrides per quarter (None: no policy applied yet)."""
    try:
        return ctx.policies.active(session).gates.overrides_per_quarter
    except NoPolicy:
        return None
