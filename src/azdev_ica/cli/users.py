"""`ica user ...`: people, their role grants per tenant, provider-id links, enrolment links.

Operator commands: they run on the ICA host against its database, through services, and
each change is an audit entry with the operator as actor.
"""

from __future__ import annotations

import argparse
import json
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
        help="people: add, enrol, reset, list, disable, grant, revoke, link",
        description=(
            "People who sign in, approve and request. Roles are granted per tenant "
            "(--tenant CODE) or for every tenant (--tenant '*'). Provider links make "
            "'the requester' and 'the signer' compare as people. Nobody sets another person's "
            "password, authenticator or personal token: 'add', 'enrol' and 'reset' print a "
            "single-use enrolment link with which the person sets their own."
        ),
    ).add_subparsers(dest="user_command", metavar="ACTION", required=True)

    add = user.add_parser("add", help="add a person")
    add.add_argument("login", help="sign-in name, usually the e-mail or UPN (lower-cased)")
    add.add_argument("--name", required=True, help="display name")
    add.add_argument("--email")
    add.add_argument("--output", choices=("text", "json"), default="text")
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

    enrol = user.add_parser(
        "enrol",
        help="issue a new enrolment link for a person (single use; revokes earlier links)",
        description=(
            "Prints a link with which the person sets their own password and authenticator in "
            "the console. Nobody else ever learns their credentials. The link is good once, "
            "for ICA_ENROLMENT_LINK_HOURS (default 72 hours)."
        ),
    )
    enrol.add_argument("login")
    enrol.add_argument("--output", choices=("text", "json"), default="text")
    enrol.set_defaults(func=_enrol)

    reset = user.add_parser(
        "reset",
        help="reset a person's credentials and issue a new enrolment link",
        description=(
            "Ends the person's password, authenticator, recovery codes, personal tokens and "
            "open sessions at once, and prints a new enrolment link for them."
        ),
    )
    reset.add_argument("login")
    reset.add_argument("--reason", required=True)
    reset.add_argument("--output", choices=("text", "json"), default="text")
    reset.set_defaults(func=_reset)


def _tenant(value: str) -> str | None:
    return None if value == ALL_TENANTS else value


@_guarded
def _add(args: argparse.Namespace) -> int:
    from azdev_ica.errors import IcaError
    from azdev_ica.services.enrolment import issue_enrolment_link, link_ttl
    from azdev_ica.services.people import create_person

    settings = _settings()
    try:
        with _context(settings) as ctx:
            person = create_person(
                ctx, actor=_operator(), login=args.login, display_name=args.name, email=args.email
            )
            issued = issue_enrolment_link(
                ctx, actor=_operator(), login=person.login, ttl=link_ttl(settings)
            )
    except IcaError as exc:
        return _fail(exc.detail)
    url = issued.url(settings.resolved_public_url())
    _print_link(args, issued, url, f"added {person.login} (person {person.id})")
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


def _print_link(args: argparse.Namespace, issued: Any, url: str, what: str) -> None:
    if getattr(args, "output", "text") == "json":
        print(
            json.dumps(
                {
                    "login": issued.login,
                    "enrolment_url": url,
                    "expires_at": issued.expires_at.isoformat(),
                }
            )
        )
        return
    print(f"{what}; {issued.login} sets their own password and authenticator with this link")
    print(f"(single use, expires {issued.expires_at.isoformat()}; send it to them only):")
    print(url)


@_guarded
def _enrol(args: argparse.Namespace) -> int:
    from azdev_ica.errors import IcaError
    from azdev_ica.services.enrolment import issue_enrolment_link, link_ttl

    settings = _settings()
    try:
        with _context(settings) as ctx:
            issued = issue_enrolment_link(
                ctx, actor=_operator(), login=args.login, ttl=link_ttl(settings)
            )
    except IcaError as exc:
        return _fail(exc.detail)
    url = issued.url(settings.resolved_public_url())
    _print_link(args, issued, url, "new enrolment link (earlier links no longer work)")
    return EXIT_OK


@_guarded
def _reset(args: argparse.Namespace) -> int:
    from azdev_ica.errors import IcaError
    from azdev_ica.services.enrolment import link_ttl, reset_credentials

    settings = _settings()
    try:
        with _context(settings) as ctx:
            issued = reset_credentials(
                ctx,
                actor=_operator(),
                login=args.login,
                reason=args.reason,
                ttl=link_ttl(settings),
            )
    except IcaError as exc:
        return _fail(exc.detail)
    url = issued.url(settings.resolved_public_url())
    _print_link(
        args, issued, url, "credentials reset: password, authenticator, tokens and sessions ended"
    )
    return EXIT_OK
