"""Sign-offs (seed 002): QA, UAT, data-migration validation and major-release approval, each a
signed record bound to one tenant, target stage and artifact digest.

Rules, checked at signing time:

- only a person signs (never an API key or a pipeline), holding the kind's role for that
  tenant (`azdev_signoff_qa`, `azdev_signoff_uat` — the country's national counterpart —,
  `azdev_signoff_data`, `azdev_approver_major`); a grant for every tenant counts;
- segregation of duties: nobody signs off an artifact that a run they requested (triggered
  any attempt of, as linked to them through their provider accounts) built or deploys for
  that tenant;
- a second sign-off of the same (tenant, stage, digest, kind), by anyone, is answered with
  the recorded one (a retried call), not recorded twice;
- `ci` is not signed: it is the run's own unit-test result, read by the gate.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission, Role
from azdev_ica.db.tables import Person, PipelineRun, Signoff
from azdev_ica.domain.promotion import SignoffKind
from azdev_ica.errors import (
    OutOfScope,
    PersonRequired,
    SignoffRefused,
    UnknownStage,
    UnknownTenant,
    ValidationProblem,
)
from azdev_ica.services.audit import append_audit, rfc3339
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.requesters import run_requester_people

SIGNED_KINDS = tuple(kind for kind in SignoffKind if kind.role is not None)


@dataclass(frozen=True)
class GiveSignoff:
    tenant: str
    stage: str
    artifact_digest: str
    kind: str
    comment: str | None = None


@dataclass(frozen=True)
class SignoffOutcome:
    signoff: Signoff
    login: str
    created: bool


def give_signoff(
    ctx: ServiceContext, *, principal: Principal, command: GiveSignoff
) -> SignoffOutcome:
    """Record a sign-off, or answer with the one already recorded for the same binding."""
    try:
        kind = SignoffKind(command.kind)
    except ValueError:
        kind = None
    if kind is None or kind.role is None:
        names = ", ".join(k.value for k in SIGNED_KINDS)
        raise ValidationProblem(
            f"{command.kind!r} is not a sign-off a person gives; use one of {names} "
            "(ci is the run's own unit-test result)"
        )
    if not principal.is_person or principal.person_id is None:
        raise PersonRequired("only a person signs off; an API key or a pipeline never does")
    if not principal.in_scope(command.tenant):
        raise OutOfScope(f"tenant {command.tenant!r} is outside the caller's scope")
    role = Role(kind.role)

    def action(session: Session) -> SignoffOutcome:
        policy = ctx.policies.active(session)
        if command.tenant not in policy.tenants:
            raise UnknownTenant(f"tenant {command.tenant!r} is not in the active policy")
        if policy.stage(command.stage) is None:
            raise UnknownStage(f"stage {command.stage!r} is not in the active policy")
        existing = session.scalars(
            select(Signoff).where(
                Signoff.tenant == command.tenant,
                Signoff.stage == command.stage,
                Signoff.artifact_digest == command.artifact_digest,
                Signoff.kind == kind.value,
            )
        ).one_or_none()
        if existing is not None:
            return SignoffOutcome(existing, _login(session, existing.person_id), created=False)
        if not principal.holds(role, command.tenant, command.stage):
            raise SignoffRefused(
                f"a {kind.value} sign-off for tenant {command.tenant} needs the "
                f"{role.value} role for that tenant",
                code="role_not_held",
            )
        assert principal.person_id is not None
        requested = _requested_runs(session, principal.person_id, command)
        if requested:
            raise SignoffRefused(
                f"you requested run {requested[0]}, which builds or deploys this artifact for "
                f"{command.tenant}: someone else must sign it off",
                code="requester_cannot_sign",
            )
        now = ctx.clock.now()
        row = Signoff(
            tenant=command.tenant,
            stage=command.stage,
            artifact_digest=command.artifact_digest,
            kind=kind.value,
            person_id=principal.person_id,
            role=role.value,
            comment=command.comment,
            signed_at=now,
        )
        session.add(row)
        session.flush()
        append_audit(
            session,
            actor=principal.actor,
            action="signoff.give",
            subject_type="signoff",
            subject_id=str(row.id),
            tenant=command.tenant,
            data={
                "stage": command.stage,
                "artifact_digest": command.artifact_digest,
                "kind": kind.value,
                "person_id": principal.person_id,
                "role": role.value,
                "comment": command.comment,
                "signed_at": rfc3339(now),
                "policy_sha256": policy.sha256,
            },
            at=now,
        )
        return SignoffOutcome(row, principal.name, created=True)

    return ctx.run_action(action)


def _requested_runs(session: Session, person_id: int, command: GiveSignoff) -> list[str]:
    """Runs of the tenant with this artifact that the signer triggered (any attempt, through a
    link)."""
    runs = session.scalars(
        select(PipelineRun)
        .where(
            PipelineRun.tenant == command.tenant,
            PipelineRun.artifact_digest == command.artifact_digest,
        )
        .order_by(PipelineRun.id)
    ).all()
    return [run.run_key for run in runs if person_id in run_requester_people(session, run)]


def _login(session: Session, person_id: int) -> str:
    person = session.get(Person, person_id)
    return person.login if person is not None else f"person:{person_id}"


def list_signoffs(
    session: Session,
    *,
    principal: Principal,
    tenant: str | None = None,
    stage: str | None = None,
    digest: str | None = None,
) -> list[tuple[Signoff, str]]:
    """Sign-offs the caller may read (its tenants only), with the signer's login."""
    query = select(Signoff, Person.login).join(Person, Person.id == Signoff.person_id)
    scope = principal.scope(Permission.SIGNOFF_READ)
    if scope is not None:
        query = query.where(Signoff.tenant.in_(sorted(scope)))
    if tenant is not None:
        query = query.where(Signoff.tenant == tenant)
    if stage is not None:
        query = query.where(Signoff.stage == stage)
    if digest is not None:
        query = query.where(Signoff.artifact_digest == digest)
    return [(row, login) for row, login in session.execute(query.order_by(Signoff.id))]
