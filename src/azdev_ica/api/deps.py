"""Dependencies: the service context, the caller, and each route's declared permission.

FastAPI runs a plain `def` dependency in its thread pool, one hand-off per dependency and
request (tens of microseconds of CPU each, and a wake-up of a worker thread); dependencies that
do no I/O are therefore `async def` and run on the event loop. Only the one that reads the
database stays a plain function: a route's permission check (`require`), which authenticates
the caller and checks the permission in one hand-off. Each dependency also costs FastAPI's
resolution on every request, so the caller is found from the request itself (its
`Authorization` header, the service context on the app), not from dependencies of its own.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Annotated, Any, get_args, get_origin
from urllib.parse import parse_qsl

from fastapi import Depends, Header, Request, params
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from azdev_ica.api.routing import QuickMatchRoute
from azdev_ica.auth.jwt_bearer import (
    EntraUser,
    IdentityNotAuthorised,
    JwtVerifier,
    KeysUnavailable,
    TokenRejected,
    looks_like_jwt,
)
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.errors import (
    CsrfRefused,
    Forbidden,
    NotReady,
    Unauthenticated,
    UnsupportedMediaType,
    ValidationProblem,
)
from azdev_ica.services.apikeys import authenticate_api_key
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.people import authenticate_personal_token, is_personal_token
from azdev_ica.services.sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    SessionRules,
    authenticate_session,
    csrf_matches,
)

log = logging.getLogger(__name__)

PERMISSION_ATTR = "ica_permission"
PUBLIC = "public"
# A provider's webhook: no caller credentials, the body's signature is checked instead.
SIGNED = "signed"


async def get_ctx(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ServiceContext, Depends(get_ctx)]


def _credential(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("send an API key as a Bearer token or as the Basic password")
    scheme, _, value = authorization.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        # Azure DevOps checks can only send Basic: the key is the password, the user is ignored.
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("the credentials are not valid") from None
        _, _, password = decoded.partition(":")
        if password:
            return password
    raise Unauthenticated("the credentials are not valid")


def current_principal(request: Request) -> Principal:
    """The caller of `request`, authenticated once per request (kept on `request.state`)."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    ctx: ServiceContext = request.app.state.ctx
    authorization = request.headers.get("authorization")
    session_cookie = request.cookies.get(SESSION_COOKIE)
    if authorization is None and session_cookie:
        # A browser session (the web UI, or a page's own fetches): see _authenticate_session.
        principal = _authenticate_session(request, ctx, session_cookie)
        request.state.principal = principal
        return principal
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and looks_like_jwt(value.strip()):
        principal = _authenticate_jwt(request.app.state.jwt_verifier, value.strip(), ctx)
    elif scheme.lower() == "bearer" and is_personal_token(value.strip()):
        principal = authenticate_personal_token(ctx, value.strip())
    else:
        touch_every = timedelta(seconds=request.app.state.settings.api_key_touch_seconds)
        principal = authenticate_api_key(ctx, _credential(authorization), touch_every=touch_every)
    request.state.principal = principal
    return principal


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _authenticate_session(request: Request, ctx: ServiceContext, cookie: str) -> Principal:
    """The person behind a session cookie. A state-changing request made with the cookie
    must come from ICA's own pages: the browser's Origin (and Sec-Fetch-Site) must not name
    another site, and the session's CSRF token must come as the `X-CSRF-Token` header or,
    for the UI's forms, as the form's `csrf_token` field (read by `read_form`)."""
    rules = SessionRules.from_settings(request.app.state.settings)
    signed_in = authenticate_session(ctx, cookie, rules)
    request.state.web_session = signed_in
    if request.method not in SAFE_METHODS:
        if not same_origin(request):
            raise CsrfRefused("the request came from another site")
        candidate = request.headers.get(CSRF_HEADER) or getattr(request.state, "form_csrf", None)
        if not csrf_matches(ctx.pepper, cookie, candidate):
            raise CsrfRefused("send this session's CSRF token (X-CSRF-Token)")
    return signed_in.principal


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another origin or site.

    `Origin: null` (what Chromium sends for a form posted from a page whose referrer policy
    hides the origin, or after a cross-site redirect) proves nothing by itself: it is taken
    only together with the browser's own `Sec-Fetch-Site: same-origin`, which a page on
    another site cannot forge."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return fetch_site == "same-origin"
    own = {f"{request.url.scheme}://{request.url.netloc}"}
    own.add(f"https://{request.app.state.settings.public_host}")
    return origin in own


async def read_form(request: Request) -> None:
    """Parse a UI form (application/x-www-form-urlencoded) before the caller is checked, so
    its CSRF field can be; other bodies are left alone. Bounded by the body-size limit."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    form: dict[str, str] = {}
    if content_type == "application/x-www-form-urlencoded":
        body = await request.body()
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise ValidationProblem("the form could not be read") from None
        form = dict(pairs)
    request.state.form = form
    request.state.form_csrf = form.get(CSRF_FIELD)


def _authenticate_jwt(verifier: JwtVerifier, token: str, ctx: ServiceContext) -> Principal:
    # The caller gets a generic answer; which check failed is logged here only, so a probe
    # learns nothing about issuers, keys or claim rules.
    try:
        verified = verifier.verify(token)
        if isinstance(verified, EntraUser):
            return _entra_person(ctx, verified)
        return verified
    except TokenRejected as exc:
        log.warning("bearer token refused: %s", exc)
        raise Unauthenticated("the credentials are not valid") from None
    except IdentityNotAuthorised as exc:
        log.warning("bearer token not authorised: %s", exc)
        raise Forbidden("this identity is not authorised") from None
    except KeysUnavailable as exc:
        log.error("bearer token not checked: %s", exc)
        raise NotReady("the credentials cannot be checked now; retry later") from None


def _entra_person(ctx: ServiceContext, user: EntraUser) -> Principal:
    """The person linked to a delegated Entra ID token's object id (in the issuer's tenant),
    with the grants they hold now; a token nobody is linked to maps to no one (403)."""
    from azdev_ica.services.people import person_for_provider_id, principal_for_person

    with ctx.read() as session:
        person = person_for_provider_id(session, "entra", user.oid)
        if person is None and user.oid != user.oid.lower():
            person = person_for_provider_id(session, "entra", user.oid.lower())
        if person is None:
            raise IdentityNotAuthorised(
                f"Entra user {user.oid} of {user.issuer_name} is linked to no person"
            )
        # A disabled person is refused here (401), as their other credentials are.
        return principal_for_person(session, person, ctx.clock.now())


def authorise(request: Request, permission: Permission) -> Principal:
    """The caller of `request`, who must hold `permission` (401 without valid credentials, 403
    when their roles do not grant it). Reads the database: call it in a worker thread."""
    principal = current_principal(request)
    if not principal.can(permission):
        held = ", ".join(sorted(role.value for role in principal.roles)) or "no role"
        raise Forbidden(f"{held} does not grant {permission.value}")
    return principal


def require(permission: Permission) -> Callable[[Request], Principal]:
    """The dependency a route declares: the caller must hold `permission` (authenticated and
    checked in one hand-off to the thread pool; on a `OneHandOffRoute`, in the endpoint's)."""

    def dependency(request: Request) -> Principal:
        return authorise(request, permission)

    setattr(dependency, PERMISSION_ATTR, permission.value)
    setattr(dependency, _REQUIRED_ATTR, permission)
    dependency.__name__ = f"require_{permission.name.lower()}"
    return dependency


_REQUIRED_ATTR = "ica_required_permission"
_ONE_HAND_OFF_ATTR = "ica_one_hand_off"


_REQUEST = "ica_request"


def _one_hand_off(endpoint: Callable[..., Any]) -> tuple[Callable[..., Any], Permission | None]:
    """A plain `def` endpoint whose caller is a `require` dependency, as an `async def` endpoint
    that authenticates the caller and runs the original in one call to the thread pool; the
    permission. The caller and the service context (`Ctx`) are given to the endpoint by the
    wrapper, not resolved by FastAPI (each dependency costs its resolution on every request):
    FastAPI sees the request instead, and the permission is declared on the wrapper itself (the
    RBAC walk, the access matrix and the OpenAPI file see the route as before). Anything else
    is returned as it is, with None."""
    if getattr(endpoint, _ONE_HAND_OFF_ATTR, None) is not None:  # a route copied (app._flat)
        return endpoint, getattr(endpoint, _ONE_HAND_OFF_ATTR)
    if inspect.iscoroutinefunction(endpoint):
        return endpoint, None
    signature = inspect.signature(endpoint, eval_str=True)
    caller: tuple[str, Permission] | None = None
    contexts: list[str] = []
    parameters = []
    for parameter in signature.parameters.values():
        depends = _annotated_depends(parameter.annotation)
        permission = getattr(depends.dependency, _REQUIRED_ATTR, None) if depends else None
        if permission is not None and caller is None:
            caller = (parameter.name, permission)
        elif depends is not None and depends.dependency is get_ctx:
            contexts.append(parameter.name)
        else:
            parameters.append(parameter)
    if caller is None or any(parameter.name == _REQUEST for parameter in parameters):
        return endpoint, None
    name, permission = caller
    # FastAPI gives the request to one parameter only: the endpoint's own, when it has one.
    own = next((p.name for p in parameters if p.annotation is Request), None)
    if own is None:
        parameters.append(
            inspect.Parameter(_REQUEST, inspect.Parameter.KEYWORD_ONLY, annotation=Request)
        )

    async def in_one_hand_off(**values: Any) -> Any:
        request: Request = values.pop(_REQUEST) if own is None else values[own]

        def call() -> Any:
            values[name] = authorise(request, permission)
            for context in contexts:
                values[context] = request.app.state.ctx
            return endpoint(**values)

        return await run_in_threadpool(call)

    # No __wrapped__: FastAPI would unwrap it and take the endpoint for a plain function.
    in_one_hand_off.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=sorted(parameters, key=lambda parameter: parameter.kind)
    )
    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(in_one_hand_off, attribute, getattr(endpoint, attribute))
    setattr(in_one_hand_off, PERMISSION_ATTR, permission.value)
    setattr(in_one_hand_off, _ONE_HAND_OFF_ATTR, permission)
    return in_one_hand_off, permission


def _annotated_depends(annotation: Any) -> Any:
    if get_origin(annotation) is not Annotated:
        return None
    return next(
        (extra for extra in get_args(annotation)[1:] if isinstance(extra, params.Depends)), None
    )


class OneHandOffRoute(QuickMatchRoute):
    """A route that costs one hand-off to the thread pool per request. FastAPI runs each plain
    `def` dependency and a plain `def` endpoint in a worker thread of its own: for a route with
    a permission (`require`, which reads the caller's key) and a plain endpoint, two hand-offs,
    each a wake-up of a worker thread and a switch of the GIL. Here the caller is authenticated
    and checked in the endpoint's own call to the thread pool, after the body and the other
    parameters are validated on the event loop.

    The order of the answers stays as it was: a body that is not JSON (415) or not readable
    (400) first, then the caller (401, 403), then the body and parameters (422). When
    validation fails before the caller was checked, the caller is checked first (a second
    hand-off, for a refused request only), and its 401 or 403 is the answer."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        endpoint, self._permission = _one_hand_off(endpoint)
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        permission = self._permission
        if permission is None:
            return handler

        async def caller_first(request: Request) -> Response:
            try:
                return await handler(request)
            except (RequestValidationError, ValidationProblem) as exc:
                unreadable = isinstance(exc, RequestValidationError) and any(
                    error.get("type") == "json_invalid" for error in exc.errors()
                )
                if not unreadable and getattr(request.state, "principal", None) is None:
                    await run_in_threadpool(authorise, request, permission)
                raise

        return caller_first


def public() -> Callable[[], Awaitable[None]]:
    """Declares a route open to anyone (health checks); deny-by-default tests accept only this."""

    async def dependency() -> None:
        return None

    setattr(dependency, PERMISSION_ATTR, PUBLIC)
    return dependency


def signed(check: Callable[..., Any]) -> Callable[..., Any]:
    """Declares a route authenticated by a signature over its body (a provider's webhook, e.g.
    GitHub's HMAC), not by a caller's credentials: `check` is the dependency that verifies it
    and raises `Unauthenticated` when it does not hold."""
    setattr(check, PERMISSION_ATTR, SIGNED)
    return check


async def json_body(request: Request) -> None:
    """A write takes a JSON body: any other media type is a 415, not a puzzling 422."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    kind, _, subtype = media_type.partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        raise UnsupportedMediaType(
            f"send the body as application/json, not {media_type or 'without a Content-Type'}"
        )


_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


async def idempotency_key(
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Retries with the same key get the first answer (1-255 visible ASCII)",
            # Declared in the OpenAPI file; checked below, to answer with its own problem.
            json_schema_extra={"pattern": _IDEMPOTENCY_KEY_RE.pattern},
        ),
    ] = None,
) -> str | None:
    if idempotency_key is not None and not _IDEMPOTENCY_KEY_RE.match(idempotency_key):
        raise ValidationProblem("Idempotency-Key must be 1-255 visible ASCII characters")
    return idempotency_key


IdempotencyKey = Annotated[str | None, Depends(idempotency_key)]


def declared_permission(dependant: Any) -> str | None:
    """The permission declared anywhere in a route's dependency tree (used by the RBAC test)."""
    found = getattr(dependant.call, PERMISSION_ATTR, None) if dependant.call else None
    if found:
        return str(found)
    for sub in dependant.dependencies:
        found = declared_permission(sub)
        if found:
            return found
    return None
