"""`ica siem status`: how far the audit stream has reached each SIEM destination.

Like `ica report monthly`, it reads the database directly (ICA_DATABASE_URL) on the server
host, with the destinations of ICA_SIEM. Heavy imports happen inside the handler.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from azdev_ica.cli.admin import EXIT_OK, _context, _guarded, add_output

EXIT_STALLED = 4


def register(sub: Any) -> None:
    siem = sub.add_parser("siem", help="the audit stream to SIEM destinations").add_subparsers(
        dest="siem_command", metavar="ACTION", required=True
    )
    status = siem.add_parser(
        "status",
        help="each destination's cursor, backlog and failures (exit 4 when one is stalled)",
        description="For each destination of ICA_SIEM (and any cursor of one no longer "
        "configured): the last entry it took, how many sealed entries wait and since when, "
        "and whether it is failing. State: ok, behind, failing, stalled (failing for "
        "ICA_SIEM_ALERT_MINUTES or longer: exit 4), unconfigured.",
    )
    add_output(status)
    status.set_defaults(func=_status)


def _line(item: dict[str, Any]) -> str:
    cursor = item["cursor"]
    at = "-" if cursor is None else f"{cursor['year']}/{cursor['index']}"
    text = (
        f"{item['destination']:<20} {item['state']:<12} cursor {at:<12} "
        f"forwarded {item['forwarded']:<8} behind {item['behind']}"
    )
    if item["oldest_waiting_at"]:
        text += f" (oldest {item['oldest_waiting_at']})"
    if item["failing_since"]:
        text += (
            f"\n{'':<20} failing since {item['failing_since']} ({item['failures']} tries, next "
            f"{item['next_attempt_at']}): {item['last_error']}"
        )
    return text


@_guarded
def _status(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from azdev_ica.cli.admin import _settings
    from azdev_ica.services.siem import status

    settings = _settings()
    configured = {destination.name: destination.type for destination in settings.siem}
    with _context(settings) as ctx, ctx.read() as session:
        items = status(
            session,
            configured,
            now=ctx.clock.now(),
            alert_after=timedelta(minutes=settings.siem_alert_minutes),
        )
    if args.output == "json":
        sys.stdout.write(json.dumps({"destinations": items}, indent=2) + "\n")
    elif not items:
        print("no SIEM destination configured (ICA_SIEM)")
    else:
        for item in items:
            print(_line(item))
    return EXIT_STALLED if any(item["state"] == "stalled" for item in items) else EXIT_OK
