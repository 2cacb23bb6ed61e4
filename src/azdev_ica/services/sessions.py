"""Browser sessions: an opaque random id in a cookie, stored only as a keyed hash.

A session ends at sign-out, after `idle` without a request, or `lifetime` after sign-in,
whichever comes first. Its principal is the person with the grants held at each request,
plus the roles an identity provider's groups gave for this session only.

CSRF: every state-changing request made with the session cookie must carry the session's
form token (a synchronizer token derived from the session id with the server secret, so
another session's token never matches and nothing extra is stored).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Grant, Principal
from azdev_ica.auth.roles import Role
from azdev_ica.db.tables import Person, WebSession
from azdev_ica.errors import Unauthenticated
from azdev_ica.services.audit import append_audit
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.people import person_actor, principal_for_person

if TYPE_CHECKING:
    from azdev_ica.settings import Settings

SESSION_COOKIE = "__Host-ica_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class SessionRules:
    idle: timedelta = timedelta(minutes=30)
    lifetime: timedelta = timedelta(hours=12)
    # How often a request records that the session is still in use (one write per minute at
    # most, not one per request).
    touch_every: timedelta = timedelta(seconds=60)

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionRules:
        idle = timedelta(minutes=settings.session_idle_minutes)
        return cls(
            idle=idle,
            lifetime=timedelta(hours=settings.session_lifetime_hours),
            touch_every=min(timedelta(seconds=60), idle / 10),
        )


@dataclass(frozen=True)
class SignedInSession:
    """What a request with a valid session cookie knows."""

    principal: Principal
    session_id: int
    csrf_token: str
    method: str


def _digest(pepper: bytes, purpose: bytes, value: str) -> str:
    return hmac.new(pepper, purpose + b"\x00" + value.encode(), hashlib.sha256).hexdigest()


def token_hash(pepper: bytes, token: str) -> str:
    return _digest(pepper, b"ica web session", token)


def csrf_token(pepper: bytes, token: str) -> str:
    """The form token of the session whose cookie value is `token`."""
    return _digest(pepper, b"ica csrf", token)


def csrf_matches(pepper: bytes, token: str, candidate: str | None) -> bool:
    return bool(candidate) and hmac.compare_digest(csrf_token(pepper, token), candidate or "")


def open_session(
    session: Session,
    *,
    pepper: bytes,
    person_id: int,
    method: str,
    now: datetime,
    rules: SessionRules,
    extra_grants: tuple[Grant, ...] = (),
    stepped_up_at: datetime | None = None,
) -> str:
    """Add a new session to the caller's transaction; return the cookie value (shown once).

    Always a fresh random id: a session id the browser brought is never adopted (no session
    fixation)."""
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            token_hash=token_hash(pepper, token),
            person_id=person_id,
            method=method,
            created_at=now,
            last_seen_at=now,
            expires_at=now + rules.lifetime,
            extra_grants=[[grant.role.value, grant.tenant] for grant in extra_grants] or None,
            stepped_up_at=stepped_up_at,
        )
    )
    session.flush()
    return token


def _extra(row: WebSession) -> tuple[Grant, ...]:
    grants = []
    for role, tenant in row.extra_grants or []:
        try:
            grants.append(Grant(Role(str(role)), tenant))
        except ValueError:  # a role renamed since the session began: it gives nothing
            continue
    return tuple(grants)


def authenticate_session(ctx: ServiceContext, token: str, rules: SessionRules) -> SignedInSession:
    """The signed-in person behind a session cookie; Unauthenticated when it has ended."""
    ended = Unauthenticated("the session has ended; sign in again")
    if not token or len(token) > 200:
        raise ended
    now = ctx.clock.now()
    with ctx.read() as session:
        row = session.scalars(
            select(WebSession).where(WebSession.token_hash == token_hash(ctx.pepper, token))
        ).first()
        if row is None or row.ended_at is not None:
            raise ended
        if now >= row.expires_at or now - row.last_seen_at >= rules.idle:
            raise ended
        person = session.get(Person, row.person_id)
        if person is None:
            raise ended
        principal = principal_for_person(session, person, now, extra=_extra(row))
        found = SignedInSession(
            principal=principal,
            session_id=row.id,
            csrf_token=csrf_token(ctx.pepper, token),
            method=row.method,
        )
        last_seen = row.last_seen_at
    if now - last_seen >= rules.touch_every:
        # Book-keeping, not an action (like an API key's last use): no audit record.
        with ctx.db.write() as session:
            session.execute(
                update(WebSession)
                .where(WebSession.id == found.session_id, WebSession.last_seen_at < now)
                .values(last_seen_at=now)
            )
    return found


def end_session(ctx: ServiceContext, token: str, *, reason: str = "signout") -> bool:
    """Sign out: the session stops working at once. False when it had ended already."""

    def action(session: Session) -> bool:
        row = session.scalars(
            select(WebSession).where(WebSession.token_hash == token_hash(ctx.pepper, token))
        ).first()
        if row is None or row.ended_at is not None:
            return False
        now = ctx.clock.now()
        row.ended_at = now
        row.ended_reason = reason
        append_audit(
            session,
            actor=person_actor(row.person_id),
            action="signout",
            subject_type="person",
            subject_id=str(row.person_id),
            tenant=None,
            data={"session": row.id, "reason": reason},
            at=now,
        )
        return True

    return ctx.run_action(action)
