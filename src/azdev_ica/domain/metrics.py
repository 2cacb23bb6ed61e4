"""Delivery metrics with versioned definitions (seed 000 §10; DORA). Pure, no I/O.

Each metric's definition carries a version; a report names the versions it used, so a
number in a 2026 report can be recomputed in 2033 with the same meaning. Inputs are facts
read from the ledger (runs, deployments, incidents, approvals); nothing here reads a clock.

Definitions, version 1:
- pipeline success rate: finished runs that succeeded / finished runs (cancelled excluded).
- deployment frequency: production deployments that succeeded, per day of the period.
- lead time for changes: median time from a deployed commit's time to the production
  deployment's finish (successful deployments whose run reported its commit time, the
  run's `commit_at`; a commit time after the deployment is left out).
- change failure rate: production deployments that failed or were rolled back or caused an
  incident / production deployments. A deployment that a later failed post-deploy
  verification or monitoring failure trigger on its run marked failed (seed 000 §5.2, §6.1;
  `domain/runs.deployment_failure`) is a failed one (and neither a deployment of the
  frequency nor one of the lead time).
- MTTR: median time from an incident's detection (its `detected_at`: when the failure began,
  by default when it was opened) to its resolution (resolved incidents).
- approval SLA compliance: approvals decided within the SLA / approvals decided.
- override count per quarter: signed emergency overrides (by the time they were signed) in
  each calendar quarter (UTC) the period touches, from the quarter's start to the end of the
  quarter or of the period, whichever is first (quarter to date at the period's end); the
  seed's target is at most 2 (the policy's `overrides.max_per_quarter`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DEFINITIONS: dict[str, int] = {
    "pipeline_success_rate": 1,
    "deployment_frequency": 1,
    "lead_time_for_changes": 1,
    "change_failure_rate": 1,
    "mttr": 1,
    "approval_sla_compliance": 1,
    "override_count_per_quarter": 1,
}


@dataclass(frozen=True)
class RunFact:
    tenant: str | None
    status: str  # running, success, failed, cancelled
    finished_at: datetime | None


@dataclass(frozen=True)
class DeploymentFact:
    tenant: str
    stage: str
    finished_at: datetime
    succeeded: bool
    commit_at: datetime | None = None
    rolled_back: bool = False
    caused_incident: bool = False

    @property
    def failed_change(self) -> bool:
        return not self.succeeded or self.rolled_back or self.caused_incident


@dataclass(frozen=True)
class IncidentFact:
    tenant: str
    detected_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True)
class ApprovalFact:
    tenant: str
    requested_at: datetime
    decided_at: datetime | None
    sla: timedelta


@dataclass(frozen=True)
class OverrideFact:
    tenant: str
    signed_at: datetime


@dataclass(frozen=True)
class Period:
    """A half-open interval [start, end)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError("a period ends after it starts")

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / 86400


@dataclass(frozen=True)
class Metrics:
    pipeline_success_rate: float | None
    deployment_frequency_per_day: float
    lead_time_for_changes: timedelta | None
    change_failure_rate: float | None
    mttr: timedelta | None
    approval_sla_compliance: float | None
    # (quarter "2026-Q4", signed overrides), oldest first: see the module's definitions.
    overrides_per_quarter: tuple[tuple[str, int], ...] = ()
    definitions: tuple[tuple[str, int], ...] = tuple(sorted(DEFINITIONS.items()))


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def median_duration(values: Sequence[timedelta]) -> timedelta | None:
    """The median of some durations; None when there are none."""
    if not values:
        return None
    return timedelta(seconds=statistics.median(v.total_seconds() for v in values))


def quarter_of(moment: datetime) -> str:
    """The calendar quarter (UTC) of `moment`, e.g. "2026-Q4"."""
    moment = moment.astimezone(UTC)
    return f"{moment.year}-Q{(moment.month - 1) // 3 + 1}"


def quarter_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, 3 * ((moment.month - 1) // 3) + 1, 1, tzinfo=UTC)


def _next_quarter(start: datetime) -> datetime:
    month = start.month + 3
    return datetime(start.year + (month > 12), (month - 1) % 12 + 1, 1, tzinfo=UTC)


def overrides_per_quarter(
    period: Period, overrides: Iterable[OverrideFact], *, tenant: str | None = None
) -> tuple[tuple[str, int], ...]:
    """Signed overrides per calendar quarter the period touches, quarter to date at its end."""
    bounds: list[tuple[str, datetime, datetime]] = []
    start = quarter_start(period.start)
    while start < period.end:
        following = _next_quarter(start)
        bounds.append((quarter_of(start), start, min(following, period.end)))
        start = following
    facts = [o for o in overrides if tenant is None or o.tenant == tenant]
    return tuple(
        (name, sum(1 for o in facts if low <= o.signed_at < high)) for name, low, high in bounds
    )


def compute(
    period: Period,
    *,
    runs: Iterable[RunFact] = (),
    deployments: Iterable[DeploymentFact] = (),
    incidents: Iterable[IncidentFact] = (),
    approvals: Iterable[ApprovalFact] = (),
    overrides: Iterable[OverrideFact] = (),
    tenant: str | None = None,
    production_stage: str = "production",
) -> Metrics:
    """The metrics of `period`, for one tenant or (tenant None) the whole fleet."""

    def mine(item_tenant: str | None) -> bool:
        return tenant is None or item_tenant == tenant

    finished = [
        r
        for r in runs
        if mine(r.tenant)
        and r.finished_at is not None
        and r.finished_at in period
        and r.status in {"success", "failed"}
    ]
    production = [
        d
        for d in deployments
        if mine(d.tenant) and d.stage == production_stage and d.finished_at in period
    ]
    succeeded = [d for d in production if d.succeeded]
    lead_times = [
        d.finished_at - d.commit_at
        for d in succeeded
        if d.commit_at is not None and d.commit_at <= d.finished_at
    ]
    resolved = [
        i.resolved_at - i.detected_at
        for i in incidents
        if mine(i.tenant) and i.resolved_at is not None and i.resolved_at in period
    ]
    decided = [
        a
        for a in approvals
        if mine(a.tenant) and a.decided_at is not None and a.decided_at in period
    ]
    return Metrics(
        pipeline_success_rate=_ratio(sum(r.status == "success" for r in finished), len(finished)),
        deployment_frequency_per_day=len(succeeded) / period.days,
        lead_time_for_changes=median_duration(lead_times),
        change_failure_rate=_ratio(sum(d.failed_change for d in production), len(production)),
        mttr=median_duration(resolved),
        approval_sla_compliance=_ratio(
            sum(
                a.decided_at is not None and a.decided_at - a.requested_at <= a.sla for a in decided
            ),
            len(decided),
        ),
        overrides_per_quarter=overrides_per_quarter(period, overrides, tenant=tenant),
    )
