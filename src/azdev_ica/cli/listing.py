"""The listing commands people look for: `ica run list`, `ica approval list`, `ica audit query`.

Part of the client (standard library only): over HTTP with ICA_URL and ICA_TOKEN, each follows
the API's cursor pages up to `--limit` items and answers a table (`--output text`) or the items
as a JSON array (`--output json`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from azdev_ica.cli import http

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads it so)
if TYPE_CHECKING:
    from typing import Any

API = "/api/v1/azdev"
PAGE_MAX = 500


def _positive_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def add_limit(parser: argparse.ArgumentParser, default: int = 50) -> None:
    parser.add_argument(
        "--limit",
        type=_positive_limit,
        default=default,
        help=f"at most this many items (default: {default}); pages are followed",
    )


def fetch(
    client: http.Client,
    path: str,
    params: Mapping[str, Any],
    limit: int,
    *,
    post: bool = False,
) -> list[dict[str, Any]]:
    """The items of `path`, page after page, until `limit` or the last page."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    query = {key: value for key, value in params.items() if value is not None}
    while len(items) < limit:
        page = {**query, "limit": min(limit - len(items), PAGE_MAX)}
        if cursor:
            page["cursor"] = cursor
        if post:
            data = client.post_json(path, page, None).data
        else:
            from urllib.parse import urlencode  # (registering `run list` needs none of it)

            data = client.get_json(f"{path}?{urlencode(page)}").data
        items.extend(data["items"])
        cursor = data.get("next_cursor")
        if not cursor:
            break
    return items[:limit]


def table(items: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain text table: a header, one line per item, columns padded to fit."""
    rows = [[_cell(item.get(column)) for column in columns] for item in items]
    widths = [
        max([len(column), *(len(row[i]) for row in rows)]) for i, column in enumerate(columns)
    ]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]  # noqa: B905 (3.8)
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]  # noqa: B905
    if not rows:
        lines.append("(none)")
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("\n", " ")


# --- the commands ----------------------------------------------------------------------------


def register_run_list(add: Any) -> None:
    runs = add("list", "list runs, newest first, with filters (a table, or JSON)")
    runs.add_argument("--tenant")
    runs.add_argument("--stage")
    runs.add_argument("--status", choices=("running", "success", "failed", "cancelled"))
    runs.add_argument("--provider", choices=("ado", "gh"))
    runs.add_argument("--pipeline-name")
    runs.add_argument("--branch")
    runs.add_argument("--started-after", metavar="RFC3339")
    runs.add_argument("--started-before", metavar="RFC3339")
    add_limit(runs)
    runs.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    from azdev_ica.cli.approvals import _execute

    def call(client: http.Client, env: Mapping[str, str]) -> int:
        params = {
            "tenant": args.tenant,
            "stage": args.stage,
            "status": args.status,
            "provider": args.provider,
            "pipeline_name": args.pipeline_name,
            "branch": args.branch,
            "started_after": args.started_after,
            "started_before": args.started_before,
        }
        items = fetch(client, f"{API}/runs", params, args.limit)
        columns = ("run_key", "tenant", "stage", "status", "pipeline_name", "start_time")
        _show(args, items, columns)
        return 0

    return _execute(args, call)


def register_approval_list(add: Any) -> None:
    approvals = add("list", "list approval requests, newest first, with filters (table or JSON)")
    approvals.add_argument("--tenant")
    approvals.add_argument("--stage")
    approvals.add_argument(
        "--status",
        choices=(
            "pending",
            "technical_approved",
            "business_approved",
            "approved",
            "rejected",
            "withdrawn",
            "expired",
        ),
    )
    approvals.add_argument("--run-key")
    approvals.add_argument("--open", action="store_true", help="only requests still open")
    add_limit(approvals)
    approvals.set_defaults(func=approval_list)


def approval_list(args: argparse.Namespace) -> int:
    from azdev_ica.cli.approvals import _execute

    def call(client: http.Client, env: Mapping[str, str]) -> int:
        params = {
            "tenant": args.tenant,
            "stage": args.stage,
            "status": args.status,
            "run_key": args.run_key,
            "open": "true" if args.open else None,
        }
        items = fetch(client, f"{API}/approvals", params, args.limit)
        columns = ("id", "status", "tenant", "stage", "run_key", "requested_at", "expires_at")
        _show(args, items, columns)
        return 0

    return _execute(args, call)


def register_audit_query(audit: Any, common: argparse.ArgumentParser) -> None:
    query = audit.add_parser(
        "query",
        parents=[common],
        help="search the audit ledger's entries (over HTTP, an auditor's credential)",
        description="Audit entries in log order, filtered by time, actor, action, subject and "
        "tenant (a table, or JSON with each entry's canonical bytes).",
    )
    query.add_argument("--from", dest="time_from", metavar="RFC3339", help="at or after")
    query.add_argument("--to", dest="time_to", metavar="RFC3339", help="before")
    query.add_argument("--actor", help="actor id, e.g. apikey:ica_abcdefghij")
    query.add_argument("--action", help="e.g. run.start, approval.sign")
    query.add_argument("--subject-type", help="e.g. run, approval")
    query.add_argument("--subject-id")
    query.add_argument("--tenant")
    query.add_argument("--year", type=int)
    add_limit(query, default=100)
    query.set_defaults(func=audit_query)


def audit_query(args: argparse.Namespace) -> int:
    from azdev_ica.cli.approvals import _execute

    def call(client: http.Client, env: Mapping[str, str]) -> int:
        body = {
            "time_from": args.time_from,
            "time_to": args.time_to,
            "actor": args.actor,
            "action": args.action,
            "subject_type": args.subject_type,
            "subject_id": args.subject_id,
            "tenant": args.tenant,
            "year": args.year,
        }
        items = fetch(client, f"{API}/audit/query", body, args.limit, post=True)
        columns = ("index", "time", "action", "actor_id", "subject_type", "subject_id", "tenant")
        _show(args, items, columns)
        return 0

    return _execute(args, call)


def _show(args: argparse.Namespace, items: list[dict[str, Any]], columns: Sequence[str]) -> None:
    import json

    if args.output == "json":
        print(json.dumps(items, indent=2, sort_keys=True))
    else:
        print(table(items, columns))
