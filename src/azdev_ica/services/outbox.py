"""The outbox: side effects queued in the same transaction as the action that caused them.

A service that must tell the outside world something (notify approvers, alert on an
override, call an Azure DevOps check back) calls `enqueue` inside its action; the row
commits or rolls back with the state change, so a notification is never sent for an action
that did not happen and never lost for one that did. A delivery job sends the rows later,
with retries and back-off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.db.tables import OutboxMessage
from azdev_ica.errors import ValidationProblem
from azdev_ica.services.audit import append_audit
from azdev_ica.services.context import ServiceContext

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
# A notification no route of ICA_NOTIFY sends anywhere: settled, but nobody was told.
NO_ROUTE = "no_route"
STATES = (PENDING, DELIVERED, FAILED, NO_ROUTE)

# Not a sender: a `notify` row fans out to the channels ICA_NOTIFY routes its topic to.
NOTIFY_CHANNEL = "notify"
OUTBOX_ACTOR = "outbox"


def enqueue(
    session: Session,
    *,
    topic: str,
    channel: str,
    subject_type: str,
    subject_id: str,
    tenant: str | None,
    payload: dict[str, Any],
    at: datetime,
) -> OutboxMessage:
    """Queue one message for `channel`; it is due at once. Call inside a service action."""
    row = OutboxMessage(
        created_at=at,
        topic=topic,
        channel=channel,
        tenant=tenant,
        subject_type=subject_type,
        subject_id=subject_id,
        payload=payload,
        state=PENDING,
        attempts=0,
        next_attempt_at=at,
    )
    session.add(row)
    return row


# --- operations: see and requeue (`ica outbox list|retry`) ------------------------------------


@dataclass(frozen=True)
class OutboxView:
    """A row as operators see it: never the payload (it may carry addresses or tokens)."""

    id: int
    created_at: datetime
    topic: str
    channel: str
    destination: str | None
    tenant: str | None
    subject: str
    state: str
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_error: str | None


def _view(row: OutboxMessage) -> OutboxView:
    destination = row.payload.get("destination") if isinstance(row.payload, dict) else None
    return OutboxView(
        id=row.id,
        created_at=row.created_at,
        topic=row.topic,
        channel=row.channel,
        destination=str(destination) if destination is not None else None,
        tenant=row.tenant,
        subject=f"{row.subject_type}:{row.subject_id}",
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        delivered_at=row.delivered_at,
        last_error=row.last_error,
    )


def list_messages(
    ctx: ServiceContext,
    *,
    state: str | None = None,
    limit: int = 100,
    tenants: frozenset[str] | None = None,
) -> list[OutboxView]:
    """The newest rows first, optionally only those in `state`; with `tenants`, only rows of
    those tenants (a row of no tenant, such as a ledger alert, only when `tenants` is None)."""
    if state is not None and state not in STATES:
        raise ValidationProblem(f"state must be one of {', '.join(STATES)}")
    query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(max(1, limit))
    if state is not None:
        query = query.where(OutboxMessage.state == state)
    if tenants is not None:
        query = query.where(OutboxMessage.tenant.in_(sorted(tenants)))
    with ctx.read() as session:
        return [_view(row) for row in session.scalars(query)]


def retry_failed(
    ctx: ServiceContext, *, actor: Actor, ids: Sequence[int] | None = None
) -> list[int]:
    """Put failed rows (all of them, or those of `ids`) back to pending, due now, with a fresh
    attempt budget; one audit entry names them. Rows that are not failed are left alone."""

    def action(session: Session) -> list[int]:
        now = ctx.clock.now()
        query = select(OutboxMessage).where(OutboxMessage.state == FAILED).with_for_update()
        if ids is not None:
            query = query.where(OutboxMessage.id.in_(list(ids)))
        rows = list(session.scalars(query.order_by(OutboxMessage.id)))
        for row in rows:
            row.state = PENDING
            row.attempts = 0
            row.next_attempt_at = now
        requeued = [row.id for row in rows]
        if requeued:
            append_audit(
                session,
                actor=actor,
                action="outbox.retry",
                subject_type=OUTBOX_ACTOR,
                subject_id=",".join(str(i) for i in requeued)[:200],
                tenant=None,
                data={"ids": requeued},
                at=now,
            )
        return requeued

    return ctx.run_action(action)
