"""Actions on the ledger itself: registering a signing key, erasing a person's data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.db.tables import AuditKey, PersonalDataOpening, PipelineRun
from azdev_ica.errors import Conflict, NotFound, ValidationProblem
from azdev_ica.ledger.note import Verifier
from azdev_ica.services.audit import PERSONAL_KINDS, append_audit, rfc3339
from azdev_ica.services.context import ServiceContext

SEALER_ACTOR = Actor(kind="system", id="ledger.sealer")


def add_signing_key(
    session: Session, *, actor: Actor, verifier: Verifier, valid_from: datetime, at: datetime
) -> AuditKey:
    """Record a public key of the log, valid from ``valid_from`` until the next key's start."""
    vkey = verifier.key_string()
    if session.scalars(select(AuditKey).where(AuditKey.vkey == vkey)).one_or_none() is not None:
        raise Conflict(f"the key {vkey} is already registered")
    latest = session.scalars(
        select(AuditKey).order_by(AuditKey.valid_from.desc(), AuditKey.id.desc()).limit(1)
    ).one_or_none()
    if latest is not None and valid_from <= latest.valid_from:
        raise ValidationProblem(
            f"a new key must become valid after the current one ({rfc3339(latest.valid_from)})"
        )
    row = AuditKey(
        name=verifier.name,
        key_id=f"{verifier.key_id:08x}",
        vkey=vkey,
        valid_from=valid_from,
        registered_at=at,
    )
    session.add(row)
    append_audit(
        session,
        actor=actor,
        action="ledger.key_add",
        subject_type="ledger_key",
        subject_id=row.key_id,
        tenant=None,
        data={
            "vkey": vkey,
            "valid_from": rfc3339(valid_from),
            "replaces": latest.vkey if latest is not None else None,
        },
        at=at,
    )
    return row


def register_signing_key(
    ctx: ServiceContext, *, actor: Actor, verifier: Verifier, valid_from: datetime | None = None
) -> AuditKey:
    """Publish a signing key's public half; from ``valid_from`` (default now) it is the one
    that signs checkpoints, and the key before it stops being valid."""
    now = ctx.clock.now()

    def action(session: Session) -> AuditKey:
        return add_signing_key(
            session, actor=actor, verifier=verifier, valid_from=valid_from or now, at=now
        )

    return ctx.run_action(action)


@dataclass(frozen=True)
class Erasure:
    commitment: str
    runs_cleared: int


def erase_personal_data(ctx: ServiceContext, *, actor: Actor, kind: str, value: str) -> Erasure:
    """Forget a person's value: delete its opening (the ledger keeps an unopenable salted hash
    and still verifies) and clear it from the live tables, in one audited action."""
    if kind not in PERSONAL_KINDS:
        raise ValidationProblem(f"kind must be one of {', '.join(sorted(PERSONAL_KINDS))}")

    def action(session: Session) -> Erasure:
        opening = session.scalars(
            select(PersonalDataOpening).where(
                PersonalDataOpening.kind == kind, PersonalDataOpening.value == value
            )
        ).one_or_none()
        if opening is None:
            raise NotFound(f"no {kind} with that value is recorded")
        column = (
            PipelineRun.requested_for
            if kind == "provider_user"
            else (PipelineRun.requested_for_email)
        )
        cleared = (
            session.connection()
            .execute(update(PipelineRun).where(column == value).values({column.key: None}))
            .rowcount
        )
        session.execute(
            delete(PersonalDataOpening).where(PersonalDataOpening.commitment == opening.commitment)
        )
        now = ctx.clock.now()
        append_audit(
            session,
            actor=actor,
            action="personal.erase",
            subject_type="personal_data",
            subject_id=opening.commitment,
            tenant=None,
            data={"kind": kind, "runs_cleared": cleared},
            at=now,
        )
        return Erasure(commitment=opening.commitment, runs_cleared=cleared)

    return ctx.run_action(action)
