"""What ICA records about its audit stream to SIEM destinations (`jobs/siem.py` sends it): one
cursor per destination, how far it got, and whether it is failing.

- After a destination took a batch, :func:`advance` moves its cursor to the batch's last entry
  in one transaction, and only from where the batch started (a conditional UPDATE): two
  processes that both believed they held the job's lease cannot move it twice.
- A send that fails moves nothing (:func:`record_failure`); the destination is tried again after
  an exponential back-off; once it has failed for `ICA_SIEM_ALERT_MINUTES` a warning alert
  `siem.stalled` goes out, once per outage.
- No audit entry for a send: each would be a new entry to send, forever (as for witnesses).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.db.tables import AuditEntry, SiemCursor
from azdev_ica.services.alerts import WARNING, _raise
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.outages import backoff_delay, note_failure

__all__ = [
    "SIEM_ACTOR",
    "TOPIC_STALLED",
    "Position",
    "advance",
    "after",
    "ensure_cursor",
    "record_failure",
    "status",
]

SIEM_ACTOR = Actor(kind="system", id="audit.siem")
TOPIC_STALLED = "siem.stalled"
_ROLES = ["azdev_auditor", "admin"]


@dataclass(frozen=True)
class Position:
    """The last entry a destination took: (year, idx), or (None, None) before the first."""

    year: int | None
    idx: int | None


def after(position: Position) -> Any:
    """The SQL condition: ledger entries beyond `position`, in (year, idx) order."""
    if position.year is None or position.idx is None:
        return AuditEntry.year.is_not(None)
    return or_(
        and_(AuditEntry.year == position.year, AuditEntry.idx > position.idx),
        AuditEntry.year > position.year,
    )


def ensure_cursor(ctx: ServiceContext, destination: str) -> SiemCursor:
    """The destination's cursor row (created, at the ledger's start, when new), detached."""
    with ctx.read() as session:
        row = session.get(SiemCursor, destination)
        if row is not None:
            session.expunge(row)
            return row
    try:
        with ctx.db.write() as session:
            session.execute(
                insert(SiemCursor).values(
                    destination=destination,
                    year=None,
                    idx=None,
                    forwarded=0,
                    created_at=ctx.clock.now(),
                    failures=0,
                    alerted=False,
                )
            )
    except IntegrityError:  # another process created it first
        pass
    with ctx.read() as session:
        row = session.get(SiemCursor, destination)
        assert row is not None
        session.expunge(row)
        return row


def _same_position(position: Position) -> Any:
    if position.year is None or position.idx is None:
        return and_(SiemCursor.year.is_(None), SiemCursor.idx.is_(None))
    return and_(SiemCursor.year == position.year, SiemCursor.idx == position.idx)


def advance(
    ctx: ServiceContext,
    destination: str,
    *,
    start: Position,
    to: Position,
    count: int,
    at: datetime,
) -> bool:
    """Record that `destination` took the `count` entries after `start` up to `to`; False (and
    nothing written) when the cursor is no longer at `start`."""
    with ctx.db.write() as session:
        moved = (
            session.connection()
            .execute(
                update(SiemCursor)
                .where(SiemCursor.destination == destination, _same_position(start))
                .values(
                    year=to.year,
                    idx=to.idx,
                    forwarded=SiemCursor.forwarded + count,
                    last_sent_at=at,
                    failing_since=None,
                    failures=0,
                    next_attempt_at=None,
                    last_error=None,
                    alerted=False,
                )
            )
            .rowcount
        )
        return bool(moved)


def record_failure(
    ctx: ServiceContext,
    destination: str,
    error: str,
    *,
    at: datetime,
    backoff: timedelta,
    backoff_max: timedelta,
    alert_after: timedelta,
) -> bool:
    """Note a failed send: back off (doubling from `backoff` to `backoff_max`) and alert once
    when the destination has failed for `alert_after`. True when this call raised the alert."""
    with ctx.db.write() as session:
        row = session.get(SiemCursor, destination)
        if row is None:
            return False
        row.failures = (row.failures or 0) + 1
        row.next_attempt_at = at + backoff_delay(row.failures, base=backoff, cap=backoff_max)
        if not note_failure(row, error, at=at, alert_after=alert_after):
            return False
        assert row.failing_since is not None
        behind = _behind(session, Position(row.year, row.idx))
        minutes = int((at - row.failing_since).total_seconds() // 60)
        _raise(
            session,
            actor=SIEM_ACTOR,
            topic=TOPIC_STALLED,
            severity=WARNING,
            subject_type="siem",
            subject_id=f"{destination}@{row.failing_since.isoformat()}",
            tenant=None,
            summary=(
                f"Audit stream: SIEM destination {destination} has taken nothing for {minutes} "
                f"minutes ({error[:200]}); {behind} ledger entries wait, none is skipped"
            ),
            roles=_ROLES,
            at=at,
            audit_subject=("siem", destination),
            destination=destination,
            failing_since=row.failing_since.isoformat(),
            behind=behind,
            error=error[:500],
        )
        return True


def _behind(session: Session, position: Position) -> int:
    return int(
        session.scalar(select(func.count()).select_from(AuditEntry).where(after(position))) or 0
    )


def status(
    session: Session, configured: Mapping[str, str], *, now: datetime, alert_after: timedelta
) -> list[dict[str, Any]]:
    """Each destination's stream: configured ones (name → type) and any cursor left behind by
    one no longer configured. `state`: `ok` (nothing waits), `behind` (entries wait, no
    failure), `failing`, `stalled` (failing for `alert_after` or longer), `unconfigured`."""
    rows = {row.destination: row for row in session.scalars(select(SiemCursor))}
    out = []
    for name in sorted(set(configured) | set(rows)):
        row = rows.get(name)
        position = Position(row.year, row.idx) if row else Position(None, None)
        behind = _behind(session, position)
        oldest = session.scalar(select(func.min(AuditEntry.time)).where(after(position)))
        if name not in configured:
            state = "unconfigured"
        elif row is not None and row.failing_since is not None:
            state = "stalled" if now - row.failing_since >= alert_after else "failing"
        else:
            state = "behind" if behind else "ok"
        out.append(
            {
                "destination": name,
                "type": configured.get(name),
                "state": state,
                "cursor": None
                if position.year is None
                else {"year": position.year, "index": position.idx},
                "forwarded": row.forwarded if row else 0,
                "behind": behind,
                "oldest_waiting_at": _iso(oldest),
                "last_sent_at": _iso(row.last_sent_at) if row else None,
                "failing_since": _iso(row.failing_since) if row else None,
                "failures": row.failures if row else 0,
                "next_attempt_at": _iso(row.next_attempt_at) if row else None,
                "last_error": row.last_error if row else None,
            }
        )
    return out


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
