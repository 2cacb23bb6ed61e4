"""Actions on the ledger itself: registering a signing key, erasing a person's data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.db.tables import (
    Approval,
    AuditKey,
    OutboxMessage,
    Person,
    PersonalDataOpening,
    PipelineRun,
    RunRequester,
)
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


ERASED = "(erased)"
"""What an erased display name reads as, in the people table and in outbox payloads."""


def erased_login(person_id: int) -> str:
    """The login of a person whose login (their e-mail) was erased: unique, not personal."""
    return f"erased:{person_id}"


@dataclass(frozen=True)
class Erasure:
    commitment: str
    runs_cleared: int
    people_cleared: int = 0
    approvals_cleared: int = 0
    outbox_scrubbed: int = 0


def erase_personal_data(ctx: ServiceContext, *, actor: Actor, kind: str, value: str) -> Erasure:
    """Forget a person's value everywhere it lives, in one audited action; the ledger keeps an
    unopenable salted hash and still verifies.

    Live copies reached: the opening (what the hash stands for); runs' requester columns;
    for an e-mail, the people holding it (their e-mail, display name, and their login when it
    is that e-mail, each with its opening; a display name's opening only when no other person
    still bears that name) and the requester provider id of their approval requests (and of
    any request whose provider id is the value itself); every outbox payload string naming
    one of those values. The `personal.erase` record lists the people and approvals it
    cleared, so `ica audit replay` clears the same fields."""
    if kind not in PERSONAL_KINDS:
        raise ValidationProblem(f"kind must be one of {', '.join(sorted(PERSONAL_KINDS))}")

    def action(session: Session) -> Erasure:
        opening = _opening(session, kind, value)
        people = _people_with(session, kind, value)
        if opening is None and not people:
            raise NotFound(f"no {kind} with that value is recorded")
        values = {value}
        forget = {(kind, value)}
        cleared_people = []
        for person in people:
            values.update(v for v in (person.email, person.display_name, person.login) if v)
            if person.email:
                forget.add(("email", person.email))
            login_erased = person.login.lower() in {value.lower(), (person.email or "").lower()}
            if login_erased:
                forget.add(("login", person.login))
                person.login = erased_login(person.id)
            if not _name_borne_by_others(session, person):
                forget.add(("name", person.display_name))
            person.email, person.display_name = None, ERASED
            cleared_people.append({"id": person.id, "login": login_erased})
        approvals = _approvals_of(session, [p.id for p in people], value)
        for approval in approvals:
            if approval.requester_provider_id:
                values.add(approval.requester_provider_id)
            approval.requester_provider_id = None
        session.flush()
        cleared = _clear_runs(session, forget)
        scrubbed = _scrub_outbox(session, values)
        commitments = [c for c in (_opening(session, k, v) for k, v in forget) if c is not None]
        session.execute(
            delete(PersonalDataOpening).where(
                PersonalDataOpening.commitment.in_([c.commitment for c in commitments])
            )
        )
        subject = opening.commitment if opening is not None else commitments[0].commitment
        now = ctx.clock.now()
        append_audit(
            session,
            actor=actor,
            action="personal.erase",
            subject_type="personal_data",
            subject_id=subject,
            tenant=None,
            data={
                "kind": kind,
                "runs_cleared": cleared,
                "people": cleared_people,
                "approvals": sorted(a.id for a in approvals),
                "outbox_scrubbed": scrubbed,
            },
            at=now,
        )
        return Erasure(
            commitment=subject,
            runs_cleared=cleared,
            people_cleared=len(cleared_people),
            approvals_cleared=len(approvals),
            outbox_scrubbed=scrubbed,
        )

    return ctx.run_action(action)


def _opening(session: Session, kind: str, value: str) -> PersonalDataOpening | None:
    return session.scalars(
        select(PersonalDataOpening).where(
            PersonalDataOpening.kind == kind, PersonalDataOpening.value == value
        )
    ).one_or_none()


def _people_with(session: Session, kind: str, value: str) -> list[Person]:
    """The people an erased e-mail identifies: by their e-mail, or a login that is it."""
    if kind != "email":
        return []
    lowered = value.lower()
    return list(
        session.scalars(
            select(Person)
            .where(or_(func.lower(Person.email) == lowered, Person.login == lowered))
            .order_by(Person.id)
        )
    )


def _name_borne_by_others(session: Session, person: Person) -> bool:
    found = session.scalar(
        select(Person.id)
        .where(Person.display_name == person.display_name, Person.id != person.id)
        .limit(1)
    )
    return found is not None


def _approvals_of(session: Session, person_ids: list[int], value: str) -> list[Approval]:
    condition = Approval.requester_provider_id == value
    if person_ids:
        condition = or_(condition, Approval.requester_person_id.in_(person_ids))
    return list(session.scalars(select(Approval).where(condition).order_by(Approval.id)))


def _clear_runs(session: Session, forget: set[tuple[str, str]]) -> int:
    cleared = 0
    for kind, value in sorted(forget):
        column = {
            "provider_user": PipelineRun.requested_for,
            "email": PipelineRun.requested_for_email,
        }.get(kind)
        if column is None:
            continue
        cleared += (
            session.connection()
            .execute(update(PipelineRun).where(column == value).values({column.key: None}))
            .rowcount
        )
        if kind == "provider_user":  # who triggered each attempt (a re-run's requester)
            session.connection().execute(
                update(RunRequester)
                .where(RunRequester.provider_user_id == value)
                .values(provider_user_id=None)
            )
    return cleared


def _scrub_outbox(session: Session, values: set[str]) -> int:
    """Replace each of ``values`` in every outbox payload string; return the rows changed.
    (Payloads are small and the outbox is purged by retention: one pass over it.)"""
    needles = sorted((v for v in values if len(v) >= 3), key=len, reverse=True)
    if not needles:
        return 0
    changed = 0
    for message in session.scalars(select(OutboxMessage)):
        scrubbed = _scrub(message.payload, needles)
        if scrubbed != message.payload:
            message.payload = scrubbed
            changed += 1
    return changed


def _scrub(value: Any, needles: list[str]) -> Any:
    if isinstance(value, str):
        for needle in needles:
            value = value.replace(needle, ERASED)
        return value
    if isinstance(value, dict):
        return {key: _scrub(item, needles) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item, needles) for item in value]
    return value
