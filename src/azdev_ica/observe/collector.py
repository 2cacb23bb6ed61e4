"""The gauges that come from the database, computed when Prometheus scrapes.

They describe the installation, not a process: every worker would read the same rows, so
they are not written to the multiprocess files (where they would be summed per worker) but
computed once, by the process that answers the scrape, from small indexed reads:

- open approvals (`open_key`, unique, set only while a request is open): how many, the
  oldest one's age, how many are past their SLA warning and past their SLA, the largest
  share of its budget a pending cost takes;
- the lock queue of each target (waiters whose run still runs);
- the audit ledger: entries of the current shard, the unsealed backlog and its age
  (`services/ledger_status.py`), the last checkpoint's age, whether it is stalled;
- each witness: the age of its last cosignature, how long it has been failing;
- each job lease: seconds since the job last ran (its lease was last taken);
- the outbox: pending and failed messages per channel, the oldest pending one's age;
- pipelines: the current streak of failed finished runs per pipeline (runs of the last
  `STREAK_WINDOW`).

A database error never fails the scrape: `ica_database_up` says 0 and the gauges read from
the database are left out (Prometheus then sees them absent, and `up` stays 1).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from azdev_ica.db.tables import (
    Approval,
    AuditCheckpoint,
    AuditShard,
    AuditTree,
    JobLease,
    LockWaiter,
    OutboxMessage,
    PipelineRun,
    WitnessCosignature,
    WitnessStatus,
)
from azdev_ica.services.context import ServiceContext

log = logging.getLogger(__name__)

STREAK_WINDOW = timedelta(days=7)


def _age(now: datetime, then: datetime | None) -> float | None:
    if then is None:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=now.tzinfo)
    return max(0.0, (now - then).total_seconds())


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


class DatabaseCollector(Collector):
    """Reads the installation's state from the database at each scrape (see the module)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        up = _gauge("ica_database_up", "1 when the scrape could read the database, else 0")
        try:
            families = self._families()
        except SQLAlchemyError as exc:
            log.warning("metrics: the database could not be read: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> list[Metric]:
        now = self.ctx.clock.now()
        with self.ctx.read() as session:
            families = [
                *_approvals(session, now),
                _lock_queue(session),
                *_ledger(session, now),
                *_witnesses(session, now),
                _jobs(session, now),
                *_outbox(session, now),
                _failure_streaks(session, now),
            ]
        families.extend(_ledger_state(self.ctx))
        return families


def _approvals(session: Session, now: datetime) -> list[Metric]:
    pending = _gauge(
        "ica_approvals_pending", "Approval requests waiting for signatures", ["tenant", "stage"]
    )
    oldest = _gauge(
        "ica_approval_pending_oldest_age_seconds",
        "Age of the oldest approval request still waiting, per target",
        ["tenant", "stage"],
    )
    warned = _gauge(
        "ica_approvals_sla_warning",
        "Waiting approval requests past their SLA warning time (seed: half the SLA)",
        ["tenant", "stage"],
    )
    breached = _gauge(
        "ica_approvals_sla_breached",
        "Waiting approval requests past their SLA (escalated)",
        ["tenant", "stage"],
    )
    budget = _gauge(
        "ica_approval_budget_used_ratio",
        "The largest cost impact / budget among open approval requests, per target (0.8 = 80 %)",
        ["tenant", "stage"],
    )
    rows = session.execute(
        select(
            Approval.tenant,
            Approval.stage,
            Approval.status,
            Approval.requested_at,
            Approval.sla_warning_due_at,
            Approval.sla_due_at,
            Approval.cost_impact_minor,
            Approval.budget_minor,
        ).where(Approval.open_key.is_not(None))
    )
    stats: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"pending": 0, "oldest": None, "warned": 0, "breached": 0, "ratio": None}
    )
    for tenant, stage, status, asked, warn_at, due_at, cost, limit in rows:
        item = stats[(tenant, stage)]
        if cost is not None and limit:
            ratio = cost / limit
            item["ratio"] = ratio if item["ratio"] is None else max(item["ratio"], ratio)
        if status != "pending":
            continue
        item["pending"] += 1
        age = _age(now, asked)
        item["oldest"] = age if item["oldest"] is None else max(item["oldest"], age)
        item["warned"] += int(warn_at <= now)
        item["breached"] += int(due_at <= now)
    for (tenant, stage), item in sorted(stats.items()):
        labels = [tenant, stage]
        pending.add_metric(labels, item["pending"])
        warned.add_metric(labels, item["warned"])
        breached.add_metric(labels, item["breached"])
        if item["oldest"] is not None:
            oldest.add_metric(labels, item["oldest"])
        if item["ratio"] is not None:
            budget.add_metric(labels, item["ratio"])
    return [pending, oldest, warned, breached, budget]


def _lock_queue(session: Session) -> Metric:
    queue = _gauge(
        "ica_lock_queue_length",
        "Runs waiting for a target's deployment lock (whose run still runs)",
        ["tenant", "stage"],
    )
    rows = session.execute(
        select(LockWaiter.tenant, LockWaiter.stage, func.count())
        .join(PipelineRun, PipelineRun.id == LockWaiter.run_pk)
        .where(PipelineRun.status == "running")
        .group_by(LockWaiter.tenant, LockWaiter.stage)
        .order_by(LockWaiter.tenant, LockWaiter.stage)
    )
    for tenant, stage, count in rows:
        queue.add_metric([tenant, stage], int(count))
    return queue


def _ledger(session: Session, now: datetime) -> list[Metric]:
    entries = _gauge("ica_ledger_entries", "Sealed entries in the shard's tree", ["year"])
    checkpoint = _gauge(
        "ica_ledger_checkpoint_age_seconds",
        "Age of the shard's last signed checkpoint",
        ["year"],
    )
    year = session.scalar(select(func.max(AuditShard.year)))
    if year is not None:
        size = session.scalar(
            select(AuditTree.size)
            .where(AuditTree.year == year)
            .order_by(AuditTree.size.desc())
            .limit(1)
        )
        entries.add_metric([str(year)], int(size or 0))
        signed_at = session.scalar(
            select(AuditCheckpoint.signed_at)
            .where(AuditCheckpoint.year == year)
            .order_by(AuditCheckpoint.size.desc())
            .limit(1)
        )
        age = _age(now, signed_at)
        if age is not None:
            checkpoint.add_metric([str(year)], age)
    return [entries, checkpoint]


def _ledger_state(ctx: ServiceContext) -> list[Metric]:
    from azdev_ica.services.ledger_status import ledger_status

    status = ledger_status(ctx)
    unsealed = _gauge("ica_ledger_unsealed_entries", "Audit records waiting to be sealed")
    unsealed.add_metric([], status.backlog.count)
    oldest = _gauge(
        "ica_ledger_unsealed_oldest_age_seconds",
        "Age of the oldest audit record waiting to be sealed (0 when none waits)",
    )
    oldest.add_metric([], status.backlog.oldest_age_seconds or 0.0)
    stalled = _gauge(
        "ica_ledger_stalled",
        "1 while the ledger does not seal (a source refuses, or the backlog is too old)",
    )
    stalled.add_metric([], int(status.state == "stalled"))
    reasons = _gauge(
        "ica_ledger_stall_reason",
        "1 per source that currently stops the ledger (sealer, witness, backlog, ...)",
        ["source"],
    )
    for reason in status.reasons:
        reasons.add_metric([reason.source], 1)
    return [unsealed, oldest, stalled, reasons]


def _witnesses(session: Session, now: datetime) -> list[Metric]:
    cosigned = _gauge(
        "ica_witness_last_cosignature_age_seconds",
        "Age of the witness's last cosignature received",
        ["witness"],
    )
    failing = _gauge(
        "ica_witness_failing_seconds",
        "How long the witness has been failing to answer (0 while it answers)",
        ["witness"],
    )
    year = session.scalar(select(func.max(AuditShard.year)))
    for witness, failing_since in session.execute(
        select(WitnessStatus.witness, WitnessStatus.failing_since).order_by(WitnessStatus.witness)
    ):
        failing.add_metric([witness], _age(now, failing_since) or 0.0)
        if year is None:
            continue
        received = session.scalar(
            select(WitnessCosignature.received_at)
            .where(WitnessCosignature.year == year, WitnessCosignature.witness == witness)
            .order_by(WitnessCosignature.size.desc())
            .limit(1)
        )
        age = _age(now, received)
        if age is not None:
            cosigned.add_metric([witness], age)
    return [cosigned, failing]


def _jobs(session: Session, now: datetime) -> Metric:
    lag = _gauge(
        "ica_job_lag_seconds",
        "Seconds since the job last ran (its lease was last taken or renewed); about the "
        "jobs interval while it runs",
        ["job"],
    )
    for name, acquired_at in session.execute(
        select(JobLease.name, JobLease.acquired_at).order_by(JobLease.name)
    ):
        lag.add_metric([name.removeprefix("job:")], _age(now, acquired_at) or 0.0)
    return lag


def _outbox(session: Session, now: datetime) -> list[Metric]:
    pending = _gauge(
        "ica_outbox_pending", "Notifications and callbacks waiting to be delivered", ["channel"]
    )
    retrying = _gauge(
        "ica_outbox_retrying",
        "Pending messages whose earlier delivery attempts failed",
        ["channel"],
    )
    oldest = _gauge(
        "ica_outbox_pending_oldest_age_seconds",
        "Age of the oldest message waiting to be delivered",
        ["channel"],
    )
    failed = _gauge(
        "ica_outbox_failed",
        "Messages that failed every attempt (until retried with `ica outbox retry` or purged)",
        ["channel"],
    )
    rows = session.execute(
        select(
            OutboxMessage.channel,
            OutboxMessage.state,
            func.count(),
            func.min(OutboxMessage.created_at),
            func.sum(case((OutboxMessage.attempts > 0, 1), else_=0)),
        )
        .where(OutboxMessage.state.in_(("pending", "failed")))
        .group_by(OutboxMessage.channel, OutboxMessage.state)
        .order_by(OutboxMessage.channel, OutboxMessage.state)
    )
    for channel, state, count, first, retried in rows:
        if state == "failed":
            failed.add_metric([channel], int(count))
            continue
        pending.add_metric([channel], int(count))
        retrying.add_metric([channel], int(retried or 0))
        oldest.add_metric([channel], _age(now, first) or 0.0)
    return [pending, retrying, oldest, failed]


def _failure_streaks(session: Session, now: datetime) -> Metric:
    streak = _gauge(
        "ica_pipeline_failure_streak",
        "Failed finished runs in a row, newest first, of each pipeline with a run in the "
        "last 7 days (a success or a cancellation ends a streak)",
        ["tenant", "pipeline"],
    )
    rows = session.execute(
        select(
            PipelineRun.id,
            PipelineRun.provider,
            PipelineRun.project_id,
            PipelineRun.pipeline_name,
            PipelineRun.tenant,
            PipelineRun.status,
            PipelineRun.end_time,
        )
        .where(PipelineRun.start_time >= now - STREAK_WINDOW)
        .where(PipelineRun.end_time.is_not(None))
    )
    runs: dict[tuple[str, str, str], list[tuple[datetime, int, str, str | None]]]
    runs = defaultdict(list)
    for run_pk, provider, project_id, name, tenant, status, ended in rows:
        if ended is not None:
            runs[(provider, project_id, name)].append((ended, run_pk, status, tenant))
    # Two projects may name a pipeline alike: one sample per label set, the longer streak.
    streaks: dict[tuple[str, str], int] = {}
    for (_, _, name), finished in runs.items():
        finished.sort(key=lambda item: (item[0], item[1]), reverse=True)
        count = 0
        for _, _, status, _ in finished:
            if status != "failed":
                break
            count += 1
        labels = (finished[0][3] or "", name)
        streaks[labels] = max(count, streaks.get(labels, 0))
    for (tenant, name), count in sorted(streaks.items()):
        streak.add_metric([tenant, name], count)
    return streak
