"""`ica doctor`: check a running installation and print what to fix (observe/doctor.py)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azdev_ica.observe.doctor import Finding

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_INVALID = 3


def register(sub: Any) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check this installation and print what to fix",
        description="Checks, with the server's settings (ICA_* variables): the public URL is "
        "set; the secret and ledger key files exist and only their owner (the service "
        "user, who runs this) may read them; the database answers and is at the latest "
        "migration; this host's clock agrees with the database's (PostgreSQL); the ledger "
        "seals and its last checkpoint is recent; each witness answers; no outbox message "
        "failed or waits too long. Writes nothing. Exit 0 when every check passes, 1 when "
        "something needs fixing, 3 when the settings themselves are invalid.",
    )
    doctor.add_argument("--output", choices=("text", "json"), default="text")
    doctor.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    import sys

    from pydantic import ValidationError

    from azdev_ica.clock import SystemClock
    from azdev_ica.db.engine import Database
    from azdev_ica.observe.doctor import diagnose, missing_sqlite_file
    from azdev_ica.services.context import LedgerConfig, ServiceContext
    from azdev_ica.settings import MissingSecretError, Settings

    try:
        settings = Settings()
    except (ValidationError, MissingSecretError) as exc:
        print(f"ica: the settings are invalid: {exc}", file=sys.stderr)
        return EXIT_INVALID
    clock = SystemClock()
    try:
        pepper = settings.pepper()
    except MissingSecretError:
        pepper = b""  # reported by the secret-key check; nothing here needs it
    url = settings.resolved_database_url()
    if missing_sqlite_file(url) is not None:  # connecting would create an empty one
        return _report(args, diagnose(settings, None, clock))
    db = Database.from_url(url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    try:
        ctx = ServiceContext(
            db=db,
            clock=clock,
            pepper=pepper,
            ledger=LedgerConfig.from_settings(settings),
            public_url=settings.resolved_public_url(),
        )
        findings = diagnose(settings, ctx, clock)
    finally:
        db.dispose()
    return _report(args, findings)


def _report(args: argparse.Namespace, findings: list[Finding]) -> int:
    from azdev_ica.observe.doctor import FAIL

    failed = [finding for finding in findings if finding.status == FAIL]
    if args.output == "json":
        print(json.dumps({"ok": not failed, "checks": [f.as_dict() for f in findings]}))
    else:
        for finding in findings:
            print(f"{finding.status.upper():4}  {finding.check}: {finding.detail}")
            if finding.fix:
                print(f"      fix: {finding.fix}")
        print(f"{len(failed)} of {len(findings)} checks need fixing" if failed else "all good")
    return EXIT_PROBLEMS if failed else EXIT_OK
