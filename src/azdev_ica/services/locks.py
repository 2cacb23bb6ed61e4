"""Deployment locks: one per target (tenant x stage), held by one run at a time.

A run takes the lock when the gate allows it (`services/gates.py`), with a lease; the lock is
freed when the run finishes, when the lease runs out, or when an administrator releases it
with a reason. Runs that are ready except for the lock wait in a queue, first come first
served: when the lock is free only the run at the head of the queue may take it. What a gate
evaluation does with the lock is decided in `domain/locks.py` (pure): the gate reads the
lock here (:func:`read_lock`), decides, and applies the steps (:func:`apply`).

Every function here works inside the caller's transaction and starts by locking the target's
row (`SELECT ... FOR UPDATE`, created on first use): two pipelines racing for one target are
serialised by the database, so exactly one of them wins. Every change is an audit entry
(lock.acquire, lock.release, lock.expire, lock.queue, lock.dequeue), and every change of a
lock or of its queue bumps the lock row's version: the gate's facts statement reads the queue
in its snapshot and trusts it only when the row it then locked has the version it saw
(:func:`queue_of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    CTE,
    String,
    Table,
    Update,
    bindparam,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from azdev_ica.auth.principal import Actor, Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.engine import driver_rows
from azdev_ica.db.tables import DeployLock, LockWaiter, PipelineRun
from azdev_ica.domain import locks as plan
from azdev_ica.domain.locks import Turn
from azdev_ica.errors import NotFound, OutOfScope, ValidationProblem
from azdev_ica.services.alerts import check_queue
from azdev_ica.services.audit import AuditRecord, append_audit, append_audits, rfc3339
from azdev_ica.services.context import ServiceContext

LEASE_ACTOR = Actor(kind="system", id="job:lock-lease")


@dataclass(frozen=True)
class LockState:
    tenant: str
    stage: str
    holder_run_key: str | None
    acquired_at: datetime | None
    expires_at: datetime | None
    queue: tuple[str, ...]


__all__ = ["LEASE_ACTOR", "LockState", "LockWrite", "Turn", "apply", "fold", "read_lock"]


def _target_key(tenant: str, stage: str) -> str:
    return f"{tenant}/{stage}"


def lock_row(session: Session, tenant: str, stage: str, now: datetime) -> DeployLock:
    """The target's lock row, locked for this transaction; created on first use (a racing
    creator hits the unique key and the action is retried, then finds the row)."""
    row = session.scalars(
        select(DeployLock)
        .where(DeployLock.tenant == tenant, DeployLock.stage == stage)
        .with_for_update()
    ).one_or_none()
    if row is None:
        row = DeployLock(tenant=tenant, stage=stage, updated_at=now)
        session.add(row)
        session.flush()
    return row


def _audit(
    session: Session, row: DeployLock, action: str, actor: Actor, at: datetime, **data: object
) -> None:
    append_audit(
        session,
        actor=actor,
        action=action,
        subject_type="lock",
        subject_id=_target_key(row.tenant, row.stage),
        tenant=row.tenant,
        data={"stage": row.stage, **data},
        at=at,
    )


def _free(session: Session, row: DeployLock, action: str, actor: Actor, at: datetime,
          reason: str) -> None:  # fmt: skip
    holder = row.holder_run_key
    row.holder_run_pk = None
    row.holder_run_key = None
    row.acquired_at = None
    row.expires_at = None
    row.updated_at = at
    row.version += 1
    _audit(session, row, action, actor, at, run_key=holder, reason=reason)


def expire_if_due(session: Session, row: DeployLock, now: datetime) -> None:
    """Free a lock whose lease has run out, or whose holder has finished without the finish
    freeing it (lazily, by whoever looks at it next)."""
    if row.holder_run_pk is None:
        return
    if row.expires_at is not None and row.expires_at <= now:
        _free(session, row, "lock.expire", LEASE_ACTOR, now, "lease expired")
        return
    status = session.scalar(select(PipelineRun.status).where(PipelineRun.id == row.holder_run_pk))
    if status != "running":
        _free(session, row, "lock.expire", LEASE_ACTOR, now, "holder run finished")


def _dequeue(session: Session, row: DeployLock, waiter: LockWaiter, actor: Actor,
             at: datetime, reason: str) -> None:  # fmt: skip
    session.delete(waiter)
    row.version += 1
    _audit(session, row, "lock.dequeue", actor, at, run_key=waiter.run_key, reason=reason)


_LOCK = cast(Table, DeployLock.__table__)
_WAITER = cast(Table, LockWaiter.__table__)
_RUN = cast(Table, PipelineRun.__table__)


def _target(table: Table) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return (
        table.c.tenant == bindparam("target_tenant", type_=String),
        table.c.stage == bindparam("target_stage", type_=String),
    )


# The gate's statements, built once with bound parameters on the tables (no ORM layer):
# SQLAlchemy reuses their compiled forms.
_READ_LOCK = (
    select(_LOCK.c.holder_run_pk, _LOCK.c.holder_run_key, _LOCK.c.expires_at)
    .where(*_target(_LOCK))
    .with_for_update()
)
_WAITERS = (
    select(
        literal(1).label("kind"),
        _WAITER.c.id,
        _WAITER.c.run_pk,
        _WAITER.c.run_key,
        _WAITER.c.last_seen_at,
        _RUN.c.status,
    )
    .select_from(_WAITER.join(_RUN, _RUN.c.id == _WAITER.c.run_pk))
    .where(*_target(_WAITER))
)
_HOLDER_AND_WAITERS = union_all(
    _WAITERS,
    select(
        literal(0).label("kind"),
        _RUN.c.id,
        _RUN.c.id,
        _RUN.c.run_key,
        _RUN.c.start_time,
        _RUN.c.status,
    ).where(_RUN.c.id == bindparam("holder_pk")),
).order_by("kind", "id")
_WAITERS_IN_ORDER = _WAITERS.order_by(_WAITER.c.id)
_CREATE_LOCK = insert(_LOCK)
# Every change of a lock or of its queue bumps the lock row's version (see `queue_of`).
_NEXT_VERSION = _LOCK.c.version + 1
_EXPIRE = (
    update(_LOCK)
    .where(*_target(_LOCK))
    .values(
        holder_run_pk=None,
        holder_run_key=None,
        acquired_at=None,
        expires_at=None,
        version=_NEXT_VERSION,
    )
)
_RENEW = update(_LOCK).where(*_target(_LOCK)).values(version=_NEXT_VERSION)
_BUMP = update(_LOCK).where(*_target(_LOCK)).values(version=_NEXT_VERSION)
_DEQUEUE = delete(_WAITER).where(_WAITER.c.id == bindparam("waiter_id"))
_JOIN = insert(_WAITER)
_TOUCH = update(_WAITER).where(_WAITER.c.id == bindparam("waiter_id"))


@dataclass(frozen=True)
class LockRow:
    """A target's lock row as read (and locked) by another statement (:func:`locking`)."""

    holder_run_pk: int | None
    holder_run_key: str | None
    expires_at: datetime | None
    # The holder's run and the waiters as :func:`read_lock` reads them (kind 0: the holder's
    # run, 1: a waiter), read by that statement too (:func:`queue_columns`) and current: None
    # when they must be read again after the lock (`queue_of`).
    queue: tuple[tuple[int, int, int, str, datetime | None, str], ...] | None = None


def locking(tenant: ColumnElement[str], stage: ColumnElement[str]) -> CTE:
    """PostgreSQL: the lock row of the target (`tenant`, `stage`: expressions of the
    enclosing statement's parameters) locked for the transaction, as a CTE for a statement
    that reads other facts before the lock (the gate's facts); its columns are those of
    :class:`LockRow` and `present` (1: the row exists). Pass what it read to
    :func:`read_lock`. The statement's other reads see its snapshot, taken before any wait
    for the lock: only the lock row is read as it is once locked."""
    return (
        select(
            _LOCK.c.holder_run_pk,
            _LOCK.c.holder_run_key,
            _LOCK.c.expires_at,
            _LOCK.c.version,
            literal_column("1").label("present"),
        )
        .where(_LOCK.c.tenant == tenant, _LOCK.c.stage == stage)
        .with_for_update()
        .cte("target_lock")
        .prefix_with("MATERIALIZED")
    )


def queue_columns(tenant: ColumnElement[str], stage: ColumnElement[str], held: CTE) -> list[Any]:
    """PostgreSQL: for the statement of :func:`locking` (`held`), the target's queue and its
    holder's run as that statement's snapshot sees them, and the lock row's version in that
    snapshot: the version `held` locked, when the statement had to wait, may be a later one.
    Pass them to :func:`queue_of`."""
    seen = _LOCK.alias("seen_lock").c
    queued, queued_run = _WAITER.alias("queued"), _RUN.alias("queued_run")
    waiter, run = queued.c, queued_run.c
    waiters = (
        select(
            func.json_agg(
                aggregate_order_by(
                    func.json_build_array(
                        waiter.id, waiter.run_pk, waiter.run_key, waiter.last_seen_at, run.status
                    ),
                    waiter.id,
                )
            )
        )
        .select_from(queued.join(queued_run, run.id == waiter.run_pk))
        .where(waiter.tenant == tenant, waiter.stage == stage)
        .scalar_subquery()
    )
    holder = _RUN.alias("holder_run").c
    return [
        select(seen.version)
        .where(seen.tenant == tenant, seen.stage == stage)
        .scalar_subquery()
        .label("lock_seen_version"),
        select(holder.status)
        .where(holder.id == held.c.holder_run_pk)
        .scalar_subquery()
        .label("lock_holder_status"),
        waiters.label("lock_waiters"),
    ]


def queue_of(
    *,
    holder_run_pk: int | None,
    version: int,
    seen_version: int | None,
    holder_status: str | None,
    waiters: list[list[Any]] | None,
) -> tuple[tuple[int, int, int, str, datetime | None, str], ...] | None:
    """The queue :func:`queue_columns` read, as `LockRow.queue`: None (read it again after the
    lock) unless the version locked is the version of the statement's snapshot, i.e. no change
    of the lock or its queue committed between the snapshot and the lock (every change bumps
    the version)."""
    if seen_version != version:
        return None
    found: list[tuple[int, int, int, str, datetime | None, str]] = []
    if holder_run_pk is not None and holder_status is not None:
        found.append((0, holder_run_pk, holder_run_pk, "", None, holder_status))
    for waiter_id, run_pk, run_key, last_seen_at, status in waiters or ():
        seen_at = datetime.fromisoformat(last_seen_at).astimezone(UTC) if last_seen_at else None
        found.append((1, waiter_id, run_pk, run_key, seen_at, status))
    return tuple(found)


def read_lock(
    session: Session, *, tenant: str, stage: str, locked: tuple[LockRow | None] | None = None
) -> plan.LockFacts:
    """The target's lock (its row locked for the transaction when it exists) and its
    waiters in queue order, with whether the holder's and each waiter's run still runs.
    `locked`: the row as :func:`locking` read and locked it already (a 1-tuple: None when
    there is no row)."""
    target = {"target_tenant": tenant, "target_stage": stage}
    if locked is None:
        row: Any = session.execute(_READ_LOCK, target).one_or_none()
    else:
        row = locked[0]
    # Read after the row is locked: a racing evaluation's queue changes are committed.
    holder_pk = row.holder_run_pk if row is not None else None
    found: Any
    if row is not None and getattr(row, "queue", None) is not None:
        found = row.queue  # read with the lock row, and current
    elif holder_pk is not None:
        found = driver_rows(session, _HOLDER_AND_WAITERS, {**target, "holder_pk": holder_pk})
    elif row is not None:
        found = driver_rows(session, _WAITERS_IN_ORDER, target)
    else:
        found = []  # never taken: no run can wait for it either
    holder_running = True
    queue: list[plan.Waiter] = []
    for kind, waiter_id, waiter_run_pk, run_key, last_seen_at, status in found:
        if kind == 0:
            holder_running = status == "running"
        else:
            queue.append(
                plan.Waiter(waiter_id, waiter_run_pk, run_key, status == "running", last_seen_at)
            )
    if row is None:
        return plan.LockFacts(exists=False, queue=tuple(queue))
    return plan.LockFacts(
        exists=True,
        holder_run_pk=holder_pk,
        holder_run_key=row.holder_run_key,
        expires_at=row.expires_at,
        holder_running=holder_running,
        queue=tuple(queue),
    )


def apply(
    session: Session,
    *,
    tenant: str,
    stage: str,
    lock: plan.LockFacts,
    steps: tuple[plan.Step, ...],
    ensure: bool,
    actor: Actor,
    now: datetime,
    records: list[AuditRecord],
) -> None:
    """Carry out the steps `domain/locks.py` decided, in order; each step's audit record is
    added to `records`, for the caller to write with its own (`append_audits`: one INSERT).
    `ensure` creates the target's lock row when it has none yet (a racing creator hits the
    unique key and the action is retried, then finds the row)."""
    if not lock.exists and (ensure or steps):
        session.execute(_CREATE_LOCK, {"tenant": tenant, "stage": stage, "updated_at": now})
    target = {"target_tenant": tenant, "target_stage": stage}

    def audit(action: str, by: Actor, **data: object) -> None:
        records.append(_step_record(tenant, stage, action, by, now, **data))

    for step in steps:
        if isinstance(step, plan.Expire):
            session.execute(_EXPIRE, {**target, "updated_at": now})
            audit("lock.expire", LEASE_ACTOR, run_key=step.run_key, reason=step.reason)
        elif isinstance(step, plan.Dequeue):
            session.execute(_DEQUEUE, {"waiter_id": step.waiter_id})
            audit("lock.dequeue", LEASE_ACTOR if step.by_system else actor,
                  run_key=step.run_key, reason=step.reason)  # fmt: skip
        elif isinstance(step, plan.Acquire):
            values: dict[str, object] = {"expires_at": step.expires_at, "updated_at": now}
            if not step.renewed:
                values |= {"holder_run_pk": step.run_pk, "holder_run_key": step.run_key,
                           "acquired_at": now}  # fmt: skip
            session.execute(_RENEW, {**target, **values})
            records.append(_acquire_record(tenant, stage, step, actor, now))
        elif isinstance(step, plan.Join):
            session.execute(
                _JOIN,
                {
                    "tenant": tenant,
                    "stage": stage,
                    "run_pk": step.run_pk,
                    "run_key": step.run_key,
                    "queued_at": now,
                    "last_seen_at": now,
                },
            )
            audit("lock.queue", actor, run_key=step.run_key, position=step.position)
            # The records so far go first: the alert's own record follows them in the log.
            append_audits(session, records)
            records.clear()
            # More than 5 waiting runs warns (seed 000 §7.2), once per crossing.
            check_queue(session, tenant=tenant, stage=stage, queue=list(step.queue),
                        joined=step.run_key, actor=actor, now=now)  # fmt: skip
        else:
            session.execute(_TOUCH, {"last_seen_at": now, "waiter_id": step.waiter_id})
    if any(isinstance(step, plan.Dequeue | plan.Join | plan.Touch) for step in steps):
        session.execute(_BUMP, target)  # the queue changed


def _step_record(
    tenant: str, stage: str, action: str, by: Actor, now: datetime, **data: object
) -> AuditRecord:
    return AuditRecord(
        actor=by,
        action=action,
        subject_type="lock",
        subject_id=_target_key(tenant, stage),
        tenant=tenant,
        data={"stage": stage, **data},
        at=now,
    )


def _acquire_record(
    tenant: str, stage: str, step: plan.Acquire, actor: Actor, now: datetime
) -> AuditRecord:
    return _step_record(tenant, stage, "lock.acquire", actor, now, run_key=step.run_key,
                        expires_at=rfc3339(step.expires_at), renewed=step.renewed)  # fmt: skip


@dataclass(frozen=True)
class LockWrite:
    """The lock's one change at an evaluation, for the caller to write inside its own
    statement (PostgreSQL: a data-modifying CTE beside the decision's), and its audit record.
    The UPDATE's values are bound under `lock_` and their names, the target's as in
    `_target`."""

    update: Update
    values: dict[str, object]
    record: AuditRecord


def _acquire_update(taken: bool) -> Update:
    names: tuple[str, ...] = ("expires_at", "updated_at")
    if taken:
        names += ("holder_run_pk", "holder_run_key", "acquired_at")
    values: dict[str, Any] = {
        name: bindparam("lock_" + name, type_=_LOCK.c[name].type) for name in names
    }
    return update(_LOCK).where(*_target(_LOCK)).values({**values, "version": _NEXT_VERSION})


_RENEWAL = _acquire_update(taken=False)
_TAKING = _acquire_update(taken=True)


def fold(
    lock: plan.LockFacts,
    steps: tuple[plan.Step, ...],
    *,
    tenant: str,
    stage: str,
    actor: Actor,
    now: datetime,
) -> tuple[bool, LockWrite | None]:
    """Whether the steps are at most one acquisition (or renewal) of a lock row that exists,
    as for every allowed evaluation but a target's first: the caller may then write it in
    its own statement (the `LockWrite`, None when nothing changes) instead of `apply`."""
    if not lock.exists or len(steps) > 1:
        return False, None
    if not steps:
        return True, None
    step = steps[0]
    if not isinstance(step, plan.Acquire):
        return False, None
    values: dict[str, object] = {
        "target_tenant": tenant,
        "target_stage": stage,
        "lock_expires_at": step.expires_at,
        "lock_updated_at": now,
    }
    if not step.renewed:
        values |= {"lock_holder_run_pk": step.run_pk, "lock_holder_run_key": step.run_key,
                   "lock_acquired_at": now}  # fmt: skip
    update = _RENEWAL if step.renewed else _TAKING
    return True, LockWrite(update, values, _acquire_record(tenant, stage, step, actor, now))


def release_for_run(session: Session, *, run: PipelineRun, actor: Actor, now: datetime) -> None:
    """The run finished: free every lock it holds and leave every queue (inside the finish's
    own transaction)."""
    held = session.scalars(
        select(DeployLock).where(DeployLock.holder_run_pk == run.id).with_for_update()
    ).all()
    for row in held:
        _free(session, row, "lock.release", actor, now, "run finished")
    waiting = session.scalars(select(LockWaiter).where(LockWaiter.run_pk == run.id)).all()
    for waiter in waiting:
        row = lock_row(session, waiter.tenant, waiter.stage, now)
        _dequeue(session, row, waiter, actor, now, "run finished")


def release_lock(
    ctx: ServiceContext, *, principal: Principal, tenant: str, stage: str, reason: str
) -> tuple[LockState, bool]:
    """An administrator frees a stuck lock, with a reason. Returns the lock and whether a
    holder was released (releasing a free lock changes nothing and is not recorded)."""
    reason = reason.strip()
    if not reason or len(reason) > 1000:
        raise ValidationProblem("give a reason of 1 to 1000 characters")
    if not principal.can_for(Permission.LOCK_RELEASE, tenant):
        raise OutOfScope(f"tenant {tenant!r} is outside the caller's scope")
    if not principal.can_at(Permission.LOCK_RELEASE, tenant, stage):
        raise OutOfScope(f"stage {stage!r} is outside the caller's scope")

    def action(session: Session) -> tuple[LockState, bool]:
        now = ctx.clock.now()
        row = session.scalars(
            select(DeployLock)
            .where(DeployLock.tenant == tenant, DeployLock.stage == stage)
            .with_for_update()
        ).one_or_none()
        if row is None:
            raise NotFound(f"no lock has been taken on {tenant}/{stage}")
        expire_if_due(session, row, now)
        released = row.holder_run_pk is not None
        if released:
            _free(session, row, "lock.release", principal.actor, now, reason)
        return _state(session, row), released

    return ctx.run_action(action)


def expire_leases(ctx: ServiceContext) -> list[str]:
    """Free every lock whose lease has run out (for the scheduler); returns the targets."""
    now = ctx.clock.now()
    with ctx.read() as session:
        due = list(
            session.execute(
                select(DeployLock.tenant, DeployLock.stage).where(
                    DeployLock.holder_run_pk.is_not(None), DeployLock.expires_at <= now
                )
            )
        )
    freed: list[str] = []
    for tenant, stage in due:

        def action(session: Session, tenant: str = tenant, stage: str = stage) -> bool:
            row = lock_row(session, tenant, stage, ctx.clock.now())
            held = row.holder_run_pk is not None
            expire_if_due(session, row, ctx.clock.now())
            return held and row.holder_run_pk is None

        if ctx.run_action(action):
            freed.append(_target_key(tenant, stage))
    return freed


def lock_state(session: Session, *, tenant: str, stage: str, now: datetime) -> LockState:
    """The lock as a reader sees it at `now` (an expired lease shows as free)."""
    row = session.scalars(
        select(DeployLock).where(DeployLock.tenant == tenant, DeployLock.stage == stage)
    ).one_or_none()
    if row is None:
        return LockState(tenant, stage, None, None, None, ())
    state = _state(session, row)
    if state.expires_at is not None and state.expires_at <= now:
        return LockState(tenant, stage, None, None, None, state.queue)
    return state


def _state(session: Session, row: DeployLock) -> LockState:
    queue = tuple(
        session.scalars(
            select(LockWaiter.run_key)
            .where(LockWaiter.tenant == row.tenant, LockWaiter.stage == row.stage)
            .order_by(LockWaiter.id)
        )
    )
    return LockState(
        tenant=row.tenant,
        stage=row.stage,
        holder_run_key=row.holder_run_key,
        acquired_at=row.acquired_at,
        expires_at=row.expires_at,
        queue=queue,
    )
