"""What ICA records about its witnesses (`jobs/witness.py` talks to them): their cosignatures,
whether they answer, and their refusals.

- A cosignature is stored once verified with the witness's key from `ICA_WITNESSES`; no audit
  entry (it would grow the tree, needing a checkpoint, needing a cosignature, forever).
- A witness that cannot be reached (or answers nonsense) is retried at every pass; once it has
  failed for `ICA_WITNESS_ALERT_MINUTES` (default 15) a warning alert `witness.unreachable`
  goes out, once per outage. Signing goes on meanwhile.
- A witness that refuses a checkpoint as inconsistent with what it cosigned before (HTTP 422),
  or that has cosigned a larger tree than the log now has, proves that history was rewritten:
  the refusal is stored, a critical alert `witness.refused` goes out, and the sealer neither
  seals nor signs until an operator resolves it (`ica witness resolve`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.db.tables import WitnessCosignature, WitnessRefusal, WitnessStatus
from azdev_ica.ledger.cosignature import Cosignature
from azdev_ica.services.alerts import CRITICAL, WARNING, _raise
from azdev_ica.services.audit import append_audit
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.outages import note_failure

__all__ = [
    "TOPIC_REFUSED",
    "TOPIC_UNREACHABLE",
    "WITNESS_ACTOR",
    "record_failure",
    "record_refusal",
    "record_success",
    "resolve_refusals",
    "store_cosignature",
    "unresolved_refusal",
]

WITNESS_ACTOR = Actor(kind="system", id="ledger.witness")
TOPIC_UNREACHABLE = "witness.unreachable"
TOPIC_REFUSED = "witness.refused"
TOPIC_RESOLVED = "witness.refusal_resolved"
_ROLES = ["azdev_auditor", "admin"]


def unresolved_refusal(session: Session) -> WitnessRefusal | None:
    """The oldest refusal no operator has resolved yet (the sealer stops while there is one)."""
    return session.scalars(
        select(WitnessRefusal)
        .where(WitnessRefusal.resolved_at.is_(None))
        .order_by(WitnessRefusal.id)
        .limit(1)
    ).first()


def store_cosignature(
    ctx: ServiceContext, *, year: int, size: int, cosignature: Cosignature, at: datetime
) -> bool:
    """Store a verified cosignature; False if that witness's one for that size is stored."""
    with ctx.db.write() as session:
        found = session.get(WitnessCosignature, (year, size, cosignature.name))
        if found is not None:
            return False
        session.execute(
            insert(WitnessCosignature).values(
                year=year,
                size=size,
                witness=cosignature.name,
                key_id=f"{cosignature.key_id:08x}",
                timestamp=cosignature.timestamp,
                line=cosignature.line,
                received_at=at,
            )
        )
        _status(session, cosignature.name).failing_since = None
        return True


def _status(session: Session, witness: str) -> WitnessStatus:
    row = session.get(WitnessStatus, witness)
    if row is None:
        row = WitnessStatus(witness=witness, alerted=False)
        session.add(row)
    return row


def record_success(ctx: ServiceContext, witness: str, at: datetime) -> None:
    """Note that ``witness`` answered (a write only when it had been failing, or is new)."""
    with ctx.read() as session:
        row = session.get(WitnessStatus, witness)
        if row is not None and row.failing_since is None and not row.alerted:
            return
    with ctx.db.write() as session:
        row = _status(session, witness)
        row.failing_since = None
        row.last_error = None
        row.alerted = False
        row.last_success_at = at


def record_failure(
    ctx: ServiceContext, witness: str, error: str, at: datetime, alert_after: timedelta
) -> bool:
    """Note that ``witness`` failed; alert once when it has failed for ``alert_after``. True
    when this call raised the alert."""
    with ctx.db.write() as session:
        row = _status(session, witness)
        if not note_failure(row, error, at=at, alert_after=alert_after):
            return False
        assert row.failing_since is not None
        minutes = int((at - row.failing_since).total_seconds() // 60)
        _raise(
            session,
            actor=WITNESS_ACTOR,
            topic=TOPIC_UNREACHABLE,
            severity=WARNING,
            subject_type="witness",
            subject_id=f"{witness}@{row.failing_since.isoformat()}",
            tenant=None,
            summary=(
                f"Audit ledger: witness {witness} has not cosigned for {minutes} minutes "
                f"({error}); checkpoints are signed meanwhile but not witnessed"
            ),
            roles=_ROLES,
            at=at,
            audit_subject=("witness", witness),
            witness=witness,
            failing_since=row.failing_since.isoformat(),
            error=error[:500],
        )
        return True


def record_refusal(
    ctx: ServiceContext,
    *,
    witness: str,
    origin: str,
    size: int,
    status: int,
    reason: str,
    at: datetime,
) -> bool:
    """Store a witness's refusal and raise the critical alert (once while one is unresolved
    for that witness); True when this call stored it."""
    with ctx.db.write() as session:
        open_one = session.scalar(
            select(WitnessRefusal.id).where(
                WitnessRefusal.witness == witness, WitnessRefusal.resolved_at.is_(None)
            )
        )
        if open_one is not None:
            return False
        session.add(
            WitnessRefusal(
                witness=witness, origin=origin, size=size, status=status, reason=reason, at=at
            )
        )
        session.flush()
        _raise(
            session,
            actor=WITNESS_ACTOR,
            topic=TOPIC_REFUSED,
            severity=CRITICAL,
            subject_type="witness",
            subject_id=f"{witness}:{origin}:{size}",
            tenant=None,
            summary=(
                f"Audit ledger: witness {witness} refused the checkpoint {origin} at size "
                f"{size}: {reason}. History was rewritten (a restored or edited database); "
                "sealing is stopped until an operator resolves it (`ica witness resolve`)"
            ),
            roles=_ROLES,
            at=at,
            audit_subject=("witness", witness),
            witness=witness,
            origin=origin,
            size=size,
            status=status,
            reason=reason[:1000],
        )
        return True


def resolve_refusals(ctx: ServiceContext, *, actor: Actor, note: str, at: datetime) -> int:
    """Mark every unresolved refusal resolved (the operator restored the genuine history);
    return how many. The sealer resumes; a witness that still refuses stops it again."""
    with ctx.db.write() as session:
        rows = list(
            session.scalars(select(WitnessRefusal).where(WitnessRefusal.resolved_at.is_(None)))
        )
        for row in rows:
            row.resolved_at = at
            row.resolved_by = f"{actor.kind}:{actor.id}"
            row.resolution = note
        if rows:
            append_audit(
                session,
                actor=actor,
                action=TOPIC_RESOLVED,
                subject_type="witness",
                subject_id=",".join(sorted({r.witness for r in rows})),
                tenant=None,
                data={"refusals": [r.id for r in rows], "note": note},
                at=at,
            )
        return len(rows)
