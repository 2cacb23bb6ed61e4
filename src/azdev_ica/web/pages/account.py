"""Credentials set only by their person: the enrolment link's page (public: the link is the
key), and in My account the password change, a new authenticator, recovery codes; the
step-up page that signing asks for (`azdev_ica.web.stepup`).

The TOTP secret reaches the browser only as the QR code (SVG, rendered by segno) and its
text fallback; between the page and the first code it travels sealed (encrypted, bound to
the person) in a hidden field, so the server keeps no half-enrolled state.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

import segno
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from markupsafe import Markup

from azdev_ica.api.deps import Ctx, public, read_form, require, same_origin
from azdev_ica.api.routes.ui import login_redirect, safe_next
from azdev_ica.auth import totp
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.errors import Conflict, CsrfRefused, PersonRequired, ValidationProblem
from azdev_ica.services.enrolment import (
    change_own_password,
    complete_enrolment,
    new_pending_totp,
    open_enrolment_link,
    open_pending_totp,
    renew_recovery_codes,
    replace_own_totp,
    step_up,
)
from azdev_ica.web.render import page, redirect

router = APIRouter(include_in_schema=False)
Self = Annotated[Principal, Depends(require(Permission.SELF))]


def _form(request: Request) -> dict[str, str]:
    form: dict[str, str] = getattr(request.state, "form", {})
    return form


def _issuer(request: Request) -> str:
    return f"ICA {request.app.state.settings.public_host}"


def authenticator_view(request: Request, secret: bytes, account: str) -> dict[str, Any]:
    """The QR code (inline SVG) and its text fallback for `secret`."""
    uri = totp.provisioning_uri(secret, account=account, issuer=_issuer(request))
    svg = segno.make(uri, error="m").svg_inline(
        scale=4, title="QR code for your authenticator app", svgclass="qr"
    )
    text = base64.b32encode(secret).decode().rstrip("=")
    grouped = " ".join(text[i : i + 4] for i in range(0, len(text), 4))
    return {"qr_svg": Markup(svg), "totp_text": grouped, "totp_uri": uri}  # noqa: S704 - segno's own SVG


def _hash_profile(request: Request) -> str:
    profile: str = request.app.state.settings.password_hash_profile
    return profile


def _person(principal: Principal) -> int:
    if not principal.is_person or principal.person_id is None:
        raise PersonRequired("only a signed-in person has credentials")
    if principal.claim("via") == "personal_token":
        raise PersonRequired("sign in to the console to change your credentials")
    return principal.person_id


# --- the enrolment link ---------------------------------------------------------------------


def _enrol_page(
    request: Request, ctx: Any, token: str, *, pending: str | None, error: str | None = None
) -> Response:
    link = open_enrolment_link(ctx, token)
    if pending:
        secret = open_pending_totp(ctx, link.person_id, pending)
    else:
        secret, pending = new_pending_totp(ctx, link.person_id)
    return page(
        request,
        "enrol.html",
        {
            "link": link,
            "token": token,
            "pending": pending,
            "error": error,
            **authenticator_view(request, secret, link.login),
        },
        status=200 if error is None else 400,
    )


@router.get("/ui/enrol/{token}", dependencies=[Depends(public())])
def enrol_form(request: Request, ctx: Ctx, token: str) -> Response:
    return _enrol_page(request, ctx, token, pending=None)


@router.post("/ui/enrol/{token}", dependencies=[Depends(public()), Depends(read_form)])
def enrol_submit(request: Request, ctx: Ctx, token: str) -> Response:
    if not same_origin(request):
        raise CsrfRefused("the request came from another site")
    form = _form(request)
    pending = form.get("pending", "")[:400]
    password = form.get("password", "")[:2000]
    if password != form.get("password2", "")[:2000]:
        return _enrol_page(request, ctx, token, pending=pending, error="the two passwords differ")
    try:
        enrolled = complete_enrolment(
            ctx,
            token=token,
            password=password,
            pending_totp=pending or None,
            code=form.get("code", "")[:20],
            hash_profile=_hash_profile(request),
        )
    except ValidationProblem as exc:
        return _enrol_page(request, ctx, token, pending=pending, error=exc.detail)
    return page(request, "enrolled.html", {"enrolled": enrolled})


# --- My account: password, authenticator, recovery codes -------------------------------------


@router.get("/ui/account/security", dependencies=[Depends(login_redirect)])
def security(request: Request, ctx: Ctx, principal: Self) -> Response:
    person_id = _person(principal)
    return _security_page(request, ctx, principal, person_id)


def _security_page(
    request: Request,
    ctx: Any,
    principal: Principal,
    person_id: int,
    *,
    pending: str | None = None,
    status: int = 200,
    **extra: Any,
) -> Response:
    from azdev_ica.services.enrolment import unused_recovery_codes

    if pending:
        secret = open_pending_totp(ctx, person_id, pending)
    else:
        secret, pending = new_pending_totp(ctx, person_id)
    return page(
        request,
        "security.html",
        {
            "pending": pending,
            "recovery_left": unused_recovery_codes(ctx, person_id),
            **authenticator_view(request, secret, principal.name),
            **extra,
        },
        status=status,
    )


@router.post("/ui/account/password", dependencies=[Depends(read_form), Depends(login_redirect)])
def password_change(request: Request, ctx: Ctx, principal: Self) -> Response:
    person_id = _person(principal)
    form = _form(request)
    new = form.get("new_password", "")[:2000]
    try:
        if new != form.get("new_password2", "")[:2000]:
            raise ValidationProblem("the two new passwords differ")
        change_own_password(
            ctx,
            person_id=person_id,
            current=form.get("current_password", "")[:2000],
            new=new,
            hash_profile=_hash_profile(request),
        )
    except ValidationProblem as exc:
        return _security_page(
            request, ctx, principal, person_id, password_error=exc.detail, status=400
        )
    return _security_page(request, ctx, principal, person_id, notice="Your password is changed.")


@router.post("/ui/account/totp", dependencies=[Depends(read_form), Depends(login_redirect)])
def totp_replace(request: Request, ctx: Ctx, principal: Self) -> Response:
    person_id = _person(principal)
    form = _form(request)
    pending = form.get("pending", "")[:400]
    try:
        codes = replace_own_totp(
            ctx, person_id=person_id, pending_totp=pending, code=form.get("code", "")[:20]
        )
    except ValidationProblem as exc:
        return _security_page(
            request, ctx, principal, person_id, pending=pending, totp_error=exc.detail, status=400
        )
    return _security_page(
        request,
        ctx,
        principal,
        person_id,
        recovery_codes=codes,
        notice="Your new authenticator is enrolled; the old one no longer works.",
    )


@router.post(
    "/ui/account/recovery-codes", dependencies=[Depends(read_form), Depends(login_redirect)]
)
def recovery_codes(request: Request, ctx: Ctx, principal: Self) -> Response:
    person_id = _person(principal)
    try:
        codes = renew_recovery_codes(ctx, person_id=person_id)
    except Conflict as exc:
        return _security_page(
            request, ctx, principal, person_id, recovery_error=exc.detail, status=409
        )
    return _security_page(request, ctx, principal, person_id, recovery_codes=codes)


# --- step-up --------------------------------------------------------------------------------


@router.get("/ui/stepup", dependencies=[Depends(login_redirect)])
def stepup_form(request: Request, principal: Self, next: str | None = None) -> Response:
    _person(principal)
    return page(request, "stepup.html", {"next": safe_next(next), "error": None})


@router.post("/ui/stepup", dependencies=[Depends(read_form), Depends(login_redirect)])
def stepup_submit(request: Request, ctx: Ctx, principal: Self) -> Response:
    person_id = _person(principal)
    form = _form(request)
    next_path = safe_next(form.get("next"))
    signed_in = getattr(request.state, "web_session", None)
    if signed_in is None:
        raise PersonRequired("step-up is for a signed-in browser session")
    try:
        step_up(
            ctx,
            session_id=signed_in.session_id,
            person_id=person_id,
            code=form.get("code", "")[:20],
        )
    except (ValidationProblem, Conflict) as exc:
        return page(request, "stepup.html", {"next": next_path, "error": exc.detail}, status=400)
    return redirect(next_path)
