"""The daily drill-overdue warning (seed 000 §9: a quarterly restore test; issue 6: "a drill
overdue (more than a quarter) raises a warning").

For every tenant of the active policy whose last passed drill is older than a quarter (or
that never passed one, `domain/dr.py` `drill_overdue`), queue one `dr.drill_overdue`
notification per overdue period. The period is named by that last passed drill; a new passed
drill ends it, and when that one ages past a quarter, a new period (and warning) begins. The
unique (tenant, since) row of `azdev_dr_overdue_warning` is the conditional write that makes
the warning happen once, even when two processes run the job.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.db.tables import DrDrill, DrillOverdueWarning
from azdev_ica.domain.dr import DRILL_EVERY, drill_overdue
from azdev_ica.errors import NoPolicy
from azdev_ica.services.audit import append_audit, rfc3339
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.outbox import enqueue

DRILL_ACTOR = Actor(kind="system", id="job:dr-drill-overdue")
NEVER = "never"


def last_passed_drill(session: Session, tenant: str) -> datetime | None:
    """When the tenant's newest drill that succeeded within its targets finished."""
    passed = [
        drill.finished_at
        for drill in session.scalars(select(DrDrill).where(DrDrill.tenant == tenant))
        if drill.succeeded
        and drill.rto_seconds <= drill.rto_target_seconds
        and drill.rpo_seconds <= drill.rpo_target_seconds
    ]
    return max(passed) if passed else None


def tenants_added(session: Session) -> dict[str, datetime]:
    """When each tenant first appeared in an applied policy version (the versions are
    append-only, so this is a recorded fact, the same after `ica audit replay`)."""
    from azdev_ica.db.tables import PolicyVersion

    added: dict[str, datetime] = {}
    versions = session.execute(
        select(PolicyVersion.document, PolicyVersion.applied_at).order_by(PolicyVersion.applied_at)
    )
    for document, applied_at in versions:
        for tenant in _tenants_of(document):
            added.setdefault(tenant, applied_at)
    return added


@lru_cache(maxsize=64)
def _tenants_of(document: str) -> tuple[str, ...]:
    """The tenants a policy document names, parsed once per process and document (the
    scheduler asks every tick, for every tenant, over every version ever applied)."""
    from azdev_ica.errors import PolicyError
    from azdev_ica.policy.loader import parse_policy

    try:
        return tuple(parse_policy(document).tenants)
    except PolicyError:  # an old version today's loader no longer reads: its tenants
        return ()  # count from a later version


def warn_overdue_drills(ctx: ServiceContext) -> list[str]:
    """Warn for each tenant whose drill is overdue, once per overdue period; return the
    tenants warned by this call."""
    try:
        with ctx.read() as session:
            tenants = sorted(ctx.policies.active(session).tenants)
    except NoPolicy:
        return []
    warned: list[str] = []
    for tenant in tenants:

        def action(session: Session, tenant: str = tenant) -> bool:
            now = ctx.clock.now()
            last = last_passed_drill(session, tenant)
            added = tenants_added(session).get(tenant)
            if not drill_overdue(last, now, added):
                return False
            since = rfc3339(last) if last is not None else NEVER
            seen = session.scalars(
                select(DrillOverdueWarning.id).where(
                    DrillOverdueWarning.tenant == tenant, DrillOverdueWarning.since == since
                )
            ).first()
            if seen is not None:
                return False
            session.add(DrillOverdueWarning(tenant=tenant, since=since, warned_at=now))
            session.flush()  # a concurrent warning fails here (unique), before any message
            start = last if last is not None else added
            due = rfc3339(start + DRILL_EVERY) if start is not None else None
            append_audit(
                session,
                actor=DRILL_ACTOR,
                action="dr.drill_overdue",
                subject_type="tenant",
                subject_id=tenant,
                tenant=tenant,
                data={"last_passed_drill_at": rfc3339(last) if last else None, "due_at": due},
                at=now,
            )
            summary = (
                f"{tenant}: no DR drill has passed yet, a quarter after it was added"
                if last is None
                else f"{tenant}: the last passed DR drill finished {rfc3339(last)}, "
                f"more than a quarter ago (due {due})"
            )
            enqueue(
                session,
                topic="dr.drill_overdue",
                channel="notify",
                subject_type="tenant",
                subject_id=tenant,
                tenant=tenant,
                payload={
                    "topic": "dr.drill_overdue",
                    "severity": "warning",
                    "tenant": tenant,
                    "summary": summary,
                    "last_passed_drill_at": rfc3339(last) if last else None,
                    "roles": ["tenant_admin", "admin", "azdev_escalation"],
                },
                at=now,
            )
            return True

        if ctx.run_action(action):
            warned.append(tenant)
    return warned
