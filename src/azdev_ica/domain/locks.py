"""A target's deployment lock and its queue at one gate evaluation (seed 000 §5.1). Pure.

One lock per target (tenant x stage), held by one run at a time, with a lease; runs that are
ready except for the lock wait in a queue, first come first served: when the lock is free
only the run at the head of the queue may take it. `services/locks.py` reads the target's
lock row (locked for the transaction) and its waiters into :class:`LockFacts`, and applies
the :class:`Step` list these functions return, in order (each step is one audit entry, except
`Touch`).

Before anything else, whoever looks at a lock frees it when its lease ran out or its holder
run finished (`Expire`), and drops the waiters that lost their place: their run finished, or
they did not ask again within `stale` (`Dequeue`, by the system).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

EXPIRED = "lease expired"
HOLDER_FINISHED = "holder run finished"
WAITER_FINISHED = "run finished"
WAITER_STALE = "did not ask again in time"
ACQUIRED = "acquired"
DENIED = "denied"


@dataclass(frozen=True)
class Waiter:
    id: int
    run_pk: int
    run_key: str
    running: bool
    last_seen_at: datetime


@dataclass(frozen=True)
class LockFacts:
    """The target's lock row (absent: never taken) and its waiters in queue order."""

    exists: bool = False
    holder_run_pk: int | None = None
    holder_run_key: str | None = None
    expires_at: datetime | None = None
    holder_running: bool = True
    queue: tuple[Waiter, ...] = ()


@dataclass(frozen=True)
class Turn:
    """Where a run stands for a target's lock at one evaluation."""

    holds: bool  # the run holds the lock now
    blocked_by: str | None  # the run key holding it, or the waiter ahead of this run
    position: int | None  # 1-based place in the queue, when queued


@dataclass(frozen=True)
class Expire:
    """Free the lock from its holder (`lock.expire`, by the lease job)."""

    run_key: str | None
    reason: str


@dataclass(frozen=True)
class Dequeue:
    """Drop a waiter (`lock.dequeue`); `by_system`: the lease job, else the caller."""

    waiter_id: int
    run_key: str
    reason: str
    by_system: bool


@dataclass(frozen=True)
class Acquire:
    """The run takes (or, `renewed`, keeps) the lock until `expires_at` (`lock.acquire`)."""

    run_pk: int
    run_key: str
    expires_at: datetime
    renewed: bool


@dataclass(frozen=True)
class Join:
    """The run joins the queue at `position` (`lock.queue`); `queue`: every waiter after."""

    run_pk: int
    run_key: str
    position: int
    queue: tuple[str, ...]


@dataclass(frozen=True)
class Touch:
    """The waiter asked again: it keeps its place (no audit entry)."""

    waiter_id: int


Step = Expire | Dequeue | Acquire | Join | Touch


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    turn: Turn


def take_turn(
    lock: LockFacts,
    *,
    run_pk: int,
    run_key: str,
    now: datetime,
    lease: timedelta,
    stale: timedelta,
    ready: bool,
) -> Plan:
    """One gate evaluation's dealings with the lock.

    `ready` says every other rule passed. A ready run takes (or renews) the lock when it is
    free and no one waits ahead of it; otherwise it joins the queue (once) and learns who is
    in its way. A run that is not ready only learns who is in its way.
    """
    steps: list[Step] = []
    holder_pk, holder_key = lock.holder_run_pk, lock.holder_run_key
    if holder_pk is not None:
        if lock.expires_at is not None and lock.expires_at <= now:
            steps.append(Expire(holder_key, EXPIRED))
            holder_pk = holder_key = None
        elif not lock.holder_running:
            steps.append(Expire(holder_key, HOLDER_FINISHED))
            holder_pk = holder_key = None
    queue: list[Waiter] = []
    for waiter in lock.queue:
        if not waiter.running:
            steps.append(Dequeue(waiter.id, waiter.run_key, WAITER_FINISHED, by_system=True))
        elif waiter.last_seen_at + stale <= now:
            steps.append(Dequeue(waiter.id, waiter.run_key, WAITER_STALE, by_system=True))
        else:
            queue.append(waiter)
    mine = next((w for w in queue if w.run_pk == run_pk), None)
    if holder_pk == run_pk:
        if ready:
            steps.append(Acquire(run_pk, run_key, now + lease, renewed=True))
        return Plan(tuple(steps), Turn(holds=True, blocked_by=None, position=None))
    ahead = queue if mine is None else queue[: queue.index(mine)]
    blocked_by = holder_key or (ahead[0].run_key if ahead else None)
    if blocked_by is None:
        if not ready:
            return Plan(tuple(steps), Turn(holds=False, blocked_by=None, position=None))
        steps.append(Acquire(run_pk, run_key, now + lease, renewed=False))
        if mine is not None:
            steps.append(Dequeue(mine.id, mine.run_key, ACQUIRED, by_system=False))
        return Plan(tuple(steps), Turn(holds=True, blocked_by=None, position=None))
    position: int | None = None
    if mine is None and ready:
        position = len(queue) + 1
        keys = (*(w.run_key for w in queue), run_key)
        steps.append(Join(run_pk, run_key, position, keys))
    elif mine is not None:
        steps.append(Touch(mine.id))
        position = queue.index(mine) + 1
    return Plan(tuple(steps), Turn(holds=False, blocked_by=blocked_by, position=position))


def leave(lock: LockFacts, *, run_pk: int) -> tuple[Step, ...]:
    """A run that the gate denies stops waiting for the lock (wherever it stood)."""
    return tuple(
        Dequeue(w.id, w.run_key, DENIED, by_system=False) for w in lock.queue if w.run_pk == run_pk
    )
