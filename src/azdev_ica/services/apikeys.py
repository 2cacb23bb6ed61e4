"""Creating, revoking and checking API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from azdev_ica.auth.apikeys import digest_matches, generate_key, parse_prefix
from azdev_ica.auth.principal import Actor, Principal
from azdev_ica.auth.roles import Role
from azdev_ica.db.tables import ApiKey
from azdev_ica.errors import NotFound, Unauthenticated, ValidationProblem
from azdev_ica.services.audit import append_audit, rfc3339
from azdev_ica.services.context import ServiceContext


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str  # shown once, never stored


def create_api_key(
    ctx: ServiceContext,
    *,
    actor: Actor,
    name: str,
    role: Role,
    tenants: list[str] | None,
    expires_at: datetime | None,
    stages: list[str] | None = None,
) -> CreatedKey:
    """Create a key bound to `role`, `tenants` (None: all tenants) and `stages` (None: every
    stage)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationProblem("a key name needs 1 to 100 characters")
    now = ctx.clock.now()
    if expires_at is not None and expires_at <= now:
        raise ValidationProblem("the expiry must be in the future")
    new = generate_key()
    scoped = sorted(set(tenants)) if tenants is not None else None
    scoped_stages = sorted(set(stages)) if stages is not None else None
    if scoped_stages is not None and not scoped_stages:
        raise ValidationProblem("a stage scope names at least one stage (omit it for every stage)")

    def action(session: Session) -> CreatedKey:
        if scoped is not None:
            known = ctx.policies.active(session).tenants
            unknown = [code for code in scoped if code not in known]
            if unknown:
                raise ValidationProblem(f"unknown tenants: {', '.join(unknown)}")
        policy = ctx.policies.active(session)
        unknown_stages = [name for name in scoped_stages or () if policy.stage(name) is None]
        if unknown_stages:
            raise ValidationProblem(f"unknown stages: {', '.join(unknown_stages)}")
        row = ApiKey(
            prefix=new.prefix,
            digest=new.digest(ctx.pepper),
            name=name,
            role=role.value,
            tenants=scoped,
            stages=scoped_stages,
            created_at=now,
            created_by=actor.id,
            expires_at=expires_at,
        )
        session.add(row)
        session.flush()
        append_audit(
            session,
            actor=actor,
            action="apikey.create",
            subject_type="api_key",
            subject_id=new.prefix,
            tenant=None,
            data={
                "name": name,
                "role": role.value,
                "tenants": scoped,
                "expires_at": rfc3339(expires_at) if expires_at else None,
                **({"stages": scoped_stages} if scoped_stages is not None else {}),
            },
            at=now,
        )
        return CreatedKey(key=row, secret=new.secret)

    return ctx.run_action(action)


def revoke_api_key(ctx: ServiceContext, *, actor: Actor, prefix: str, reason: str) -> ApiKey:
    def action(session: Session) -> ApiKey:
        row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()
        if row is None:
            raise NotFound(f"no API key with prefix {prefix!r}")
        if row.revoked_at is not None:
            return row
        now = ctx.clock.now()
        row.revoked_at = now
        append_audit(
            session,
            actor=actor,
            action="apikey.revoke",
            subject_type="api_key",
            subject_id=prefix,
            tenant=None,
            data={"reason": reason},
            at=now,
        )
        return row

    return ctx.run_action(action)


def count_admin_keys(ctx: ServiceContext) -> int:
    with ctx.read() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(ApiKey)
                .where(ApiKey.role == Role.ADMIN.value, ApiKey.revoked_at.is_(None))
            )
            or 0
        )


# Built once: the look-up every API request starts with (Core, the columns it needs).
_KEYS = cast(Table, ApiKey.__table__)
_KEY_BY_PREFIX = select(
    _KEYS.c.id,
    _KEYS.c.prefix,
    _KEYS.c.digest,
    _KEYS.c.name,
    _KEYS.c.role,
    _KEYS.c.tenants,
    _KEYS.c.stages,
    _KEYS.c.revoked_at,
    _KEYS.c.expires_at,
    _KEYS.c.last_used_at,
).where(_KEYS.c.prefix == bindparam("prefix"))


def authenticate_api_key(ctx: ServiceContext, key: str, *, touch_every: timedelta) -> Principal:
    """The principal of a valid key; raises Unauthenticated (with no hint why) otherwise."""
    refused = Unauthenticated("the credentials are not valid")
    prefix = parse_prefix(key)
    if prefix is None:
        raise refused
    found = ctx.db.first_row(_KEY_BY_PREFIX, {"prefix": prefix})
    if found is None:
        raise refused
    key_id, prefix, digest, name, role, tenants, stages, revoked_at, expires_at, used_at = found
    if not digest_matches(key, digest, ctx.pepper):
        raise refused
    now = ctx.clock.now()
    if revoked_at is not None or (expires_at is not None and expires_at <= now):
        raise refused
    if used_at is None or now - used_at >= touch_every:
        _touch(ctx, key_id=key_id, at=now, touch_every=touch_every)
    return Principal.with_role(
        kind="api_key",
        id=f"apikey:{prefix}",
        name=name,
        role=Role(role),
        tenants=frozenset(tenants) if tenants is not None else None,
        stages=frozenset(stages) if stages is not None else None,
    )


def _touch(ctx: ServiceContext, *, key_id: int, at: datetime, touch_every: timedelta) -> None:
    # Book-keeping, not an action: no audit record (one per request would drown the trail),
    # and at most one write per key per `touch_every`.
    with ctx.db.write() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .where((ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at <= at - touch_every))
            .values(last_used_at=at)
        )
