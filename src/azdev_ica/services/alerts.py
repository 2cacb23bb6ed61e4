"""The alerts of seed 000 §7.2 that a single action raises, each in that action's transaction.

Each alert is an audit entry (its action is the topic) and one `notify` outbox row (routed by
`ICA_NOTIFY`, payload with `severity`), written inside the transaction of the action that
caused it, so an alert exists exactly when its cause committed. Each happens once per
occurrence:

* `budget.threshold` (warning): an approval request, or a gate evaluation, whose cost impact
  reaches `budgets.warn_percent` (default 80) of the approval's budget. Once per approval:
  the alert's outbox row (subject `approval:<id>`) is the mark.
* `pipeline.failure_streak` (critical): a run finishes failed and the two finished runs of
  the same pipeline (provider, project, pipeline name) before it failed too. Once per streak:
  the streak is named by its first failed run, and its alert by that run's key; any finished
  run that did not fail (a success, a cancellation) ends the streak.
* `scan.critical` (critical): a `scan` event reporting critical findings (`findings.critical`
  > 0). Once per run: only the run's first such event alerts.
* `lock.queue_long` (warning): a run joins a target's lock queue and the queue now holds more
  than 5 waiting runs. Once per crossing: only the join that takes it from 5 to 6 alerts.

Concurrent actions on the same subject (two finishes of one pipeline, two scan events of one
run, two gate calls for one approval) are serialised by a PostgreSQL transaction-level
advisory lock taken before the check (SQLite's write transactions are serial already); the
lock queue is serialised by its target's lock row (`services/locks.py`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, text
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.db.rows import EventRow, RunRow
from azdev_ica.db.tables import Approval, OutboxMessage, PipelineEvent, PipelineRun
from azdev_ica.domain.runs import RunStatus
from azdev_ica.policy import Policy
from azdev_ica.services.audit import append_audit
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.outbox import NOTIFY_CHANNEL, enqueue

TOPIC_BUDGET = "budget.threshold"
TOPIC_FAILURE_STREAK = "pipeline.failure_streak"
TOPIC_SCAN_CRITICAL = "scan.critical"
TOPIC_QUEUE_LONG = "lock.queue_long"

FAILURE_STREAK = 3  # consecutive failed runs of one pipeline
QUEUE_ALERT_ABOVE = 5  # waiting runs in one target's lock queue

WARNING = "warning"
CRITICAL = "critical"


def serialise(session: Session, scope: str) -> None:
    """Hold a PostgreSQL advisory lock on `scope` until the transaction ends (SQLite: nothing
    to do, a write transaction holds the database's write lock from its first statement)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"ica-alert:{scope}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _raise(
    session: Session,
    *,
    actor: Actor,
    topic: str,
    severity: str,
    subject_type: str,
    subject_id: str,
    tenant: str | None,
    summary: str,
    roles: list[str],
    at: datetime,
    audit_subject: tuple[str, str] | None = None,
    link: str | None = None,
    **details: Any,
) -> None:
    """The alert's audit entry and its notification, in the caller's transaction."""
    audit_type, audit_id = audit_subject or (subject_type, subject_id)
    append_audit(
        session,
        actor=actor,
        action=topic,
        subject_type=audit_type,
        subject_id=audit_id,
        tenant=tenant,
        data={"severity": severity, "notified_roles": roles, **details},
        at=at,
    )
    payload: dict[str, Any] = {
        "topic": topic,
        "severity": severity,
        "tenant": tenant,
        "summary": summary,
        "roles": roles,
        **details,
    }
    if link is not None:
        payload["link"] = link
    enqueue(
        session,
        topic=topic,
        channel=NOTIFY_CHANNEL,
        subject_type=subject_type,
        subject_id=subject_id,
        tenant=tenant,
        payload=payload,
        at=at,
    )


def _alerted(session: Session, topic: str, subject_type: str, subject_id: str) -> bool:
    """Whether an alert of `topic` about that subject is in the outbox already."""
    found = session.scalar(
        select(OutboxMessage.id)
        .where(
            OutboxMessage.topic == topic,
            OutboxMessage.subject_type == subject_type,
            OutboxMessage.subject_id == subject_id,
        )
        .limit(1)
    )
    return found is not None


def _base(ctx: ServiceContext) -> str:
    return ctx.public_url.rstrip("/")


# --- cost threshold ------------------------------------------------------------------------------


def check_budget(
    ctx: ServiceContext,
    session: Session,
    *,
    policy: Policy,
    approval: Approval,
    cost_minor: int | None,
    actor: Actor,
    source: str,
) -> bool:
    """Warn when `cost_minor` reaches the warning share of `approval`'s budget, once per
    approval. `source` says what carried the cost (`approval.request`, `gate.evaluate`)."""
    budget = approval.budget_minor
    if not policy.budgets.reached(cost_minor, budget):
        return False
    assert cost_minor is not None
    assert budget is not None
    subject_id = str(approval.id)
    serialise(session, f"approval:{subject_id}")
    if _alerted(session, TOPIC_BUDGET, "approval", subject_id):
        return False
    now = ctx.clock.now()
    percent = round(cost_minor * 100 / budget, 1) if budget else None
    share = f"{percent:g} %" if percent is not None else "more than all"
    summary = (
        f"Cost threshold: approval {approval.id} for {approval.tenant}/{approval.stage} "
        f"(run {approval.run_key}) has a cost impact of {cost_minor} {approval.currency or ''} "
        f"minor units, {share} of its budget of {budget} (warning at "
        f"{policy.budgets.warn_percent:g} %)"
    )
    _raise(
        session,
        actor=actor,
        topic=TOPIC_BUDGET,
        severity=WARNING,
        subject_type="approval",
        subject_id=subject_id,
        tenant=approval.tenant,
        summary=summary,
        roles=["azdev_approver_biz", "azdev_escalation", "tenant_admin"],
        at=now,
        link=f"{_base(ctx)}/approvals/{approval.id}",
        stage=approval.stage,
        approval_id=approval.id,
        run_key=approval.run_key,
        cost_impact_minor=cost_minor,
        budget_minor=budget,
        currency=approval.currency,
        percent=percent,
        warn_percent=float(policy.budgets.warn_percent),
        source=source,
    )
    return True


# --- pipeline failure streak -----------------------------------------------------------------


def check_failure_streak(
    ctx: ServiceContext, session: Session, *, run: PipelineRun, actor: Actor
) -> bool:
    """After `run` finished failed: alert when its pipeline's latest finished runs are at
    least three failures in a row and this streak has not alerted yet."""
    if run.status != RunStatus.FAILED.value:
        return False
    pipeline = f"{run.provider}:{run.project_id}:{run.pipeline_name}"
    serialise(session, f"pipeline:{pipeline}")
    same = and_(
        PipelineRun.provider == run.provider,
        PipelineRun.project_id == run.project_id,
        PipelineRun.pipeline_name == run.pipeline_name,
        PipelineRun.end_time.is_not(None),
        PipelineRun.status != RunStatus.RUNNING.value,
    )
    last_good = session.scalar(
        select(func.max(PipelineRun.end_time)).where(
            same, PipelineRun.status != RunStatus.FAILED.value
        )
    )
    streak = and_(same, PipelineRun.status == RunStatus.FAILED.value)
    if last_good is not None:
        streak = and_(streak, PipelineRun.end_time > last_good)
    count = session.scalar(select(func.count()).select_from(PipelineRun).where(streak)) or 0
    if count < FAILURE_STREAK:
        return False
    first = session.scalars(
        select(PipelineRun.run_key)
        .where(streak)
        .order_by(PipelineRun.end_time, PipelineRun.id)
        .limit(1)
    ).one()
    if _alerted(session, TOPIC_FAILURE_STREAK, "run", first):
        return False
    latest = list(
        session.scalars(
            select(PipelineRun.run_key)
            .where(streak)
            .order_by(PipelineRun.end_time.desc(), PipelineRun.id.desc())
            .limit(FAILURE_STREAK)
        )
    )
    now = ctx.clock.now()
    summary = (
        f"Pipeline failure: {run.pipeline_name} ({run.provider}:{run.project_id}) failed "
        f"{count} runs in a row, the latest {run.run_key}"
    )
    _raise(
        session,
        actor=actor,
        topic=TOPIC_FAILURE_STREAK,
        severity=CRITICAL,
        subject_type="run",
        subject_id=first,
        audit_subject=("run", run.run_key),
        tenant=run.tenant,
        summary=summary,
        roles=["azdev_devops", "tenant_admin"],
        at=now,
        link=f"{_base(ctx)}/runs/{run.run_key}",
        stage=run.stage,
        run_key=run.run_key,
        pipeline_name=run.pipeline_name,
        provider=run.provider,
        project_id=run.project_id,
        failures=count,
        streak_started_by=first,
        failed_runs=latest,
    )
    return True


# --- critical vulnerabilities ----------------------------------------------------------------


def critical_findings(data: Any) -> int:
    """The critical findings a scan event reports (`findings.critical`, as the gate reads it
    and as the API's scan schema takes it); anything that is not a count is none."""
    findings = data.get("findings") if isinstance(data, dict) else None
    value = findings.get("critical") if isinstance(findings, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return 0
    return value


def check_scan(
    ctx: ServiceContext, session: Session, *, run: RunRow, event: EventRow, actor: Actor
) -> bool:
    """After a `scan` event: alert when it reports critical findings and no earlier scan
    event of the run did (once per run)."""
    critical = critical_findings(event.data)
    if critical <= 0:
        return False
    serialise(session, f"run:{run.id}")
    earlier = session.scalars(
        select(PipelineEvent.data).where(
            PipelineEvent.run_pk == run.id,
            PipelineEvent.phase == event.phase,
            PipelineEvent.event_id != event.event_id,
        )
    )
    if any(critical_findings(data) > 0 for data in earlier):
        return False
    now = ctx.clock.now()
    target = "/".join(part for part in (run.tenant, run.stage) if part) or "no target"
    summary = (
        f"Security scan: run {run.run_key} ({run.pipeline_name}, {target}) reports "
        f"{critical} critical vulnerabilit{'y' if critical == 1 else 'ies'}"
    )
    _raise(
        session,
        actor=actor,
        topic=TOPIC_SCAN_CRITICAL,
        severity=CRITICAL,
        subject_type="run",
        subject_id=run.run_key,
        tenant=run.tenant,
        summary=summary,
        roles=["azdev_devops", "tenant_admin", "admin"],
        at=now,
        link=f"{_base(ctx)}/runs/{run.run_key}",
        stage=run.stage,
        run_key=run.run_key,
        event_id=event.event_id,
        attempt=event.attempt,
        critical=critical,
        artifact_digest=run.artifact_digest,
    )
    return True


# --- deployment queue --------------------------------------------------------------------------


def check_queue(
    session: Session,
    *,
    tenant: str,
    stage: str,
    queue: list[str],
    joined: str,
    actor: Actor,
    now: datetime,
) -> bool:
    """After `joined` joined the target's lock queue (`queue`: the waiting run keys, in
    order, it included): warn when this join took the queue above the threshold. Called with
    the target's lock row held, so joins are counted one at a time."""
    if len(queue) != QUEUE_ALERT_ABOVE + 1:
        return False
    summary = (
        f"Deployment queue: {len(queue)} runs wait for the deployment lock of "
        f"{tenant}/{stage} (more than {QUEUE_ALERT_ABOVE}); the latest is {joined}"
    )
    _raise(
        session,
        actor=actor,
        topic=TOPIC_QUEUE_LONG,
        severity=WARNING,
        subject_type="lock",
        subject_id=f"{tenant}/{stage}",
        tenant=tenant,
        summary=summary,
        roles=["azdev_devops", "tenant_admin"],
        at=now,
        stage=stage,
        run_key=joined,
        waiting=len(queue),
        queue=list(queue),
    )
    return True


# --- a stalled ledger ----------------------------------------------------------------------------

TOPIC_LEDGER_STALLED = "ledger.stalled"


def ledger_stalled(
    ctx: ServiceContext,
    session: Session,
    *,
    actor: Actor,
    source: str,
    reason: str,
    backlog: int,
    at: datetime,
) -> None:
    """`ledger.stalled` (critical): a source (the sealer, a witness) stopped the ledger from
    sealing. Raised once per stall by `services/ledger_status.py`, which marks its stall row."""
    _raise(
        session,
        actor=actor,
        topic=TOPIC_LEDGER_STALLED,
        severity=CRITICAL,
        subject_type="ledger",
        subject_id=source,
        tenant=None,
        summary=f"The audit ledger stopped sealing ({source}): {reason}",
        roles=["admin", "azdev_auditor"],
        at=at,
        # The checkpoints page shows when the ledger last sealed (its JSON: `/ready`).
        link=f"{_base(ctx)}/audit/checkpoints",
        source=source,
        reason=reason,
        backlog=backlog,
    )
