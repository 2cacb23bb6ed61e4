"""Credentials set only by their person: enrolment links, resets, own password and TOTP,
recovery codes, step-up.

No one signs as someone else: an administrator (or an operator at the console) never sets,
sees or learns a person's password, TOTP secret or personal token. They hand out a
single-use, short-lived *enrolment link* (only a keyed hash of its secret is stored; a newer
link revokes the older ones); the person opens it in the console and sets their own password
and authenticator. A *reset* clears the password, the authenticator, the recovery codes, the
personal tokens and the open sessions, and issues a new link. Every step is an audit entry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from azdev_ica.auth import passwords, totp
from azdev_ica.auth.principal import Actor, Grant, Principal
from azdev_ica.auth.roles import Permission, Role
from azdev_ica.db.tables import (
    Credential,
    EnrolmentLink,
    Person,
    PersonToken,
    RecoveryCode,
    WebSession,
)
from azdev_ica.errors import Conflict, Forbidden, NotFound, ValidationProblem
from azdev_ica.services.audit import append_audit, rfc3339
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.people import active_grants, get_person, person_actor

if TYPE_CHECKING:
    from azdev_ica.settings import Settings

DEFAULT_LINK_TTL = timedelta(hours=72)
MAX_LINK_TTL = timedelta(days=14)
ENROL_PATH = "/ui/enrol/"
RECOVERY_CODES = 10
# A fresh second factor for signing: a TOTP code within this long (docs/console.md).
DEFAULT_STEP_UP_WINDOW = timedelta(minutes=5)

LINK_INVALID = (
    "this enrolment link is not valid: it was used, it expired or a newer one replaced it"
)

# Who must enrol an authenticator (and give a one-time code at sign-in).
TOTP_ROLES = frozenset(
    {
        Role.ADMIN,
        Role.TENANT_ADMIN,
        Role.APPROVER_TECH,
        Role.APPROVER_BIZ,
        Role.APPROVER_MAJOR,
        Role.OVERRIDE_SIGNER,
        Role.SIGNOFF_QA,
        Role.SIGNOFF_UAT,
        Role.SIGNOFF_DATA,
    }
)


def requires_totp(grants: list[Grant] | tuple[Grant, ...]) -> bool:
    return any(grant.role in TOTP_ROLES for grant in grants)


def _digest(pepper: bytes, purpose: bytes, value: str) -> str:
    return hmac.new(pepper, purpose + b"\x00" + value.encode(), hashlib.sha256).hexdigest()


def link_hash(pepper: bytes, token: str) -> str:
    return _digest(pepper, b"ica enrolment link", token)


def recovery_hash(pepper: bytes, person_id: int, code: str) -> str:
    return _digest(pepper, b"ica recovery code", f"{person_id}:{normalise_recovery(code)}")


def normalise_recovery(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


def looks_like_recovery_code(code: str) -> bool:
    value = normalise_recovery(code)
    return len(value) == 12 and value.isascii() and value.isalnum()


def link_ttl(settings: Settings) -> timedelta:
    return timedelta(hours=settings.enrolment_link_hours)


def step_up_window(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.step_up_minutes)


def enrolment_url(public_url: str, token: str) -> str:
    return public_url.rstrip("/") + ENROL_PATH + token


def _audit(
    session: Session,
    *,
    actor: Actor,
    action: str,
    person_id: int,
    data: dict[str, object],
    at: datetime,
) -> None:
    append_audit(
        session,
        actor=actor,
        action=action,
        subject_type="person",
        subject_id=str(person_id),
        tenant=None,
        data=data,
        at=at,
    )


def _check_admin_may(by: Principal | None, session: Session, person: Person, now: datetime) -> None:
    """An administrator for every tenant may hand out links and reset anyone; a tenant
    administrator only people whose every grant lies in its own tenants (else it could take
    over a person who signs elsewhere). None: an operator at the console."""
    if by is None:
        return
    scope = by.scope(Permission.USER_ADMIN)
    if scope is None:
        if not by.can(Permission.USER_ADMIN):
            raise Forbidden("only an administrator may do this")
        return
    grants = active_grants(session, person.id, now)
    if grants and not any(grant.tenant is not None and grant.tenant in scope for grant in grants):
        # Someone of other tenants only: out of scope answers exactly like absent.
        raise NotFound(f"no person {person.login!r}")
    if any(grant.tenant is None or grant.tenant not in scope for grant in grants):
        raise Forbidden("this person holds roles outside your tenants; ask an administrator")


# --- links ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedLink:
    person_id: int
    login: str
    token: str  # the link's secret: shown once, never stored
    expires_at: datetime

    def url(self, public_url: str) -> str:
        return enrolment_url(public_url, self.token)


def _issue(
    session: Session,
    ctx: ServiceContext,
    *,
    actor: Actor,
    person: Person,
    purpose: str,
    ttl: timedelta,
    now: datetime,
) -> IssuedLink:
    if ttl <= timedelta(0) or ttl > MAX_LINK_TTL:
        raise ValidationProblem(f"an enrolment link lives at most {MAX_LINK_TTL.days} days")
    session.execute(
        update(EnrolmentLink)
        .where(
            EnrolmentLink.person_id == person.id,
            EnrolmentLink.used_at.is_(None),
            EnrolmentLink.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    token = secrets.token_urlsafe(32)
    row = EnrolmentLink(
        person_id=person.id,
        token_hash=link_hash(ctx.pepper, token),
        purpose=purpose,
        created_at=now,
        expires_at=now + ttl,
    )
    session.add(row)
    session.flush()
    _audit(
        session,
        actor=actor,
        action="enrolment.link",
        person_id=person.id,
        data={"link": row.id, "purpose": purpose, "expires_at": rfc3339(now + ttl)},
        at=now,
    )
    return IssuedLink(person.id, person.login, token, now + ttl)


def issue_enrolment_link(
    ctx: ServiceContext,
    *,
    actor: Actor,
    login: str,
    ttl: timedelta = DEFAULT_LINK_TTL,
    by: Principal | None = None,
) -> IssuedLink:
    """A new single-use link for `login` (revoking earlier open ones). The person's current
    credentials stay until the link is used; use `reset_credentials` to end them now."""

    def action(session: Session) -> IssuedLink:
        person = get_person(session, login)
        if person.disabled_at is not None:
            raise Conflict(f"{person.login!r} is disabled")
        now = ctx.clock.now()
        _check_admin_may(by, session, person, now)
        return _issue(session, ctx, actor=actor, person=person, purpose="enrol", ttl=ttl, now=now)

    return ctx.run_action(action)


def reset_credentials(
    ctx: ServiceContext,
    *,
    actor: Actor,
    login: str,
    reason: str,
    ttl: timedelta = DEFAULT_LINK_TTL,
    by: Principal | None = None,
) -> IssuedLink:
    """End everything a person signs in with (password, authenticator, recovery codes,
    personal tokens, open sessions) and issue a new enrolment link, in one transaction."""
    reason = reason.strip()
    if not reason or len(reason) > 1000:
        raise ValidationProblem("give a reason of 1 to 1000 characters")

    def action(session: Session) -> IssuedLink:
        person = get_person(session, login)
        if person.disabled_at is not None:
            raise Conflict(f"{person.login!r} is disabled")
        now = ctx.clock.now()
        _check_admin_may(by, session, person, now)
        row = session.get(Credential, person.id, with_for_update=True)
        if row is not None:
            row.password_hash = None
            row.password_set_at = None
            row.totp_secret = None
            row.totp_enrolled_at = None
            row.updated_at = now
        session.execute(
            update(RecoveryCode)
            .where(RecoveryCode.person_id == person.id, RecoveryCode.used_at.is_(None))
            .values(used_at=now)
        )
        tokens = session.execute(
            update(PersonToken)
            .where(PersonToken.person_id == person.id, PersonToken.revoked_at.is_(None))
            .values(revoked_at=now)
        ).rowcount  # type: ignore[attr-defined]
        sessions = session.execute(
            update(WebSession)
            .where(WebSession.person_id == person.id, WebSession.ended_at.is_(None))
            .values(ended_at=now, ended_reason="reset")
        ).rowcount  # type: ignore[attr-defined]
        _audit(
            session,
            actor=actor,
            action="credential.reset",
            person_id=person.id,
            data={"reason": reason, "tokens_revoked": tokens, "sessions_ended": sessions},
            at=now,
        )
        return _issue(session, ctx, actor=actor, person=person, purpose="reset", ttl=ttl, now=now)

    return ctx.run_action(action)


@dataclass(frozen=True)
class OpenLink:
    link_id: int
    person_id: int
    login: str
    display_name: str
    purpose: str
    expires_at: datetime
    totp_required: bool


def open_enrolment_link(ctx: ServiceContext, token: str) -> OpenLink:
    """The person a valid link enrols; NotFound (one answer) when used, expired or revoked."""
    if not token or len(token) > 100:
        raise NotFound(LINK_INVALID)
    now = ctx.clock.now()
    with ctx.read() as session:
        row = session.scalars(
            select(EnrolmentLink).where(EnrolmentLink.token_hash == link_hash(ctx.pepper, token))
        ).first()
        if row is None or row.used_at is not None or row.revoked_at is not None:
            raise NotFound(LINK_INVALID)
        if now >= row.expires_at:
            raise NotFound(LINK_INVALID)
        person = session.get(Person, row.person_id)
        if person is None or person.disabled_at is not None:
            raise NotFound(LINK_INVALID)
        grants = [Grant(Role(g.role), g.tenant) for g in active_grants(session, person.id, now)]
        return OpenLink(
            link_id=row.id,
            person_id=person.id,
            login=person.login,
            display_name=person.display_name,
            purpose=row.purpose,
            expires_at=row.expires_at,
            totp_required=requires_totp(grants),
        )


# --- pending authenticator (between showing the QR code and the first code) -----------------


def new_pending_totp(ctx: ServiceContext, person_id: int) -> tuple[bytes, str]:
    """A fresh TOTP secret and its sealed form for the page's hidden field (encrypted and
    bound to the person: the page never holds the secret in clear, only the QR code does)."""
    secret = totp.new_secret()
    sealed = totp.seal_secret(secret, pepper=ctx.pepper, person_id=person_id)
    return secret, base64.urlsafe_b64encode(sealed).decode()


def open_pending_totp(ctx: ServiceContext, person_id: int, sealed: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(sealed.encode()[:400])
        return totp.open_secret(raw, pepper=ctx.pepper, person_id=person_id)
    except ValueError:
        raise ValidationProblem("the authenticator form has expired; start again") from None


def _confirm_code(secret: bytes, code: str, now: datetime) -> int:
    step = totp.matching_step(secret, code, now)
    if step is None:
        raise ValidationProblem(
            "the one-time code does not match: check the authenticator app and the time"
        )
    return step


def _store_totp(
    session: Session, ctx: ServiceContext, person_id: int, secret: bytes, step: int, now: datetime
) -> None:
    row = _credential(session, person_id, now)
    row.totp_secret = totp.seal_secret(secret, pepper=ctx.pepper, person_id=person_id)
    row.totp_enrolled_at = now
    # The confirming code is spent: it does not sign anyone in afterwards.
    row.totp_last_step = step
    row.updated_at = now


def _credential(session: Session, person_id: int, now: datetime) -> Credential:
    row = session.get(Credential, person_id, with_for_update=True)
    if row is None:
        row = Credential(person_id=person_id, updated_at=now)
        session.add(row)
    return row


def _new_recovery_codes(
    session: Session, ctx: ServiceContext, person_id: int, now: datetime
) -> list[str]:
    session.execute(
        update(RecoveryCode)
        .where(RecoveryCode.person_id == person_id, RecoveryCode.used_at.is_(None))
        .values(used_at=now)
    )
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:12]
        code = f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"
        session.add(
            RecoveryCode(
                person_id=person_id,
                code_hash=recovery_hash(ctx.pepper, person_id, code),
                created_at=now,
            )
        )
        codes.append(code)
    session.flush()
    return codes


# --- the person, with the link --------------------------------------------------------------


@dataclass(frozen=True)
class Enrolled:
    person_id: int
    login: str
    recovery_codes: list[str]  # shown once, stored hashed


def complete_enrolment(
    ctx: ServiceContext,
    *,
    token: str,
    password: str,
    pending_totp: str | None,
    code: str | None,
    hash_profile: str,
) -> Enrolled:
    """The person behind a valid link sets their password and authenticator (confirmed by a
    first code) and receives recovery codes; the link is spent. All in one transaction."""
    link = open_enrolment_link(ctx, token)
    problem = passwords.password_problem(password)
    if problem:
        raise ValidationProblem(problem)
    now = ctx.clock.now()
    secret = step = None
    if pending_totp:
        secret = open_pending_totp(ctx, link.person_id, pending_totp)
        step = _confirm_code(secret, code or "", now)
    # Without an authenticator (the console always asks for one), a person whose roles need
    # a one-time code cannot sign in until they enrol one: safe either way.
    hashed = passwords.hash_password(password, hash_profile)

    def action(session: Session) -> Enrolled:
        spent = session.execute(
            update(EnrolmentLink)
            .where(
                EnrolmentLink.id == link.link_id,
                EnrolmentLink.used_at.is_(None),
                EnrolmentLink.revoked_at.is_(None),
                EnrolmentLink.expires_at > now,
            )
            .values(used_at=now)
        )
        if spent.rowcount != 1:  # type: ignore[attr-defined]
            raise NotFound(LINK_INVALID)  # another tab used it first
        row = _credential(session, link.person_id, now)
        row.password_hash = hashed
        row.password_set_at = now
        row.updated_at = now
        codes: list[str] = []
        if secret is not None and step is not None:
            _store_totp(session, ctx, link.person_id, secret, step, now)
            codes = _new_recovery_codes(session, ctx, link.person_id, now)
        _audit(
            session,
            actor=person_actor(link.person_id),
            action="enrolment.complete",
            person_id=link.person_id,
            data={"link": link.link_id, "totp": secret is not None, "recovery_codes": len(codes)},
            at=now,
        )
        return Enrolled(link.person_id, link.login, codes)

    return ctx.run_action(action)


# --- the person, signed in ------------------------------------------------------------------


def change_own_password(
    ctx: ServiceContext, *, person_id: int, current: str, new: str, hash_profile: str
) -> None:
    """A signed-in person changes their password; the current one is required."""
    with ctx.read() as session:
        row = session.get(Credential, person_id)
        stored = row.password_hash if row is not None else None
    if not passwords.verify_password(stored, current, hash_profile):
        raise ValidationProblem("the current password is not right")
    problem = passwords.password_problem(new)
    if problem:
        raise ValidationProblem(problem)
    hashed = passwords.hash_password(new, hash_profile)

    def action(session: Session) -> None:
        now = ctx.clock.now()
        row = _credential(session, person_id, now)
        row.password_hash = hashed
        row.password_set_at = now
        row.updated_at = now
        _audit(
            session,
            actor=person_actor(person_id),
            action="credential.password",
            person_id=person_id,
            data={},
            at=now,
        )

    ctx.run_action(action)


def replace_own_totp(
    ctx: ServiceContext, *, person_id: int, pending_totp: str, code: str
) -> list[str]:
    """A signed-in person moves to a new authenticator (confirmed by its first code); the
    recovery codes are renewed with it. Returns the new codes (shown once)."""
    secret = open_pending_totp(ctx, person_id, pending_totp)
    now = ctx.clock.now()
    step = _confirm_code(secret, code, now)

    def action(session: Session) -> list[str]:
        _store_totp(session, ctx, person_id, secret, step, now)
        codes = _new_recovery_codes(session, ctx, person_id, now)
        _audit(
            session,
            actor=person_actor(person_id),
            action="credential.totp",
            person_id=person_id,
            data={"recovery_codes": len(codes)},
            at=now,
        )
        return codes

    return ctx.run_action(action)


def renew_recovery_codes(ctx: ServiceContext, *, person_id: int) -> list[str]:
    """New recovery codes for a person with an authenticator (the old ones stop working)."""

    def action(session: Session) -> list[str]:
        row = session.get(Credential, person_id)
        if row is None or row.totp_secret is None:
            raise Conflict("enrol an authenticator app first")
        now = ctx.clock.now()
        codes = _new_recovery_codes(session, ctx, person_id, now)
        _audit(
            session,
            actor=person_actor(person_id),
            action="credential.recovery_codes",
            person_id=person_id,
            data={"count": len(codes)},
            at=now,
        )
        return codes

    return ctx.run_action(action)


def unused_recovery_codes(ctx: ServiceContext, person_id: int) -> int:
    with ctx.read() as session:
        return len(
            list(
                session.scalars(
                    select(RecoveryCode.id).where(
                        RecoveryCode.person_id == person_id, RecoveryCode.used_at.is_(None)
                    )
                )
            )
        )


def consume_recovery_code(
    session: Session, pepper: bytes, person_id: int, code: str, now: datetime
) -> bool:
    """Spend a recovery code in the caller's transaction; False when unknown or used."""
    spent = session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.person_id == person_id,
            RecoveryCode.code_hash == recovery_hash(pepper, person_id, code),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
    )
    return bool(spent.rowcount == 1)  # type: ignore[attr-defined]


def has_recovery_code(session: Session, pepper: bytes, person_id: int, code: str) -> bool:
    return (
        session.scalars(
            select(RecoveryCode.id).where(
                RecoveryCode.person_id == person_id,
                RecoveryCode.code_hash == recovery_hash(pepper, person_id, code),
                RecoveryCode.used_at.is_(None),
            )
        ).first()
        is not None
    )


# --- step-up --------------------------------------------------------------------------------


def step_up(ctx: ServiceContext, *, session_id: int, person_id: int, code: str) -> None:
    """A fresh second factor in a signed-in session: a TOTP code (good once) marks the
    session stepped up now. ValidationProblem when the code does not match."""
    now = ctx.clock.now()
    with ctx.read() as session:
        row = session.get(Credential, person_id)
        sealed = row.totp_secret if row is not None else None
        last = row.totp_last_step if row is not None else None
    if sealed is None:
        raise Conflict("enrol an authenticator app in My account first")
    try:
        secret = totp.open_secret(sealed, pepper=ctx.pepper, person_id=person_id)
    except ValueError:
        raise Conflict("the authenticator cannot be read; ask for a reset") from None
    step = totp.matching_step(secret, code, now)
    refused = ValidationProblem("the one-time code is not valid (or was used already)")
    if step is None or (last is not None and step <= last):
        _step_up_failed(ctx, person_id, now)
        raise refused

    def action(session: Session) -> None:
        consumed = session.execute(
            update(Credential)
            .where(Credential.person_id == person_id)
            .where((Credential.totp_last_step.is_(None)) | (Credential.totp_last_step < step))
            .values(totp_last_step=step, updated_at=now)
        )
        if consumed.rowcount != 1:  # type: ignore[attr-defined]
            raise refused
        session.execute(
            update(WebSession)
            .where(WebSession.id == session_id, WebSession.person_id == person_id)
            .values(stepped_up_at=now)
        )
        _audit(
            session,
            actor=person_actor(person_id),
            action="stepup",
            person_id=person_id,
            data={"session": session_id, "method": "totp"},
            at=now,
        )

    ctx.run_action(action)


def _step_up_failed(ctx: ServiceContext, person_id: int, now: datetime) -> None:
    def action(session: Session) -> None:
        _audit(
            session,
            actor=person_actor(person_id),
            action="stepup.failed",
            person_id=person_id,
            data={"method": "totp"},
            at=now,
        )

    ctx.run_action(action)


def stepped_up_since(ctx: ServiceContext, session_id: int, since: datetime) -> bool:
    with ctx.read() as session:
        row = session.get(WebSession, session_id)
        return bool(
            row is not None and row.stepped_up_at is not None and row.stepped_up_at >= since
        )
