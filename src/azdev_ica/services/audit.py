"""Appending audit records: canonical, complete, never a secret, personal data only as salted
hashes.

Every action calls :func:`append_audit` inside its own transaction: one plain INSERT into the
ledger's inbox, no global lock. The sealer (`jobs/sealer.py`) later gives the record its place
in the log. The record is the entry's body: canonical JSON (RFC 8785) of action, actor, data,
subject, tenant and time, stored byte for byte.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    CTE,
    ColumnClause,
    Insert,
    Table,
    bindparam,
    event,
    insert,
    literal_column,
    select,
)
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.db.engine import CoreTransaction
from azdev_ica.db.tables import AuditInbox, PersonalDataOpening
from azdev_ica.services import canonical

COMMITMENT_PREFIX = "salted-sha256:"
"""How a personal value appears in the ledger: ``salted-sha256:<hex SHA-256(salt || value)>``."""

PERSONAL_KINDS = frozenset({"provider_user", "email", "login", "name"})


def rfc3339(at: datetime) -> str:
    """UTC, microseconds, `Z`: one spelling for every timestamp in the trail."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_body(
    *,
    actor: Actor,
    action: str,
    subject_type: str,
    subject_id: str,
    tenant: str | None,
    data: Mapping[str, Any],
    at: datetime,
) -> bytes:
    """The canonical JSON body of an audit record (the entry minus its place in the log)."""
    return canonical.dumps(
        {
            "action": action,
            "actor": actor.as_record(),
            "data": dict(data),
            "subject": {"type": subject_type, "id": subject_id},
            "tenant": tenant,
            "time": rfc3339(at),
        }
    )


# Built once: a Core INSERT on the table (no ORM bulk path, no statement built per record).
# PostgreSQL's takes the writer's transaction id, so the sealer knows which rows may still be
# invisible to it (see jobs/sealer.py); SQLite has one writer at a time: 0.
_INBOX = cast(Table, AuditInbox.__table__)
_PG_TXID: ColumnClause[int] = literal_column("pg_current_xact_id()::text::bigint")
_INSERT_INBOX = insert(_INBOX).returning(_INBOX.c.id)
_INSERT_INBOX_PG = insert(_INBOX).values(txid=_PG_TXID).returning(_INBOX.c.id)
_VALUES = (
    "created_at", "action", "actor_kind", "actor_id", "subject_type", "subject_id", "tenant",
    "body",
)  # fmt: skip


def append_audit(
    session: Session,
    *,
    actor: Actor,
    action: str,
    subject_type: str,
    subject_id: str,
    tenant: str | None,
    data: Mapping[str, Any],
    at: datetime,
    personal: Mapping[str, tuple[str, str | None]] | None = None,
) -> int:
    """Add one audit record to the caller's transaction (it commits or rolls back with it);
    return its inbox id (for :func:`azdev_ica.jobs.sealer.wait_for_entry`).

    ``personal`` maps data fields to ``(kind, value)``: each value enters the record only as
    a salted hash (:func:`personal_commitment`), so erasing a person never touches the ledger.
    """
    # Flush the action's own changes first: their row locks are then taken before the record
    # gets its inbox id, so of two actions on the same row the later one also has the later
    # id, and the log orders them as the database did.
    session.flush()
    record = dict(data)
    for name, (kind, value) in (personal or {}).items():
        record[name] = None if value is None else personal_commitment(session, kind, value, at)
    values = inbox_values(
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        tenant=tenant,
        data=record,
        at=at,
    )
    return insert_record(session, values)


def insert_record(session: Session | CoreTransaction, values: dict[str, Any]) -> int:
    """Insert the inbox row of :func:`inbox_values` as a statement of its own (in a Session's
    transaction or a Core one's); its inbox id."""
    if isinstance(session, Session):
        postgresql = session.get_bind().dialect.name == "postgresql"
    else:
        postgresql = session.dialect == "postgresql"
    statement, params = (
        (_INSERT_INBOX_PG, values) if postgresql else (_INSERT_INBOX, {"txid": 0, **values})
    )
    if isinstance(session, Session):
        inbox_id = session.execute(statement, params).scalar_one()
    else:
        [(inbox_id,)] = session.execute(statement, params)
    appended(session, int(inbox_id))
    return int(inbox_id)


def inbox_values(
    *,
    actor: Actor,
    action: str,
    subject_type: str,
    subject_id: str,
    tenant: str | None,
    data: Mapping[str, Any],
    at: datetime,
) -> dict[str, Any]:
    """The inbox row of an audit record that has no personal fields (all but its transaction
    id), for an action that inserts it in one statement with its own rows on PostgreSQL
    (:func:`inbox_insert`; it then notes the record with :func:`appended`), or as a
    statement of its own (:func:`insert_record`, as :func:`append_audit` does)."""
    return {
        "created_at": at,
        "action": action,
        "actor_kind": actor.kind,
        "actor_id": actor.id,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "tenant": tenant,
        "body": record_body(
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            tenant=tenant,
            data=data,
            at=at,
        ),
    }


def inbox_insert(prefix: str) -> Insert:
    """PostgreSQL's INSERT of one inbox row with the writer's transaction id, returning its
    inbox id, for a statement that writes it with other rows: the values of
    :func:`inbox_values` are bound under their names with `prefix` before them."""
    bound = {name: bindparam(prefix + name, type_=_INBOX.c[name].type) for name in _VALUES}
    return insert(_INBOX).values(txid=_PG_TXID, **bound).returning(_INBOX.c.id)


def inbox_chain(count: int, prefix: str) -> list[CTE]:
    """PostgreSQL: `count` inbox rows as data-modifying CTEs of one statement, for an action
    that writes several records with its own rows; each returns its inbox id. Each INSERT
    reads the one before it, so the rows are inserted (and get their ids) in their order: the
    values of the i-th record are bound under `prefix`, i, `_` and their names
    (:func:`inbox_chain_values`)."""
    chain: list[CTE] = []
    for index in range(count):
        name = f"{prefix}{index}_"
        if not chain:
            chain.append(inbox_insert(name).cte(f"{prefix}{index}"))
            continue
        bound = [bindparam(name + column, type_=_INBOX.c[column].type) for column in _VALUES]
        after = select(_PG_TXID, *bound).select_from(chain[-1])
        statement = insert(_INBOX).from_select(["txid", *_VALUES], after)
        chain.append(statement.returning(_INBOX.c.id).cte(f"{prefix}{index}"))
    return chain


def inbox_chain_values(records: Sequence[AuditRecord], prefix: str) -> dict[str, Any]:
    """The bound values of :func:`inbox_chain` for `records` (no personal fields)."""
    values: dict[str, Any] = {}
    for index, record in enumerate(records):
        name = f"{prefix}{index}_"
        row = record.values()
        values.update((name + column, value) for column, value in row.items())
    return values


# --- audit references of a request ----------------------------------------------------------
#
# A caller may ask for the receipt of what it wrote (`GET /audit/receipt/{ref}`). The HTTP layer
# opens a collection per request (`collect_audit_refs`); `append_audit` adds the inbox id of
# each record to it once the action's transaction has committed (a record rolled back, say by
# a retried action, never becomes a reference).

_REFS: ContextVar[list[int] | None] = ContextVar("azdev_ica_audit_refs", default=None)
_SESSION_REFS = "azdev_ica.audit_refs"


@contextmanager
def collect_audit_refs() -> Iterator[list[int]]:
    """Collect the inbox ids of the audit records committed inside the block (in any thread
    the block's context is copied to, as for a request's handler)."""
    refs: list[int] = []
    token = _REFS.set(refs)
    try:
        yield refs
    finally:
        _REFS.reset(token)


# Called, without arguments and in the appending thread, for each record added to a
# transaction of this process: the sealer (jobs/sealer.py) listens, so that when it has slowed
# down for want of work it looks again at its ordinary pace. A tuple, replaced (not changed in
# place) by `on_append`, so that appending threads iterate over it without a lock.
_APPEND_LISTENERS: tuple[Callable[[], None], ...] = ()


def on_append(listener: Callable[[], None]) -> Callable[[], None]:
    """Call ``listener`` (it must be quick and never raise) whenever a record is added to a
    transaction in this process; returns the function that stops it."""
    global _APPEND_LISTENERS
    _APPEND_LISTENERS = (*_APPEND_LISTENERS, listener)

    def stop() -> None:
        global _APPEND_LISTENERS
        _APPEND_LISTENERS = tuple(f for f in _APPEND_LISTENERS if f is not listener)

    return stop


def appended(session: Session | CoreTransaction, inbox_id: int) -> None:
    """Note a record inserted in the session's (or Core transaction's) transaction: once it
    commits, its inbox id is one of the request's audit references (see below); the listeners
    of `on_append` hear of it at once."""
    for listener in _APPEND_LISTENERS:
        listener()
    refs = _REFS.get()
    if refs is None:
        return
    if not isinstance(session, Session):
        session.on_commit(lambda: refs.append(inbox_id))
        return
    noted: tuple[list[int], list[int]] | None = session.info.get(_SESSION_REFS)
    if noted is None:
        noted = session.info[_SESSION_REFS] = (refs, [])
    noted[1].append(inbox_id)


# Listened to once for every session (listening on each session that appends a record cost
# 20-30 µs per request): a session's noted records become references when it commits.
def _committed(session: Session) -> None:
    noted = session.info.get(_SESSION_REFS)
    if noted is not None:
        refs, pending = noted
        refs.extend(pending)
        pending.clear()


def _rolled_back(session: Session, _previous_transaction: object) -> None:
    noted = session.info.get(_SESSION_REFS)
    if noted is not None:
        noted[1].clear()


event.listen(Session, "after_commit", _committed)
event.listen(Session, "after_soft_rollback", _rolled_back)


@dataclass(frozen=True)
class AuditRecord:
    """One audit record an action has decided to write, not yet written (see
    :func:`append_audits`)."""

    actor: Actor
    action: str
    subject_type: str
    subject_id: str
    tenant: str | None
    data: Mapping[str, Any]
    at: datetime

    def values(self) -> dict[str, Any]:
        """Its inbox row's column values (:func:`inbox_values`)."""
        return inbox_values(
            actor=self.actor,
            action=self.action,
            subject_type=self.subject_type,
            subject_id=self.subject_id,
            tenant=self.tenant,
            data=self.data,
            at=self.at,
        )


# The same INSERT for several records at once: SQLAlchemy sends one multi-row INSERT (its
# "insertmanyvalues" form). On PostgreSQL it inserts the rows in the records' order
# (INSERT ... SELECT ... ORDER BY). SQLite inserts the rows of a VALUES list in their order,
# but does not promise RETURNING's order (SQLAlchemy would then send a statement per row):
# its ids are sorted instead.
_INSERT_INBOX_ROWS = insert(_INBOX).returning(_INBOX.c.id)
_INSERT_INBOX_ROWS_PG = (
    insert(_INBOX).values(txid=_PG_TXID).returning(_INBOX.c.id, sort_by_parameter_order=True)
)


def append_audits(session: Session, records: Sequence[AuditRecord]) -> list[int]:
    """What :func:`append_audit` does for each record (no personal fields), in one INSERT: one
    round trip for all of an action's records. Their inbox ids follow their order; returns
    them."""
    if not records:
        return []
    session.flush()  # as in append_audit: the action's row locks before the inbox ids
    postgresql = session.get_bind().dialect.name == "postgresql"
    rows = [
        {
            **({} if postgresql else {"txid": 0}),
            **record.values(),
        }
        for record in records
    ]
    statement = _INSERT_INBOX_ROWS_PG if postgresql else _INSERT_INBOX_ROWS
    ids = [int(inbox_id) for inbox_id in session.execute(statement, rows).scalars()]
    if not postgresql:
        ids.sort()
    for inbox_id in ids:
        appended(session, inbox_id)
    return ids


def commitment_of(salt: bytes, value: str) -> str:
    """``salted-sha256:`` + hex SHA-256 of the salt followed by the UTF-8 value."""
    return COMMITMENT_PREFIX + hashlib.sha256(salt + value.encode("utf-8")).hexdigest()


def personal_commitment(session: Session, kind: str, value: str, at: datetime) -> str:
    """The salted hash that stands for ``value`` in the ledger.

    One random salt per (kind, value): the same person hashes alike in every entry (an auditor
    can still see that the requester and the approver are one person), yet nobody can test a
    guess without the opening, and erasing the opening leaves an unopenable hash. Two first
    uses racing each other collide on the unique (kind, value) and the action is retried.
    """
    if kind not in PERSONAL_KINDS:
        raise ValueError(f"unknown kind of personal data {kind!r}")
    found = session.scalars(
        select(PersonalDataOpening.commitment).where(
            PersonalDataOpening.kind == kind, PersonalDataOpening.value == value
        )
    ).one_or_none()
    if found is not None:
        return found
    salt = secrets.token_bytes(32)
    commitment = commitment_of(salt, value)
    session.execute(
        insert(PersonalDataOpening).values(
            commitment=commitment, kind=kind, value=value, salt=salt.hex(), created_at=at
        )
    )
    return commitment
