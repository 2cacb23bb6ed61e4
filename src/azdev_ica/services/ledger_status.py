"""Whether the audit ledger is sealing, and if not, why: :func:`ledger_status`.

While the ledger is stalled, writes keep answering as before (every record waits, durably, in
the inbox) and `/ready` keeps answering 200, so replicas stay in the load balancer; but
`/ready`'s body, `ica audit verify` and this module's :func:`ledger_status` say
``stalled``, why, and how much waits unsealed.

The ledger is stalled when

- a *source* has set a reason (:func:`set_stall`): the sealer itself when it refuses to seal
  (the outside store ahead of the database, an unreadable key file, tree rows it did not
  compute, ...), or any other code that must stop the log, e.g. a witness that refused a
  checkpoint. A reason is a row of ``azdev_ledger_stall`` (one per source), so every replica
  and every CLI sees it, and it survives restarts. While a source other than ``sealer`` has
  a reason set, the sealer seals and signs nothing; it clears its own reason itself when it
  seals again, any other source must call :func:`clear_stall`;
- or the oldest unsealed record is older than ``ICA_LEDGER_STALL_AFTER_SECONDS`` (default
  60): nothing seals (no sealer running, a database error the sealer retries).

Setting a reason where none was raises one critical alert (``ledger.stalled``, audited and
sent through the outbox); changing the reason of a stall that already alerted does not alert
again. Clearing it writes a ``ledger.resumed`` audit record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.db.tables import AuditInbox, AuditShard, AuditTree, LedgerStall
from azdev_ica.services import alerts
from azdev_ica.services.audit import append_audit, rfc3339
from azdev_ica.services.context import ServiceContext

__all__ = [
    "SEALER_SOURCE",
    "Backlog",
    "LedgerStatus",
    "StallReason",
    "backlog",
    "clear_stall",
    "ledger_status",
    "set_stall",
    "stall_reasons",
]

SEALER_SOURCE = "sealer"
_SYSTEM = Actor(kind="system", id="ledger.sealer")


@dataclass(frozen=True)
class StallReason:
    """Why ``source`` stopped the ledger, since when."""

    source: str
    reason: str
    since: datetime


@dataclass(frozen=True)
class Backlog:
    """The audit records still unsealed: how many, and the oldest one's time and age."""

    count: int
    oldest_at: datetime | None
    oldest_age_seconds: float | None


@dataclass(frozen=True)
class LedgerStatus:
    """``state``: ``ok`` or ``stalled``; ``reasons``: what each source said (the age of the
    backlog is a reason too, with source ``backlog``)."""

    state: str
    reasons: list[StallReason] = field(default_factory=list)
    backlog: Backlog = Backlog(0, None, None)

    @property
    def reason(self) -> str | None:
        """The reasons in one line (None when the ledger seals)."""
        if not self.reasons:
            return None
        return "; ".join(f"{r.source}: {r.reason}" for r in self.reasons)


def stall_reasons(session: Session) -> list[StallReason]:
    """The reasons set, oldest first; an unresolved witness refusal (`services/witnesses.py`,
    which stops the sealer itself) is one too, with source ``witness``."""
    from azdev_ica.services.witnesses import unresolved_refusal

    rows = session.execute(
        select(LedgerStall.source, LedgerStall.reason, LedgerStall.since).order_by(
            LedgerStall.since, LedgerStall.source
        )
    )
    reasons = [StallReason(source, reason, since) for source, reason, since in rows]
    refusal = unresolved_refusal(session)
    if refusal is not None:
        reasons.append(
            StallReason(
                "witness",
                f"witness {refusal.witness} refused {refusal.origin} at size {refusal.size} "
                f"({refusal.reason}): resolve with `ica witness resolve`",
                refusal.at,
            )
        )
    return reasons


def backlog(session: Session, now: datetime) -> Backlog:
    """The unsealed inbox rows: those above the sealer's cursor, and on PostgreSQL the
    stragglers below it (rows of transactions that committed late, see jobs/sealer.py)."""
    year = session.scalar(select(func.max(AuditShard.year)))
    head = None
    if year is not None:
        head = session.execute(
            select(AuditTree.inbox_cursor, AuditTree.inbox_floor)
            .where(AuditTree.year == year)
            .order_by(AuditTree.size.desc())
            .limit(1)
        ).first()
    cursor, floor = (int(head[0]), int(head[1])) if head is not None else (0, 0)
    count, oldest = session.execute(
        select(func.count(), func.min(AuditInbox.created_at)).where(AuditInbox.id > cursor)
    ).one()
    count = int(count or 0)
    if session.get_bind().dialect.name == "postgresql" and cursor > 0:
        late, late_oldest = session.execute(
            text(
                "SELECT count(*), min(i.created_at) FROM azdev_audit_inbox AS i "
                "WHERE i.txid >= :floor AND i.id <= :cursor AND NOT EXISTS "
                "(SELECT 1 FROM azdev_audit_entry AS e WHERE e.inbox_id = i.id)"
            ),
            {"floor": floor, "cursor": cursor},
        ).one()
        count += int(late or 0)
        if late_oldest is not None and (oldest is None or late_oldest < oldest):
            oldest = late_oldest
    if oldest is not None and oldest.tzinfo is None:  # raw SQL on a naive column
        oldest = oldest.replace(tzinfo=now.tzinfo)
    age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else None
    return Backlog(count, oldest, age)


def ledger_status(ctx: ServiceContext) -> LedgerStatus:
    """Whether the ledger seals: ``stalled`` while a source has set a reason, or while the
    oldest unsealed record is older than ``ctx.ledger.stall_after`` seconds; else ``ok``.

    Read-only and cheap (two indexed reads and a count of the unsealed rows): `/ready` calls it
    on every probe."""
    now = ctx.clock.now()
    with ctx.read() as session:
        reasons = stall_reasons(session)
        waiting = backlog(session, now)
    if waiting.oldest_age_seconds is not None and (
        waiting.oldest_age_seconds > ctx.ledger.stall_after
    ):
        reasons.append(
            StallReason(
                "backlog",
                f"the oldest unsealed record is {waiting.oldest_age_seconds:.0f} s old "
                f"(more than {ctx.ledger.stall_after:g} s)",
                waiting.oldest_at or now,
            )
        )
    return LedgerStatus("stalled" if reasons else "ok", reasons, waiting)


def set_stall(ctx: ServiceContext, *, source: str, reason: str, actor: Actor = _SYSTEM) -> bool:
    """Record that ``source`` stops the ledger because of ``reason``; return True when this
    began a stall of that source (and raised its critical alert), False when it only updated
    the reason (or it was already so)."""
    now = ctx.clock.now()
    with ctx.db.write() as session:
        row = session.get(LedgerStall, source)
        if row is not None:
            if row.reason != reason:
                row.reason, row.updated_at = reason, now
            return False
        waiting = backlog(session, now)
        session.add(
            LedgerStall(source=source, reason=reason, since=now, updated_at=now, alerted_at=now)
        )
        alerts.ledger_stalled(
            ctx,
            session,
            actor=actor,
            source=source,
            reason=reason,
            backlog=waiting.count,
            at=now,
        )
        return True


def clear_stall(ctx: ServiceContext, *, source: str, actor: Actor = _SYSTEM) -> bool:
    """Withdraw ``source``'s reason; return True if it had one (a ``ledger.resumed`` record
    then says so)."""
    now = ctx.clock.now()
    with ctx.db.write() as session:
        row = session.get(LedgerStall, source)
        if row is None:
            return False
        session.execute(delete(LedgerStall).where(LedgerStall.source == source))
        append_audit(
            session,
            actor=actor,
            action="ledger.resumed",
            subject_type="ledger",
            subject_id=source,
            tenant=None,
            data={"reason": row.reason, "since": rfc3339(row.since)},
            at=now,
        )
        return True


def blocking_reasons(session: Session) -> list[StallReason]:
    """The reasons of sources other than the sealer: the sealer seals nothing while any is set."""
    return [r for r in stall_reasons(session) if r.source != SEALER_SOURCE]
