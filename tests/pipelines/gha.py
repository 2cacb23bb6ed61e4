"""A small GitHub Actions runner for the end-to-end tests: one job of a workflow, its `run` steps
with bash, its `uses` of ICA's composite action expanded from pipelines/github/action.yml, the
expressions the kit uses (`inputs`, `env`, `steps`, `job`, `||`, `==`, status functions),
`GITHUB_OUTPUT`, and the OIDC request variables only when the workflow grants
`id-token: write`. Anything else is refused, so a test cannot pass by skipping it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.pipelines.ado import Unsupported

_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_TOKEN = re.compile(r"\s*(\|\||&&|==|!=|!|\(|\)|'(?:[^']|'')*'|[A-Za-z_][\w.-]*)")
STATUS_FUNCTIONS = ("success()", "failure()", "always()", "cancelled()")


class _Parser:
    def __init__(self, text: str, context: Mapping[str, Any], status: str) -> None:
        self.tokens: list[str] = []
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if not match:
                raise Unsupported(f"expression {text!r}")
            self.tokens.append(match.group(1))
            position = match.end()
            while position < len(text) and text[position].isspace():
                position += 1
        self.context = context
        self.status = status
        self.at = 0

    def parse(self) -> Any:
        value = self._or()
        if self.at != len(self.tokens):
            raise Unsupported(f"expression tail {self.tokens[self.at :]}")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _next(self) -> str:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def _or(self) -> Any:
        value = self._and()
        while self._peek() == "||":
            self._next()
            other = self._and()
            value = value if value else other
        return value

    def _and(self) -> Any:
        value = self._compare()
        while self._peek() == "&&":
            self._next()
            other = self._compare()
            value = other if value else value
        return value

    def _compare(self) -> Any:
        value = self._unary()
        if self._peek() in ("==", "!="):
            operator = self._next()
            other = self._unary()
            same = str(value).lower() == str(other).lower()
            return same if operator == "==" else not same
        return value

    def _unary(self) -> Any:
        if self._peek() == "!":
            self._next()
            return not self._unary()
        return self._primary()

    def _primary(self) -> Any:
        token = self._next()
        if token == "(":
            value = self._or()
            if self._next() != ")":
                raise Unsupported("unbalanced parentheses")
            return value
        if token.startswith("'"):
            return token[1:-1].replace("''", "'")
        if self._peek() == "(":
            self._next()
            if self._next() != ")":
                raise Unsupported(f"function arguments in {token}")
            functions = {
                "success": self.status == "success",
                "failure": self.status == "failure",
                "cancelled": self.status == "cancelled",
                "always": True,
            }
            if token not in functions:
                raise Unsupported(f"function {token}()")
            return functions[token]
        if token in ("true", "false"):
            return token == "true"
        parts = token.split(".")
        if parts[0] not in self.context:
            raise Unsupported(f"context {parts[0]!r}")
        current: Any = self.context[parts[0]]
        for part in parts[1:]:
            current = current.get(part, "") if isinstance(current, Mapping) else ""
        return current


def evaluate(expression: str, context: Mapping[str, Any], status: str) -> Any:
    return _Parser(expression, context, status).parse()


def interpolate(text: str, context: Mapping[str, Any], status: str) -> str:
    def one(match: re.Match[str]) -> str:
        value = evaluate(match.group(1), context, status)
        return (
            "" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
        )

    return _EXPR.sub(one, text)


def condition(text: str | None, context: Mapping[str, Any], status: str) -> bool:
    expression = _EXPR.sub(lambda m: m.group(1), text or "success()").strip()
    if not any(function in expression for function in STATUS_FUNCTIONS):
        expression = f"success() && ({expression})"
    if status == "cancelled" and "always()" not in expression and "cancelled()" not in expression:
        return False
    return bool(evaluate(expression, context, status))


@dataclass
class StepRun:
    name: str
    outcome: str  # success, failure, skipped
    code: int | None = None
    stdout: str = ""
    stderr: str = ""


@dataclass
class Runner:
    """Runs job `job` of `workflow`; `actions` maps a `uses:` prefix to a local action file."""

    workdir: Path
    path: str
    github: dict[str, str]
    actions: dict[str, Path]
    oidc: dict[str, str]
    cancel_before: str | None = None
    # (a step's name, a condition): someone cancels the run while that step runs, once the
    # condition holds. The runner then signals the step's process (SIGINT, as GitHub does),
    # the step ends `cancelled`, and only `always()`/`cancelled()` steps run after it.
    cancel_during: tuple[str, Callable[[], bool]] | None = None
    cancelled_during: bool = False
    on_step: Callable[[StepRun], None] | None = None
    log: list[StepRun] = field(default_factory=list)
    # Directories steps added with GITHUB_PATH: prepended to PATH for the job's later steps.
    added_path: list[str] = field(default_factory=list)
    # Variables steps set with GITHUB_ENV: in the environment of the job's later steps.
    added_env: dict[str, str] = field(default_factory=dict)

    def run(self, workflow: Mapping[str, Any], job: str) -> str:
        spec = workflow["jobs"][job]
        permissions = {**workflow.get("permissions", {}), **spec.get("permissions", {})}
        env = {**workflow.get("env", {}), **spec.get("env", {})}
        base = {
            "PATH": self.path,
            "HOME": str(self.workdir),
            "LANG": "C.UTF-8",
            "GITHUB_ACTIONS": "true",
            "RUNNER_TEMP": str(self._runner_temp()),
            **self.github,
        }
        if permissions.get("id-token") == "write":
            base.update(self.oidc)  # the runner sets these only with id-token: write
        status = "success"
        steps: dict[str, Any] = {}
        for number, step in enumerate(spec["steps"]):
            label = str(step.get("name") or step.get("run") or f"{step['uses']} {step.get('with')}")
            if self.cancel_before and self.cancel_before in label:
                status = "cancelled"
            # Variables earlier steps set with GITHUB_ENV are in the `env` context too.
            context = {
                "env": {**env, **self.added_env},
                "steps": steps,
                "job": {"status": status},
                "github": {},
            }
            if not condition(step.get("if"), context, status):
                self._record(StepRun(label, "skipped"))
                if "id" in step:
                    steps[step["id"]] = {"outcome": "skipped", "conclusion": "skipped"}
                continue
            if "run" in step:
                script = interpolate(step["run"], context, status)
                outcome, outputs = self._bash(label, script, {**base, **env}, number)
            elif step["uses"].startswith("actions/checkout@"):
                outcome, outputs = "success", {}
                self._record(StepRun(label, "success", 0))
            else:
                given = {k: interpolate(str(v), context, status) for k, v in step["with"].items()}
                outcome, outputs = self._composite(step["uses"], given, env, base, status, number)
            if "id" in step:
                steps[step["id"]] = {"outcome": outcome, "conclusion": outcome, "outputs": outputs}
            if self.cancelled_during:
                status = "cancelled"
            elif outcome == "failure" and status == "success":
                status = "failure"
        return status

    def _record(self, run: StepRun) -> None:
        self.log.append(run)
        if self.on_step is not None:
            self.on_step(run)

    def _bash(
        self, label: str, script: str, env: dict[str, str], number: int
    ) -> tuple[str, dict[str, str]]:
        output = self.workdir / f".output-{number}"
        output.write_text("")
        github_path = self._runner_temp() / f".path-{number}"
        github_path.write_text("")
        github_env = self._runner_temp() / f".env-{number}"
        github_env.write_text("")
        path = self.workdir / f".step-{number}.sh"
        path.write_text(script)
        search = os.pathsep.join([*reversed(self.added_path), env["PATH"]])
        process = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
            cwd=self.workdir,
            env={
                **env,
                **self.added_env,
                "PATH": search,
                "GITHUB_ENV": str(github_env),
                "GITHUB_OUTPUT": str(output),
                "GITHUB_PATH": str(github_path),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        watcher = self._watch_for_cancel(label, process)
        stdout, stderr = process.communicate(timeout=120)
        if watcher is not None:
            watcher.join()
        cancelled = watcher is not None and self.cancelled_during
        outcome = "cancelled" if cancelled else "success" if process.returncode == 0 else "failure"
        self._record(StepRun(label, outcome, process.returncode, stdout, stderr))
        self.added_path += [line for line in github_path.read_text().splitlines() if line]
        for line in github_env.read_text().splitlines():  # NAME=value (no multi-line values here)
            if "=" in line:
                name, value = line.split("=", 1)
                self.added_env[name] = value
        return outcome, _outputs(output.read_text())

    def _watch_for_cancel(
        self, label: str, process: subprocess.Popen[str]
    ) -> threading.Thread | None:
        if self.cancel_during is None or self.cancel_during[0] != label or self.cancelled_during:
            return None
        when = self.cancel_during[1]

        def watch() -> None:
            while process.poll() is None:
                if when():
                    self.cancelled_during = True
                    # GitHub signals the step's processes: SIGINT, SIGTERM after 7.5 s.
                    os.killpg(process.pid, signal.SIGINT)
                    try:
                        process.wait(timeout=7.5)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGTERM)
                    return
                time.sleep(0.1)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        return thread

    def _runner_temp(self) -> Path:
        temp = self.workdir.parent / "runner-temp"
        temp.mkdir(exist_ok=True)
        return temp

    def _composite(
        self,
        uses: str,
        given: dict[str, str],
        env: dict[str, str],
        base: dict[str, str],
        status: str,
        number: int,
    ) -> tuple[str, dict[str, str]]:
        [path] = [p for prefix, p in self.actions.items() if uses.startswith(prefix)]
        action = yaml.safe_load(path.read_text())
        declared = action["inputs"]
        unknown = set(given) - set(declared)
        if unknown:
            raise Unsupported(f"unknown inputs {sorted(unknown)} for {uses}")
        inputs = {
            name: given.get(name, str(spec.get("default", ""))) for name, spec in declared.items()
        }
        missing = [n for n, s in declared.items() if s.get("required") and not given.get(n)]
        if missing:
            raise Unsupported(f"required inputs {missing} missing for {uses}")
        if action["runs"]["using"] != "composite":
            raise Unsupported(action["runs"]["using"])
        inner: dict[str, Any] = {}
        outcome = "success"
        for index, step in enumerate(action["runs"]["steps"]):
            context = {"inputs": inputs, "env": env, "steps": inner, "job": {"status": status}}
            name = interpolate(str(step.get("name", "")), context, status)
            if step.get("shell") != "bash" or "run" not in step:
                raise Unsupported(f"composite step {step}")
            # In a composite action the status functions read its own steps (GitHub's docs):
            # after a step of it was cancelled, only always()/cancelled() steps run.
            if outcome == "cancelled" and not condition(step.get("if"), context, "cancelled"):
                continue
            if outcome == "failure" and not condition(step.get("if"), context, "failure"):
                continue
            step_env = {k: interpolate(str(v), context, status) for k, v in step["env"].items()}
            script = interpolate(step["run"], context, status)
            result, outputs = self._bash(
                name, script, {**base, **env, **step_env}, number * 100 + index
            )
            if "id" in step:
                inner[step["id"]] = {"outcome": result, "outputs": outputs}
            if result in ("failure", "cancelled"):
                outcome = result
        context = {"inputs": inputs, "env": env, "steps": inner, "job": {"status": status}}
        outputs = {
            name: interpolate(str(spec["value"]), context, status)
            for name, spec in action.get("outputs", {}).items()
        }
        return outcome, outputs


def _outputs(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT: `name=value` lines and `name<<DELIMITER` blocks."""
    found: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line:
            name, delimiter = line.split("<<", 1)
            block = []
            for inner in lines:
                if inner == delimiter:
                    break
                block.append(inner)
            found[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            found[name] = value
    return found
