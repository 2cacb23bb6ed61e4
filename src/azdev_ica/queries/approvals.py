"""Reading approvals: one request with its signatures, and a filtered, paginated list."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

from sqlalchemy import Select, and_, bindparam, or_, select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import Approval, ApprovalSignature, Person
from azdev_ica.domain.approvals import ApprovalStatus, Half
from azdev_ica.errors import NotFound
from azdev_ica.queries.runs import decode_cursor, encode_cursor

if TYPE_CHECKING:
    from azdev_ica.db.engine import Database


class ApprovalVersion(Protocol):
    """What a request's status, version and poll interval are made of: an `Approval` row, or
    the few columns `approval_version` reads."""

    @property
    def id(self) -> int: ...
    @property
    def tenant(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def requested_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def decided_at(self) -> datetime | None: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def closed_reason(self) -> str | None: ...


def effective_status(row: ApprovalVersion, now: datetime) -> ApprovalStatus:
    """The status as a caller sees it at `now`: an open request past its expiry has expired,
    even before the expiry job has written it down."""
    status = ApprovalStatus(row.status)
    if not status.final and now >= row.expires_at:
        return ApprovalStatus.EXPIRED
    return status


# How long a poller is asked to wait before it reads an open request again (`Retry-After`),
# by the request's age: people sign in minutes to hours, so a pipeline learns of a decision
# at most this late, and N waiting pipelines cost at most N / 5 requests per second in their
# first minute, N / 15 until ten minutes, N / 30 after that (docs/approvals.md).
POLL_AFTER = ((timedelta(minutes=1), 5), (timedelta(minutes=10), 15))
POLL_AFTER_LONG = 30


def poll_after(row: ApprovalVersion, status: ApprovalStatus, now: datetime) -> int | None:
    """Seconds a poller should wait before it asks again; None once the status is final."""
    if status.final:
        return None
    age = now - row.requested_at
    for younger_than, seconds in POLL_AFTER:
        if age < younger_than:
            return seconds
    return POLL_AFTER_LONG


def approval_etag(row: ApprovalVersion, status: ApprovalStatus) -> str:
    """The version of a request's answer, from its row alone: every change of it (a signature,
    a withdrawal, the expiry, a decision) moves `updated_at` and the status, and an open
    request past its expiry reads as expired. Weak: a signer's login renamed later changes the
    body, not the version."""
    parts = (
        row.id,
        status.value,
        row.updated_at.isoformat(),
        row.decided_at.isoformat() if row.decided_at else "",
        row.expires_at.isoformat(),
        row.closed_reason or "",
    )
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]
    return f'W/"{digest}"'


def visible_approval(session: Session, *, approval_id: int, principal: Principal) -> Approval:
    """One request by id (a primary-key read), if the caller's tenant scope reaches it."""
    row = session.get(Approval, approval_id)
    # Out of scope answers exactly like absent: nothing leaks about other tenants.
    if row is None or not principal.can_for(Permission.APPROVAL_READ, row.tenant):
        raise NotFound(f"no approval {approval_id}")
    return row


_VERSION = select(
    Approval.id,
    Approval.tenant,
    Approval.status,
    Approval.requested_at,
    Approval.updated_at,
    Approval.decided_at,
    Approval.expires_at,
    Approval.closed_reason,
).where(Approval.id == bindparam("approval_id"))


class _Version(NamedTuple):
    """`_VERSION`'s row (an `ApprovalVersion`)."""

    id: int
    tenant: str
    status: str
    requested_at: datetime
    updated_at: datetime
    decided_at: datetime | None
    expires_at: datetime
    closed_reason: str | None


def poll_version(db: Database, *, approval_id: int, principal: Principal) -> ApprovalVersion:
    """`approval_version` as a request's first read, outside any transaction: a poller's
    conditional request, which a 304 answers after this read alone. One statement on a pooled
    connection, on PostgreSQL straight through the driver in autocommit mode
    (`Database.first_row`: a third of a Session's CPU for the same read)."""
    row = db.first_row(cast("Select[Any]", _VERSION), {"approval_id": approval_id})
    version = None if row is None else _Version(*row)
    # Out of scope answers exactly like absent: nothing leaks about other tenants.
    if version is None or not principal.can_for(Permission.APPROVAL_READ, version.tenant):
        raise NotFound(f"no approval {approval_id}")
    return version


def approval_version(
    session: Session, *, approval_id: int, principal: Principal
) -> ApprovalVersion:
    """What a poller's conditional request needs of one request (its status, version and
    poll interval), read by primary key without loading the row as an object, if the
    caller's tenant scope reaches it."""
    row: ApprovalVersion | None = session.execute(
        _VERSION, {"approval_id": approval_id}
    ).one_or_none()
    # Out of scope answers exactly like absent: nothing leaks about other tenants.
    if row is None or not principal.can_for(Permission.APPROVAL_READ, row.tenant):
        raise NotFound(f"no approval {approval_id}")
    return row


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison against each entity tag listed, or `*`."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(
        candidate.strip().removeprefix("W/") == wanted for candidate in if_none_match.split(",")
    )


@dataclass(frozen=True)
class SignatureView:
    signature: ApprovalSignature
    login: str


@dataclass(frozen=True)
class ApprovalView:
    approval: Approval
    status: ApprovalStatus
    signatures: list[SignatureView]

    @property
    def awaiting(self) -> list[str]:
        """The halves still to sign while the request is open."""
        if self.status.final:
            return []
        signed = {view.signature.half for view in self.signatures}
        return [half.value for half in Half if half.value not in signed]


def get_approval(
    session: Session, *, approval_id: int, principal: Principal, now: datetime
) -> ApprovalView:
    row = visible_approval(session, approval_id=approval_id, principal=principal)
    signatures = [
        SignatureView(signature, login)
        for signature, login in session.execute(
            select(ApprovalSignature, Person.login)
            .join(Person, Person.id == ApprovalSignature.person_id)
            .where(ApprovalSignature.approval_id == row.id)
            .order_by(ApprovalSignature.id)
        )
    ]
    return ApprovalView(row, effective_status(row, now), signatures)


@dataclass(frozen=True)
class ApprovalFilter:
    tenant: str | None = None
    stage: str | None = None
    status: str | None = None
    run_key: str | None = None
    open_only: bool = False


def list_approvals(
    session: Session,
    *,
    principal: Principal,
    filters: ApprovalFilter,
    limit: int,
    cursor: str | None,
    now: datetime,
) -> tuple[list[tuple[Approval, ApprovalStatus]], str | None]:
    """Newest first; the cursor is the (requested_at, id) of the last row of the page before.

    The status filter is on the stored status, except `expired`, which also finds open
    requests past their expiry (as `effective_status` shows them).
    """
    query = select(Approval)
    for column, value in (
        (Approval.tenant, filters.tenant),
        (Approval.stage, filters.stage),
        (Approval.run_key, filters.run_key),
    ):
        if value is not None:
            query = query.where(column == value)
    if filters.status == ApprovalStatus.EXPIRED.value:
        query = query.where(
            or_(
                Approval.status == filters.status,
                and_(Approval.open_key.is_not(None), Approval.expires_at <= now),
            )
        )
    elif filters.status is not None:
        query = query.where(Approval.status == filters.status)
        if not ApprovalStatus(filters.status).final:
            query = query.where(Approval.expires_at > now)
    if filters.open_only:
        query = query.where(Approval.open_key.is_not(None), Approval.expires_at > now)
    scope = principal.scope(Permission.APPROVAL_READ)
    if scope is not None:
        query = query.where(Approval.tenant.in_(sorted(scope)))
    if cursor is not None:
        at, last_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Approval.requested_at < at,
                and_(Approval.requested_at == at, Approval.id < last_id),
            )
        )
    query = query.order_by(Approval.requested_at.desc(), Approval.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].requested_at, rows[-1].id)
    return [(row, effective_status(row, now)) for row in rows], next_cursor
