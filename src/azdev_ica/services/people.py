"""People: who they are, which roles they hold for which tenants, which provider user ids are
theirs, and the personal tokens they sign from the CLI with.

A person is the only kind of principal that may sign an approval. "The requester" and "the
signer" are compared as people: a provider's user id (Azure DevOps `Build.RequestedForId`,
GitHub `actor_id`, an Entra object id, an OpenID subject) is linked to one person here, so a
different spelling of the same person never slips past segregation of duties.

Every change is an audit entry. Personal values (login, name, e-mail) enter the ledger only as
salted commitments (see `services/audit.py`), so erasing a person never breaks verification.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from azdev_ica.auth.apikeys import digest_matches, generate_key, parse_prefix
from azdev_ica.auth.principal import PERSON, Actor, Grant, Principal
from azdev_ica.auth.roles import Permission, Role
from azdev_ica.db.tables import Person, PersonLink, PersonToken, RoleGrant
from azdev_ica.errors import Conflict, Forbidden, NotFound, Unauthenticated, ValidationProblem
from azdev_ica.services.audit import append_audit, rfc3339
from azdev_ica.services.context import ServiceContext

PROVIDERS = ("ado", "github", "entra", "oidc")
"""Whose user ids a person can be linked to: Azure DevOps, GitHub, Entra ID, an OIDC issuer."""

TOKEN_PREFIX = "icp"  # noqa: S105 - a token kind, not a secret
"""Personal tokens look like ``icp_<prefix>_<secret>``; API keys like ``ica_<prefix>_<secret>``."""

MAX_TOKEN_TTL = timedelta(days=30)
DEFAULT_TOKEN_TTL = timedelta(hours=12)

# Roles a tenant administrator may hand out, and only for its own tenants.
TENANT_GRANTABLE = frozenset(
    {
        Role.DEVOPS,
        Role.APPROVER_TECH,
        Role.APPROVER_BIZ,
        Role.AUDITOR,
        Role.ESCALATION,
        Role.SIGNOFF_QA,
        Role.SIGNOFF_UAT,
        Role.SIGNOFF_DATA,
        Role.APPROVER_MAJOR,
    }
)

_LOGIN_RE = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,199}$")
_PROVIDER_ID_RE = re.compile(r"^[\x21-\x7e]{1,200}$")


def person_actor(person_id: int) -> Actor:
    return Actor(kind=PERSON, id=f"person:{person_id}")


def normalise_login(login: str) -> str:
    value = login.strip().lower()
    if not _LOGIN_RE.match(value):
        raise ValidationProblem(
            "a login is 1-200 characters: letters, digits and . _ @ + - (e.g. an e-mail)"
        )
    return value


# --- reading --------------------------------------------------------------------------------


def find_person(session: Session, login: str) -> Person | None:
    return session.scalars(select(Person).where(Person.login == normalise_login(login))).first()


def get_person(session: Session, login: str) -> Person:
    person = find_person(session, login)
    if person is None:
        raise NotFound(f"no person {login.strip().lower()!r}")
    return person


def person_for_provider_id(session: Session, provider: str, provider_user_id: str) -> Person | None:
    """The person linked to a provider's user id, or None (disabled persons included: the
    requester of an old run stays who they were)."""
    return session.scalars(
        select(Person)
        .join(PersonLink, PersonLink.person_id == Person.id)
        .where(PersonLink.provider == provider, PersonLink.provider_user_id == provider_user_id)
    ).first()


def active_grants(session: Session, person_id: int, now: datetime) -> list[RoleGrant]:
    """The grants a person holds at `now`: not revoked, not expired."""
    return list(
        session.scalars(
            select(RoleGrant)
            .where(
                RoleGrant.person_id == person_id,
                RoleGrant.revoked_at.is_(None),
                or_(RoleGrant.expires_at.is_(None), RoleGrant.expires_at > now),
            )
            .order_by(RoleGrant.id)
        )
    )


def principal_for_person(
    session: Session,
    person: Person,
    now: datetime,
    *,
    extra: tuple[Grant, ...] = (),
    claims: tuple[tuple[str, str], ...] = (),
) -> Principal:
    """The principal of a person with the grants held at `now` (plus `extra`, e.g. roles an
    identity provider's groups give for one session). A disabled person gets no principal."""
    if person.disabled_at is not None:
        raise Unauthenticated("the credentials are not valid")
    grants = tuple(
        dict.fromkeys(
            [
                Grant(
                    Role(row.role),
                    row.tenant,
                    None if row.stages is None else frozenset(row.stages),
                )
                for row in active_grants(session, person.id, now)
            ]
            + list(extra)
        )
    )
    return Principal(
        kind=PERSON,
        id=f"person:{person.id}",
        name=person.login,
        grants=grants,
        claims=claims,
        person_id=person.id,
    )


# --- administration -------------------------------------------------------------------------


def _check_may_administer(principal: Principal | None, tenant: str | None, role: Role) -> None:
    """An operator at the console (principal None) and an administrator may grant anything;
    a tenant administrator only the tenant roles, for its own tenants."""
    if principal is None or principal.can_for(Permission.USER_ADMIN, None):
        return
    if tenant is None or not principal.can_for(Permission.USER_ADMIN, tenant):
        raise Forbidden("a tenant administrator grants roles for its own tenants only")
    if role not in TENANT_GRANTABLE:
        raise Forbidden(f"a tenant administrator cannot grant {role.value}")


def create_person(
    ctx: ServiceContext,
    *,
    actor: Actor,
    login: str,
    display_name: str,
    email: str | None = None,
) -> Person:
    login = normalise_login(login)
    display_name = display_name.strip()
    if not display_name or len(display_name) > 200:
        raise ValidationProblem("a display name needs 1 to 200 characters")
    if email is not None:
        email = email.strip()
        if not re.match(r"^[^@\s]{1,64}@[^@\s]{1,255}$", email):
            raise ValidationProblem("the e-mail address is not valid")

    def action(session: Session) -> Person:
        if find_person(session, login) is not None:
            raise Conflict(f"a person {login!r} exists already")
        now = ctx.clock.now()
        person = Person(
            login=login,
            display_name=display_name,
            email=email,
            created_at=now,
            created_by=actor.id,
        )
        session.add(person)
        session.flush()
        append_audit(
            session,
            actor=actor,
            action="person.create",
            subject_type="person",
            subject_id=str(person.id),
            tenant=None,
            data={},
            personal={
                "login": ("login", login),
                "display_name": ("name", display_name),
                "email": ("email", email),
            },
            at=now,
        )
        return person

    try:
        return ctx.run_action(action)
    except IntegrityError:  # a concurrent create of the same login won
        raise Conflict(f"a person {login!r} exists already") from None


def disable_person(ctx: ServiceContext, *, actor: Actor, login: str, reason: str) -> Person:
    """Disable a person: no sign-in, no token, no signature from now on. Their past stays."""
    reason = _reason(reason)

    def action(session: Session) -> Person:
        person = get_person(session, login)
        if person.disabled_at is not None:
            return person
        now = ctx.clock.now()
        person.disabled_at = now
        person.disabled_reason = reason
        for token in session.scalars(
            select(PersonToken).where(
                PersonToken.person_id == person.id, PersonToken.revoked_at.is_(None)
            )
        ):
            token.revoked_at = now
        append_audit(
            session,
            actor=actor,
            action="person.disable",
            subject_type="person",
            subject_id=str(person.id),
            tenant=None,
            data={"reason": reason},
            at=now,
        )
        return person

    return ctx.run_action(action)


def grant_role(
    ctx: ServiceContext,
    *,
    actor: Actor,
    login: str,
    role: Role,
    tenant: str | None = None,
    expires_at: datetime | None = None,
    reason: str | None = None,
    by: Principal | None = None,
    stages: list[str] | None = None,
) -> RoleGrant:
    """Grant `role` for `tenant` (None: every tenant) and `stages` (None: every stage), until
    `expires_at` if given. Granting what is already held returns the held grant. `by` is the
    calling principal (None: an operator at the console), checked against what it may grant."""
    _check_may_administer(by, tenant, role)
    scoped_stages = _check_stages(by, stages)
    now = ctx.clock.now()
    if expires_at is not None and expires_at <= now:
        raise ValidationProblem("the expiry must be in the future")

    def action(session: Session) -> RoleGrant:
        policy = ctx.policies.active(session)
        if tenant is not None and tenant not in policy.tenants:
            raise ValidationProblem(f"unknown tenant {tenant!r}")
        unknown = [name for name in scoped_stages or () if policy.stage(name) is None]
        if unknown:
            raise ValidationProblem(f"unknown stages: {', '.join(unknown)}")
        person = get_person(session, login)
        if by is not None and by.person_id == person.id:
            raise Forbidden("nobody grants roles to themselves")
        if person.disabled_at is not None:
            raise Conflict(f"{person.login!r} is disabled")
        for held in active_grants(session, person.id, now):
            if (
                held.role == role.value
                and held.tenant == tenant
                and held.expires_at == expires_at
                and held.stages == scoped_stages
            ):
                return held
        row = RoleGrant(
            person_id=person.id,
            role=role.value,
            tenant=tenant,
            granted_at=now,
            granted_by=actor.id,
            expires_at=expires_at,
            reason=reason,
            stages=scoped_stages,
        )
        session.add(row)
        session.flush()
        append_audit(
            session,
            actor=actor,
            action="grant.create",
            subject_type="person",
            subject_id=str(person.id),
            tenant=tenant,
            data={
                "grant": row.id,
                "role": role.value,
                "tenant": tenant,
                "expires_at": rfc3339(expires_at) if expires_at else None,
                "reason": reason,
                **({"stages": scoped_stages} if scoped_stages is not None else {}),
            },
            at=now,
        )
        return row

    return ctx.run_action(action)


def _check_stages(by: Principal | None, stages: list[str] | None) -> list[str] | None:
    """The stage scope of a new grant, sorted. An administrator limited to some stages grants
    within them only: never wider than its own reach."""
    scoped = sorted(set(stages)) if stages is not None else None
    if scoped is not None and not scoped:
        raise ValidationProblem("a stage scope names at least one stage (omit it for every stage)")
    if by is None or not by.stage_scoped(Permission.USER_ADMIN):
        return scoped
    reach = by.stage_reach(Permission.USER_ADMIN)
    if scoped is None or not set(scoped) <= reach:
        raise Forbidden("an administrator limited to some stages grants within them only")
    return scoped


def revoke_grant(
    ctx: ServiceContext,
    *,
    actor: Actor,
    login: str,
    role: Role,
    tenant: str | None,
    reason: str,
    by: Principal | None = None,
) -> list[RoleGrant]:
    """Revoke every active grant of `role` for exactly `tenant` held by the person."""
    _check_may_administer(by, tenant, role)
    reason = _reason(reason)

    def action(session: Session) -> list[RoleGrant]:
        person = get_person(session, login)
        now = ctx.clock.now()
        revoked = [
            row
            for row in active_grants(session, person.id, now)
            if row.role == role.value and row.tenant == tenant
        ]
        if not revoked:
            raise NotFound(
                f"{person.login!r} holds no {role.value} grant for "
                f"{'every tenant' if tenant is None else tenant}"
            )
        for row in revoked:
            row.revoked_at = now
            row.revoked_by = actor.id
            append_audit(
                session,
                actor=actor,
                action="grant.revoke",
                subject_type="person",
                subject_id=str(person.id),
                tenant=tenant,
                data={"grant": row.id, "role": role.value, "tenant": tenant, "reason": reason},
                at=now,
            )
        return revoked

    return ctx.run_action(action)


def link_person(
    ctx: ServiceContext, *, actor: Actor, login: str, provider: str, provider_user_id: str
) -> PersonLink:
    """Record that `provider_user_id` at `provider` is this person. A provider id belongs to
    one person only: linking it to another is a conflict, not a silent move."""
    if provider not in PROVIDERS:
        raise ValidationProblem(f"provider must be one of {', '.join(PROVIDERS)}")
    provider_user_id = provider_user_id.strip()
    if not _PROVIDER_ID_RE.match(provider_user_id):
        raise ValidationProblem("a provider user id is 1-200 visible ASCII characters")

    def action(session: Session) -> PersonLink:
        person = get_person(session, login)
        existing = session.scalars(
            select(PersonLink).where(
                PersonLink.provider == provider, PersonLink.provider_user_id == provider_user_id
            )
        ).first()
        if existing is not None:
            if existing.person_id == person.id:
                return existing
            raise Conflict(f"{provider} user {provider_user_id!r} is linked to another person")
        now = ctx.clock.now()
        row = PersonLink(
            person_id=person.id,
            provider=provider,
            provider_user_id=provider_user_id,
            created_at=now,
            created_by=actor.id,
        )
        session.add(row)
        session.flush()
        append_audit(
            session,
            actor=actor,
            action="person.link",
            subject_type="person",
            subject_id=str(person.id),
            tenant=None,
            data={"provider": provider},
            personal={"provider_user_id": ("provider_user", provider_user_id)},
            at=now,
        )
        return row

    try:
        return ctx.run_action(action)
    except IntegrityError:
        raise Conflict(f"{provider} user {provider_user_id!r} is linked already") from None


@dataclass(frozen=True)
class PersonView:
    person: Person
    grants: list[RoleGrant]
    links: list[PersonLink]


def list_people(ctx: ServiceContext, *, include_disabled: bool = False) -> list[PersonView]:
    now = ctx.clock.now()
    with ctx.read() as session:
        query = select(Person).order_by(Person.login)
        if not include_disabled:
            query = query.where(Person.disabled_at.is_(None))
        views = []
        for person in session.scalars(query):
            links = list(
                session.scalars(
                    select(PersonLink)
                    .where(PersonLink.person_id == person.id)
                    .order_by(PersonLink.id)
                )
            )
            views.append(PersonView(person, active_grants(session, person.id, now), links))
        return views


# --- personal tokens ------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    token: PersonToken
    secret: str  # shown once, never stored


def issue_personal_token(
    ctx: ServiceContext,
    *,
    actor: Actor,
    login: str,
    name: str,
    ttl: timedelta = DEFAULT_TOKEN_TTL,
) -> IssuedToken:
    """A short-lived token that authenticates as the person, with the grants they hold at each
    use (a revoked grant stops working at once, not when the token expires)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationProblem("a token name needs 1 to 100 characters")
    if ttl <= timedelta(0) or ttl > MAX_TOKEN_TTL:
        raise ValidationProblem(f"a personal token lives at most {MAX_TOKEN_TTL.days} days")
    new = generate_key(TOKEN_PREFIX)

    def action(session: Session) -> IssuedToken:
        person = get_person(session, login)
        if (actor.kind, actor.id) != (PERSON, f"person:{person.id}"):
            # No one signs as someone else: a personal token is minted only by its person.
            raise Forbidden("a personal token is issued only by the person it belongs to")
        if person.disabled_at is not None:
            raise Conflict(f"{person.login!r} is disabled")
        now = ctx.clock.now()
        row = PersonToken(
            prefix=new.prefix,
            digest=new.digest(ctx.pepper),
            person_id=person.id,
            name=name,
            created_at=now,
            expires_at=now + ttl,
        )
        session.add(row)
        session.flush()
        append_audit(
            session,
            actor=actor,
            action="token.create",
            subject_type="person",
            subject_id=str(person.id),
            tenant=None,
            data={"token": new.prefix, "name": name, "expires_at": rfc3339(now + ttl)},
            at=now,
        )
        return IssuedToken(token=row, secret=new.secret)

    return ctx.run_action(action)


def revoke_personal_token(
    ctx: ServiceContext, *, actor: Actor, prefix: str, person_id: int | None = None
) -> PersonToken:
    """Revoke a personal token (`person_id` given: only one of that person's own)."""

    def action(session: Session) -> PersonToken:
        row = session.scalars(select(PersonToken).where(PersonToken.prefix == prefix)).first()
        if row is None or (person_id is not None and row.person_id != person_id):
            raise NotFound(f"no personal token {prefix!r}")
        if row.revoked_at is None:
            now = ctx.clock.now()
            row.revoked_at = now
            append_audit(
                session,
                actor=actor,
                action="token.revoke",
                subject_type="person",
                subject_id=str(row.person_id),
                tenant=None,
                data={"token": prefix},
                at=now,
            )
        return row

    return ctx.run_action(action)


def is_personal_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX + "_")


def authenticate_personal_token(ctx: ServiceContext, secret: str) -> Principal:
    """The person behind a valid personal token, with the grants held now."""
    refused = Unauthenticated("the credentials are not valid")
    prefix = parse_prefix(secret, TOKEN_PREFIX)
    if prefix is None:
        raise refused
    now = ctx.clock.now()
    with ctx.read() as session:
        row = session.scalars(select(PersonToken).where(PersonToken.prefix == prefix)).first()
        if row is None or not digest_matches(secret, row.digest, ctx.pepper):
            raise refused
        if row.revoked_at is not None or row.expires_at <= now:
            raise refused
        person = session.get(Person, row.person_id)
        if person is None:
            raise refused
        return principal_for_person(session, person, now, claims=(("via", "personal_token"),))


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason or len(reason) > 1000:
        raise ValidationProblem("give a reason of 1 to 1000 characters")
    return reason
