"""`ica doctor`: check a running installation and say what to fix.

Each check answers `ok`, `warn` or `fail` with one line of what was found and, when not ok,
what to do. Read-only: it writes nothing to the database and changes no file. Checks that
need the database are skipped (`fail`, "database unreachable") when it cannot be reached.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azdev_ica.clock import Clock
    from azdev_ica.services.context import ServiceContext
    from azdev_ica.settings import Settings

OK, WARN, FAIL = "ok", "warn", "fail"
# Beyond these the check fails.
MAX_CLOCK_SKEW = timedelta(seconds=5)
MAX_OUTBOX_AGE = timedelta(minutes=15)
WITNESS_TIMEOUT = 5.0


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


def missing_sqlite_file(url: str) -> Path | None:
    """The SQLite file `url` names when it does not exist (connecting would create it)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def diagnose(settings: Settings, ctx: ServiceContext | None, clock: Clock) -> list[Finding]:
    """Every check, in the order an operator fixes things (`ctx` None: the SQLite file the
    settings name does not exist)."""
    findings = [_public_url(settings), *_keys(settings)]
    if ctx is None:
        database = Finding(
            "database",
            FAIL,
            f"no database at {missing_sqlite_file(settings.resolved_database_url())}",
            "run `ica init` (or set ICA_DATA_DIR / ICA_DATABASE_URL to the server's)",
        )
    else:
        database = _database(ctx)
    findings.append(database)
    if ctx is None or database.status != OK:
        skipped = "not checked: the database is unreachable"
        for name in ("migrations", "clock", "checkpoint", "witnesses", "outbox"):
            findings.append(Finding(name, FAIL, skipped, "fix the database first"))
        return findings
    findings.append(_migrations(ctx))
    for check in (_clock_skew, _checkpoint, _witnesses, _outbox):
        try:
            findings.extend(check(settings, ctx, clock))
        except Exception as exc:  # a schema too old to hold the table, a dropped connection
            name = check.__name__.strip("_")
            detail = f"could not be checked: {type(exc).__name__}"
            findings.append(Finding(name, FAIL, detail, "run `ica db upgrade`, then again"))
    return findings


def _public_url(settings: Settings) -> Finding:
    if not settings.public_url:
        return Finding(
            "public-url",
            FAIL,
            f"ICA_PUBLIC_URL is not set (links in notifications would name "
            f"https://{settings.public_host})",
            "set ICA_PUBLIC_URL to the address people open ICA at, e.g. https://ica.example.org",
        )
    return Finding("public-url", OK, settings.public_url)


def _key_file(name: str, path: Path, create: str) -> Finding:
    try:
        info = path.stat()
    except FileNotFoundError:
        return Finding(name, FAIL, f"{path} is missing", create)
    except OSError as exc:
        return Finding(name, FAIL, f"{path} cannot be read: {exc.strerror}", create)
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return Finding(
            name,
            FAIL,
            f"{path} has mode {mode:04o}: other users may read it",
            f"chmod 600 {path}",
        )
    if info.st_uid != os.geteuid():
        return Finding(
            name,
            FAIL,
            f"{path} belongs to uid {info.st_uid}, not to the service user (uid {os.geteuid()})",
            f"run ica doctor as the service user, or chown it to that user: chown <user> {path}",
        )
    if not os.access(path, os.R_OK):
        return Finding(name, FAIL, f"{path} is not readable", f"chmod 600 {path}")
    return Finding(name, OK, f"{path} (mode {mode:04o})")


def _keys(settings: Settings) -> list[Finding]:
    found = []
    if not settings.secret_key.get_secret_value():
        found.append(_key_file("secret-key", settings.resolved_secret_key_file(), "run `ica init`"))
    found.append(
        _key_file("ledger-key", settings.resolved_ledger_key_file(), "run `ica keys init`")
    )
    return found


def _database(ctx: ServiceContext) -> Finding:
    from sqlalchemy import text

    try:
        with ctx.read() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error: unreachable
        return Finding(
            "database",
            FAIL,
            f"unreachable: {type(exc).__name__}",
            "check ICA_DATABASE_URL and that the database server runs and accepts ICA's role",
        )
    return Finding("database", OK, f"reachable ({ctx.db.engine.dialect.name})")


def _migrations(ctx: ServiceContext) -> Finding:
    from azdev_ica.db import migrate

    current, head = migrate.current_revision(ctx.db.engine), migrate.head_revision()
    if current != head:
        return Finding(
            "migrations",
            FAIL,
            f"schema at {current or 'nothing'}, ICA needs {head}",
            "run `ica db upgrade`",
        )
    return Finding("migrations", OK, f"at the latest ({head})")


def _clock_skew(settings: Settings, ctx: ServiceContext, clock: Clock) -> list[Finding]:
    from sqlalchemy import text

    if ctx.db.engine.dialect.name != "postgresql":
        return [Finding("clock", OK, "SQLite: the database shares this host's clock")]
    with ctx.read() as session:
        database_now: datetime = session.execute(text("SELECT now()")).scalar_one()
    skew = clock.now() - database_now
    seconds = skew.total_seconds()
    if abs(skew) > MAX_CLOCK_SKEW:
        return [
            Finding(
                "clock",
                FAIL,
                f"this host's clock is {seconds:+.1f} s off the database's",
                "synchronise both hosts' clocks (NTP / chrony); SLA, expiries and leases "
                "compare times across them",
            )
        ]
    return [Finding("clock", OK, f"{seconds:+.2f} s off the database's")]


def _checkpoint(settings: Settings, ctx: ServiceContext, clock: Clock) -> list[Finding]:
    from sqlalchemy import func, select

    from azdev_ica.db.tables import AuditCheckpoint, AuditShard, AuditTree
    from azdev_ica.services.ledger_status import ledger_status

    now = clock.now()
    status = ledger_status(ctx)
    if status.state == "stalled":
        return [
            Finding(
                "checkpoint",
                FAIL,
                f"the ledger is stalled: {status.reason} ({status.backlog.count} unsealed)",
                "a server with ICA_LEDGER_SEALER=true must run (or `ica audit seal`); "
                "`ica audit verify` and /ready say more",
            )
        ]
    with ctx.read() as session:
        year = session.scalar(select(func.max(AuditShard.year)))
        latest = None
        size = 0
        if year is not None:
            latest = session.execute(
                select(AuditCheckpoint.size, AuditCheckpoint.signed_at)
                .where(AuditCheckpoint.year == year)
                .order_by(AuditCheckpoint.size.desc())
                .limit(1)
            ).first()
            size = int(
                session.scalar(
                    select(AuditTree.size)
                    .where(AuditTree.year == year)
                    .order_by(AuditTree.size.desc())
                    .limit(1)
                )
                or 0
            )
    if latest is None:
        return [
            Finding(
                "checkpoint",
                FAIL,
                "no signed checkpoint yet",
                "start the server (it seals and signs) or run `ica audit seal`",
            )
        ]
    signed_at = latest[1]
    age = (now - signed_at).total_seconds()
    # A quiet ledger signs nothing new; only sealed entries no checkpoint covers are late.
    allowed = max(60.0, 10 * settings.ledger_checkpoint_interval_seconds)
    if size > int(latest[0]) and age > allowed:
        return [
            Finding(
                "checkpoint",
                FAIL,
                f"{size - int(latest[0])} sealed entries wait for a checkpoint; the last one "
                f"is {age:.0f} s old",
                "check the sealer's log (key file, checkpoint store) or run `ica audit seal`",
            )
        ]
    return [Finding("checkpoint", OK, f"last signed {age:.0f} s ago at size {latest[0]}")]


def _witnesses(settings: Settings, ctx: ServiceContext, clock: Clock) -> list[Finding]:
    from sqlalchemy import select

    from azdev_ica.db.tables import WitnessStatus

    if not settings.witnesses:
        return [Finding("witnesses", OK, "none configured (ICA_WITNESSES)")]
    with ctx.read() as session:
        failing = {
            name: (since, error)
            for name, since, error in session.execute(
                select(
                    WitnessStatus.witness, WitnessStatus.failing_since, WitnessStatus.last_error
                ).where(WitnessStatus.failing_since.is_not(None))
            )
        }
    found = []
    for witness in settings.witnesses:
        name = witness.vkey.split("+", 1)[0]
        problem = _unreachable(witness.url)
        if problem is not None:
            found.append(
                Finding(
                    f"witness {name}",
                    FAIL,
                    f"{witness.url} cannot be reached: {problem}",
                    "check the witness runs and that this host may reach it (firewall, DNS, "
                    "TLS); ICA keeps retrying",
                )
            )
        elif name in failing:
            since, error = failing[name]
            found.append(
                Finding(
                    f"witness {name}",
                    FAIL,
                    f"reachable now, but submissions fail since {since:%Y-%m-%d %H:%M} UTC: "
                    f"{error}",
                    "see the server's log; `ica witness` commands show its state",
                )
            )
        else:
            found.append(Finding(f"witness {name}", OK, f"{witness.url} answers"))
    return found


def _unreachable(url: str) -> str | None:
    """None when an HTTP server answers at `url` (any status), else why not."""
    import httpx2

    try:
        httpx2.get(url, timeout=WITNESS_TIMEOUT, follow_redirects=False)
    except httpx2.HTTPError as exc:
        return type(exc).__name__
    return None


def _outbox(settings: Settings, ctx: ServiceContext, clock: Clock) -> list[Finding]:
    from sqlalchemy import func, select

    from azdev_ica.db.tables import OutboxMessage

    now = clock.now()
    with ctx.read() as session:
        failed = int(
            session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.state == "failed")
            )
            or 0
        )
        late = int(
            session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(
                    OutboxMessage.state == "pending",
                    OutboxMessage.created_at < now - MAX_OUTBOX_AGE,
                )
            )
            or 0
        )
    found = []
    if failed:
        found.append(
            Finding(
                "outbox",
                FAIL,
                f"{failed} messages failed every delivery attempt",
                "see `ica outbox list --state failed`, fix the channel (ICA_NOTIFY), then "
                "`ica outbox retry --all-failed`",
            )
        )
    if late:
        found.append(
            Finding(
                "outbox",
                FAIL,
                f"{late} messages have waited more than {MAX_OUTBOX_AGE.seconds // 60} minutes",
                "a server with ICA_JOBS_SCHEDULER=true must run (or `ica jobs tick`); check "
                "the channel's address",
            )
        )
    return found or [Finding("outbox", OK, "nothing failed, nothing late")]
