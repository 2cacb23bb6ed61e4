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

from sqlalchemy import FromClause, Insert, Join, Row, Table, and_, bindparam, insert, select
from sqlalchemy.orm import Session

from azdev_ica.db.engine import CoreTransaction
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

# For an action that reads the stored answer together with its own facts, in one statement:
# its columns, and the join that finds it (bind parameters `idem_principal`, `idem_key`).
PRIOR_COLUMNS = (
    _RECORDS.c.fingerprint.label("prior_fingerprint"),
    _RECORDS.c.operation.label("prior_operation"),
    _RECORDS.c.response.label("prior_response"),
)


def join_prior(facts: FromClause) -> Join:
    """`facts` LEFT JOIN the stored answer for the request's key (NULLs when there is none)."""
    return facts.outerjoin(
        _RECORDS,
        and_(
            _RECORDS.c.principal == bindparam("idem_principal"),
            _RECORDS.c.idem_key == bindparam("idem_key"),
        ),
    )


def prior_parameters(request: IdempotencyRequest | None) -> dict[str, str | None]:
    """The bind parameters of `join_prior` (a request without a key finds nothing)."""
    if request is None:
        return {"idem_principal": None, "idem_key": None}
    return {"idem_principal": request.principal, "idem_key": request.key}


def answered(
    request: IdempotencyRequest | None, *, fingerprint: str | None, operation: str | None
) -> bool:
    """Whether the stored answer read with `PRIOR_COLUMNS` (None: none) answers `request`;
    refuses a key reused for another request."""
    if request is None or fingerprint is None:
        return False
    if fingerprint != request.fingerprint or operation != request.operation:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used before with a different request; use a new key"
        )
    return True


def find_prior(
    session: Session, request: IdempotencyRequest | None
) -> Row[Any, Any, Any, Any] | None:
    """The stored answer for this key, or None; refuses a key reused for another request."""
    if request is None:
        return None
    prior = session.execute(
        _FIND_PRIOR, {"principal": request.principal, "idem_key": request.key}
    ).one_or_none()
    if prior is None:
        return None
    answered(request, fingerprint=prior.fingerprint, operation=prior.operation)
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
    store(session, record_values(request, status_code=status_code, reference=reference, at=at))


def store(session: Session | CoreTransaction, values: dict[str, Any]) -> None:
    """Insert the stored answer of :func:`record_values` as a statement of its own (in a
    Session's transaction or a Core one's)."""
    session.execute(_REMEMBER, values)


def record_values(
    request: IdempotencyRequest, *, status_code: int, reference: dict[str, Any], at: datetime
) -> dict[str, Any]:
    """The stored answer's row, for an action that inserts it in one statement with its own
    rows (:func:`record_insert`), or as a statement of its own (:func:`store`, as
    :func:`remember` does)."""
    return {
        "principal": request.principal,
        "idem_key": request.key,
        "operation": request.operation,
        "fingerprint": request.fingerprint,
        "status_code": status_code,
        "response": reference,
        "created_at": at,
    }


_VALUES = (
    "principal", "idem_key", "operation", "fingerprint", "status_code", "response", "created_at",
)  # fmt: skip


def record_insert(prefix: str) -> Insert:
    """The INSERT of a stored answer whose values (:func:`record_values`) are bound under their
    names with `prefix` before them, for a statement that writes it with other rows."""
    return insert(_RECORDS).values(
        {name: bindparam(prefix + name, type_=_RECORDS.c[name].type) for name in _VALUES}
    )
