"""Local sign-in for the embedded default (no identity provider): argon2id passwords, TOTP,
lockout with back-off; and the sign-in of a person vouched for by an OpenID provider.

One answer for every failure. An unknown login, a wrong password, a disabled person, a
missing, wrong or replayed one-time code all raise the same `SignInFailed`, after the same
work (an unknown login is verified against a dummy hash). Failures are counted per login
under a keyed hash of the login, known or not, so lockout behaviour says nothing about which
logins exist either. The precise reason goes to the audit trail, never to the caller.

Each failure is an audit entry in its own transaction (it must outlive the refusal); each
success is one transaction: the TOTP step is consumed, the failures are forgotten, the
session is opened and the sign-in is recorded together.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from azdev_ica.auth import passwords, totp
from azdev_ica.auth.principal import Actor, Grant
from azdev_ica.auth.roles import Role
from azdev_ica.db.tables import Credential, Person, PersonToken, SignInThrottle
from azdev_ica.errors import (
    SignInFailed,
    SignInLocked,
    ValidationProblem,
)
from azdev_ica.services.audit import append_audit, rfc3339
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.enrolment import (
    consume_recovery_code,
    has_recovery_code,
    looks_like_recovery_code,
    requires_totp,
)
from azdev_ica.services.people import (
    active_grants,
    create_person,
    find_person,
    link_person,
    normalise_login,
    person_actor,
    person_for_provider_id,
)
from azdev_ica.services.sessions import SessionRules, open_session

if TYPE_CHECKING:
    from azdev_ica.settings import Settings

log = logging.getLogger(__name__)

ANONYMOUS = Actor(kind="anonymous", id="sign-in")
FAILED = "the sign-in name, password or one-time code is not valid"


@dataclass(frozen=True)
class SignInRules:
    hash_profile: str = "rfc9106_low_memory"
    max_failures: int = 5
    lockout: timedelta = timedelta(seconds=30)
    lockout_max: timedelta = timedelta(hours=1)
    # Failures older than this are forgotten: five typos over a month lock nobody out.
    failure_memory: timedelta = timedelta(hours=24)

    @classmethod
    def from_settings(cls, settings: Settings) -> SignInRules:
        return cls(
            hash_profile=settings.password_hash_profile,
            max_failures=settings.signin_max_failures,
            lockout=timedelta(seconds=settings.signin_lockout_seconds),
            lockout_max=timedelta(seconds=settings.signin_lockout_max_seconds),
        )

    def lock_for(self, failures: int) -> timedelta | None:
        """How long a login is locked after its `failures`-th failure (None: not locked)."""
        if failures < self.max_failures:
            return None
        doublings = min(failures - self.max_failures, 30)
        return min(self.lockout * (1 << doublings), self.lockout_max)


def login_key(pepper: bytes, login: str) -> str:
    """The throttle's key for a login: keyed, so the table names no login in clear."""
    return hmac.new(pepper, b"ica sign-in\x00" + login.encode(), hashlib.sha256).hexdigest()


# --- signing in -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NewSession:
    token: str  # the cookie value, never stored
    person_id: int


class _Refused(Exception):
    def __init__(self, reason: str, person_id: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.person_id = person_id


def sign_in_with_password(
    ctx: ServiceContext,
    *,
    login: str,
    password: str,
    code: str | None,
    rules: SignInRules,
    session_rules: SessionRules,
    previous_session: str | None = None,
) -> NewSession:
    """Check a login, password and (when required or enrolled) a one-time code; open a
    session. Raises SignInFailed or SignInLocked, with no hint of which part was wrong."""
    try:
        normalised = normalise_login(login)
    except ValidationProblem:
        normalised = login.strip().lower()[:200]
    key = login_key(ctx.pepper, normalised)
    now = ctx.clock.now()

    with ctx.read() as session:
        throttle = session.get(SignInThrottle, key)
        locked_until = throttle.locked_until if throttle is not None else None
        person = find_person(session, normalised) if normalised else None
        credential = session.get(Credential, person.id) if person is not None else None
        grants = (
            [Grant(Role(row.role), row.tenant) for row in active_grants(session, person.id, now)]
            if person is not None
            else []
        )

    if locked_until is not None and now < locked_until:
        _record_failure(ctx, key=key, person=person, reason="locked", rules=rules, count=False)
        raise SignInLocked(
            "too many failed sign-ins; try again later",
            retry_after_seconds=int((locked_until - now).total_seconds()) + 1,
        )

    stored = credential.password_hash if credential is not None else None
    password_ok = passwords.verify_password(stored, password, rules.hash_profile)
    try:
        if person is None:
            raise _Refused("unknown_login", None)
        if not password_ok:
            raise _Refused("bad_password", person.id)
        if person.disabled_at is not None:
            raise _Refused("disabled", person.id)
        assert credential is not None
        step, recovery = _check_code(ctx, person.id, credential, grants, code, now)
    except _Refused as refused:
        locked = _record_failure(
            ctx, key=key, person=person, reason=refused.reason, rules=rules, count=True
        )
        log.info("sign-in refused (%s)%s", refused.reason, " and locked" if locked else "")
        raise SignInFailed(FAILED) from None

    person_id = person.id

    def action(session: Session) -> NewSession:
        if recovery is not None and not consume_recovery_code(
            session, ctx.pepper, person_id, recovery, now
        ):
            raise _Refused("recovery_code_used", person_id)
        if step is not None:
            # Consume the step: of two requests racing with one code, one wins.
            consumed = session.execute(
                update(Credential)
                .where(
                    Credential.person_id == person_id,
                    or_(Credential.totp_last_step.is_(None), Credential.totp_last_step < step),
                )
                .values(totp_last_step=step, updated_at=now)
            )
            if consumed.rowcount != 1:  # type: ignore[attr-defined]
                raise _Refused("totp_replayed", person_id)
        session.execute(delete(SignInThrottle).where(SignInThrottle.login_key == key))
        token = open_session(
            session,
            pepper=ctx.pepper,
            person_id=person_id,
            method="password",
            now=now,
            rules=session_rules,
            # A fresh TOTP code counts as a step-up for the next few minutes; a recovery
            # code signs in but does not (signing asks for the authenticator).
            stepped_up_at=now if step is not None else None,
        )
        data: dict[str, object] = {"method": "password", "second_factor": step is not None}
        if recovery is not None:
            data["recovery_code"] = True
        append_audit(
            session,
            actor=person_actor(person_id),
            action="signin",
            subject_type="person",
            subject_id=str(person_id),
            tenant=None,
            data=data,
            at=now,
        )
        return NewSession(token=token, person_id=person_id)

    try:
        signed_in = ctx.run_action(action)
    except _Refused as refused:
        _record_failure(ctx, key=key, person=person, reason=refused.reason, rules=rules)
        raise SignInFailed(FAILED) from None
    if previous_session:
        _end_quietly(ctx, previous_session)
    return signed_in


def _check_code(
    ctx: ServiceContext,
    person_id: int,
    credential: Credential,
    grants: list[Grant],
    code: str | None,
    now: datetime,
) -> tuple[int | None, str | None]:
    """The TOTP step to consume (or the recovery code to spend), None when no code is
    needed; _Refused otherwise."""
    if credential.totp_secret is None:
        if requires_totp(grants):
            raise _Refused("totp_not_enrolled", person_id)
        return None, None
    if not code:
        raise _Refused("totp_missing", person_id)
    if looks_like_recovery_code(code):
        with ctx.read() as session:
            if not has_recovery_code(session, ctx.pepper, person_id, code):
                raise _Refused("recovery_code_wrong", person_id)
        return None, code
    try:
        secret = totp.open_secret(credential.totp_secret, pepper=ctx.pepper, person_id=person_id)
    except ValueError:
        raise _Refused("totp_unreadable", person_id) from None
    step = totp.matching_step(secret, code, now)
    if step is None:
        raise _Refused("totp_wrong", person_id)
    if credential.totp_last_step is not None and step <= credential.totp_last_step:
        raise _Refused("totp_replayed", person_id)
    return step, None


def _record_failure(
    ctx: ServiceContext,
    *,
    key: str,
    person: Person | None,
    reason: str,
    rules: SignInRules,
    count: bool = True,
) -> bool:
    """Count a failure (unless the login was locked already) and record it; True when this
    failure locked the login."""

    def action(session: Session) -> bool:
        now = ctx.clock.now()
        locked = False
        failures, until = 0, now
        if count:
            row = session.get(SignInThrottle, key, with_for_update=True)
            if row is None:
                row = SignInThrottle(login_key=key, failures=0, last_failure_at=now)
                session.add(row)
            elif now - row.last_failure_at > rules.failure_memory:
                row.failures = 0
            row.failures += 1
            row.last_failure_at = now
            lock = rules.lock_for(row.failures)
            if lock is not None:
                row.locked_until = until = now + lock
                locked = True
            failures = row.failures
        subject_type, subject_id = (
            ("person", str(person.id)) if person is not None else ("login", key)
        )
        append_audit(
            session,
            actor=ANONYMOUS,
            action="signin.failed",
            subject_type=subject_type,
            subject_id=subject_id,
            tenant=None,
            data={"method": "password", "reason": reason},
            at=now,
        )
        if locked:
            append_audit(
                session,
                actor=ANONYMOUS,
                action="signin.lockout",
                subject_type=subject_type,
                subject_id=subject_id,
                tenant=None,
                data={"failures": failures, "until": rfc3339(until)},
                at=now,
            )
        return locked

    return ctx.run_action(action)


def _end_quietly(ctx: ServiceContext, token: str) -> None:
    from azdev_ica.services.sessions import end_session

    if len(token) <= 200:
        end_session(ctx, token, reason="replaced")


# --- signing in through an OpenID provider --------------------------------------------------


def sign_in_with_provider(
    ctx: ServiceContext,
    *,
    provider: str,
    subject: str,
    login: str | None,
    display_name: str | None,
    email: str | None,
    extra_grants: tuple[Grant, ...],
    create: bool,
    session_rules: SessionRules,
    previous_session: str | None = None,
) -> NewSession:
    """Open a session for the person linked to `subject` at `provider`, creating (and
    linking) them on first sign-in when allowed. `extra_grants` (from the provider's groups)
    hold for this session only. Raises SignInFailed when nobody can be found or made."""
    system = Actor(kind="system", id=f"sign-in:{provider}")
    with ctx.read() as session:
        person = person_for_provider_id(session, provider, subject)
        person_id = person.id if person is not None else None
        disabled = person is not None and person.disabled_at is not None
    if person_id is None:
        if not create or not login:
            log.info("OpenID sign-in refused: subject not linked to a person")
            raise SignInFailed("this account has no access to ICA")
        try:
            login = normalise_login(login)
        except ValidationProblem:
            log.info("OpenID sign-in refused: login claim not usable")
            raise SignInFailed("this account has no access to ICA") from None
        with ctx.read() as session:
            if find_person(session, login) is not None:
                # Never link an existing person by a matching e-mail: whoever controls that
                # address at the provider would take over the account. An operator links.
                log.info("OpenID sign-in refused: login exists but is not linked")
                raise SignInFailed("this account has no access to ICA")
        created = create_person(
            ctx, actor=system, login=login, display_name=display_name or login, email=email
        )
        link_person(ctx, actor=system, login=login, provider=provider, provider_user_id=subject)
        person_id = created.id
    elif disabled:
        raise SignInFailed("this account has no access to ICA")
    now = ctx.clock.now()
    found_id = person_id

    def action(session: Session) -> NewSession:
        token = open_session(
            session,
            pepper=ctx.pepper,
            person_id=found_id,
            method="oidc",
            now=now,
            rules=session_rules,
            extra_grants=extra_grants,
        )
        append_audit(
            session,
            actor=person_actor(found_id),
            action="signin",
            subject_type="person",
            subject_id=str(found_id),
            tenant=None,
            data={
                "method": "oidc",
                "provider": provider,
                "session_roles": [
                    {"role": grant.role.value, "tenant": grant.tenant} for grant in extra_grants
                ],
            },
            at=now,
        )
        return NewSession(token=token, person_id=found_id)

    signed_in = ctx.run_action(action)
    if previous_session:
        _end_quietly(ctx, previous_session)
    return signed_in


def personal_tokens(ctx: ServiceContext, person_id: int | None) -> list[PersonToken]:
    """A person's personal tokens, newest first (prefixes and dates; secrets are never kept)."""
    if person_id is None:
        return []
    with ctx.read() as session:
        return list(
            session.scalars(
                select(PersonToken)
                .where(PersonToken.person_id == person_id)
                .order_by(PersonToken.id.desc())
                .limit(50)
            )
        )
