"""The audit stream: the scheduler's `siem-forward` job sends sealed ledger entries to each
destination of `ICA_SIEM`, in (year, index) order, each once (docs/observe.md).

For each destination, one pass: read its cursor (`services/siem.py`), take the next entries the
ledger holds after it (a batch, stopping at any gap: only a contiguous run of the log leaves),
send them (`adapters/siem.py`), and move the cursor to the batch's last entry in the
transaction that records the send; repeat up to `ICA_SIEM_BATCHES_PER_PASS` batches. A failed
send moves nothing: the same entries go again after the back-off, so a destination that is down
misses nothing and, once back, receives the backlog in order. The cursor lives in the database:
a restart, or another replica taking over the job's lease, resumes where the last recorded
send ended.

Exactly once, and its one edge: the cursor moves after the destination acknowledged the batch.
A process that dies between the acknowledgement and that commit sends the batch again when the
job resumes. Every record carries its `origin` and `index`, a natural key a receiver can
deduplicate on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select

from azdev_ica.adapters.siem import SiemSendError, StreamEntry, send
from azdev_ica.adapters.siem_config import (
    AzureMonitorDestination,
    HecDestination,
    SyslogDestination,
)
from azdev_ica.db.tables import AuditEntry, AuditShard
from azdev_ica.db.types import stored_bytes
from azdev_ica.services import siem as records
from azdev_ica.services.context import ServiceContext
from azdev_ica.settings import Settings

__all__ = ["ForwardResult", "forward_all", "next_batch"]

log = logging.getLogger("azdev_ica.siem")


@dataclass
class ForwardResult:
    sent: dict[str, int] = field(default_factory=dict)  # destination → entries this pass
    failed: dict[str, str] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)  # backing off


def next_batch(ctx: ServiceContext, position: records.Position, limit: int) -> list[StreamEntry]:
    """The entries after `position`, in order, as far as they run without a gap."""
    with ctx.read() as session:
        origins = {r[0]: r[1] for r in session.execute(select(AuditShard.year, AuditShard.origin))}
        rows = session.execute(
            select(
                AuditEntry.year,
                AuditEntry.idx,
                AuditEntry.time,
                AuditEntry.action,
                AuditEntry.entry,
            )
            .where(records.after(position))
            .order_by(AuditEntry.year, AuditEntry.idx)
            .limit(limit)
        ).all()
    batch: list[StreamEntry] = []
    year, idx = position.year, position.idx
    for row in rows:
        follows = (year == row.year and idx is not None and row.idx == idx + 1) or (
            (year is None or row.year > year) and row.idx == 0
        )
        if not follows:
            break  # a gap: wait for it rather than skip
        batch.append(
            StreamEntry(
                origin=origins.get(row.year, str(row.year)),
                year=row.year,
                idx=row.idx,
                time=row.time,
                action=row.action,
                entry=stored_bytes(row.entry),
            )
        )
        year, idx = row.year, row.idx
    return batch


def _forward_one(
    ctx: ServiceContext,
    settings: Settings,
    destination: SyslogDestination | HecDestination | AzureMonitorDestination,
    result: ForwardResult,
) -> None:
    cursor = records.ensure_cursor(ctx, destination.name)
    now = ctx.clock.now()
    if cursor.next_attempt_at is not None and now < cursor.next_attempt_at:
        result.waiting.append(destination.name)
        return
    position = records.Position(cursor.year, cursor.idx)
    for _ in range(settings.siem_batches_per_pass):
        batch = next_batch(ctx, position, destination.batch_size)
        if not batch:
            return
        try:
            send(destination, batch, hostname=settings.public_host)
        except SiemSendError as exc:
            error = str(exc)
            log.warning("SIEM destination %s: %s", destination.name, error)
            records.record_failure(
                ctx,
                destination.name,
                error,
                at=ctx.clock.now(),
                backoff=timedelta(seconds=settings.siem_backoff_seconds),
                backoff_max=timedelta(seconds=settings.siem_backoff_max_seconds),
                alert_after=timedelta(minutes=settings.siem_alert_minutes),
            )
            result.failed[destination.name] = error
            return
        last = batch[-1]
        moved_to = records.Position(last.year, last.idx)
        if not records.advance(
            ctx, destination.name, start=position, to=moved_to, count=len(batch), at=ctx.clock.now()
        ):
            log.warning("SIEM destination %s: the cursor moved meanwhile", destination.name)
            return
        result.sent[destination.name] = result.sent.get(destination.name, 0) + len(batch)
        position = moved_to


def forward_all(ctx: ServiceContext, settings: Settings) -> ForwardResult:
    """One pass over every configured destination (see the module docstring)."""
    result = ForwardResult()
    for destination in settings.siem:
        _forward_one(ctx, settings, destination, result)
    return result
