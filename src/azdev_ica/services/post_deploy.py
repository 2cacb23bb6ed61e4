"""A failed verification or a monitoring trigger (seed 000 §5.2, §6.1), in the transaction of
the `verify` or `monitor` event that reports it (called by `services/runs.record_event`).

What fails: a `verify` event whose verification failed, or a `monitor` event with a failure
trigger (`domain/runs.deployment_failure`). Its target (the event's tenant/stage, else the
run's) then has a failed deployment: the deployment queries read it as no longer good
(`queries/deployments.py`), and, once per run and target,

- the `deployment.failed` alert (critical) is raised: an audit entry and a `notify` row;
- an incident (high) is opened for the run, unless one of the run's is still open;

both naming the rollback: the target's last good version (its digest, version and run) and
whether the policy lets a rollback to it go without a fresh approval. The same `rollback`
object answers the event, so the pipeline's next step can run the rollback through the gate's
rollback rule (`ica gate evaluate --rollback --artifact-digest <digest>`). A monitoring trigger
that arrives after the run has ended does the same for the target.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.db.rows import EventRow, RunRow
from azdev_ica.db.tables import Incident
from azdev_ica.domain.incidents import Severity
from azdev_ica.domain.runs import Phase, deployment_failure, event_target
from azdev_ica.queries.deployments import deployment_history, last_good
from azdev_ica.services.alerts import CRITICAL, _alerted, _raise, serialise
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.incidents import OPEN_STATUSES, create_incident

TOPIC_DEPLOYMENT_FAILED = "deployment.failed"


def failure_of(event: EventRow) -> str | None:
    """Why `event` marks its target's deployment failed, or None."""
    return deployment_failure(event.phase, event.data)


def rollback_for(
    ctx: ServiceContext, session: Session, *, tenant: str, stage: str
) -> dict[str, Any]:
    """The rollback of `tenant`/`stage`: its last good version, and whether the policy lets a
    rollback to it go without a fresh approval (`available` false when there is none)."""
    policy = ctx.policies.active(session)
    good = last_good(deployment_history(session, tenant=tenant, stage=stage), tenant=tenant,
                     stage=stage)  # fmt: skip
    allowed = policy.promotion is not None and policy.promotion.rollback_without_approval(stage)
    return {
        "available": good is not None,
        "tenant": tenant,
        "stage": stage,
        "artifact_digest": good.artifact_digest if good else None,
        "version": good.version if good else None,
        "run_key": good.run_key if good else None,
        "without_approval": good is not None and allowed,
    }


def check_post_deploy(
    ctx: ServiceContext, session: Session, *, run: RunRow, event: EventRow, actor: Actor
) -> dict[str, Any] | None:
    """After `event` was recorded: when it marks its target's deployment failed, alert and
    open the incident (once per run and target) and answer the rollback; else None."""
    why = failure_of(event)
    target = event_target(
        Phase(event.phase), event.data, run_tenant=run.tenant, run_stage=run.stage
    )
    if why is None or target is None:
        return None
    tenant, stage = target
    if tenant is None or stage is None:
        return None
    session.flush()  # the deployment queries read this event
    rollback = rollback_for(ctx, session, tenant=tenant, stage=stage)
    subject = f"{run.run_key}@{tenant}/{stage}"
    serialise(session, f"deployment:{subject}")
    if _alerted(session, TOPIC_DEPLOYMENT_FAILED, "run", subject):
        return rollback
    now = ctx.clock.now()
    cause = (
        "post-deploy verification failed"
        if why == "verify:failed"
        else f"monitoring trigger {why.split(':', 1)[1]}"
    )
    if rollback["available"]:
        approval = (
            "without a fresh approval (the policy allows it)"
            if rollback["without_approval"]
            else "with a fresh approval"
        )
        version = f" (version {rollback['version']})" if rollback["version"] else ""
        plan = (
            f"roll back to the last good version {rollback['artifact_digest']}{version} of run "
            f"{rollback['run_key']}, {approval}"
        )
    else:
        plan = "no earlier good version to roll back to: fix forward"
    summary = f"Deployment failed: run {run.run_key} to {tenant}/{stage}: {cause}; {plan}"
    _raise(
        session,
        actor=actor,
        topic=TOPIC_DEPLOYMENT_FAILED,
        severity=CRITICAL,
        subject_type="run",
        subject_id=subject,
        audit_subject=("run", run.run_key),
        tenant=tenant,
        summary=summary,
        roles=["azdev_devops", "tenant_admin", "azdev_escalation"],
        at=now,
        link=f"{ctx.public_url.rstrip('/')}/runs/{run.run_key}",
        stage=stage,
        run_key=run.run_key,
        event_id=event.event_id,
        cause=why,
        rollback=rollback,
    )
    already_open = session.scalars(
        select(Incident.id)
        .where(Incident.run_pk == run.id, Incident.status.in_(OPEN_STATUSES))
        .limit(1)
    ).first()
    if already_open is None:
        create_incident(
            session,
            actor=actor,
            tenant=tenant,
            stage=stage,
            run=run,
            title=f"Deployment of {run.run_key} to {tenant}/{stage} failed: {cause}",
            severity=Severity.HIGH,
            detected=event.occurred_at if event.occurred_at <= now else now,
            summary=summary,
            now=now,
        )
    return rollback
