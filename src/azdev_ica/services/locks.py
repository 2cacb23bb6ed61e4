"""Deployment locks: one per target (tenant x stage), held by one run at a time.

A run takes the lock when the gate allows it (`services/gates.py`), with a lease; the lock is
freed when the run finishes, when the lease runs out, or when an administrator releases it
with a reason. Runs that are ready except for the lock wait in a queue, first come first
served: when the lock is free only the run at the head of the queue may take it.

Every function here works inside the caller's transaction and starts by locking the target's
row (`SELECT ... FOR UPDATE`, created on first use): two pipelines racing for one target are
serialised by the database, so exactly one of them wins. Every change is an audit entry
(lock.acquire, lock.release, lock.expire, lock.queue, lock.dequeue).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor, Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import DeployLock, LockWaiter, PipelineRun
from azdev_ica.errors import NotFound, OutOfScope, ValidationProblem
from azdev_ica.services.alerts import check_queue
from azdev_ica.services.audit import append_audit, rfc3339
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


@dataclass(frozen=True)
class Turn:
    """Where a run stands for a target's lock at one evaluation."""

    holds: bool  # the run holds the lock now
    blocked_by: str | None  # the run key holding it, or the waiter ahead of this run
    position: int | None  # 1-based place in the queue, when queued


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
    _audit(session, row, "lock.dequeue", actor, at, run_key=waiter.run_key, reason=reason)


def live_queue(
    session: Session, row: DeployLock, *, now: datetime, stale: timedelta
) -> list[LockWaiter]:
    """The waiting runs in order, after dropping those that lost their place: their run has
    finished, or they have not asked again within `stale`."""
    waiters = list(
        session.execute(
            select(LockWaiter, PipelineRun.status)
            .join(PipelineRun, PipelineRun.id == LockWaiter.run_pk)
            .where(LockWaiter.tenant == row.tenant, LockWaiter.stage == row.stage)
            .order_by(LockWaiter.id)
        )
    )
    live: list[LockWaiter] = []
    for waiter, status in waiters:
        if status != "running":
            _dequeue(session, row, waiter, LEASE_ACTOR, now, "run finished")
        elif waiter.last_seen_at + stale <= now:
            _dequeue(session, row, waiter, LEASE_ACTOR, now, "did not ask again in time")
        else:
            live.append(waiter)
    return live


def take_turn(
    session: Session,
    *,
    run: PipelineRun,
    tenant: str,
    stage: str,
    actor: Actor,
    now: datetime,
    lease: timedelta,
    stale: timedelta,
    ready: bool,
) -> Turn:
    """One gate evaluation's dealings with the lock.

    `ready` says every other rule passed. A ready run takes (or renews) the lock when it is
    free and no one waits ahead of it; otherwise it joins the queue (once) and learns who is
    in its way. A run that is not ready only learns who is in its way.
    """
    row = lock_row(session, tenant, stage, now)
    expire_if_due(session, row, now)
    queue = live_queue(session, row, now=now, stale=stale)
    mine = next((w for w in queue if w.run_pk == run.id), None)
    if row.holder_run_pk == run.id:
        if ready:
            row.expires_at = now + lease
            row.updated_at = now
            _audit(session, row, "lock.acquire", actor, now, run_key=run.run_key,
                   expires_at=rfc3339(row.expires_at), renewed=True)  # fmt: skip
        return Turn(holds=True, blocked_by=None, position=None)
    ahead = queue if mine is None else queue[: queue.index(mine)]
    blocked_by = row.holder_run_key or (ahead[0].run_key if ahead else None)
    if blocked_by is None:
        if ready:
            row.holder_run_pk = run.id
            row.holder_run_key = run.run_key
            row.acquired_at = now
            row.expires_at = now + lease
            row.updated_at = now
            _audit(session, row, "lock.acquire", actor, now, run_key=run.run_key,
                   expires_at=rfc3339(row.expires_at), renewed=False)  # fmt: skip
            if mine is not None:
                _dequeue(session, row, mine, actor, now, "acquired")
            return Turn(holds=True, blocked_by=None, position=None)
        return Turn(holds=False, blocked_by=None, position=None)
    if mine is None and ready:
        mine = LockWaiter(
            tenant=tenant,
            stage=stage,
            run_pk=run.id,
            run_key=run.run_key,
            queued_at=now,
            last_seen_at=now,
        )
        session.add(mine)
        session.flush()
        _audit(session, row, "lock.queue", actor, now, run_key=run.run_key,
               position=len(queue) + 1)  # fmt: skip
        queue.append(mine)
        # More than 5 waiting runs warns (seed 000 §7.2), once per crossing.
        check_queue(session, tenant=tenant, stage=stage, queue=[w.run_key for w in queue],
                    joined=run.run_key, actor=actor, now=now)  # fmt: skip
    elif mine is not None:
        mine.last_seen_at = now
    position = queue.index(mine) + 1 if mine is not None else None
    return Turn(holds=False, blocked_by=blocked_by, position=position)


def leave_queue(
    session: Session, *, run: PipelineRun, tenant: str, stage: str, actor: Actor, now: datetime
) -> None:
    """A run that the gate denies stops waiting for the lock."""
    waiter = session.scalars(
        select(LockWaiter).where(
            LockWaiter.tenant == tenant, LockWaiter.stage == stage, LockWaiter.run_pk == run.id
        )
    ).one_or_none()
    if waiter is not None:
        row = lock_row(session, tenant, stage, now)
        _dequeue(session, row, waiter, actor, now, "denied")


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
