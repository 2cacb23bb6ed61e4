"""Retention (seed 000 §4.2): operational rows that have served their purpose are deleted.

The scheduler's `retention` job deletes, in bounded batches (each batch one transaction with
one `retention.purge` audit entry naming how many rows of which kind went, and the cut-off):

* outbox rows delivered more than `retention.outbox_days` (policy, default 90) ago, and failed
  ones whose last attempt is that old. Pending rows are never deleted;
* web sessions that ended (signed out, or past their absolute expiry) more than
  `retention.sessions_days` (default 30) ago;
* sign-in throttle rows whose last failure is more than a day old and whose lock (if any) has
  run out: the failure count is forgotten after a day anyway (`SignInRules.failure_memory`).

The audit ledger is never purged here: it is kept for at least 7 years, and retiring a yearly
shard (after exporting it, `ica audit export`) is a separate step its owner runs. Each delete
re-checks its condition in the statement itself, so a row that changed meanwhile (a failed
notification put back to pending by `ica outbox retry`) is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.db.tables import OutboxMessage, SignInThrottle, WebSession
from azdev_ica.errors import NoPolicy
from azdev_ica.policy.retention import RetentionPolicy
from azdev_ica.services.audit import append_audit, rfc3339
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.outbox import DELIVERED, FAILED, NO_ROUTE

RETENTION_ACTOR = Actor(kind="system", id="job:retention")
THROTTLE_KEPT = timedelta(days=1)
BATCH_SIZE = 500
MAX_BATCHES = 20  # per kind and pass: a backlog drains over several passes

OUTBOX, SESSIONS, THROTTLE = "outbox", "web_sessions", "signin_throttle"


@dataclass
class RetentionReport:
    purged: dict[str, int] = field(default_factory=lambda: {OUTBOX: 0, SESSIONS: 0, THROTTLE: 0})
    batches: int = 0


def _policy(ctx: ServiceContext) -> RetentionPolicy:
    try:
        with ctx.read() as session:
            return ctx.policies.active(session).retention
    except NoPolicy:
        return RetentionPolicy()


def _kinds(policy: RetentionPolicy, now: datetime) -> list[tuple[str, Any, Any, datetime]]:
    """(kind, table, key column, cut-off) with the condition of each kind."""
    return [
        (OUTBOX, OutboxMessage, OutboxMessage.id, now - policy.outbox),
        (SESSIONS, WebSession, WebSession.id, now - policy.sessions),
        (THROTTLE, SignInThrottle, SignInThrottle.login_key, now - THROTTLE_KEPT),
    ]


def _condition(kind: str, cutoff: datetime, now: datetime) -> ColumnElement[bool]:
    if kind == OUTBOX:
        # A failed row's next_attempt_at is the end of its last claim: when it gave up.
        return or_(
            (OutboxMessage.state.in_((DELIVERED, NO_ROUTE)))
            & (OutboxMessage.delivered_at < cutoff),
            (OutboxMessage.state == FAILED) & (OutboxMessage.next_attempt_at < cutoff),
        )
    if kind == SESSIONS:
        return or_(WebSession.expires_at < cutoff, WebSession.ended_at < cutoff)
    # A row still holding unrecorded refusals stays until they are recorded (purge does it).
    return (
        (SignInThrottle.last_failure_at < cutoff)
        & (SignInThrottle.refused == 0)
        & or_(SignInThrottle.locked_until.is_(None), SignInThrottle.locked_until <= now)
    )


def purge(
    ctx: ServiceContext, *, batch_size: int = BATCH_SIZE, max_batches: int = MAX_BATCHES
) -> RetentionReport:
    """Delete what the retention policy lets go, at most `max_batches` batches of
    `batch_size` rows per kind in this call."""
    report = RetentionReport()
    policy = _policy(ctx)
    from azdev_ica.services.credentials import record_lapsed_refusals

    for _ in range(max_batches):
        if record_lapsed_refusals(ctx, limit=batch_size) < batch_size:
            break
    for kind, table, key, cutoff in _kinds(policy, ctx.clock.now()):
        for _ in range(max_batches):

            def action(
                session: Session, kind: str = kind, table: Any = table, key: Any = key,
                cutoff: datetime = cutoff,
            ) -> int:  # fmt: skip
                now = ctx.clock.now()
                condition = _condition(kind, cutoff, now)
                keys = list(
                    session.scalars(select(key).where(condition).order_by(key).limit(batch_size))
                )
                if not keys:
                    return 0
                # The condition again: a row that changed since the select stays.
                result: Any = session.execute(
                    delete(table)
                    .where(key.in_(keys), condition)
                    .execution_options(synchronize_session=False)
                )
                deleted = int(result.rowcount or 0)
                if deleted:
                    append_audit(
                        session,
                        actor=RETENTION_ACTOR,
                        action="retention.purge",
                        subject_type="retention",
                        subject_id=kind,
                        tenant=None,
                        data={"kind": kind, "deleted": deleted, "before": rfc3339(cutoff)},
                        at=now,
                    )
                return deleted

            deleted = ctx.run_action(action)
            if deleted:
                report.purged[kind] += deleted
                report.batches += 1
            if deleted < batch_size:
                break
    return report
