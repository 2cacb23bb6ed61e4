"""`ica policy propose|proposals|proposal|sign|withdraw`: governed policy changes over HTTP.

Like `ica approval sign`, these act as a person (or, to propose, a key) against a running
ICA: ICA_URL and ICA_TOKEN (to sign: your personal token, `icp_...`; only people sign).
Standard library only, nothing of the server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from azdev_ica.cli import http
from azdev_ica.cli.approvals import _execute, _idempotency_key, _positive_int, _print

EXIT_USAGE = 64
BASE = "/api/v1/azdev/policy"

EXIT_CODES = """\
exit codes:
  0   done
  3   refused by ICA: an invalid policy, an unknown proposal, a stale or closed proposal
  4   authentication or permission refused, including a signature the rules refuse
      (the proposer never signs, one person signs once, policy:sign for every tenant)
  5   ICA unreachable or failing, after retries
  64  usage error
"""


def register(actions: Any) -> None:
    """Add the governed-change actions to the `ica policy` sub-parsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="ICA's base URL (default: $ICA_URL)")
    common.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to keep retrying one call (default: 60)",
    )
    common.add_argument("--output", choices=("text", "json"), default="text")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name,
            help=help_text,
            description=help_text + " (over HTTP: ICA_URL, ICA_TOKEN)",
            parents=[common],
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return parser

    propose = add("propose", "propose a policy file as the next version (two approvers sign it)")
    propose.add_argument("file", type=Path)
    propose.add_argument("--reason", required=True, help="why the policy changes (recorded)")
    propose.set_defaults(func=_propose)

    listing = add("proposals", "list policy proposals, newest first")
    listing.add_argument("--status", choices=("pending", "active", "rejected", "withdrawn"))
    listing.set_defaults(func=_proposals)

    show = add("proposal", "show one proposal with its signatures")
    show.add_argument("proposal_id", type=_positive_int, metavar="ID")
    show.set_defaults(func=_show)

    sign = add("sign", "sign a proposal as yourself; the second approval activates it")
    sign.add_argument("proposal_id", type=_positive_int, metavar="ID")
    sign.add_argument("--decision", choices=("approve", "reject"), default="approve")
    sign.add_argument("--comment", help="recorded in the audit trail")
    sign.set_defaults(func=_sign)

    withdraw = add("withdraw", "withdraw a pending proposal (the proposing side)")
    withdraw.add_argument("proposal_id", type=_positive_int, metavar="ID")
    withdraw.add_argument("--reason", required=True)
    withdraw.set_defaults(func=_withdraw)


def _propose(args: argparse.Namespace) -> int:
    try:
        document = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"ica: cannot read the policy file: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def call(client: http.Client, env: Mapping[str, str]) -> int:
        body = {"document": document, "reason": args.reason}
        data = client.post_json(f"{BASE}/proposal", body, _idempotency_key()).data
        _print(args, data, _summary(data))
        return 0

    return _execute(args, call)


def _proposals(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> int:
        query = f"?status={args.status}" if args.status else ""
        data = client.get_json(f"{BASE}/proposal{query}").data
        lines = [_summary(item) for item in data["items"]] or ["no proposals"]
        _print(args, data, "\n".join(lines))
        return 0

    return _execute(args, call)


def _show(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> int:
        data = client.get_json(f"{BASE}/proposal/{args.proposal_id}").data
        _print(args, data, _details(data))
        return 0

    return _execute(args, call)


def _sign(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> int:
        body: dict[str, Any] = {"decision": args.decision}
        if args.comment:
            body["comment"] = args.comment
        path = f"{BASE}/proposal/{args.proposal_id}/sign"
        data = client.post_json(path, body, _idempotency_key()).data
        _print(args, data, _summary(data))
        return 0

    return _execute(args, call)


def _withdraw(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> int:
        path = f"{BASE}/proposal/{args.proposal_id}/withdraw"
        data = client.post_json(path, {"reason": args.reason}, _idempotency_key()).data
        _print(args, data, _summary(data))
        return 0

    return _execute(args, call)


def _summary(data: Mapping[str, Any]) -> str:
    signed = sum(1 for s in data.get("signatures", []) if s["decision"] == "approve")
    state = str(data["status"]) + (" (stale: propose again)" if data.get("stale") else "")
    text = (
        f"proposal {data['id']} {state}: policy {str(data['sha256'])[:12]}, "
        f"{signed}/{data['signatures_required']} approvals"
    )
    if data.get("version_id"):
        text += f", active as version {data['version_id']}"
    return text


def _details(data: Mapping[str, Any]) -> str:
    lines = [
        _summary(data),
        f"  proposed by {data['proposed_by']} at {data['proposed_at']}: {data['reason']}",
        f"  based on {str(data.get('base_sha256') or '(no policy)')[:12]}"
        f" (version {data.get('base_version_id') or '-'})",
    ]
    lines += [
        f"  {s['signed_at']}  {s['decision']}  person {s['person_id']}"
        + (f"  ({s['comment']})" if s.get("comment") else "")
        for s in data.get("signatures", [])
    ]
    if data.get("close_reason"):
        lines.append(f"  closed: {data['close_reason']}")
    return "\n".join(lines)
