"""`ica gate evaluate`, `ica lock show|release`, `ica override request|sign|review|stats`.

Part of the pipeline client: standard library only, nothing of the server. ICA_URL and
ICA_TOKEN as for `ica run`; inside Azure Pipelines or GitHub Actions the run key defaults to
the current run's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping

from azdev_ica.cli import http
from azdev_ica.cli.parsing import Parser
from azdev_ica.cli.pipeline import UsageError, _detected_run_key, _positive_float

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads it so)
if TYPE_CHECKING:
    from typing import Any

EXIT_ALLOW = 0
EXIT_DENY = 1
EXIT_PENDING = 2
EXIT_USAGE = 64

GATE_EXIT_CODES = """\
exit codes:
  0   allow: deploy now (the target's deployment lock is this run's)
  1   deny: a rule is broken; waiting will not help (the reasons say which)
  2   pending: the approval is not signed yet, or another run holds the lock (ask again,
      or use --wait)
  3   refused by ICA: invalid input (unknown tenant or stage, bad digest, ...)
  4   authentication or permission refused (check ICA_TOKEN and its role/tenants)
  5   ICA unreachable or failing, after retries within --timeout
  64  usage error: a missing argument or pipeline variable
"""

EXIT_CODES = """\
exit codes:
  0   done
  3   refused by ICA: invalid input or a conflict
  4   authentication or permission refused, or the override rules refuse a signature or
      review (the rule's code is printed in brackets)
  5   ICA unreachable or failing, after retries within --timeout
  64  usage error
"""

if TYPE_CHECKING:  # a runtime subscript of collections.abc.Callable needs Python 3.9
    Call = Callable[[http.Client, Mapping[str, str]], http.JsonResponse]


def register(sub: Any) -> None:
    common = Parser(add_help=False)
    common.add_argument("--url", help="ICA's base URL (default: $ICA_URL)")
    common.add_argument(
        "--timeout", type=_positive_float, default=60.0, help="seconds to keep retrying one call"
    )
    common.add_argument("--output", choices=("text", "json"), default="text")

    def group(name: str, help_text: str) -> Any:
        parser = sub.add_parser(name, help=help_text, description=help_text)
        return parser.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)

    def add(actions: Any, name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[common],
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return parser

    gate = group("gate", "ask ICA's deployment gate (for use inside pipelines)")
    evaluate = add(gate, "evaluate", "may this run deploy to the target now?", GATE_EXIT_CODES)
    evaluate.add_argument("--run-key", help="default: the current pipeline's run")
    evaluate.add_argument("--tenant", help="default: the run's tenant")
    evaluate.add_argument("--stage", help="default: the run's stage")
    evaluate.add_argument("--artifact-digest", help="sha256:<64 hex>; default: the run's build")
    evaluate.add_argument("--commit")
    evaluate.add_argument("--cost-impact-minor", type=int, help="in minor units (cents)")
    evaluate.add_argument("--currency", help="ISO 4217, e.g. NZD")
    evaluate.add_argument(
        "--dependencies", metavar="FILE", help="a file with one package id per line (- for stdin)"
    )
    evaluate.add_argument(
        "--sbom", metavar="FILE", help="a CycloneDX or SPDX 2.x SBOM (JSON): its dependencies"
    )
    evaluate.add_argument(
        "--version", dest="release_version", help="semantic version being deployed, e.g. 2.0.0"
    )
    evaluate.add_argument(
        "--rollback",
        action="store_true",
        help="this deploys the target's last good version (seed 000 §6.1); recorded as such",
    )
    evaluate.add_argument(
        "--wait",
        type=_positive_float,
        metavar="SECONDS",
        help="while pending, ask again until this many seconds have passed",
    )
    evaluate.add_argument(
        "--interval", type=_positive_float, default=30.0, help="seconds between asks (--wait)"
    )
    evaluate.set_defaults(func=_gate_evaluate)

    lock = group("lock", "read or release a target's deployment lock")
    show = add(lock, "show", "who holds a target's lock, and who waits", EXIT_CODES)
    show.add_argument("--tenant", required=True)
    show.add_argument("--stage", required=True)
    show.set_defaults(func=_lock_show)
    release = add(lock, "release", "release a stuck lock, with a reason (admins)", EXIT_CODES)
    release.add_argument("--tenant", required=True)
    release.add_argument("--stage", required=True)
    release.add_argument("--reason", required=True)
    release.set_defaults(func=_lock_release)

    override = group("override", "emergency overrides of the gate (no skip flag exists)")
    request = add(override, "request", "ask for an emergency override, with a reason", EXIT_CODES)
    request.add_argument("--run-key", help="default: the current pipeline's run")
    request.add_argument("--tenant")
    request.add_argument("--stage")
    request.add_argument("--reason", required=True)
    request.set_defaults(func=_override_request)
    sign = add(override, "sign", "sign an override (an override signer's token)", EXIT_CODES)
    sign.add_argument("override_id", type=int)
    sign.add_argument("--decision", choices=("approve", "reject"), required=True)
    sign.add_argument("--comment")
    sign.set_defaults(func=_override_sign)
    review = add(override, "review", "close an override's after-the-fact review", EXIT_CODES)
    review.add_argument("override_id", type=int)
    review.add_argument("--findings", required=True)
    review.set_defaults(func=_override_review)
    stats = add(override, "stats", "overrides per quarter against the target", EXIT_CODES)
    stats.set_defaults(func=_override_stats)


# --- handlers -----------------------------------------------------------------------------------


def _gate_evaluate(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        body: dict[str, Any] = {"run_key": args.run_key or _detected_run_key(env)}
        for name in ("tenant", "stage", "artifact_digest", "commit", "currency"):
            if getattr(args, name):
                body[name] = getattr(args, name)
        if args.cost_impact_minor is not None:
            body["cost_impact_minor"] = args.cost_impact_minor
        if args.release_version:
            body["version"] = args.release_version
        if args.rollback:
            body["rollback"] = True
        if args.dependencies and args.sbom:
            raise UsageError("give --dependencies or --sbom, not both")
        if args.dependencies:
            lines = _read(args.dependencies).splitlines()
            body["dependencies"] = [line.strip() for line in lines if line.strip()]
        if args.sbom:
            from azdev_ica.cli import formats

            try:
                body["sbom"] = formats.sbom_components(args.sbom, _read(args.sbom))
            except formats.FormatError as exc:
                raise UsageError(f"--sbom: {exc}") from None
        deadline = time.monotonic() + (args.wait or 0)
        while True:
            response = client.post_json("/api/v1/azdev/gate/evaluate", body, None)
            if response.data.get("status") != "pending" or time.monotonic() >= deadline:
                return response
            print(_gate_text(response.data), file=sys.stderr)
            time.sleep(min(args.interval, max(deadline - time.monotonic(), 0)))

    def outcome(data: Any) -> int:
        return {"allow": EXIT_ALLOW, "deny": EXIT_DENY}.get(data.get("status"), EXIT_PENDING)

    return _execute(args, call, _gate_text, outcome)


def _gate_text(data: Any) -> str:
    lines = [f"gate: {data['status']} for {data['run_key']} -> {data['tenant']}/{data['stage']}"]
    lines += [f"  {reason['code']}: {reason['message']}" for reason in data.get("reasons", [])]
    return "\n".join(lines)


def _lock_text(data: Any) -> str:
    holder = data.get("holder_run_key")
    text = f"lock {data['tenant']}/{data['stage']}: " + (
        f"held by {holder} until {data['expires_at']}" if holder else "free"
    )
    if data.get("queue"):
        text += "\n  waiting: " + ", ".join(data["queue"])
    return text


def _lock_show(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        from urllib.parse import quote

        path = f"/api/v1/azdev/lock/{quote(args.tenant, safe='')}/{quote(args.stage, safe='')}"
        return client.get_json(path)

    return _execute(args, call, _lock_text)


def _lock_release(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        body = {"tenant": args.tenant, "stage": args.stage, "reason": args.reason}
        return client.post_json("/api/v1/azdev/lock/release", body, _key())

    def text(data: Any) -> str:
        done = "released" if data.get("released") else "was not held; nothing released"
        return f"lock {data['tenant']}/{data['stage']} {done}"

    return _execute(args, call, text)


def _override_text(data: Any) -> str:
    text = (
        f"override {data['id']} for {data['run_key']} -> {data['tenant']}/{data['stage']}: "
        f"{data['status']} ({len(data['signatures'])}/{data['signatures_required']} signatures)"
    )
    if data.get("review_due_at") and not data.get("reviewed_at"):
        text += f"\n  review due {data['review_due_at']}"
    return text + f"\n  {data['link']}"


def _override_request(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        body: dict[str, Any] = {
            "run_key": args.run_key or _detected_run_key(env),
            "reason": args.reason,
        }
        for name in ("tenant", "stage"):
            if getattr(args, name):
                body[name] = getattr(args, name)
        return client.post_json("/api/v1/azdev/override", body, _key())

    return _execute(args, call, _override_text)


def _override_sign(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        body: dict[str, Any] = {"decision": args.decision}
        if args.comment:
            body["comment"] = args.comment
        return client.post_json(f"/api/v1/azdev/override/{args.override_id}/sign", body, _key())

    return _execute(args, call, _override_text)


def _override_review(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        body = {"findings": args.findings}
        return client.post_json(f"/api/v1/azdev/override/{args.override_id}/review", body, _key())

    return _execute(args, call, _override_text)


def _override_stats(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        return client.get_json("/api/v1/azdev/overrides/stats")

    def text(data: Any) -> str:
        lines = [
            f"{q['quarter']}: {q['total']} override(s), target <= {q['target']}"
            + (" (OVER TARGET)" if q["over_target"] else "")
            for q in data["quarters"]
        ]
        return "\n".join([*lines, f"reviews open: {data['open_reviews']}"])

    return _execute(args, call, text)


# --- plumbing -----------------------------------------------------------------------------------


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _key() -> str:
    return http.idempotency_key()


def _execute(
    args: argparse.Namespace,
    call: Call,
    text: Callable[[Any], str],
    outcome: Callable[[Any], int] | None = None,
) -> int:
    env = os.environ
    try:
        url = args.url or env.get("ICA_URL", "").strip()
        if not url:
            raise UsageError("set ICA_URL (or --url) to ICA's base URL")
        try:
            client = http.client_from_env(url, env, timeout=args.timeout)
        except ValueError as exc:
            raise UsageError(f"ICA_URL: {exc}") from None
        response = call(client, env)
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
    if args.output == "json":
        print(json.dumps(response.data, indent=2, sort_keys=True))
    else:
        print(text(response.data))
    return outcome(response.data) if outcome else 0
