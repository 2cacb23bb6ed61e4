"""`ica inventory`: which version runs in each tenant x stage, since when, from which run,
approved by whom (seed 002), as an aligned table or JSON.

A client of `GET /api/v1/azdev/inventory`: standard library only, like `ica gate`; ICA_URL
and the credential as for `ica run` (ICA_TOKEN, or the pipeline's workload identity). Any
role with `run:read` may ask; a tenant-scoped caller sees its own tenants only.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from azdev_ica.cli import http
from azdev_ica.cli.gate_client import _execute
from azdev_ica.cli.pipeline import _positive_float

EXIT_CODES = """\
exit codes:
  0   done (an empty inventory too)
  3   refused by ICA: invalid input (e.g. a --tenant or --stage that is not a code)
  4   authentication or permission refused (check ICA_TOKEN and its role/tenants)
  5   ICA unreachable or failing, after retries within --timeout
  64  usage error
"""

HEADERS = ("TENANT", "STAGE", "VERSION", "DIGEST", "COMMIT", "SINCE", "RUN", "APPROVED BY")
DIGEST_CHARS = 12  # hex characters of the sha256 shown
COMMIT_CHARS = 7  # as `git log --oneline`
NONE = "-"


def register(sub: Any) -> None:
    text = "what runs in each tenant x stage: version, digest, commit, since, run, approvers"
    parser = sub.add_parser(
        "inventory",
        help=text,
        description=f"Ask ICA {text}.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", help="ICA's base URL (default: $ICA_URL)")
    parser.add_argument(
        "--timeout", type=_positive_float, default=60.0, help="seconds to keep retrying the call"
    )
    parser.add_argument("--output", choices=("text", "json"), default="text")
    parser.add_argument("--tenant", help="one tenant's targets only")
    parser.add_argument("--stage", help="one stage's targets only")
    parser.set_defaults(func=_inventory)


def _inventory(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        query = {name: getattr(args, name) for name in ("tenant", "stage") if getattr(args, name)}
        path = "/api/v1/azdev/inventory" + (f"?{urlencode(query)}" if query else "")
        return client.get_json(path)

    return _execute(args, call, render)


def render(items: Any) -> str:
    """The inventory as an aligned table, one target per line."""
    if not items:
        return "no successful deployment recorded (for the targets you may read)"
    rows = [
        (
            item["tenant"],
            item["stage"],
            item.get("version") or NONE,
            short_digest(item.get("artifact_digest")),
            (item.get("commit") or NONE)[:COMMIT_CHARS],
            since(item["deployed_at"]),
            item["run_key"],
            approvers(item.get("approved_by") or []),
        )
        for item in items
    ]
    return table(HEADERS, rows)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )


def short_digest(digest: str | None) -> str:
    if not digest:
        return NONE
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}:{value[:DIGEST_CHARS]}" if value else digest[:DIGEST_CHARS]


def since(value: str) -> str:
    """An RFC 3339 time in UTC to the second (the API gives microseconds)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        return value
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def approvers(signers: Sequence[Mapping[str, Any]]) -> str:
    if not signers:
        return NONE
    return ", ".join(f"{signer['login']} ({signer['half']})" for signer in signers)
