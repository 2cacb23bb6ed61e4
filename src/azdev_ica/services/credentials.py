"""Local sign-in for the embedded default (no identity provider): argon2id passwords, TOTP,
lockout with back-off; and the sign-in of a person vouched for by an OpenID provider.

One answer for every failure. An unknown login, a wrong password, a disabled person, a
missing, wrong or replayed one-time code all raise the same `SignInFailed`, after the same
work (an unknown login is verified against a dummy hash). Failures are counted per login
under a keyed hash of the login, known or not, so lockout behaviour says nothing about which
logins exist either. The precise reason goes to the audit trail, never to the caller.

Each attempt is first *admitted*, atomically, in one write transaction that counts it
against the login before any password is checked (a row lock on PostgreSQL, BEGIN IMMEDIATE
on SQLite): of a concurrent burst, at most `max_failures` attempts are ever checked, and once
the limit is reached the login is locked before the next attempt can be admitted, so a right
password sent in the same burst after the limit does not sign in. An admitted attempt that
fails is an audit entry in its own transaction (it must outlive the refusal); a success is
one transaction: the TOTP step is consumed, the count is forgotten, the session is opened
and the sign-in is recorded together.

Attempts refused because the login is locked write no entry each: they are counted on the
throttle row and recorded as one `signin.refused` entry per lockout period, with the count
(when the login is next admitted, signs in, or the retention job lets the row go). Before
any of this, `SignInGuard` (auth/signin_guard.py) limits attempts per client address and
per login and bounds concurrent password hashing, answering 429 without touching the
database.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from azdev_ica.auth import passwords, totp
from azdev_ica.auth.principal import Actor, Grant
from azdev_ica.auth.roles import Role
from azdev_ica.auth.signin_guard import SignInGuard
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
    client_address: str = "unknown",
    guard: SignInGuard | None = None,
) -> NewSession:
    """Check a login, password and (when required or enrolled) a one-time code; open a
    session. Raises SignInFailed or SignInLocked, with no hint of which part was wrong, or
    TooManyRequests when `guard` limits the client address, the login or the hashing."""
    try:
        normalised = normalise_login(login)
    except ValidationProblem:
        normalised = login.strip().lower()[:200]
    key = login_key(ctx.pepper, normalised)
    now = ctx.clock.now()

    guard = guard or SignInGuard.unbounded()
    guard.check_rate(client_address, key)

    with ctx.read() as session:
        person = find_person(session, normalised) if normalised else None
        credential = session.get(Credential, person.id) if person is not None else None
        grants = (
            [Grant(Role(row.role), row.tenant) for row in active_grants(session, person.id, now)]
            if person is not None
            else []
        )

    with guard.hashing():
        admission = _admit(ctx, key=key, person=person, rules=rules)
        if admission.locked_until is not None:
            raise SignInLocked(
                "too many failed sign-ins; try again later",
                retry_after_seconds=int((admission.locked_until - now).total_seconds()) + 1,
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
        _record_failure(ctx, person=person, reason=refused.reason, admission=admission)
        log.info("sign-in refused (%s)%s", refused.reason, " and locked" if admission.locks else "")
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
        throttle = session.get(SignInThrottle, key, with_for_update=True)
        if throttle is not None:
            _record_refusals(session, throttle, person_id=person_id, now=now)
            session.delete(throttle)
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
        _record_failure(ctx, person=person, reason=refused.reason, admission=admission)
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


@dataclass(frozen=True)
class _Admission:
    """The outcome of taking one attempt for a login: refused while `locked_until`, or
    admitted (`locks`: this attempt reached the limit and locked the login until `until`)."""

    key: str
    locked_until: datetime | None = None
    failures: int = 0
    locks: bool = False
    until: datetime | None = None


def _subject(person: Person | None, key: str) -> tuple[str, str]:
    return ("person", str(person.id)) if person is not None else ("login", key)


def _admit(
    ctx: ServiceContext, *, key: str, person: Person | None, rules: SignInRules
) -> _Admission:
    """Take one attempt for the login `key`, atomically: count it, and lock the login when
    the count reaches the limit, before its password is checked. A locked login's attempt is
    refused and only counted (no ledger entry of its own)."""

    def action(session: Session) -> _Admission:
        now = ctx.clock.now()
        row = session.get(SignInThrottle, key, with_for_update=True, populate_existing=True)
        if row is None:
            row = SignInThrottle(login_key=key, failures=0, last_failure_at=now, refused=0)
            session.add(row)
            session.flush()  # a concurrent first attempt conflicts here and is retried
        if row.locked_until is not None and now < row.locked_until:
            row.refused = (row.refused or 0) + 1
            row.refused_since = row.refused_since or now
            return _Admission(key=key, locked_until=row.locked_until)
        subject_type, subject_id = _subject(person, key)
        _record_refusals(session, row, subject=(subject_type, subject_id), now=now)
        if now - row.last_failure_at > rules.failure_memory:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        lock = rules.lock_for(row.failures)
        until = None
        if lock is not None:
            row.locked_until = until = now + lock
        return _Admission(key=key, failures=row.failures, locks=lock is not None, until=until)

    return ctx.run_action(action)


def _record_refusals(
    session: Session,
    row: SignInThrottle,
    *,
    now: datetime,
    person_id: int | None = None,
    subject: tuple[str, str] | None = None,
) -> None:
    """Record the attempts refused during the login's last lockout as one entry with their
    count, and reset the count."""
    if not row.refused:
        return
    subject_type, subject_id = subject or ("person", str(person_id))
    append_audit(
        session,
        actor=ANONYMOUS,
        action="signin.refused",
        subject_type=subject_type,
        subject_id=subject_id,
        tenant=None,
        data={
            "method": "password",
            "reason": "locked",
            "count": row.refused,
            "from": rfc3339(row.refused_since or now),
            "until": rfc3339(row.locked_until or now),
        },
        at=now,
    )
    row.refused = 0
    row.refused_since = None


def _record_failure(
    ctx: ServiceContext, *, person: Person | None, reason: str, admission: _Admission
) -> None:
    """Record an admitted attempt that failed (it was counted when admitted), and the lockout
    it started, if it did."""

    def action(session: Session) -> None:
        now = ctx.clock.now()
        subject_type, subject_id = _subject(person, admission.key)
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
        if admission.locks and admission.until is not None:
            append_audit(
                session,
                actor=ANONYMOUS,
                action="signin.lockout",
                subject_type=subject_type,
                subject_id=subject_id,
                tenant=None,
                data={"failures": admission.failures, "until": rfc3339(admission.until)},
                at=now,
            )

    ctx.run_action(action)


def record_lapsed_refusals(ctx: ServiceContext, *, limit: int = 500) -> int:
    """Record the refused-while-locked counts of logins whose lockout has ended (for the
    retention job, before it lets old throttle rows go); how many rows were recorded."""

    def action(session: Session) -> int:
        now = ctx.clock.now()
        rows = list(
            session.scalars(
                select(SignInThrottle)
                .where(SignInThrottle.refused > 0, SignInThrottle.locked_until <= now)
                .order_by(SignInThrottle.login_key)
                .limit(limit)
                .with_for_update()
            )
        )
        for row in rows:
            _record_refusals(session, row, subject=("login", row.login_key), now=now)
        return len(rows)

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
