"""`ica run start|event|finish|show` (and `ica approval ...`, in cli/approvals.py): the
pipeline client.

It runs on build agents, so it imports nothing of the server (standard library only) and
starts fast. Without flags it reads the pipeline's own variables:

- Azure Pipelines: BUILD_BUILDID, SYSTEM_TEAMPROJECTID, SYSTEM_TEAMPROJECT,
  BUILD_DEFINITIONNAME, BUILD_SOURCEBRANCH, BUILD_SOURCEVERSION, BUILD_REQUESTEDFORID,
  BUILD_REQUESTEDFOREMAIL, SYSTEM_JOBATTEMPT, AGENT_JOBSTATUS;
- GitHub Actions: GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT, GITHUB_REPOSITORY_ID, GITHUB_REPOSITORY,
  GITHUB_SHA, GITHUB_REF, GITHUB_WORKFLOW, GITHUB_ACTOR_ID.

The server address comes from ICA_URL and the API key from ICA_TOKEN (never a flag: flags
end up in logs). Every write carries one Idempotency-Key for all its retries. `run start`
also reports the commit's time (for lead time), from `git` in the current directory unless
--commit-time gives it.
"""

from __future__ import annotations

import os
import sys

from azdev_ica.cli import fastjson, http

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads it so)
if TYPE_CHECKING:  # annotations only: `ica run event` imports neither (see quick_event)
    import argparse
    from collections.abc import Mapping
    from typing import Any

EXIT_OK = 0
EXIT_REFUSED = http.EXIT_REFUSED
EXIT_AUTH = http.EXIT_AUTH
EXIT_UNAVAILABLE = http.EXIT_UNAVAILABLE
EXIT_USAGE = 64
# `run event verify` (or `monitor`): recorded, and it failed the target's deployment; ICA's
# answer names the rollback (`rollback.artifact_digest`), the next step runs it.
EXIT_DEPLOYMENT_FAILED = 6

PHASES = (
    "build",
    "test",
    "scan",
    "approval",
    "deploy",
    "verify",
    "rollback_initiated",
    "rollback_completed",
    "monitor",
)
FINISH_STATUSES = (
    "success",
    "failed",
    "cancelled",
    "Succeeded",
    "SucceededWithIssues",
    "Failed",
    "Canceled",
    "failure",
)

EXIT_CODES = """\
exit codes:
  0   done, or already recorded (a retry is answered with the existing record)
  3   refused by ICA: invalid input or a conflict with what is recorded
  4   authentication or permission refused (check ICA_TOKEN and its role/tenants)
  5   ICA unreachable or failing, after retries within --timeout
  6   event verify/monitor: recorded, and the verification failed (or monitoring fired):
      ICA marked the deployment failed, raised the alert and opened an incident; run the
      rollback its answer names (rollback.artifact_digest, with `ica gate evaluate
      --rollback --artifact-digest DIGEST`)
  64  usage error: a missing argument or pipeline variable
"""


class UsageError(Exception):
    """Something the caller must supply is missing or malformed."""


class PipelineContext:
    """What the pipeline's environment says about the current run.

    (A plain class: `typing.NamedTuple` would import `typing` on every call.)"""

    __slots__ = (
        "attempt",
        "branch",
        "commit",
        "job_status",
        "pipeline_name",
        "project",
        "project_id",
        "provider",
        "requested_for",
        "requested_for_email",
        "run_id",
    )

    def __init__(
        self,
        *,
        provider: str,
        project_id: str | None,
        run_id: str | None,
        attempt: int | None,
        pipeline_name: str | None,
        project: str | None,
        branch: str | None,
        commit: str | None,
        requested_for: str | None,
        requested_for_email: str | None,
        job_status: str | None,
    ) -> None:
        self.provider = provider
        self.project_id = project_id
        self.run_id = run_id
        self.attempt = attempt
        self.pipeline_name = pipeline_name
        self.project = project
        self.branch = branch
        self.commit = commit
        self.requested_for = requested_for
        self.requested_for_email = requested_for_email
        self.job_status = job_status

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"PipelineContext({fields})"


def detect(env: Mapping[str, str]) -> PipelineContext | None:
    """The run described by Azure Pipelines or GitHub Actions variables, or None outside both."""

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    if get("BUILD_BUILDID") or (get("TF_BUILD") or "").lower() == "true":
        return PipelineContext(
            provider="ado",
            project_id=get("SYSTEM_TEAMPROJECTID"),
            run_id=get("BUILD_BUILDID"),
            attempt=_int_or_none(get("SYSTEM_JOBATTEMPT"), "SYSTEM_JOBATTEMPT"),
            pipeline_name=get("BUILD_DEFINITIONNAME"),
            project=get("SYSTEM_TEAMPROJECT"),
            branch=get("BUILD_SOURCEBRANCH"),
            commit=get("BUILD_SOURCEVERSION"),
            requested_for=get("BUILD_REQUESTEDFORID"),
            requested_for_email=get("BUILD_REQUESTEDFOREMAIL"),
            job_status=get("AGENT_JOBSTATUS"),
        )
    if get("GITHUB_RUN_ID") or (get("GITHUB_ACTIONS") or "").lower() == "true":
        return PipelineContext(
            provider="gh",
            project_id=get("GITHUB_REPOSITORY_ID"),
            run_id=get("GITHUB_RUN_ID"),
            attempt=_int_or_none(get("GITHUB_RUN_ATTEMPT"), "GITHUB_RUN_ATTEMPT"),
            pipeline_name=get("GITHUB_WORKFLOW"),
            project=get("GITHUB_REPOSITORY"),
            branch=get("GITHUB_REF"),
            commit=get("GITHUB_SHA"),
            requested_for=get("GITHUB_ACTOR_ID"),
            requested_for_email=None,
            # GitHub exposes job.status only as an expression: pass --status ${{ job.status }}.
            job_status=None,
        )
    return None


def _int_or_none(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise UsageError(f"{name} is not a number: {value!r}")
    return int(value)


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise _type_error(f"not a positive integer: {value!r}")
    return int(value)


def _positive_float(value: str) -> float:
    try:
        parsed = float(value)
    except ValueError:
        raise _type_error(f"not a number: {value!r}") from None
    if not parsed > 0:
        raise _type_error(f"must be positive: {value!r}")
    return parsed


def _type_error(message: str) -> Exception:
    import argparse  # (only for a bad value: quick_event calls the types above too)

    return argparse.ArgumentTypeError(message)


def register(sub: Any) -> None:
    """`ica run ...` and `ica approval ...`."""
    from azdev_ica.cli import approvals

    approvals.register(sub, register_run(sub))


def common_arguments() -> argparse.ArgumentParser:
    """--url, --timeout and --output, shared by `ica run` and `ica approval` actions."""
    from azdev_ica.cli.parsing import Parser

    common = Parser(add_help=False)
    common.add_argument(
        "--url", help="ICA's base URL (default: $ICA_URL), e.g. https://ica.example.org"
    )
    common.add_argument(
        "--timeout",
        type=_positive_float,
        default=60.0,
        help="total seconds to keep retrying the calls to ICA (default: 60)",
    )
    common.add_argument("--output", choices=("text", "json"), default="text")
    return common


RUN_ACTIONS = ("start", "event", "finish", "show", "list")


def register_run(sub: Any, only: str | None = None) -> argparse.ArgumentParser:
    """`ica run ...` alone; returns the shared arguments. `only`: the action named on the
    command line (`ica run event` builds `event` alone: a leaf's help, usage and errors are
    the same without its siblings)."""
    import argparse

    run = sub.add_parser(
        "run",
        help="report a pipeline run to ICA (for use inside pipelines)",
        description="Report a pipeline run to ICA. Reads ICA_URL and ICA_TOKEN, and the "
        "Azure Pipelines or GitHub Actions variables unless flags override them.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = run.add_subparsers(dest="run_command", metavar="ACTION", required=True)
    common = common_arguments()

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[common],
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return parser

    builders = {
        "start": _add_start,
        "event": _add_event,
        "finish": _add_finish,
        "show": _add_show,
        "list": _add_list,
    }
    for name, build in builders.items():
        if only not in builders or name == only:
            build(add)
    return common


def _add_start(add: Any) -> None:
    start = add("start", "record that a run started (repeating it is harmless)")
    start.add_argument("--provider", choices=("ado", "gh"), help="default: detected")
    start.add_argument("--project-id", help="Azure project id or GitHub repository id")
    start.add_argument("--run-id", help="Build.BuildId or GITHUB_RUN_ID")
    start.add_argument("--attempt", type=_positive_int)
    start.add_argument("--pipeline-name")
    start.add_argument("--project", help="project or repository name")
    start.add_argument("--branch")
    start.add_argument("--commit")
    start.add_argument(
        "--commit-time",
        metavar="RFC3339",
        help="the commit's time, for lead time (default: `git show -s --format=%%cI COMMIT` "
        "in the current directory, when it answers)",
    )
    start.add_argument("--tenant", help="tenant code from the policy, e.g. ws")
    start.add_argument("--stage", help="stage name from the policy, e.g. production")
    start.add_argument("--artifact-digest", help="sha256:<64 hex> of the artifact")
    start.add_argument("--requested-for", help="provider user id of who triggered the run")
    start.add_argument("--requested-for-email")
    start.set_defaults(func=_start)


def _add_event(add: Any) -> None:
    event = add("event", "record a phase event of the run")
    event.add_argument("phase", choices=PHASES)
    _run_key_arguments(event)
    event.add_argument("--event-id", help="your own id; a repeated id is not recorded twice")
    event.add_argument("--data", help="the phase payload as a JSON object")
    event.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one payload field; VALUE is parsed as JSON when it can be (repeatable)",
    )
    event.add_argument(
        "--sarif",
        action="append",
        default=[],
        metavar="FILE",
        help="scan phase: a SARIF 2.1.0 log; its findings are counted by severity into "
        "findings.critical/high/medium/low (repeatable)",
    )
    event.set_defaults(func=_event)


# `ica run event` runs at every step of every pipeline, and argparse imports `re`, `enum`,
# `gettext` and `warnings`: about a quarter of its cost above the interpreter's start. So
# quick_event reads the plain forms of its command line itself, to the same namespace
# argparse makes (`--opt VALUE`, `--opt=VALUE`, the phase anywhere, the last of a repeated
# option, the repeatable ones collected). Anything else (help, an abbreviation, an unknown
# option, a missing or bad value, a value that starts with "-" or is empty) it leaves to
# argparse, which alone words help and errors (tests/cli/test_quick_event.py checks both
# read the same).
_EVENT_OPTIONS = {  # option: (attribute, the type argparse applies, repeatable)
    "--url": ("url", None, False),
    "--timeout": ("timeout", _positive_float, False),
    "--output": ("output", ("text", "json"), False),
    "--run-key": ("run_key", None, False),
    "--attempt": ("attempt", _positive_int, False),
    "--event-id": ("event_id", None, False),
    "--data": ("data", None, False),
    "--set": ("set", None, True),
    "--sarif": ("sarif", None, True),
}


class Arguments:
    """An argparse.Namespace for the commands read without argparse."""

    func: Any  # the handler, as set_defaults(func=...) gives it

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Arguments({self.__dict__!r})"


def quick_event(arguments: list[str]) -> Arguments | None:
    """`ica run event ...` as argparse would read it, or None to let argparse read it."""
    if arguments[:2] != ["run", "event"]:
        return None
    values: dict[str, Any] = {
        "command": "run",
        "run_command": "event",
        "url": None,
        "timeout": 60.0,
        "output": "text",
        "phase": None,
        "run_key": None,
        "attempt": None,
        "event_id": None,
        "data": None,
        "set": [],
        "sarif": [],
        "func": _event,
    }
    words = iter(arguments[2:])
    for word in words:
        if not word.startswith("-"):
            if values["phase"] is not None or word not in PHASES:
                return None
            values["phase"] = word
            continue
        option, equals, text = word.partition("=")
        if option not in _EVENT_OPTIONS:
            return None
        if not equals:
            text = next(words, "")
        if not text or text.startswith("-"):
            return None
        name, kind, repeatable = _EVENT_OPTIONS[option]
        value: Any = text
        if isinstance(kind, tuple):
            if text not in kind:
                return None
        elif kind is not None:
            try:
                value = kind(text)
            except Exception:  # argparse says what is wrong with it
                return None
        if repeatable:
            values[name].append(value)
        else:
            values[name] = value
    return None if values["phase"] is None else Arguments(values)


def _add_finish(add: Any) -> None:
    finish = add("finish", "record that the run (this attempt) finished")
    finish.add_argument(
        "--status",
        choices=FINISH_STATUSES,
        help="default: $AGENT_JOBSTATUS on Azure; on GitHub pass ${{ job.status }}",
    )
    _run_key_arguments(finish)
    finish.set_defaults(func=_finish)


def _add_show(add: Any) -> None:
    show = add("show", "print the run as ICA recorded it")
    show.add_argument("--run-key", help="default: the current pipeline's run")
    show.set_defaults(func=_show)


def _add_list(add: Any) -> None:
    from azdev_ica.cli.listing import register_run_list

    register_run_list(add)


def _run_key_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-key", help="ado:<projectId>:<buildId> or gh:<repoId>:<runId>")
    parser.add_argument("--attempt", type=_positive_int, help="default: the pipeline's attempt")


# --- handlers ----------------------------------------------------------------------------


def _start(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        found = detect(env)
        provider = args.provider or (found.provider if found else None)
        body: dict[str, Any] = {
            "provider": _need(provider, "--provider (not inside Azure Pipelines or GitHub)"),
            "project_id": _need(
                args.project_id or (found and found.project_id),
                "--project-id (or SYSTEM_TEAMPROJECTID / GITHUB_REPOSITORY_ID)",
            ),
            "run_id": _need(
                args.run_id or (found and found.run_id),
                "--run-id (or BUILD_BUILDID / GITHUB_RUN_ID)",
            ),
            "pipeline_name": _need(
                args.pipeline_name or (found and found.pipeline_name),
                "--pipeline-name (or BUILD_DEFINITIONNAME / GITHUB_WORKFLOW)",
            ),
        }
        optional = {
            "attempt": args.attempt or (found and found.attempt),
            "project": args.project or (found and found.project),
            "branch": args.branch or (found and found.branch),
            "commit": args.commit or (found and found.commit),
            "tenant": args.tenant,
            "stage": args.stage,
            "artifact_digest": args.artifact_digest,
            "requested_for": args.requested_for or (found and found.requested_for),
            "requested_for_email": args.requested_for_email
            or (found and found.requested_for_email),
        }
        body.update({key: value for key, value in optional.items() if value})
        commit_time = args.commit_time or commit_time_from_git(body.get("commit"))
        if commit_time:
            body["commit_at"] = commit_time
        return client.post_json("/api/v1/azdev/run/start", body, _idempotency_key())

    def text(data: Any) -> str:
        return f"run {data['run_key']} started (attempt {data['attempt']}, {data['status']})"

    return _execute(args, call, text)


def _event(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        run_key, attempt = _run_key_and_attempt(args, env)
        data = _payload(args)
        if args.sarif:
            if args.phase != "scan":
                raise UsageError("--sarif is for the scan phase")
            data["findings"] = _sarif(args.sarif)
        body: dict[str, Any] = {"run_key": run_key, "phase": args.phase, "data": data}
        if attempt is not None:
            body["attempt"] = attempt
        if args.event_id:
            body["event_id"] = args.event_id
        return client.post_json("/api/v1/azdev/run/event", body, _idempotency_key())

    def text(data: Any) -> str:
        event = data["event"]
        line = (
            f"event {event['event_id']} ({event['phase']}, attempt {event['attempt']}) "
            f"recorded on {data['run']['run_key']}"
        )
        rollback = data.get("rollback")
        if data.get("deployment_failed") and rollback:
            target = f"{rollback['tenant']}/{rollback['stage']}"
            if rollback.get("available"):
                fresh = (
                    "no fresh approval needed"
                    if rollback["without_approval"]
                    else ("it needs a fresh approval")
                )
                version = f" (version {rollback['version']})" if rollback.get("version") else ""
                line += (
                    f"\nthe deployment to {target} failed: roll back to "
                    f"{rollback['artifact_digest']}{version}; {fresh}"
                )
            else:
                line += (
                    f"\nthe deployment to {target} failed: no earlier good version to roll back to"
                )
        return line

    def exit_code(data: Any) -> int:
        return EXIT_DEPLOYMENT_FAILED if data.get("deployment_failed") else EXIT_OK

    return _execute(args, call, text, exit_code)


def _finish(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        run_key, attempt = _run_key_and_attempt(args, env)
        found = detect(env)
        status = _need(
            args.status or (found and found.job_status),
            "--status (or AGENT_JOBSTATUS; on GitHub pass --status ${{ job.status }})",
        )
        if status not in FINISH_STATUSES:
            raise UsageError(f"unknown status {status!r}: one of {', '.join(FINISH_STATUSES)}")
        body: dict[str, Any] = {"run_key": run_key, "status": status}
        if attempt is not None:
            body["attempt"] = attempt
        return client.post_json("/api/v1/azdev/run/finish", body, _idempotency_key())

    def text(data: Any) -> str:
        flagged = " (flagged: succeeded with issues)" if data.get("flagged") else ""
        return f"run {data['run_key']} finished: {data['status']}{flagged}"

    return _execute(args, call, text)


def _show(args: argparse.Namespace) -> int:
    def call(client: http.Client, env: Mapping[str, str]) -> http.JsonResponse:
        run_key = args.run_key or _detected_run_key(env)
        from urllib.parse import quote

        return client.get_json(f"/api/v1/azdev/run/{quote(run_key, safe=':')}")

    def text(data: Any) -> str:
        lines = [
            f"run {data['run_key']}: {data['status']} (attempt {data['attempt']})",
            f"  pipeline {data['pipeline_name']}, branch {data.get('branch') or '-'}, "
            f"commit {data.get('commit') or '-'}"
            + (f" ({data['commit_at']})" if data.get("commit_at") else ""),
            f"  tenant {data.get('tenant') or '-'}, stage {data.get('stage') or '-'}",
        ]
        lines += [
            f"  {event['occurred_at']}  #{event['attempt']}  {event['phase']}  {event['event_id']}"
            for event in data.get("events", [])
        ]
        return "\n".join(lines)

    return _execute(args, call, text)


# --- plumbing ----------------------------------------------------------------------------


def _execute(args: argparse.Namespace, call: Any, text: Any, exit_code: Any = None) -> int:
    env = os.environ
    try:
        url = args.url or env.get("ICA_URL", "").strip()
        if not url:
            raise UsageError("set ICA_URL (or --url) to ICA's base URL")
        try:
            client = http.client_from_env(url, env, timeout=args.timeout)
        except ValueError as exc:
            raise UsageError(f"ICA_URL: {exc}") from None
        response: http.JsonResponse = call(client, env)
    except UsageError as exc:
        print(f"ica: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except http.ProblemError as exc:
        if args.output == "json":
            import json

            print(json.dumps(exc.problem, indent=2, sort_keys=True))
        print(f"ica: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except http.IcaHttpError as exc:
        print(f"ica: {exc.message}", file=sys.stderr)
        return exc.exit_code
    if args.output == "json":
        import json

        print(json.dumps(response.data, indent=2, sort_keys=True))
    else:
        is_write = args.run_command in {"start", "event"}  # finish answers 200 either way
        already = " (already recorded)" if response.status == 200 and is_write else ""
        print(text(response.data) + already)
    return EXIT_OK if exit_code is None else int(exit_code(response.data))


_HEX = frozenset("0123456789abcdefABCDEF")


def commit_time_from_git(commit: str | None, cwd: str | None = None) -> str | None:
    """The committer time (strict ISO 8601) of `commit` in the git checkout at `cwd` (default:
    the current directory), or None when git, the checkout or the commit is not there: the
    commit time only feeds lead time, so its absence never fails a run's start."""
    if not commit or not 7 <= len(commit) <= 64 or not _HEX.issuperset(commit):
        return None
    import subprocess

    try:
        result = subprocess.run(  # noqa: S603 - a fixed argv; the sha is checked as hex above
            ["git", "show", "-s", "--format=%cI", f"{commit}^{{commit}}"],  # noqa: S607
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or len(lines) != 1:
        return None
    return lines[0].strip() or None


def _need(value: Any, what: str) -> Any:
    if not value:
        raise UsageError(f"missing {what}")
    return value


def _detected_run_key(env: Mapping[str, str]) -> str:
    found = detect(env)
    if found is None:
        raise UsageError("missing --run-key (not inside Azure Pipelines or GitHub Actions)")
    project_id = _need(found.project_id, "SYSTEM_TEAMPROJECTID / GITHUB_REPOSITORY_ID")
    run_id = _need(found.run_id, "BUILD_BUILDID / GITHUB_RUN_ID")
    return f"{found.provider}:{project_id}:{run_id}"


def _run_key_and_attempt(
    args: argparse.Namespace, env: Mapping[str, str]
) -> tuple[str, int | None]:
    if args.run_key:
        return args.run_key, args.attempt
    found = detect(env)
    return _detected_run_key(env), args.attempt or (found.attempt if found else None)


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if args.data:
        try:
            parsed = fastjson.loads(args.data)
        except ValueError as exc:
            raise UsageError(f"--data is not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise UsageError("--data must be a JSON object")
        data.update(parsed)
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes KEY=VALUE, not {item!r}")
        try:
            value: Any = fastjson.loads(raw)
        except ValueError:
            value = raw
        data[key] = value
    return data


def _sarif(paths: list[str]) -> dict[str, int]:
    from azdev_ica.cli import formats

    texts = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                texts.append((path, handle.read()))
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return formats.sarif_findings(texts)
    except formats.FormatError as exc:
        raise UsageError(f"--sarif: {exc}") from None


def _idempotency_key() -> str:
    """One per logical call: every retry of this call sends the same key."""
    return http.idempotency_key()
