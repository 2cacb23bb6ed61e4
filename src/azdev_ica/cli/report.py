"""`ica report monthly`: the monthly compliance report (seed 000 §4.1), on the server host.

Like `ica policy show`, it reads the database directly (ICA_DATABASE_URL), as an auditor of
every tenant. Heavy imports happen inside the handler.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from azdev_ica.cli.admin import EXIT_INVALID, EXIT_OK, _context, _fail, _guarded

_MONTH = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")


def _month(value: str) -> str:
    if not _MONTH.match(value) or int(value[:4]) < 2000:
        raise argparse.ArgumentTypeError(f"not a month (YYYY-MM): {value!r}")
    return value


def register(sub: Any) -> None:
    report = sub.add_parser("report", help="compliance reports").add_subparsers(
        dest="report_command", metavar="ACTION", required=True
    )
    monthly = report.add_parser(
        "monthly",
        help="the monthly compliance report, per tenant and fleet-wide (HTML or JSON)",
        description="Runs, success rate, deployments, change failure rate, MTTR, approvals "
        "and SLA compliance, overrides against the target, unauthorised changes, incidents, "
        "backups and drills, policy versions activated, and the ledger's checkpoint at the "
        "month's end. JSON schema: docs/report.md.",
    )
    monthly.add_argument("--month", type=_month, required=True, help="YYYY-MM (UTC)")
    monthly.add_argument("--tenant", help="one tenant (default: every tenant, and the fleet)")
    monthly.add_argument("--output", choices=("html", "json"), default="html")
    # Deprecated spelling of --output.
    monthly.add_argument(
        "--format",
        dest="output",
        choices=("html", "json"),
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    monthly.add_argument("--out", type=Path, help="file to write (default: stdout)")
    monthly.set_defaults(func=_monthly)


@_guarded
def _monthly(args: argparse.Namespace) -> int:
    import getpass

    from azdev_ica.auth.principal import Principal
    from azdev_ica.auth.roles import Role
    from azdev_ica.cli.admin import _settings
    from azdev_ica.errors import IcaError
    from azdev_ica.queries.report import monthly_report, render_html

    reader = Principal.with_role(
        kind="operator",
        id=f"cli:{getpass.getuser()}",
        name="operator",
        role=Role.AUDITOR,
        tenants=None,
    )
    try:
        with _context(_settings()) as ctx, ctx.read() as session:
            report = monthly_report(
                ctx, session, principal=reader, month=args.month, tenant=args.tenant
            )
    except IcaError as exc:
        return _fail(exc.detail, EXIT_INVALID)
    if args.output == "json":
        text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    else:
        text = render_html(report)
    if args.out is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        args.out.write_text(text, encoding="utf-8")
    except OSError as exc:
        return _fail(f"cannot write {args.out}: {exc}")
    print(f"wrote the {args.output} report of {args.month} to {args.out}", file=sys.stderr)
    return EXIT_OK
