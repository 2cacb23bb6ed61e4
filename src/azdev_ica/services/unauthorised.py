"""Unauthorised changes: a `deploy` event for a target the gate never allowed for that run.

Called from `services/runs.record_event` inside the event's own transaction, so the event,
the finding, its audit entry and its alert commit together (or not at all).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.db.rows import EventRow, RunRow
from azdev_ica.db.tables import UnauthorisedChange
from azdev_ica.services.audit import append_audit
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.gates import has_allow
from azdev_ica.services.outbox import enqueue

TOPIC = "gate.unauthorised_deploy"


def check_deploy(
    ctx: ServiceContext, session: Session, *, run: RunRow, event: EventRow, actor: Actor
) -> UnauthorisedChange | None:
    """Record and alert when `event` deploys to a target with no allow decision for the run.

    The target is the event's own `tenant`/`stage` when it names them, else the run's. An
    unknown target can have no allow, so it is always unauthorised.
    """
    data = event.data or {}
    tenant = data.get("tenant") or run.tenant
    stage = data.get("stage") or run.stage
    if has_allow(session, run_pk=run.id, tenant=tenant, stage=stage):
        return None
    now = ctx.clock.now()
    row = UnauthorisedChange(
        run_pk=run.id,
        run_key=run.run_key,
        event_id=event.event_id,
        tenant=tenant,
        stage=stage,
        detected_at=now,
    )
    session.add(row)
    append_audit(
        session,
        actor=actor,
        action="gate.unauthorised_deploy",
        subject_type="run",
        subject_id=run.run_key,
        tenant=tenant,
        data={
            "event_id": event.event_id,
            "stage": stage,
            "artifact_digest": data.get("artifact_digest") or run.artifact_digest,
        },
        at=now,
    )
    enqueue(
        session,
        topic=TOPIC,
        channel="notify",
        subject_type="run",
        subject_id=run.run_key,
        tenant=tenant,
        payload={
            "topic": TOPIC,
            "severity": "critical",
            "tenant": tenant,
            "stage": stage,
            "run_key": run.run_key,
            "event_id": event.event_id,
            "roles": ["admin", "azdev_auditor", "tenant_admin"],
            "link": f"{ctx.public_url.rstrip('/')}/runs/{run.run_key}",
        },
        at=now,
    )
    return row
