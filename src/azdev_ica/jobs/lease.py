"""Database leases: at most one process runs a named job at a time.

A lease is one row of `azdev_job_lease` (name, holder, expires_at), taken and renewed with
conditional writes that work alike on SQLite and PostgreSQL: an UPDATE that succeeds only when
the caller already holds the lease or it has run out, else an INSERT that only the first of
two racing processes wins (primary key). Time comes from the context's injected clock.

The same pattern as the sealer's lease (`jobs/sealer.py`), as a small reusable helper.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from azdev_ica.db.tables import JobLease
from azdev_ica.services.context import ServiceContext

__all__ = ["acquire", "acquire_all", "default_holder", "holder_of", "release", "release_all"]


def default_holder(kind: str) -> str:
    """A holder name unique to this process and object: `kind:host:pid:random`."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(ctx: ServiceContext, name: str, holder: str, seconds: float) -> bool:
    """Take or renew the lease `name` for `holder` until now + `seconds`; False while another
    holder's lease is still running."""
    now = ctx.clock.now()
    expires = now + timedelta(seconds=seconds)
    with ctx.db.write() as session:
        taken = (
            session.connection()
            .execute(
                update(JobLease)
                .where(JobLease.name == name)
                .where((JobLease.holder == holder) | (JobLease.expires_at <= now))
                .values(holder=holder, expires_at=expires, acquired_at=now)
            )
            .rowcount
        )
        if taken:
            return True
        if session.get(JobLease, name) is not None:
            return False
    try:
        with ctx.db.write() as session:
            session.execute(
                insert(JobLease).values(
                    name=name, holder=holder, acquired_at=now, expires_at=expires
                )
            )
    except IntegrityError:  # another process inserted it first
        return False
    return True


def acquire_all(ctx: ServiceContext, names: Sequence[str], holder: str, seconds: float) -> set[str]:
    """Take or renew every lease of `names` that is free or already `holder`'s, until now +
    `seconds`; the names held. One transaction of one statement while `holder` holds them all
    (a scheduler's tick renews its ten leases at once, instead of ten transactions, each with a
    commit to flush); a lease never taken yet is inserted as `acquire` does."""
    if not names:
        return set()
    now = ctx.clock.now()
    expires = now + timedelta(seconds=seconds)
    wanted = set(names)
    with ctx.db.write() as session:
        held = set(
            session.execute(
                update(JobLease)
                .where(JobLease.name.in_(wanted))
                .where((JobLease.holder == holder) | (JobLease.expires_at <= now))
                .values(holder=holder, expires_at=expires, acquired_at=now)
                .returning(JobLease.name)
            ).scalars()
        )
        if held == wanted:
            return held
        known = set(session.scalars(select(JobLease.name).where(JobLease.name.in_(wanted))))
    for name in sorted(wanted - known):  # never taken: the first of two racing inserts wins
        if acquire(ctx, name, holder, seconds):
            held.add(name)
    return held


def release(ctx: ServiceContext, name: str, holder: str) -> None:
    """Give the lease up at once (only if `holder` still holds it)."""
    past = ctx.clock.now() - timedelta(seconds=1)
    with ctx.db.write() as session:
        session.execute(
            update(JobLease)
            .where(JobLease.name == name, JobLease.holder == holder)
            .values(expires_at=past)
        )


def holder_of(ctx: ServiceContext, name: str) -> tuple[str, datetime] | None:
    """Who holds (or last held) the lease, and until when; None if it was never taken."""
    with ctx.read() as session:
        row = session.execute(
            select(JobLease.holder, JobLease.expires_at).where(JobLease.name == name)
        ).first()
        return None if row is None else (row[0], row[1])


def release_all(ctx: ServiceContext, names: Sequence[str], holder: str) -> None:
    """Give up at once every lease of `names` that `holder` still holds (one statement)."""
    if not names:
        return
    past = ctx.clock.now() - timedelta(seconds=1)
    with ctx.db.write() as session:
        session.execute(
            update(JobLease)
            .where(JobLease.name.in_(set(names)), JobLease.holder == holder)
            .values(expires_at=past)
        )
