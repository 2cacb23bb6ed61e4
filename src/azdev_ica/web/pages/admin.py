"""Administration: people (add with an enrolment link, reset, disable, grants).

Same permission, scoping and services as the API's `/people` routes: an administrator for
every tenant sees and manages everyone; a tenant administrator sees the grants of its own
tenants, grants and revokes only there, and resets only people whose every grant lies in its
tenants. An administrator never sets or learns a credential: adding or resetting a person
shows a single-use enrolment link, once.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from azdev_ica.api.deps import Ctx, read_form, require
from azdev_ica.api.routes.ui import login_redirect
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission, Role
from azdev_ica.errors import IcaError
from azdev_ica.services.enrolment import (
    IssuedLink,
    issue_enrolment_link,
    link_ttl,
    reset_credentials,
)
from azdev_ica.services.people import (
    create_person,
    disable_person,
    grant_role,
    list_people,
    revoke_grant,
)
from azdev_ica.web.render import page

router = APIRouter(include_in_schema=False)
UserAdmin = Annotated[Principal, Depends(require(Permission.USER_ADMIN))]
PEOPLE = "/ui/admin/people"


def _form(request: Request) -> dict[str, str]:
    form: dict[str, str] = getattr(request.state, "form", {})
    return form


def _people_page(
    request: Request,
    ctx: Any,
    principal: Principal,
    *,
    issued: IssuedLink | None = None,
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    scope = principal.scope(Permission.USER_ADMIN)
    rows = []
    for view in list_people(ctx, include_disabled=True):
        grants = [g for g in view.grants if scope is None or g.tenant in scope]
        if scope is not None and not grants:
            continue  # as the API: a tenant administrator sees its tenants' people only
        rows.append(
            {
                "person": view.person,
                "disabled": view.person.disabled_at is not None,
                "grants": grants,
            }
        )
    settings = request.app.state.settings
    return page(
        request,
        "admin_people.html",
        {
            "rows": rows,
            "roles": [role.value for role in Role],
            "tenants": sorted(scope) if scope is not None else None,
            "all_tenants": scope is None,
            "issued": issued,
            "issued_url": issued.url(settings.resolved_public_url()) if issued else None,
            "error": error,
            "notice": notice,
        },
        status=status,
    )


@router.get(PEOPLE, dependencies=[Depends(login_redirect)])
def people(request: Request, ctx: Ctx, principal: UserAdmin) -> Response:
    return _people_page(request, ctx, principal)


def _refusal(request: Request, ctx: Any, principal: Principal, exc: IcaError) -> Response:
    """A refusal the administrator reads on the page (status as the API's problem)."""
    return _people_page(request, ctx, principal, error=exc.detail, status=exc.status)


@router.post(PEOPLE, dependencies=[Depends(read_form), Depends(login_redirect)])
def add(request: Request, ctx: Ctx, principal: UserAdmin) -> Response:
    form = _form(request)
    settings = request.app.state.settings
    try:
        person = create_person(
            ctx,
            actor=principal.actor,
            login=form.get("login", "")[:300],
            display_name=form.get("display_name", "")[:300],
            email=form.get("email", "").strip()[:320] or None,
        )
        issued = issue_enrolment_link(
            ctx, actor=principal.actor, login=person.login, ttl=link_ttl(settings), by=principal
        )
    except IcaError as exc:
        return _refusal(request, ctx, principal, exc)
    return _people_page(request, ctx, principal, issued=issued)


@router.post(PEOPLE + "/{login}/enrol", dependencies=[Depends(read_form), Depends(login_redirect)])
def new_link(request: Request, ctx: Ctx, principal: UserAdmin, login: str) -> Response:
    settings = request.app.state.settings
    try:
        issued = issue_enrolment_link(
            ctx, actor=principal.actor, login=login, ttl=link_ttl(settings), by=principal
        )
    except IcaError as exc:
        return _refusal(request, ctx, principal, exc)
    return _people_page(request, ctx, principal, issued=issued)


@router.post(PEOPLE + "/{login}/reset", dependencies=[Depends(read_form), Depends(login_redirect)])
def reset(request: Request, ctx: Ctx, principal: UserAdmin, login: str) -> Response:
    settings = request.app.state.settings
    try:
        issued = reset_credentials(
            ctx,
            actor=principal.actor,
            login=login,
            reason=_form(request).get("reason", "")[:1000],
            ttl=link_ttl(settings),
            by=principal,
        )
    except IcaError as exc:
        return _refusal(request, ctx, principal, exc)
    return _people_page(request, ctx, principal, issued=issued)


@router.post(
    PEOPLE + "/{login}/disable", dependencies=[Depends(read_form), Depends(login_redirect)]
)
def disable(request: Request, ctx: Ctx, principal: UserAdmin, login: str) -> Response:
    try:
        if not principal.can_for(Permission.USER_ADMIN, None):
            from azdev_ica.errors import Forbidden

            raise Forbidden("only an administrator for every tenant may do this")
        person = disable_person(
            ctx, actor=principal.actor, login=login, reason=_form(request).get("reason", "")
        )
    except IcaError as exc:
        return _refusal(request, ctx, principal, exc)
    return _people_page(request, ctx, principal, notice=f"{person.login} is disabled.")


def _stages(value: str) -> list[str] | None:
    """A grant's stage scope from the form: comma-separated names, empty for every stage."""
    names = [name.strip() for name in value[:500].split(",") if name.strip()]
    return names or None


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        from azdev_ica.errors import ValidationProblem

        raise ValidationProblem(f"unknown role {value[:50]!r}") from None


@router.post(PEOPLE + "/{login}/grants", dependencies=[Depends(read_form), Depends(login_redirect)])
def grant(request: Request, ctx: Ctx, principal: UserAdmin, login: str) -> Response:
    form = _form(request)
    tenant = form.get("tenant", "").strip()
    try:
        row = grant_role(
            ctx,
            actor=principal.actor,
            login=login,
            role=_role(form.get("role", "")),
            tenant=None if tenant in ("", "*") else tenant,
            stages=_stages(form.get("stages", "")),
            reason=form.get("reason", "").strip()[:1000] or None,
            by=principal,
        )
    except IcaError as exc:
        return _refusal(request, ctx, principal, exc)
    where = row.tenant or "every tenant"
    return _people_page(request, ctx, principal, notice=f"{login}: {row.role} for {where}.")


@router.post(
    PEOPLE + "/{login}/grants/revoke", dependencies=[Depends(read_form), Depends(login_redirect)]
)
def revoke(request: Request, ctx: Ctx, principal: UserAdmin, login: str) -> Response:
    form = _form(request)
    tenant = form.get("tenant", "").strip()
    try:
        revoke_grant(
            ctx,
            actor=principal.actor,
            login=login,
            role=_role(form.get("role", "")),
            tenant=None if tenant in ("", "*") else tenant,
            reason=form.get("reason", "revoked in the console")[:1000],
            by=principal,
        )
    except IcaError as exc:
        return _refusal(request, ctx, principal, exc)
    return _people_page(request, ctx, principal, notice=f"{login}: role revoked.")


# --- API keys (administrators: `ica apikey` in the browser) ---------------------------------

# No API route manages keys (`ica apikey` does): the page takes the people administrators'
# permission, for every tenant only (like linking and disabling people).
Admin = UserAdmin
KEYS = "/ui/admin/api-keys"


def _keys_page(
    request: Request,
    ctx: Any,
    *,
    created: Any = None,
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    from sqlalchemy import select

    from azdev_ica.db.tables import ApiKey

    with ctx.read() as session:
        keys = list(session.scalars(select(ApiKey).order_by(ApiKey.id.desc()).limit(200)))
    return page(
        request,
        "admin_keys.html",
        {
            "keys": keys,
            "roles": [role.value for role in Role],
            "created": created,
            "error": error,
            "notice": notice,
            "now": ctx.clock.now(),
        },
        status=status,
    )


def _all_tenants(principal: Principal) -> None:
    from azdev_ica.errors import Forbidden

    if not principal.can_for(Permission.USER_ADMIN, None):
        raise Forbidden("only an administrator for every tenant manages API keys")


@router.get(KEYS, dependencies=[Depends(login_redirect)])
def api_keys(request: Request, ctx: Ctx, principal: Admin) -> Response:
    _all_tenants(principal)
    return _keys_page(request, ctx)


@router.post(KEYS, dependencies=[Depends(read_form), Depends(login_redirect)])
def create_key(request: Request, ctx: Ctx, principal: Admin) -> Response:
    from datetime import timedelta

    from azdev_ica.errors import ValidationProblem
    from azdev_ica.services.apikeys import create_api_key

    _all_tenants(principal)
    form = _form(request)
    tenants_text = form.get("tenants", "").strip()
    try:
        if not tenants_text:
            raise ValidationProblem("name the tenants (comma-separated), or * for every tenant")
        days_text = form.get("days", "").strip()
        try:
            days = float(days_text) if days_text else None
        except ValueError:
            raise ValidationProblem("the lifetime is a number of days") from None
        created = create_api_key(
            ctx,
            actor=principal.actor,
            name=form.get("name", "")[:200],
            role=_role(form.get("role", "")),
            tenants=None
            if tenants_text == "*"
            else [code.strip() for code in tenants_text[:500].split(",") if code.strip()],
            expires_at=ctx.clock.now() + timedelta(days=days) if days is not None else None,
            stages=_stages(form.get("stages", "")),
        )
    except IcaError as exc:
        return _keys_page(request, ctx, error=exc.detail, status=exc.status)
    return _keys_page(request, ctx, created=created)


@router.post(KEYS + "/{prefix}/revoke", dependencies=[Depends(read_form), Depends(login_redirect)])
def revoke_key(request: Request, ctx: Ctx, principal: Admin, prefix: str) -> Response:
    from azdev_ica.services.apikeys import revoke_api_key

    _all_tenants(principal)
    reason = _form(request).get("reason", "").strip()[:1000] or "revoked in the console"
    try:
        row = revoke_api_key(ctx, actor=principal.actor, prefix=prefix[:40], reason=reason)
    except IcaError as exc:
        return _keys_page(request, ctx, error=exc.detail, status=exc.status)
    return _keys_page(request, ctx, notice=f"Key {row.prefix} ({row.name}) is revoked.")
