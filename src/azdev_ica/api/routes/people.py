"""People over HTTP: who am I, my personal tokens, and administering persons and their grants.

Administrators manage everyone; a tenant administrator grants and revokes the tenant roles
for its own tenants only. Linking provider user ids and disabling persons decide segregation
of duties across tenants, so they need an all-tenants administrator.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field

from azdev_ica.api.deps import Ctx, json_body, require
from azdev_ica.api.schemas import Code, Instant, Name, ShortText, Str, Strict
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission, Role
from azdev_ica.db.tables import Person, RoleGrant
from azdev_ica.errors import Forbidden, PersonRequired
from azdev_ica.services.audit import rfc3339
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
    issue_personal_token,
    link_person,
    list_people,
    revoke_grant,
    revoke_personal_token,
)

router = APIRouter(tags=["people"])

Self = Annotated[Principal, Depends(require(Permission.SELF))]
UserAdmin = Annotated[Principal, Depends(require(Permission.USER_ADMIN))]
Login = Annotated[str, Path(min_length=1, max_length=200, description="The person's login")]


class GrantOut(BaseModel):
    role: str
    tenant: str | None = Field(description="null: every tenant")
    stages: list[str] | None = Field(default=None, description="null: every stage")
    until: str | None = None


class MeOut(BaseModel):
    kind: str = Field(description="person, api_key or pipeline")
    id: str
    name: str
    person_id: int | None
    grants: list[GrantOut]
    permissions: list[str]


class TokenRequest(Strict):
    name: Name
    hours: float = Field(default=12.0, gt=0, le=720, description="Lifetime, at most 30 days")


class TokenOut(BaseModel):
    prefix: str
    secret: str = Field(
        description="The personal token (`icp_...`), shown only this once; `secret` as every "
        "newly issued secret is named (`ica apikey create --output json`)"
    )
    token: str = Field(
        deprecated=True,
        description="The same value as `secret`, kept for earlier readers; read `secret`",
    )
    expires_at: str


class PersonRequest(Strict):
    login: Name
    display_name: Name
    email: Annotated[Str, Field(max_length=320)] | None = None


class GrantRequest(Strict):
    role: Role
    tenant: Code | None = Field(description="A tenant code, or null for every tenant")
    stages: Annotated[list[Code], Field(min_length=1, max_length=20)] | None = Field(
        default=None, description="Stage names the grant reaches; null (default): every stage"
    )
    until: Instant | None = None
    reason: ShortText | None = None


class RevokeRequest(Strict):
    role: Role
    tenant: Code | None
    reason: Annotated[ShortText, Field(min_length=1)]


class LinkRequest(Strict):
    provider: Literal["ado", "github", "entra", "oidc"]
    provider_user_id: Name


class DisableRequest(Strict):
    reason: Annotated[ShortText, Field(min_length=1)]


class PersonOut(BaseModel):
    id: int
    login: str
    display_name: str
    email: str | None
    disabled: bool
    grants: list[GrantOut]
    links: list[dict[str, str]]


def _grant_out(row: RoleGrant) -> GrantOut:
    return GrantOut(
        role=row.role,
        tenant=row.tenant,
        stages=row.stages,
        until=rfc3339(row.expires_at) if row.expires_at else None,
    )


def _person_out(person: Person, grants: list[RoleGrant], links: list[dict[str, str]]) -> PersonOut:
    return PersonOut(
        id=person.id,
        login=person.login,
        display_name=person.display_name,
        email=person.email,
        disabled=person.disabled_at is not None,
        grants=[_grant_out(row) for row in grants],
        links=links,
    )


def _all_tenants_admin(principal: Principal) -> None:
    if not principal.can_for(Permission.USER_ADMIN, None):
        raise Forbidden("only an administrator for every tenant may do this")


@router.get("/me", response_model=MeOut, summary="Who am I: identity, grants, permissions")
def me(principal: Self) -> MeOut:
    return MeOut(
        kind=principal.kind,
        id=principal.id,
        name=principal.name,
        person_id=principal.person_id,
        grants=[
            GrantOut(
                role=g.role.value,
                tenant=g.tenant,
                stages=None if g.stages is None else sorted(g.stages),
            )
            for g in principal.grants
        ],
        permissions=sorted(
            permission.value for permission in Permission if principal.can(permission)
        ),
    )


@router.post(
    "/me/tokens",
    status_code=201,
    response_model=TokenOut,
    dependencies=[Depends(json_body)],
    summary="Issue a personal API token for myself (a person signed in to the web UI)",
)
def create_my_token(ctx: Ctx, principal: Self, body: TokenRequest) -> TokenOut:
    if not principal.is_person:
        raise PersonRequired("only a person has personal tokens")
    if principal.claim("via") == "personal_token":
        # A token cannot mint tokens: a stolen one must not outlive its own expiry.
        raise Forbidden("sign in to issue a personal token; a token cannot issue another")
    issued = issue_personal_token(
        ctx,
        actor=principal.actor,
        login=principal.name,
        name=body.name,
        ttl=timedelta(hours=body.hours),
    )
    return TokenOut(
        prefix=issued.token.prefix,
        secret=issued.secret,
        token=issued.secret,
        expires_at=rfc3339(issued.token.expires_at),
    )


@router.delete(
    "/me/tokens/{prefix}",
    status_code=204,
    response_class=Response,
    summary="Revoke one of my personal tokens",
)
def revoke_my_token(
    ctx: Ctx,
    principal: Self,
    prefix: Annotated[str, Path(pattern=r"^[a-z2-7]{10}$")],
) -> Response:
    if not principal.is_person:
        raise PersonRequired("only a person has personal tokens")
    revoke_personal_token(ctx, actor=principal.actor, prefix=prefix, person_id=principal.person_id)
    return Response(status_code=204)


@router.get("/people", response_model=list[PersonOut], summary="People, their grants and links")
def list_people_route(ctx: Ctx, principal: UserAdmin) -> list[PersonOut]:
    scope = principal.scope(Permission.USER_ADMIN)
    out = []
    for view in list_people(ctx, include_disabled=True):
        # A tenant administrator sees the people holding grants in its tenants, and those
        # grants only: nobody else's name or e-mail.
        grants = [g for g in view.grants if scope is None or g.tenant in scope]
        if scope is not None and not grants:
            continue
        links = [{"provider": link.provider, "id": link.provider_user_id} for link in view.links]
        out.append(_person_out(view.person, grants, links if scope is None else []))
    return out


@router.post(
    "/people",
    status_code=201,
    response_model=PersonOut,
    dependencies=[Depends(json_body)],
    summary="Add a person",
)
def add_person(ctx: Ctx, principal: UserAdmin, body: PersonRequest) -> PersonOut:
    person = create_person(
        ctx,
        actor=principal.actor,
        login=body.login,
        display_name=body.display_name,
        email=body.email,
    )
    return _person_out(person, [], [])


@router.post(
    "/people/{login}/grants",
    response_model=GrantOut,
    dependencies=[Depends(json_body)],
    summary="Grant a role for a tenant (or every tenant); granting a held role changes nothing",
)
def add_grant(ctx: Ctx, principal: UserAdmin, login: Login, body: GrantRequest) -> GrantOut:
    row = grant_role(
        ctx,
        actor=principal.actor,
        login=login,
        role=body.role,
        tenant=body.tenant,
        expires_at=body.until,
        reason=body.reason,
        by=principal,
        stages=body.stages,
    )
    return _grant_out(row)


@router.post(
    "/people/{login}/grants/revoke",
    response_model=list[GrantOut],
    dependencies=[Depends(json_body)],
    summary="Revoke a role for a tenant (or every tenant)",
)
def remove_grant(
    ctx: Ctx, principal: UserAdmin, login: Login, body: RevokeRequest
) -> list[GrantOut]:
    rows = revoke_grant(
        ctx,
        actor=principal.actor,
        login=login,
        role=body.role,
        tenant=body.tenant,
        reason=body.reason,
        by=principal,
    )
    return [_grant_out(row) for row in rows]


@router.post(
    "/people/{login}/links",
    status_code=200,
    dependencies=[Depends(json_body)],
    summary="Link a provider's user id to the person (administrators for every tenant)",
)
def add_link(ctx: Ctx, principal: UserAdmin, login: Login, body: LinkRequest) -> dict[str, str]:
    _all_tenants_admin(principal)
    row = link_person(
        ctx,
        actor=principal.actor,
        login=login,
        provider=body.provider,
        provider_user_id=body.provider_user_id,
    )
    return {"provider": row.provider, "id": row.provider_user_id}


@router.post(
    "/people/{login}/disable",
    response_model=PersonOut,
    dependencies=[Depends(json_body)],
    summary="Disable a person: no sign-in, tokens revoked, history kept",
)
def disable_person_route(
    ctx: Ctx, principal: UserAdmin, login: Login, body: DisableRequest
) -> PersonOut:
    _all_tenants_admin(principal)
    person = disable_person(ctx, actor=principal.actor, login=login, reason=body.reason)
    return _person_out(person, [], [])


# --- enrolment links (`ica user enrol|reset` over HTTP) -------------------------------------


class ResetRequest(Strict):
    reason: Annotated[ShortText, Field(min_length=1, max_length=1000)]


class EnrolmentLinkOut(BaseModel):
    login: str
    person_id: int
    enrolment_link: str = Field(
        description="Single use; shown only this once. Send it to the person only: with it "
        "they set their own password and authenticator."
    )
    expires_at: str


def _link_out(request: Request, issued: IssuedLink) -> EnrolmentLinkOut:
    settings = request.app.state.settings
    return EnrolmentLinkOut(
        login=issued.login,
        person_id=issued.person_id,
        enrolment_link=issued.url(settings.resolved_public_url()),
        expires_at=rfc3339(issued.expires_at),
    )


@router.post(
    "/people/{login}/enrolment-link",
    status_code=201,
    response_model=EnrolmentLinkOut,
    summary="A new single-use enrolment link for a person (earlier links stop working)",
)
def enrolment_link_route(
    request: Request, ctx: Ctx, principal: UserAdmin, login: Login
) -> EnrolmentLinkOut:
    """The person's current credentials stay until the link is used. An administrator for
    every tenant reaches anyone; a tenant administrator only people whose every grant lies in
    its tenants (someone of other tenants only is a 404, as if absent). No body."""
    issued = issue_enrolment_link(
        ctx,
        actor=principal.actor,
        login=login,
        ttl=link_ttl(request.app.state.settings),
        by=principal,
    )
    return _link_out(request, issued)


@router.post(
    "/people/{login}/reset",
    response_model=EnrolmentLinkOut,
    dependencies=[Depends(json_body)],
    summary="Reset a person's credentials and give them a new enrolment link",
)
def reset_route(
    request: Request, ctx: Ctx, principal: UserAdmin, login: Login, body: ResetRequest
) -> EnrolmentLinkOut:
    """Ends the password, authenticator, recovery codes, personal tokens and open sessions in
    one transaction, and answers with a new single-use enrolment link; the administrator
    never learns a credential. Scope as for the enrolment link."""
    issued = reset_credentials(
        ctx,
        actor=principal.actor,
        login=login,
        reason=body.reason,
        ttl=link_ttl(request.app.state.settings),
        by=principal,
    )
    return _link_out(request, issued)
