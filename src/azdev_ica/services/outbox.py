"""The outbox: side effects queued in the same transaction as the action that caused them.

A service that must tell the outside world something (notify approvers, alert on an
override, call an Azure DevOps check back) calls `enqueue` inside its action; the row
commits or rolls back with the state change, so a notification is never sent for an action
that did not happen and never lost for one that did. A delivery job sends the rows later,
with retries and back-off.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from azdev_ica.db.tables import OutboxMessage

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


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
