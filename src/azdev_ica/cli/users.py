"""`ica user ...`: people, their role grants per tenant, provider-id links, personal tokens.

Operator commands: they run on the ICA host against its database, through services, and
each change is an audit entry with the operator as actor.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import Any

from azdev_ica.cli.admin import (
    EXIT_OK,
    ROLE_NAMES,
    _context,
    _date_or_time,
    _fail,
    _guarded,
    _operator,
    _settings,
)

PROVIDER_NAMES = ("ado", "github", "entra", "oidc")
ALL_TENANTS = "*"


def register(sub: Any) -> None:
    user = sub.add_parser(
        "user",
        help="people: add, list, disable, grant, revoke, link, token",
        description=(
            "People who sign in, approve and request. Roles are granted per tenant "
            "(--tenant CODE) or for every tenant (--tenant '*'). Provider links make "
            "'the requester' and 'the signer' compare as people."
        ),
    ).add_subparsers(dest="user_command", metavar="ACTION", required=True)

    add = user.add_parser("add", help="add a person")
    add.add_argument("login", help="sign-in name, usually the e-mail or UPN (lower-cased)")
    add.add_argument("--name", required=True, help="display name")
    add.add_argument("--email")
    add.set_defaults(func=_add)

    listing = user.add_parser("list", help="list people with their grants and links")
    listing.add_argument("--all", action="store_true", help="include disabled people")
    listing.add_argument("--output", choices=("text", "json"), default="text")
    listing.set_defaults(func=_list)

    disable = user.add_parser(
        "disable", help="disable a person (no sign-in, tokens revoked; history kept)"
    )
    disable.add_argument("login")
    disable.add_argument("--reason", required=True)
    disable.set_defaults(func=_disable)

    grant = user.add_parser("grant", help="grant a role for a tenant or for every tenant")
    grant.add_argument("login")
    grant.add_argument("role", choices=ROLE_NAMES)
    grant.add_argument(
        "--tenant", required=True, help="tenant code, or '*' for every tenant (say it explicitly)"
    )
    grant.add_argument(
        "--stage",
        action="append",
        dest="stages",
        help="limit to a stage (repeatable), e.g. --stage development --stage test; "
        "without it the grant reaches every stage",
    )
    grant.add_argument("--until", type=_date_or_time, help="expiry: YYYY-MM-DD or RFC 3339")
    grant.add_argument("--reason")
    grant.set_defaults(func=_grant)

    revoke = user.add_parser("revoke", help="revoke a role for a tenant or for every tenant")
    revoke.add_argument("login")
    revoke.add_argument("role", choices=ROLE_NAMES)
    revoke.add_argument("--tenant", required=True, help="tenant code, or '*'")
    revoke.add_argument("--reason", required=True)
    revoke.set_defaults(func=_revoke)

    link = user.add_parser(
        "link",
        help="link a provider's user id to a person",
        description=(
            "Record that a provider's user id is this person: ado (Build.RequestedForId), "
            "github (the numeric user id, the token's actor_id), entra (object id), "
            "oidc (the issuer's subject)."
        ),
    )
    link.add_argument("login")
    link.add_argument("provider", choices=PROVIDER_NAMES)
    link.add_argument("provider_user_id")
    link.set_defaults(func=_link)

    token = user.add_parser("token", help="issue a personal API token for a person (shown once)")
    token.add_argument("login")
    token.add_argument("--name", required=True)
    token.add_argument(
        "--hours", type=float, default=12.0, help="lifetime in hours (default 12, at most 720)"
    )
    token.add_argument("--output", choices=("text", "json"), default="text")
    token.set_defaults(func=_token)

    password = user.add_parser(
        "password",
        help="set a person's local password (web sign-in without an identity provider)",
        description="Prompts twice unless --password-stdin; the password is never echoed.",
    )
    password.add_argument("login")
    password.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    password.set_defaults(func=_password)

    totp_cmd = user.add_parser(
        "totp",
        help="enrol a person's authenticator app (prints the otpauth:// URI once)",
        description=(
            "Gives the person a new TOTP secret (RFC 6238, SHA-1, 30 s, 6 digits), replacing "
            "any earlier one. Required for admin, tenant_admin and every approver or signer."
        ),
    )
    totp_cmd.add_argument("login")
    totp_cmd.set_defaults(func=_totp)


def _tenant(value: str) -> str | None:
    return None if value == ALL_TENANTS else value


@_guarded
def _add(args: argparse.Namespace) -> int:
    from azdev_ica.errors import IcaError
    from azdev_ica.services.people import create_person

    try:
        with _context(_settings()) as ctx:
            person = create_person(
                ctx, actor=_operator(), login=args.login, display_name=args.name, email=args.email
            )
    except IcaError as exc:
        return _fail(exc.detail)
    print(f"added {person.login} (person {person.id})")
    return EXIT_OK


@_guarded
def _list(args: argparse.Namespace) -> int:
    from azdev_ica.services.people import list_people

    with _context(_settings()) as ctx:
        views = list_people(ctx, include_disabled=args.all)
        items: list[dict[str, Any]] = [
            {
                "id": view.person.id,
                "login": view.person.login,
                "name": view.person.display_name,
                "email": view.person.email,
                "disabled": view.person.disabled_at is not None,
                "grants": [
                    {
                        "role": grant.role,
                        "tenant": grant.tenant or ALL_TENANTS,
                        "stages": grant.stages,
                        "until": grant.expires_at.isoformat() if grant.expires_at else None,
                    }
                    for grant in view.grants
                ],
                "links": [
                    {"provider": link.provider, "id": link.provider_user_id} for link in view.links
                ],
            }
            for view in views
        ]
    if args.output == "json":
        print(json.dumps(items, indent=2))
        return EXIT_OK
    for item in items:
        grants = ", ".join(
            f"{g['role']}@{g['tenant']}"
            + (f"[{','.join(g['stages'])}]" if g["stages"] else "")
            + (f" until {g['until']}" if g["until"] else "")
            for g in item["grants"]
        )
        links = ", ".join(f"{link['provider']}:{link['id']}" for link in item["links"])
        state = "disabled" if item["disabled"] else "active"
        print(f"{item['login']}  {state}  grants=[{grants}]  links=[{links}]  {item['name']}")
    return EXIT_OK


@_guarded
def _disable(args: argparse.Namespace) -> int:
    from azdev_ica.errors import IcaError
    from azdev_ica.services.people import disable_person

    try:
        with _context(_settings()) as ctx:
            disable_person(ctx, actor=_operator(), login=args.login, reason=args.reason)
    except IcaError as exc:
        return _fail(exc.detail)
    print(f"disabled {args.login.strip().lower()}")
    return EXIT_OK


@_guarded
def _grant(args: argparse.Namespace) -> int:
    from azdev_ica.auth.roles import Role
    from azdev_ica.errors import IcaError
    from azdev_ica.services.people import grant_role

    try:
        with _context(_settings()) as ctx:
            grant_role(
                ctx,
                actor=_operator(),
                login=args.login,
                role=Role(args.role),
                tenant=_tenant(args.tenant),
                expires_at=args.until,
                reason=args.reason,
                stages=args.stages,
            )
    except IcaError as exc:
        return _fail(exc.detail)
    stages = f" (stages {', '.join(sorted(set(args.stages)))})" if args.stages else ""
    print(f"granted {args.role} for {args.tenant}{stages} to {args.login.strip().lower()}")
    return EXIT_OK


@_guarded
def _revoke(args: argparse.Namespace) -> int:
    from azdev_ica.auth.roles import Role
    from azdev_ica.errors import IcaError
    from azdev_ica.services.people import revoke_grant

    try:
        with _context(_settings()) as ctx:
            revoke_grant(
                ctx,
                actor=_operator(),
                login=args.login,
                role=Role(args.role),
                tenant=_tenant(args.tenant),
                reason=args.reason,
            )
    except IcaError as exc:
        return _fail(exc.detail)
    print(f"revoked {args.role} for {args.tenant} from {args.login.strip().lower()}")
    return EXIT_OK


@_guarded
def _link(args: argparse.Namespace) -> int:
    from azdev_ica.errors import IcaError
    from azdev_ica.services.people import link_person

    try:
        with _context(_settings()) as ctx:
            link_person(
                ctx,
                actor=_operator(),
                login=args.login,
                provider=args.provider,
                provider_user_id=args.provider_user_id,
            )
    except IcaError as exc:
        return _fail(exc.detail)
    print(f"linked {args.provider}:{args.provider_user_id} to {args.login.strip().lower()}")
    return EXIT_OK


@_guarded
def _token(args: argparse.Namespace) -> int:
    from azdev_ica.errors import IcaError
    from azdev_ica.services.people import issue_personal_token

    try:
        with _context(_settings()) as ctx:
            issued = issue_personal_token(
                ctx,
                actor=_operator(),
                login=args.login,
                name=args.name,
                ttl=timedelta(hours=args.hours),
            )
    except IcaError as exc:
        return _fail(exc.detail)
    if args.output == "json":
        print(
            json.dumps(
                {
                    "prefix": issued.token.prefix,
                    "token": issued.secret,
                    "expires_at": issued.token.expires_at.isoformat(),
                }
            )
        )
    else:
        print(
            f"personal token {issued.token.prefix} for {args.login.strip().lower()}, "
            f"expires {issued.token.expires_at.isoformat()}; shown only this once:"
        )
        print(issued.secret)
    return EXIT_OK


@_guarded
def _password(args: argparse.Namespace) -> int:
    import getpass
    import sys

    from azdev_ica.errors import IcaError
    from azdev_ica.services.credentials import SignInRules, set_password

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            return _fail("the two passwords differ")
    settings = _settings()
    try:
        with _context(settings) as ctx:
            set_password(
                ctx,
                actor=_operator(),
                login=args.login,
                password=password,
                rules=SignInRules.from_settings(settings),
            )
    except IcaError as exc:
        return _fail(exc.detail)
    print(f"password set for {args.login.strip().lower()}")
    return EXIT_OK


@_guarded
def _totp(args: argparse.Namespace) -> int:
    from azdev_ica.errors import IcaError
    from azdev_ica.services.credentials import enrol_totp

    settings = _settings()
    try:
        with _context(settings) as ctx:
            uri = enrol_totp(
                ctx, actor=_operator(), login=args.login, issuer=f"ICA {settings.public_host}"
            )
    except IcaError as exc:
        return _fail(exc.detail)
    print(
        f"authenticator enrolled for {args.login.strip().lower()}; add this to the app "
        "(shown only this once, keep it secret):"
    )
    print(uri)
    return EXIT_OK
