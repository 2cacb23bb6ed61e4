"""`ica approval request|status|wait|sign|withdraw`: dual approval from a pipeline or a shell.

Part of the pipeline client: standard library only, nothing of the server. ICA_URL and
ICA_TOKEN as for `ica run` (to sign, ICA_TOKEN is your personal token, `icp_...`: only people
sign). The run key defaults to the current pipeline's run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping

from azdev_ica.cli import http

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads it so)
if TYPE_CHECKING:
    from typing import Any

EXIT_APPROVED = 0
EXIT_NOT_APPROVED = 1  # rejected, withdrawn or expired
EXIT_STILL_PENDING = 2
EXIT_USAGE = 64
FINAL_NOT_APPROVED = frozenset({"rejected", "withdrawn", "expired"})
CALL_TIMEOUT = 60.0  # how long `wait` retries one call to an unreachable ICA

EXIT_CODES = """\
exit codes:
  0   done; for wait: approved
  1   wait: rejected, withdrawn or expired (final: do not deploy)
  2   wait: still pending when --timeout ran out (ask again or wait again)
  3   refused by ICA: invalid input, an unknown approval, or a conflict with what is recorded
  4   authentication or permission refused, including a signature the approval rules refuse
      (the requester never signs, one person never signs both halves, the role is needed)
  5   ICA unreachable or failing, after retries
  64  usage error: a missing argument or pipeline variable
"""


class UsageError(Exception):
    """Something the caller must supply is missing or malformed."""


def register_alone(sub: Any) -> None:
    """`ica approval ...` alone (what `ica approval wait` builds)."""
    from azdev_ica.cli.pipeline import common_arguments

    register(sub, common_arguments())


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    approval = sub.add_parser(
        "approval",
        help="ask for, follow and sign dual approvals",
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = approval.add_subparsers(dest="approval_command", metavar="ACTION", required=True)

    def add(
        name: str, help_text: str, parents: list[argparse.ArgumentParser] | None = None
    ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[common] if parents is None else parents,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return parser

    request = add("request", "ask for the approval of this run's deployment (or get the open one)")
    _scope_arguments(request)
    request.set_defaults(func=_request)

    from azdev_ica.cli.listing import register_approval_list

    register_approval_list(add)

    status = add("status", "print an approval's status, signatures and expiry")
    status.add_argument("approval_id", type=_positive_int, metavar="ID")
    status.set_defaults(func=_status)

    wait = add(
        "wait",
        "wait for the decision: exit 0 approved, 1 rejected/withdrawn/expired, 2 still pending",
        parents=[],
    )
    wait.add_argument("--url", help="ICA's base URL (default: $ICA_URL)")
    wait.add_argument("--output", choices=("text", "json"), default="text")
    wait.add_argument(
        "--wait",
        dest="wait_seconds",
        type=_positive_float,
        default=3600.0,
        metavar="SECONDS",
        help="how long to wait for the decision, in seconds (default: 3600), as for `ica gate "
        "evaluate --wait`; each call to ICA is also retried for up to a minute when ICA is "
        "unreachable",
    )
    # Deprecated spelling (`--timeout` elsewhere is the retry budget of one call).
    wait.add_argument(
        "--timeout",
        dest="wait_seconds",
        type=_positive_float,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    wait.add_argument(
        "approval_id",
        type=_positive_int,
        nargs="?",
        metavar="ID",
        help="default: ask for this run's approval first (as `request`) and wait for it",
    )
    _scope_arguments(wait)
    wait.add_argument(
        "--interval",
        type=_positive_float,
        default=10.0,
        help="first pause between polls in seconds when ICA names none; it grows by half up to "
        "--max-interval (default: 10). ICA names its own (Retry-After: 5 s in a request's "
        "first minute, 15 s until ten minutes, 30 s after), and wait follows it; each poll "
        "is a conditional request (If-None-Match), answered 304 while nothing changed",
    )
    wait.add_argument(
        "--max-interval",
        type=_positive_float,
        default=120.0,
        help="the longest pause of our own back-off (default: 120)",
    )
    wait.set_defaults(func=_wait)

    sign = add("sign", "sign one half of an approval as yourself (ICA_TOKEN: a personal token)")
    sign.add_argument("approval_id", type=_positive_int, metavar="ID")
    sign.add_argument("--decision", choices=("approve", "reject"), required=True)
    sign.add_argument("--half", choices=("technical", "business"), help="default: your role's")
    sign.add_argument("--comment", help="why (recorded in the audit trail)")
    sign.set_defaults(func=_sign)

    withdraw = add("withdraw", "withdraw an open approval request (the requesting side only)")
    withdraw.add_argument("approval_id", type=_positive_int, metavar="ID")
    withdraw.add_argument("--reason", required=True)
    withdraw.set_defaults(func=_withdraw)


def _scope_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-key", help="ado:<projectId>:<buildId> or gh:<repoId>:<runId>")
    parser.add_argument("--tenant", help="default: the run's tenant")
    parser.add_argument("--stage", help="default: the run's stage")
    parser.add_argument("--artifact-digest", help="sha256:<64 hex>; default: the run's build")
    parser.add_argument("--commit", help="default: the run's commit")
    parser.add_argument(
        "--cost-impact-minor",
        "--cost-minor",
        dest="cost_minor",
        type=_natural,
        help="cost impact in minor units (cents), as for `ica gate evaluate`",
    )
    parser.add_argument("--budget-minor", type=_natural, help="approved budget in minor units")
    parser.add_argument("--currency", help="ISO 4217 code of cost and budget, e.g. NZD")


# --- handlers ------------------------------------------------------------------------------------


def _request(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> int:
        response = _ask(client, args, env)
        _print(args, response.data, _summary(response.data))
        return 0

    return _execute(args, call)


def _status(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> int:
        data = client.get_json(f"/api/v1/azdev/approval/{args.approval_id}").data
        _print(args, data, _details(data))
        return 0

    return _execute(args, call)


def _sign(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> int:
        body: dict[str, Any] = {"decision": args.decision}
        if args.half:
            body["half"] = args.half
        if args.comment:
            body["comment"] = args.comment
        path = f"/api/v1/azdev/approval/{args.approval_id}/sign"
        data = client.post_json(path, body, _idempotency_key()).data
        _print(args, data, _summary(data))
        return 0

    return _execute(args, call)


def _withdraw(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> int:
        path = f"/api/v1/azdev/approval/{args.approval_id}/withdraw"
        data = client.post_json(path, {"reason": args.reason}, _idempotency_key()).data
        _print(args, data, _summary(data))
        return 0

    return _execute(args, call)


def _wait(
    args: argparse.Namespace,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> int:
        deadline = clock() + args.wait_seconds
        if args.approval_id is None:
            answer = _ask(client, args, env)
        else:
            answer = client.get_json(f"/api/v1/azdev/approval/{args.approval_id}")
        data = answer.data
        pause = args.interval
        while True:
            status = data["status"]
            if status == "approved" or status in FINAL_NOT_APPROVED:
                _print(args, data, _summary(data))
                return EXIT_APPROVED if status == "approved" else EXIT_NOT_APPROVED
            remaining = deadline - clock()
            if remaining <= 0:
                _print(args, data, _summary(data) + " (still waiting at the timeout)")
                return EXIT_STILL_PENDING
            # The server's back-off (Retry-After) when it names one, else our own.
            asked = _seconds(answer.headers.get("retry-after"))
            delay = min(pause if asked is None else asked, remaining)
            print(f"ica: {_summary(data)}; next look in {delay:g} s", file=sys.stderr)
            sleep(delay)
            pause = min(pause * 1.5, args.max_interval)
            # A conditional read: 304 (no body) while nothing changed.
            etag = answer.headers.get("etag")
            answer = client.get_json(f"/api/v1/azdev/approval/{data['id']}", etag=etag)
            if answer.status != 304:
                data = answer.data

    return _execute(args, call, client_timeout=min(args.wait_seconds, CALL_TIMEOUT))


# --- plumbing ------------------------------------------------------------------------------------


def _seconds(value: str | None) -> float | None:
    """A Retry-After of delta-seconds (what ICA sends a poller), or None."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def _ask(client: http.Client, args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    body: dict[str, Any] = {"run_key": args.run_key or _detected_run_key(env)}
    optional = {
        "tenant": args.tenant,
        "stage": args.stage,
        "artifact_digest": args.artifact_digest,
        "commit": args.commit,
        "cost_impact_minor": args.cost_minor,
        "budget_minor": args.budget_minor,
        "currency": args.currency,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return client.post_json("/api/v1/azdev/approval", body, _idempotency_key())


def _detected_run_key(env: Mapping[str, str]) -> str:
    from azdev_ica.cli.pipeline import UsageError as PipelineUsage
    from azdev_ica.cli.pipeline import _detected_run_key as detected

    try:
        return detected(env)
    except PipelineUsage as exc:
        raise UsageError(str(exc)) from None


def _execute(
    args: argparse.Namespace,
    call: Callable[[http.Client, Mapping[str, str]], int],
    *,
    client_timeout: float | None = None,
) -> int:
    env = os.environ
    try:
        url = args.url or env.get("ICA_URL", "").strip()
        if not url:
            raise UsageError("set ICA_URL (or --url) to ICA's base URL")
        try:
            client = http.client_from_env(url, env, timeout=client_timeout or args.timeout)
        except ValueError as exc:
            raise UsageError(f"ICA_URL: {exc}") from None
        return call(client, env)
    except UsageError as exc:
        print(f"ica: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except http.ProblemError as exc:
        if args.output == "json":
            print(json.dumps(exc.problem, indent=2, sort_keys=True))
        code = exc.problem.get("code")
        print(f"ica: {exc.message}" + (f" [{code}]" if code else ""), file=sys.stderr)
        return exc.exit_code
    except http.IcaHttpError as exc:
        print(f"ica: {exc.message}", file=sys.stderr)
        return exc.exit_code


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.output == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(text)


def _summary(data: Mapping[str, Any]) -> str:
    awaiting = data.get("awaiting") or []
    waiting = f", awaiting {' and '.join(awaiting)}" if awaiting else ""
    return (
        f"approval {data['id']} {data['status']} for {data['tenant']}/{data['stage']}"
        f"{waiting}: {data['link']}"
    )


def _details(data: Mapping[str, Any]) -> str:
    lines = [
        _summary(data),
        f"  run {data['run_key']}, digest {data.get('artifact_digest') or '-'}, "
        f"commit {data.get('commit') or '-'}",
        f"  expires {data['expires_at']}, SLA due {data['sla_due_at']}",
    ]
    lines += [
        f"  {s['signed_at']}  {s['half']}  {s['decision']}  {s['login']}"
        + (f"  ({s['comment']})" if s.get("comment") else "")
        for s in data.get("signatures", [])
    ]
    return "\n".join(lines)


def _idempotency_key() -> str:
    return http.idempotency_key()


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {value!r}")
    return int(value)


def _natural(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number of minor units: {value!r}")
    return int(value)


def _positive_float(value: str) -> float:
    try:
        parsed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not parsed > 0 or parsed != parsed or parsed == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {value!r}")
    return parsed
