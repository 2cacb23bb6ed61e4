"""The web UI for people: sign-in (password + one-time code, or OpenID Connect), sign-out,
and My account (who am I, my grants and my personal tokens). The console's other pages are in
`azdev_ica.web.pages`; both render through `azdev_ica.web.render` (docs/console.md).

Every form carries a CSRF token: the session's own for signed-in forms (checked by
`current_principal`), a double-submit cookie for the sign-in form (login CSRF). Every answer is
`no-store` and sends a strict Content-Security-Policy.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from azdev_ica.api.deps import Ctx, current_principal, public, read_form, require, same_origin
from azdev_ica.api.hardening import client_address
from azdev_ica.auth.oidc_login import (
    PENDING_COOKIE,
    LoginRefused,
    OidcLoginClient,
    PendingLogin,
    open_pending,
    seal_pending,
)
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.errors import (
    CsrfRefused,
    Forbidden,
    NotFound,
    PersonRequired,
    SignInFailed,
    SignInLocked,
    TooManyRequests,
    Unauthenticated,
    ValidationProblem,
)
from azdev_ica.services.credentials import (
    SignInRules,
    personal_tokens,
    sign_in_with_password,
    sign_in_with_provider,
)
from azdev_ica.services.people import (
    issue_personal_token,
    person_actor,
    revoke_personal_token,
)
from azdev_ica.services.sessions import CSRF_FIELD, SESSION_COOKIE, SessionRules, end_session
from azdev_ica.web.render import page, redirect, wants_html

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ui", include_in_schema=False)

LOGIN_CSRF_COOKIE = "__Host-ica_login"
HOME = "/ui/"
ACCOUNT = "/ui/account"
MAX_TOKEN_HOURS = 720

Public = Depends(public())
Self = Annotated[Principal, Depends(require(Permission.SELF))]

# The callback URL carries the authorization code: never send it on as a Referer.
_NO_REFERRER = {"Referrer-Policy": "no-referrer"}

# Where `next` may lead after sign-in: the console's own pages (docs/console.md).
CONSOLE_PREFIXES = (
    "/ui",
    "/approvals",
    "/runs",
    "/overrides",
    "/inventory",
    "/dashboards",
    "/audit",
    "/incidents",
    "/dr",
    "/policy",
    "/reports",
)


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: a path of this UI only, never another site (an open
    redirect would let a phishing link borrow ICA's sign-in page)."""
    if not value or len(value) > 500 or not value.isascii() or not value.isprintable():
        return HOME
    if "\\" in value or not value.startswith("/"):
        return HOME
    parts = urlsplit(value)
    if (
        parts.scheme
        or parts.netloc
        or not any(
            parts.path == prefix or parts.path.startswith(prefix + "/")
            for prefix in CONSOLE_PREFIXES
        )
    ):
        return HOME
    if any(segment in ("..", ".") for segment in parts.path.split("/")):
        return HOME
    return value


def _wants_html(request: Request) -> bool:
    return wants_html(request)


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    return page(request, name, context, status=status)


def _redirect(location: str, headers: dict[str, str] | None = None) -> RedirectResponse:
    return redirect(location, headers)


def _set_cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
    # __Host-: Secure, Path=/, no Domain, so no sibling host can plant or read it.
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="lax"
    )


def _clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="lax")


def _oidc_client(request: Request) -> OidcLoginClient | None:
    config = request.app.state.settings.oidc_login
    if config is None:
        return None
    client: OidcLoginClient | None = getattr(request.app.state, "oidc_login_client", None)
    if client is None:
        client = OidcLoginClient(config, clock=request.app.state.ctx.clock)
        request.app.state.oidc_login_client = client
    return client


def _form(request: Request) -> dict[str, str]:
    form: dict[str, str] = getattr(request.state, "form", {})
    return form


def login_redirect(request: Request) -> None:
    """A browser that is not signed in is sent to the sign-in page (an API client gets the
    401 problem from the route's own permission check)."""
    if not _wants_html(request):
        return
    try:
        current_principal(request)
    except Unauthenticated:
        # Back to the page after sign-in; a form post is not repeated (its page instead).
        target = quote(safe_next(request.url.path) if request.method == "GET" else HOME, safe="/")
        raise _SignInFirst(f"/ui/login?next={target}") from None


class _SignInFirst(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def _sign_in_first(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _SignInFirst)
    return _redirect(exc.location)


def install_ui(app: FastAPI) -> None:
    """The UI's redirect-to-sign-in answer on `app` (its routes, `router`, are shared by every
    app of the process: `azdev_ica.api.app`)."""
    app.add_exception_handler(_SignInFirst, _sign_in_first)


# --- signing in -----------------------------------------------------------------------------


def _login_page(
    request: Request, *, next_path: str, error: str | None = None, status: int = 200
) -> Response:
    token = secrets.token_urlsafe(32)
    response = _page(
        request,
        "login.html",
        {
            "csrf_token": token,
            "next": next_path,
            "error": error,
            "oidc": request.app.state.settings.oidc_login is not None,
        },
        status,
    )
    _set_cookie(response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.get("/login", dependencies=[Public])
def login_form(request: Request, next: str | None = None) -> Response:
    return _login_page(request, next_path=safe_next(next))


@router.post("/login", dependencies=[Public, Depends(read_form)])
def login_submit(request: Request, ctx: Ctx) -> Response:
    form = _form(request)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    sent = form.get(CSRF_FIELD, "")
    if not same_origin(request):
        raise CsrfRefused("the request came from another site")
    if not cookie or not sent or not hmac.compare_digest(cookie, sent):
        raise CsrfRefused("the sign-in form has expired; reload it and try again")
    settings = request.app.state.settings
    next_path = safe_next(form.get("next"))
    try:
        signed_in = sign_in_with_password(
            ctx,
            login=form.get("login", "")[:300],
            password=form.get("password", "")[:2000],
            code=form.get("code", "")[:20] or None,
            rules=SignInRules.from_settings(settings),
            session_rules=SessionRules.from_settings(settings),
            previous_session=request.cookies.get(SESSION_COOKIE),
            client_address=client_address(request),
            guard=request.app.state.signin_guard,
        )
    except (SignInFailed, SignInLocked, TooManyRequests) as exc:
        if _wants_html(request):
            page = _login_page(request, next_path=next_path, error=exc.detail, status=exc.status)
            if isinstance(exc, TooManyRequests):
                page.headers["Retry-After"] = str(exc.extensions["retry_after_seconds"])
            return page
        raise
    response = _redirect(next_path)
    _set_cookie(response, SESSION_COOKIE, signed_in.token)
    _clear_cookie(response, LOGIN_CSRF_COOKIE)
    return response


@router.get("/login/oidc", dependencies=[Public])
def login_oidc(request: Request, next: str | None = None) -> Response:
    client = _oidc_client(request)
    if client is None:
        raise NotFound("no identity provider is configured")
    ctx = request.app.state.ctx
    pending = PendingLogin.start(next_path=safe_next(next), now=ctx.clock.now())
    try:
        location = client.authorization_url(pending)
    except LoginRefused as exc:
        log.warning("OpenID sign-in not started: %s", exc)
        raise Unauthenticated("the identity provider cannot be reached; try later") from None
    response = _redirect(location)
    _set_cookie(response, PENDING_COOKIE, seal_pending(pending, ctx.pepper), max_age=600)
    return response


@router.get("/auth/callback", dependencies=[Public])
def auth_callback(
    request: Request,
    ctx: Ctx,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
    iss: str | None = None,
) -> Response:
    client = _oidc_client(request)
    if client is None:
        raise NotFound("no identity provider is configured")
    refused = SignInFailed("the sign-in with the identity provider failed; start again")
    if error:
        log.info("OpenID provider answered error=%.100s", error)
        raise refused
    if iss is not None and iss != client.config.issuer:
        # RFC 9207: an answer naming another issuer is a mix-up attempt.
        log.warning("OpenID callback names another issuer")
        raise refused
    try:
        pending = open_pending(request.cookies.get(PENDING_COOKIE), ctx.pepper, ctx.clock.now())
        verified = client.complete(pending=pending, code=code or "", state=state or "")
    except LoginRefused as exc:
        log.warning("OpenID sign-in refused: %s", exc)
        raise refused from None
    config = client.config
    claims = verified.claims
    settings = request.app.state.settings

    def text(name: str) -> str | None:
        value = claims.get(name)
        return value if isinstance(value, str) and value else None

    signed_in = sign_in_with_provider(
        ctx,
        provider=config.provider,
        subject=verified.subject,
        login=text(config.login_claim),
        display_name=text(config.name_claim),
        email=text("email"),
        extra_grants=config.grants_for(client.groups(claims)),
        create=config.create_persons,
        session_rules=SessionRules.from_settings(settings),
        previous_session=request.cookies.get(SESSION_COOKIE),
    )
    response = _redirect(safe_next(verified.next), _NO_REFERRER)
    _set_cookie(response, SESSION_COOKIE, signed_in.token)
    _clear_cookie(response, PENDING_COOKIE)
    return response


# --- signed in ------------------------------------------------------------------------------


def _csrf(request: Request) -> str | None:
    signed_in = getattr(request.state, "web_session", None)
    return signed_in.csrf_token if signed_in is not None else None


def _account(request: Request, ctx: Ctx, principal: Principal, **extra: Any) -> Response:
    tokens = personal_tokens(ctx, principal.person_id) if principal.is_person else []
    return _page(
        request,
        "account.html",
        {
            "principal": principal,
            "grants": sorted(
                principal.grants, key=lambda grant: (grant.role.value, grant.tenant or "")
            ),
            "tokens": tokens,
            "now": ctx.clock.now(),
            "csrf_token": _csrf(request),
            "csrf_field": CSRF_FIELD,
            **extra,
        },
    )


@router.get("/account", dependencies=[Depends(login_redirect)])
def account(request: Request, ctx: Ctx, principal: Self) -> Response:
    return _account(request, ctx, principal)


def _person_only(principal: Principal) -> int:
    if not principal.is_person or principal.person_id is None:
        raise PersonRequired("only a signed-in person has personal tokens")
    if principal.claim("via") == "personal_token":
        # A token cannot mint or manage tokens: a stolen one must not outlive its expiry.
        raise Forbidden("sign in to manage personal tokens; a token cannot")
    return principal.person_id


@router.post("/tokens", dependencies=[Depends(read_form), Depends(login_redirect)])
def create_token(request: Request, ctx: Ctx, principal: Self) -> Response:
    person_id = _person_only(principal)
    form = _form(request)
    try:
        hours = float(form.get("hours", "12"))
    except ValueError:
        raise ValidationProblem("hours must be a number") from None
    if not 0 < hours <= MAX_TOKEN_HOURS:
        raise ValidationProblem(f"a personal token lives 1 to {MAX_TOKEN_HOURS} hours")
    issued = issue_personal_token(
        ctx,
        actor=person_actor(person_id),
        login=principal.name,
        name=form.get("name", ""),
        ttl=timedelta(hours=hours),
    )
    return _account(request, ctx, principal, issued=issued)


@router.post("/tokens/{prefix}/revoke", dependencies=[Depends(read_form), Depends(login_redirect)])
def revoke_token(request: Request, ctx: Ctx, principal: Self, prefix: str) -> Response:
    person_id = _person_only(principal)
    revoke_personal_token(ctx, actor=person_actor(person_id), prefix=prefix, person_id=person_id)
    return _redirect(ACCOUNT)


@router.post("/logout", dependencies=[Depends(read_form), Depends(login_redirect)])
def logout(request: Request, ctx: Ctx, principal: Self) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and getattr(request.state, "web_session", None) is not None:
        end_session(ctx, cookie)
    response = _redirect("/ui/login")
    _clear_cookie(response, SESSION_COOKIE)
    return response
