"""`ica signoff give|list` and `ica refresh request|approve|complete|list` (seed 002).

Part of the client: standard library only, nothing of the server. ICA_URL and ICA_TOKEN as for
`ica run` (to sign off or approve, ICA_TOKEN is your personal token: only people sign).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from azdev_ica.cli import http
from azdev_ica.cli.gate_client import EXIT_CODES, _execute, _key
from azdev_ica.cli.pipeline import _positive_float

API = "/api/v1/azdev"


def register(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="ICA's base URL (default: $ICA_URL)")
    common.add_argument(
        "--timeout", type=_positive_float, default=60.0, help="seconds to keep retrying one call"
    )
    common.add_argument("--output", choices=("text", "json"), default="text")

    def group(name: str, help_text: str) -> Any:
        parser = sub.add_parser(name, help=help_text, description=help_text)
        return parser.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)

    def add(actions: Any, name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[common],
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return parser

    signoff = group("signoff", "sign-offs bound to tenant, stage and artifact digest (seed 002)")
    give = add(signoff, "give", "sign off an artifact for a tenant's stage, as yourself")
    give.add_argument("--tenant", required=True)
    give.add_argument("--stage", required=True, help="the stage the artifact is to enter")
    give.add_argument("--artifact-digest", required=True, help="sha256:<64 hex>")
    give.add_argument("--kind", required=True, choices=("qa", "uat", "data", "major"))
    give.add_argument("--comment")
    give.set_defaults(func=_signoff_give)
    listing = add(signoff, "list", "list sign-offs (of your tenants)")
    listing.add_argument("--tenant")
    listing.add_argument("--stage")
    listing.add_argument("--artifact-digest")
    listing.set_defaults(func=_signoff_list)

    refresh = group("refresh", "copy production data into a lower stage (masked, approved)")
    request = add(refresh, "request", "ask for a data refresh, with the masking evidence")
    request.add_argument("--tenant", required=True)
    request.add_argument("--target-stage", required=True, help="e.g. staging")
    request.add_argument("--reason", required=True)
    request.add_argument("--evidence-sha256", required=True, help="checksum of the masking run")
    request.add_argument("--evidence-uri", required=True, help="where the evidence is kept")
    request.add_argument("--evidence-description", required=True, help="what was masked")
    request.set_defaults(func=_refresh_request)
    approve = add(refresh, "approve", "decide a data refresh request, as yourself")
    approve.add_argument("request_id", type=int, metavar="ID")
    approve.add_argument("--decision", choices=("approve", "reject"), default="approve")
    # Deprecated spelling of --decision reject.
    approve.add_argument(
        "--reject",
        dest="decision",
        action="store_const",
        const="reject",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    approve.add_argument("--comment")
    approve.set_defaults(func=_refresh_approve)
    complete = add(refresh, "complete", "mark an approved data refresh as done")
    complete.add_argument("request_id", type=int, metavar="ID")
    complete.set_defaults(func=_refresh_complete)
    refreshes = add(refresh, "list", "list data refresh requests (of your tenants)")
    refreshes.add_argument("--tenant")
    refreshes.add_argument("--status", choices=("requested", "approved", "rejected", "completed"))
    refreshes.set_defaults(func=_refresh_list)


def _query(pairs: Mapping[str, str | None]) -> str:
    given = {name: value for name, value in pairs.items() if value}
    return "?" + urlencode(given) if given else ""


def _signoff_line(item: Any) -> str:
    return (
        f"sign-off {item['id']}: {item['kind']} for {item['tenant']}/{item['stage']} "
        f"{item['artifact_digest']} by {item['signed_by']} at {item['signed_at']}"
    )


def _signoff_give(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        body: dict[str, Any] = {
            "tenant": args.tenant,
            "stage": args.stage,
            "artifact_digest": args.artifact_digest,
            "kind": args.kind,
        }
        if args.comment:
            body["comment"] = args.comment
        return client.post_json(f"{API}/signoff", body, _key())

    return _execute(args, call, _signoff_line)


def _signoff_list(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        query = _query({"tenant": args.tenant, "stage": args.stage, "digest": args.artifact_digest})
        return client.get_json(f"{API}/signoff{query}")

    def text(data: Any) -> str:
        return "\n".join(_signoff_line(item) for item in data) or "no sign-offs"

    return _execute(args, call, text)


def _refresh_line(item: Any) -> str:
    return (
        f"refresh {item['id']}: {item['tenant']} {item['source_stage']} -> "
        f"{item['target_stage']}: {item['status']} (requested by {item['requested_by']})"
    )


def _refresh_request(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        body = {
            "tenant": args.tenant,
            "target_stage": args.target_stage,
            "reason": args.reason,
            "evidence": {
                "sha256": args.evidence_sha256,
                "uri": args.evidence_uri,
                "description": args.evidence_description,
            },
        }
        return client.post_json(f"{API}/refresh", body, _key())

    return _execute(args, call, _refresh_line)


def _refresh_approve(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        body: dict[str, Any] = {"decision": args.decision}
        if args.comment:
            body["comment"] = args.comment
        return client.post_json(f"{API}/refresh/{args.request_id}/decide", body, _key())

    return _execute(args, call, _refresh_line)


def _refresh_complete(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        return client.post_json(f"{API}/refresh/{args.request_id}/complete", {}, _key())

    return _execute(args, call, _refresh_line)


def _refresh_list(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        return client.get_json(
            f"{API}/refresh{_query({'tenant': args.tenant, 'status': args.status})}"
        )

    def text(data: Any) -> str:
        return "\n".join(_refresh_line(item) for item in data) or "no data refresh requests"

    return _execute(args, call, text)
