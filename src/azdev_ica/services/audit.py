"""Appending audit records: canonical, complete, never a secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import rfc8785
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.db.tables import AuditRecord

RECORD_VERSION = 1


def rfc3339(at: datetime) -> str:
    """UTC, microseconds, `Z`: one spelling for every timestamp in the trail."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def append_audit(
    session: Session,
    *,
    actor: Actor,
    action: str,
    subject_type: str,
    subject_id: str,
    tenant: str | None,
    data: dict[str, Any],
    at: datetime,
) -> AuditRecord:
    """Add one audit record to the caller's transaction (it commits or rolls back with it)."""
    record: dict[str, Any] = {
        "v": RECORD_VERSION,
        "action": action,
        "at": rfc3339(at),
        "actor": actor.as_record(),
        "subject": {"type": subject_type, "id": subject_id},
        "tenant": tenant,
        "data": data,
    }
    row = AuditRecord(
        recorded_at=at,
        action=action,
        actor_kind=actor.kind,
        actor_id=actor.id,
        subject_type=subject_type,
        subject_id=subject_id,
        tenant=tenant,
        record=rfc8785.dumps(record).decode(),
    )
    session.add(row)
    return row
