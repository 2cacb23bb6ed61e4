"""Idempotency-Key handling inside the action's own transaction.

The stored answer is a reference to what the first call produced (and its status code),
written in the same transaction as the action, so a retry after a lost response finds
either nothing (the action rolled back) or the action's result, never half of it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, insert, select
from sqlalchemy.orm import Session

from azdev_ica.db.tables import IdempotencyRecord
from azdev_ica.errors import IdempotencyKeyReused
from azdev_ica.services import canonical


@dataclass(frozen=True)
class IdempotencyRequest:
    principal: str
    key: str
    operation: str
    fingerprint: str

    @classmethod
    def of(
        cls, *, principal: str, key: str, operation: str, body: dict[str, Any]
    ) -> IdempotencyRequest:
        fingerprint = hashlib.sha256(canonical.dumps([operation, body])).hexdigest()
        return cls(principal=principal, key=key, operation=operation, fingerprint=fingerprint)


# Built once (Core, on the table): the look-up and the record, each a prepared statement.
_RECORDS = cast(Table, IdempotencyRecord.__table__)
_FIND_PRIOR = select(
    _RECORDS.c.fingerprint, _RECORDS.c.operation, _RECORDS.c.status_code, _RECORDS.c.response
).where(
    _RECORDS.c.principal == bindparam("principal"),
    _RECORDS.c.idem_key == bindparam("idem_key"),
)
_REMEMBER = insert(_RECORDS)


def find_prior(
    session: Session, request: IdempotencyRequest | None
) -> Row[Any, Any, Any, Any] | None:
    """The stored answer for this key, or None; refuses a key reused for another request."""
    if request is None:
        return None
    prior = session.execute(
        _FIND_PRIOR, {"principal": request.principal, "idem_key": request.key}
    ).one_or_none()
    if prior is not None and (
        prior.fingerprint != request.fingerprint or prior.operation != request.operation
    ):
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used before with a different request; use a new key"
        )
    return prior


def remember(
    session: Session,
    request: IdempotencyRequest | None,
    *,
    status_code: int,
    reference: dict[str, Any],
    at: datetime,
) -> None:
    if request is None:
        return
    session.execute(
        _REMEMBER,
        {
            "principal": request.principal,
            "idem_key": request.key,
            "operation": request.operation,
            "fingerprint": request.fingerprint,
            "status_code": status_code,
            "response": reference,
            "created_at": at,
        },
    )
