"""Server and admin commands. They run on the ICA host against its database, through services.

Heavy imports (SQLAlchemy, FastAPI, ...) happen inside the handlers, so the pipeline
client that shares this parser stays fast.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from azdev_ica.auth.principal import Actor
    from azdev_ica.services.context import ServiceContext
    from azdev_ica.settings import Settings

EXIT_OK = 0
EXIT_INVALID = 3
EXIT_USAGE = 64

ROLE_NAMES = (
    "azdev_devops",
    "azdev_approver_tech",
    "azdev_approver_biz",
    "azdev_auditor",
    "admin",
    "azdev_override_signer",
    "azdev_escalation",
    "azdev_signoff_qa",
    "azdev_signoff_uat",
    "azdev_signoff_data",
    "azdev_approver_major",
    "tenant_admin",
    "azdev_monitoring",
)


def register(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve the ICA API",
        description="Serve the API, the console and GET /metrics (Prometheus; needs a "
        "metrics:read key, docs/observe.md). Worker processes share their metrics through "
        "PROMETHEUS_MULTIPROC_DIR (default: <ICA_DATA_DIR>/metrics/serve-<pid>), emptied at "
        "start.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (PostgreSQL only; SQLite: 1)"
    )
    serve.add_argument(
        "--limit-concurrency",
        type=int,
        default=200,
        metavar="N",
        help="connections per worker before new requests get 503 (default: %(default)s)",
    )
    serve.add_argument(
        "--timeout-keep-alive",
        type=int,
        default=5,
        metavar="SECONDS",
        help="close an idle kept-alive connection after this long (default: %(default)s)",
    )
    serve.add_argument(
        "--read-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="close a connection that has not sent a complete request (headers and body) "
        "within this long (default: %(default)s); run behind a reverse proxy with its own "
        "header and body timeouts in production",
    )
    serve.set_defaults(func=_serve)

    init = sub.add_parser(
        "init",
        help="prepare an embedded instance: secret, database, policy, first admin key",
        description="Idempotent: creates the server secret (mode 0600) unless it exists, "
        "migrates the database, applies the policy file if no policy is active yet (later "
        "changes are proposed and signed: `ica policy propose`; a different file is not "
        "applied, the active policy stays and a notice says so), and creates a first admin "
        "API key (printed once) unless an admin key exists.",
    )
    init.add_argument("--policy", type=Path, required=True, help="policy YAML file")
    init.set_defaults(func=_init)

    db = sub.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", metavar="ACTION", required=True
    )
    db.add_parser(
        "upgrade",
        help="migrate the database to the current schema",
        description="Works on the database directly, not through a server, as the schema "
        "owner: applies every pending migration in one transaction (a failure leaves the "
        "schema as it was). Take a backup first; `ica db downgrade` undoes one migration.",
    ).set_defaults(func=_db_upgrade)
    db.add_parser(
        "downgrade",
        help="undo the last migration (one step back), on the database directly",
        description="Works on the database directly, not through a server: stop every ICA "
        "server process first (they expect the current schema) and take a backup. Undoes "
        "exactly one migration, in one transaction, then install the matching older ICA. "
        "The audit ledger's migrations are forward-only: a downgrade across one is refused "
        "and changes nothing (restore a backup taken before the upgrade instead). "
        "`ica db upgrade` goes forward again.",
    ).set_defaults(func=_db_downgrade)
    db.add_parser("current", help="print the schema revision").set_defaults(func=_db_current)
    grants = db.add_parser(
        "grants",
        help="print the PostgreSQL grants of the application role",
        description="Prints SQL for the schema owner to run: the role may read and append to "
        "the audit ledger, never update, delete or truncate it.",
    )
    grants.add_argument("role", help="the role the server connects as, e.g. ica_app")
    grants.set_defaults(func=_db_grants)

    policy = sub.add_parser("policy", help="the policy file").add_subparsers(
        dest="policy_command", metavar="ACTION", required=True
    )
    validate = policy.add_parser("validate", help="check a policy file; errors name the line")
    validate.add_argument("file", type=Path)
    validate.set_defaults(func=_policy_validate)
    apply = policy.add_parser(
        "apply",
        help="apply the first policy; after that only with --break-glass (recovery)",
        description="Changes are governed: `ica policy propose` and two approvers' signatures. "
        "On the server host an operator may still apply a file directly to recover, with "
        "--break-glass and a reason, recorded in the audit trail as such.",
    )
    apply.add_argument("file", type=Path)
    apply.add_argument(
        "--break-glass",
        action="store_true",
        help="bypass the two approvers (recovery only; audited as a break-glass apply)",
    )
    apply.add_argument("--reason", help="why (required with --break-glass)")
    apply.set_defaults(func=_policy_apply)
    policy.add_parser("show", help="print the active policy").set_defaults(func=_policy_show)
    diff = policy.add_parser(
        "diff",
        help="diff two policy versions, or the active policy and a file",
        description="A unified diff of the canonical JSON of two policies and a short summary. "
        "Refs: a policy file, a version id, a sha256 (prefix of 7+), or proposal:ID. "
        "Defaults: FILE against the active policy; without FILE, the active policy against "
        "the version before it. Exit 0 when identical, 1 when they differ.",
    )
    diff.add_argument("file", type=Path, nargs="?", help="same as --to FILE")
    diff.add_argument("--from", dest="from_ref", metavar="REF", help="default: see above")
    diff.add_argument("--to", dest="to_ref", metavar="REF", help="default: the active policy")
    diff.add_argument("--output", choices=("text", "json"), default="text")
    diff.set_defaults(func=_policy_diff)
    from azdev_ica.cli import policy_client

    policy_client.register(policy)

    apikey = sub.add_parser("apikey", help="machine credentials").add_subparsers(
        dest="apikey_command", metavar="ACTION", required=True
    )
    create = apikey.add_parser(
        "create", help="create an API key (shown once)", description="Create an API key."
    )
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=ROLE_NAMES)
    create.add_argument(
        "--tenant", action="append", dest="tenants", help="limit to a tenant (repeatable)"
    )
    create.add_argument(
        "--stage",
        action="append",
        dest="stages",
        help="limit to a stage (repeatable), e.g. --stage development --stage test; "
        "without it the key reaches every stage",
    )
    create.add_argument("--expires", type=_date_or_time, help="expiry: YYYY-MM-DD or RFC 3339")
    create.add_argument("--output", choices=("text", "json"), default="text")
    create.set_defaults(func=_apikey_create)
    listing = apikey.add_parser("list", help="list API keys (never their secrets)")
    listing.add_argument("--output", choices=("text", "json"), default="text")
    listing.set_defaults(func=_apikey_list)
    revoke = apikey.add_parser("revoke", help="revoke an API key by its prefix")
    revoke.add_argument(
        "prefix",
        type=_key_prefix,
        help="the 10-letter prefix `ica apikey list` shows, or the key's start `ica_<prefix>`",
    )
    revoke.add_argument("--reason", required=True)
    revoke.set_defaults(func=_apikey_revoke)

    outbox = sub.add_parser(
        "outbox", help="queued notifications and callbacks (see and requeue deliveries)"
    ).add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    outbox_list = outbox.add_parser("list", help="list outbox rows, newest first (no payloads)")
    outbox_list.add_argument(
        "--state",
        choices=("pending", "delivered", "failed", "no_route"),
        help="no_route: no route of ICA_NOTIFY sends it anywhere (nobody was told)",
    )
    outbox_list.add_argument("--limit", type=int, default=50)
    outbox_list.add_argument("--output", choices=("text", "json"), default="text")
    outbox_list.set_defaults(func=_outbox_list)
    outbox_retry = outbox.add_parser(
        "retry", help="requeue failed rows (due now, with a fresh attempt budget)"
    )
    which = outbox_retry.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    which.add_argument("--all-failed", action="store_true", help="every failed row")
    outbox_retry.set_defaults(func=_outbox_retry)

    jobs = sub.add_parser("jobs", help="background jobs").add_subparsers(
        dest="jobs_command", metavar="ACTION", required=True
    )
    jobs.add_parser(
        "tick",
        help="run every due job once now (delivery, SLA, expiries), under the jobs' leases",
    ).set_defaults(func=_jobs_tick)

    openapi = sub.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--out", type=Path, help="file to write (default: stdout)")
    openapi.set_defaults(func=_openapi)

    rbac = sub.add_parser(
        "rbac", help="write the access matrix (routes x roles x tenant scope) as Markdown"
    )
    rbac.add_argument("--out", type=Path, help="file to write (default: stdout)")
    rbac.set_defaults(func=_rbac)


def _date_or_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _settings() -> Settings:
    from azdev_ica.settings import Settings

    return Settings()


def _operator() -> Actor:
    from azdev_ica.auth.principal import Actor

    return Actor(kind="operator", id=f"cli:{getpass.getuser()}")


@contextmanager
def _context(settings: Settings) -> Iterator[ServiceContext]:
    """A service context for one command; its connections are closed when the command ends."""
    from azdev_ica.clock import SystemClock
    from azdev_ica.db.engine import Database
    from azdev_ica.services.context import LedgerConfig, ServiceContext

    pepper = settings.pepper()
    db = Database.from_url(
        settings.resolved_database_url(), busy_timeout_ms=settings.sqlite_busy_timeout_ms
    )
    try:
        yield ServiceContext(
            db=db,
            clock=SystemClock(),
            pepper=pepper,
            ledger=LedgerConfig.from_settings(settings),
            public_url=settings.resolved_public_url(),
        )
    finally:
        db.dispose()


@contextmanager
def _engine() -> Iterator[Engine]:
    from azdev_ica.db.engine import make_engine

    engine = make_engine(_settings().resolved_database_url())
    try:
        yield engine
    finally:
        engine.dispose()


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the failures an operator can cause (no secret yet, a bad setting, a database that
    is unreachable, not migrated or not supported) into a message and exit 3, not a traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from pydantic import ValidationError
        from sqlalchemy.exc import ArgumentError, DBAPIError

        from azdev_ica.db.engine import UnsupportedDatabase
        from azdev_ica.settings import MissingSecretError

        try:
            return handler(args)
        except (MissingSecretError, UnsupportedDatabase) as exc:
            return _fail(str(exc))
        except ArgumentError as exc:
            return _fail(f"ICA_DATABASE_URL is not a database URL: {exc}")
        except ValidationError as exc:
            return _fail(f"invalid ICA_* setting: {exc}")
        except DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            return _fail(
                f"the database refused: {reason} "
                "(is ICA_DATABASE_URL right, and is the schema current? run `ica db upgrade`)"
            )

    return run


def _fail(message: str, code: int = EXIT_INVALID) -> int:
    print(f"ica: {message}", file=sys.stderr)
    return code


@_guarded
def _serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from azdev_ica.api.serving import READ_TIMEOUT_ENV, uvicorn_options
    from azdev_ica.settings import MissingSecretError

    settings = _settings()
    url = settings.resolved_database_url()
    workers = args.workers
    if url.startswith("sqlite") and workers != 1:
        return _fail("SQLite serves from one process: use --workers 1 or PostgreSQL", EXIT_USAGE)
    try:
        settings.pepper()
    except MissingSecretError as exc:
        return _fail(str(exc))
    if args.limit_concurrency < 1 or args.timeout_keep_alive < 1 or args.read_timeout <= 0:
        return _fail(
            "--limit-concurrency, --timeout-keep-alive and --read-timeout must be positive",
            EXIT_USAGE,
        )
    # Worker processes read the deadline from the environment they inherit.
    os.environ[READ_TIMEOUT_ENV] = str(args.read_timeout)
    # Metrics: every worker writes its counters to one directory, emptied for this run
    # (PROMETHEUS_MULTIPROC_DIR, default <data_dir>/metrics/serve-<pid>); set before any
    # worker starts.
    from azdev_ica.observe import multiproc

    try:
        multiproc.prepare(settings.data_dir / "metrics")
    except OSError as exc:
        return _fail(f"cannot prepare the metrics directory (PROMETHEUS_MULTIPROC_DIR): {exc}")
    uvicorn.run(
        "azdev_ica.api.asgi:app_factory",
        factory=True,
        host=args.host,
        port=args.port,
        workers=workers,
        log_level="info",
        **uvicorn_options(
            limit_concurrency=args.limit_concurrency,
            timeout_keep_alive=args.timeout_keep_alive,
            trusted_proxies=settings.trusted_proxies,
        ),
    )
    return EXIT_OK


@_guarded
def _init(args: argparse.Namespace) -> int:
    from azdev_ica.db import migrate
    from azdev_ica.db.engine import private_directory
    from azdev_ica.errors import IcaError
    from azdev_ica.services.apikeys import count_admin_keys, create_api_key
    from azdev_ica.services.policies import apply_policy
    from azdev_ica.settings import create_secret_key_file

    settings = _settings()
    private_directory(settings.data_dir)
    if not settings.secret_key.get_secret_value():
        path = settings.resolved_secret_key_file()
        if create_secret_key_file(path):
            print(f"created the server secret {path} (mode 0600): keep it, back it up")
    try:
        document = args.policy.read_text(encoding="utf-8")
    except OSError as exc:
        return _fail(f"cannot read the policy file: {exc}")
    with _context(settings) as ctx:
        migrate.upgrade(ctx.db.engine)
        try:
            # The very first policy only: after that, changes are proposed and signed.
            applied = apply_policy(
                ctx, actor=_operator(), document=document, source=str(args.policy), bootstrap=True
            )
        except IcaError as exc:
            if exc.extensions.get("code") != "policy_governed":
                return _fail(str(exc))
            # Not a failure: `make run` keeps serving the policy the approvers signed.
            print(f"ica: {exc.detail}; the policy file was not applied", file=sys.stderr)
            applied = None
        if applied is not None:
            state = "applied" if applied.changed else "unchanged"
            print(f"policy {applied.policy.sha256[:12]} {state}")
        from azdev_ica.cli.ledger import ensure_signing_key

        ensure_signing_key(settings, ctx)
        if count_admin_keys(ctx) == 0:
            from azdev_ica.auth.roles import Role

            created = create_api_key(
                ctx,
                actor=_operator(),
                name="first-admin",
                role=Role.ADMIN,
                tenants=None,
                expires_at=None,
            )
            print("created the first admin API key; it is shown only this once:")
            print(f"  {created.secret}")
    return EXIT_OK


@_guarded
def _db_upgrade(_: argparse.Namespace) -> int:
    from azdev_ica.db import migrate

    with _engine() as engine:
        migrate.upgrade(engine)
        print(f"database at revision {migrate.current_revision(engine)}")
    return EXIT_OK


@_guarded
def _db_downgrade(_: argparse.Namespace) -> int:
    from azdev_ica.db import migrate

    with _engine() as engine:
        try:
            before, after = migrate.downgrade(engine)
        except migrate.DowngradeRefused as exc:
            return _fail(f"cannot downgrade: {exc}")
        print(f"database downgraded from {before} to {after or '(empty)'}")
    return EXIT_OK


@_guarded
def _db_current(_: argparse.Namespace) -> int:
    from azdev_ica.db import migrate

    with _engine() as engine:
        current = migrate.current_revision(engine)
    head = migrate.head_revision()
    print(f"{current or '(empty)'} (head: {head})")
    return EXIT_OK if current == head else EXIT_INVALID


def _db_grants(args: argparse.Namespace) -> int:
    from azdev_ica.db.grants import grant_statements

    try:
        statements = grant_statements(args.role)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    print("\n".join(f"{statement};" for statement in statements))
    return EXIT_OK


@_guarded
def _policy_validate(args: argparse.Namespace) -> int:
    from azdev_ica.errors import PolicyError
    from azdev_ica.policy import load_policy_file

    try:
        policy = load_policy_file(args.file)
    except PolicyError as exc:
        for problem in exc.extensions.get("problems", [exc.detail]):
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    print(
        f"{args.file}: valid; {len(policy.tenants)} tenants, {len(policy.stages)} stages, "
        f"sha256 {policy.sha256}"
    )
    return EXIT_OK


@_guarded
def _policy_apply(args: argparse.Namespace) -> int:
    from azdev_ica.errors import IcaError
    from azdev_ica.services.policies import apply_policy

    if args.break_glass and not (args.reason or "").strip():
        return _fail("--break-glass needs --reason TEXT (recorded in the audit trail)", EXIT_USAGE)
    try:
        document = args.file.read_text(encoding="utf-8")
        with _context(_settings()) as ctx:
            applied = apply_policy(
                ctx,
                actor=_operator(),
                document=document,
                source=str(args.file),
                bootstrap=not args.break_glass,
                break_glass_reason=args.reason if args.break_glass else None,
            )
    except (OSError, IcaError) as exc:
        for problem in getattr(exc, "extensions", {}).get("problems", [str(exc)]):
            print(problem, file=sys.stderr)
        if getattr(exc, "extensions", {}).get("code") == "policy_governed":
            print(
                "to recover without the approvers (audited): "
                "ica policy apply FILE --break-glass --reason TEXT",
                file=sys.stderr,
            )
        return EXIT_INVALID
    state = "applied" if applied.changed else "already active"
    glass = " by break-glass" if args.break_glass and applied.changed else ""
    print(f"policy {applied.policy.sha256} {state}{glass} (version {applied.version_id})")
    return EXIT_OK


@_guarded
def _policy_diff(args: argparse.Namespace) -> int:
    from azdev_ica.errors import IcaError
    from azdev_ica.services.policy_changes import diff_documents, resolve_ref

    to_ref = args.to_ref
    if args.file is not None:
        if to_ref is not None:
            return _fail("give FILE or --to, not both", EXIT_USAGE)
        to_ref = str(args.file)
    try:
        with _context(_settings()) as ctx, ctx.read() as session:
            to_file = _policy_file(to_ref)
            if to_file is not None:
                to_doc, to_label, base = to_file, to_ref, None
                if args.from_ref is None:  # a file against the active policy
                    active_doc, active_label, _ = resolve_ref(session, None)
                    from_doc, from_label = active_doc, f"active {active_label}"
            else:
                to_doc, to_label, base = resolve_ref(session, to_ref)
            if args.from_ref is not None:
                from_file = _policy_file(args.from_ref)
                if from_file is not None:
                    from_doc, from_label = from_file, args.from_ref
                else:
                    from_doc, from_label, _ = resolve_ref(session, args.from_ref)
            elif to_file is None:
                if base is None:
                    return _fail(f"there is no policy version before {to_label}: give --from")
                from_doc, from_label = base.document, f"version {base.id}"
            diff = diff_documents(from_doc, from_label, to_doc, to_label)
    except OSError as exc:
        return _fail(f"cannot read the policy file: {exc}")
    except IcaError as exc:
        for problem in exc.extensions.get("problems", [exc.detail]):
            print(f"ica: {problem}", file=sys.stderr)
        return EXIT_INVALID
    if args.output == "json":
        print(json.dumps(diff.as_dict(), indent=2, ensure_ascii=False))
    else:
        print("\n".join(diff.summary_lines()))
        if diff.unified:
            print()
            print(diff.unified, end="")
    return EXIT_OK if diff.identical else 1


def _policy_file(ref: str | None) -> str | None:
    """A ref that names an existing file: its text (refs that are not files: None)."""
    if ref is None or ref.startswith("proposal:"):
        return None
    path = Path(ref)
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8")


@_guarded
def _policy_show(_: argparse.Namespace) -> int:
    from azdev_ica.errors import IcaError

    try:
        with _context(_settings()) as ctx, ctx.read() as session:
            policy = ctx.policies.active(session)
    except IcaError as exc:
        return _fail(exc.detail)
    print(json.dumps(policy.content, indent=2, ensure_ascii=False))
    return EXIT_OK


@_guarded
def _apikey_create(args: argparse.Namespace) -> int:
    from azdev_ica.auth.roles import Role
    from azdev_ica.errors import IcaError
    from azdev_ica.services.apikeys import create_api_key

    try:
        with _context(_settings()) as ctx:
            created = create_api_key(
                ctx,
                actor=_operator(),
                name=args.name,
                role=Role(args.role),
                tenants=args.tenants,
                expires_at=args.expires,
                stages=args.stages,
            )
    except IcaError as exc:
        return _fail(exc.detail)
    if args.output == "json":
        # "secret" as every new secret is named; "key" kept for earlier readers.
        print(
            json.dumps(
                {"prefix": created.key.prefix, "secret": created.secret, "key": created.secret}
            )
        )
    else:
        print(f"API key {created.key.prefix} ({args.role}); shown only this once:")
        print(created.secret)
    return EXIT_OK


@_guarded
def _apikey_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from azdev_ica.db.tables import ApiKey

    with _context(_settings()) as ctx, ctx.read() as session:
        rows = list(session.scalars(select(ApiKey).order_by(ApiKey.id)))
    items = [
        {
            "prefix": row.prefix,
            "name": row.name,
            "role": row.role,
            "tenants": row.tenants,
            "stages": row.stages,
            "created_at": row.created_at.isoformat(),
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
            "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
        }
        for row in rows
    ]
    if args.output == "json":
        print(json.dumps(items, indent=2))
        return EXIT_OK
    for item in items:
        state = "revoked" if item["revoked_at"] else "active"
        tenants = ",".join(item["tenants"]) if item["tenants"] else "all"
        stages = ",".join(item["stages"]) if item["stages"] else "all"
        print(
            f"{item['prefix']}  {state:7}  {item['role']:22}  tenants={tenants}  stages={stages}  "
            f"last_used={item['last_used_at'] or '-'}  {item['name']}"
        )
    return EXIT_OK


def add_output(parser: argparse.ArgumentParser) -> None:
    """`--output text|json`, the one spelling every command uses; `--json` is kept hidden
    (deprecated) where a command had it."""
    parser.add_argument("--output", choices=("text", "json"), default="text")
    parser.add_argument(
        "--json",
        dest="output",
        action="store_const",
        const="json",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def _key_prefix(text: str) -> str:
    """`abcdefghij`, `ica_abcdefghij` (how a key starts) or a whole key: its prefix."""
    value = text.strip()
    if value.startswith("ica_"):
        value = value[len("ica_") :].partition("_")[0]
    return value


@_guarded
def _apikey_revoke(args: argparse.Namespace) -> int:
    from azdev_ica.errors import IcaError
    from azdev_ica.services.apikeys import revoke_api_key

    try:
        with _context(_settings()) as ctx:
            revoke_api_key(ctx, actor=_operator(), prefix=args.prefix, reason=args.reason)
    except IcaError as exc:
        return _fail(exc.detail)
    print(f"revoked {args.prefix}")
    return EXIT_OK


def _openapi(args: argparse.Namespace) -> int:
    from azdev_ica.api.openapi import openapi_yaml

    text = openapi_yaml()
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _rbac(args: argparse.Namespace) -> int:
    from azdev_ica.api.rbac import access_matrix

    text = access_matrix()
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


# --- outbox and jobs -----------------------------------------------------------------------------


@_guarded
def _outbox_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from azdev_ica.services.outbox import list_messages

    with _context(_settings()) as ctx:
        views = list_messages(ctx, state=args.state, limit=args.limit)
    items = [
        {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(view).items()}
        for view in views
    ]
    if args.output == "json":
        print(json.dumps(items, indent=2))
        return EXIT_OK
    for item in items:
        target = item["channel"] + (f"/{item['destination']}" if item["destination"] else "")
        error = f"  error={item['last_error']}" if item["last_error"] else ""
        state = item["state"].replace("_", " ")  # no_route: "no route"
        print(
            f"{item['id']:>6}  {state:9}  {target:24}  {item['topic']:28}  "
            f"attempts={item['attempts']}  next={item['next_attempt_at']}{error}"
        )
    return EXIT_OK


@_guarded
def _outbox_retry(args: argparse.Namespace) -> int:
    from azdev_ica.services.outbox import retry_failed

    with _context(_settings()) as ctx:
        requeued = retry_failed(
            ctx, actor=_operator(), ids=None if args.all_failed else list(args.ids)
        )
    print(f"requeued {len(requeued)}: {' '.join(map(str, requeued)) or '-'}")
    if not args.all_failed and len(requeued) < len(set(args.ids)):
        missing = sorted(set(args.ids) - set(requeued))
        return _fail(f"not failed (or unknown): {' '.join(map(str, missing))}")
    return EXIT_OK


@_guarded
def _jobs_tick(args: argparse.Namespace) -> int:
    from azdev_ica.jobs.lease import default_holder
    from azdev_ica.jobs.scheduler import describe, tick

    settings = _settings()
    with _context(settings) as ctx:
        result = tick(ctx, settings, holder=default_holder("cli"))
    print(json.dumps(describe(result), indent=2, default=str))
    return EXIT_OK if not result.failed else EXIT_INVALID
