"""A small Azure Pipelines agent for the end-to-end tests: it compiles an `extends` pipeline
against the template (parameters, `${{ if }}`, `${{ each }}`, step templates) and runs the
result stage by stage, job by job, step by step, with bash, as Azure Pipelines would:
predefined variables in the environment, `$(...)` macros expanded, secrets only where a step
maps them, step and stage conditions, `Agent.JobStatus`, stage results for `dependencies`.

It knows exactly the constructs the kit uses and refuses any other (an unknown expression,
condition or task fails the test instead of being skipped).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_WHOLE = re.compile(r"^\$\{\{\s*(.*?)\s*\}\}$")
_IF = re.compile(r"^\$\{\{\s*if\s+(.*?)\s*\}\}$")
_EACH = re.compile(r"^\$\{\{\s*each\s+(\w+)\s+in\s+(.*?)\s*\}\}$")
_MACRO = re.compile(r"\$\(([A-Za-z_][\w.]*)\)")
_RUNTIME = re.compile(r"^\$\[\s*dependencies\.(\w+)\.result\s*\]$")


class Unsupported(AssertionError):
    """The pipeline uses something this agent does not know: the test must fail."""


# --- compile time -------------------------------------------------------------------------


def _value(expr: str, scope: Mapping[str, Any]) -> Any:
    expr = expr.strip()
    call = re.match(r"^(eq|ne)\((.*),(.*)\)$", expr)
    if call:
        left, right = _value(call.group(2), scope), _value(call.group(3), scope)
        same = str(left).lower() == str(right).lower()
        return same if call.group(1) == "eq" else not same
    if re.match(r"^'.*'$", expr):
        return expr[1:-1].replace("''", "'")
    path = expr.split(".")
    if not all(re.match(r"^\w+$", part) for part in path) or path[0] not in scope:
        raise Unsupported(f"template expression {expr!r}")
    current: Any = scope[path[0]]
    for part in path[1:]:
        if not isinstance(current, Mapping) or part not in current:
            raise Unsupported(f"template expression {expr!r}: no {part!r}")
        current = current[part]
    return current


def _string(text: str, scope: Mapping[str, Any]) -> Any:
    whole = _WHOLE.match(text)
    if whole and not text.startswith("${{ if") and not text.startswith("${{ each"):
        return _value(whole.group(1), scope)
    return _EXPR.sub(lambda m: _format(_value(m.group(1), scope)), text)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict | list):
        raise Unsupported(f"an object inserted into a string: {value!r}")
    return str(value)


def _items(expr: str, scope: Mapping[str, Any]) -> list[Any]:
    collection = _value(expr, scope)
    if isinstance(collection, Mapping):
        return [{"key": key, "value": value} for key, value in collection.items()]
    if isinstance(collection, list):
        return list(collection)
    raise Unsupported(f"each over {collection!r}")


def expand(node: Any, scope: Mapping[str, Any], base: Path) -> Any:
    if isinstance(node, str):
        return _string(node, scope)
    if isinstance(node, list):
        out: list[Any] = []
        for item in node:
            if isinstance(item, dict) and len(item) == 1:
                [(key, body)] = item.items()
                if isinstance(key, str) and (cond := _IF.match(key)):
                    if _value(cond.group(1), scope):
                        expanded = expand(body, scope, base)
                        out.extend(expanded if isinstance(body, list) else [expanded])
                    continue
                if isinstance(key, str) and (each := _EACH.match(key)):
                    merged: dict[str, Any] = {}  # `- ${{ each pair in x }}:` builds one mapping
                    for element in _items(each.group(2), scope):
                        expanded = expand(body, {**scope, each.group(1): element}, base)
                        if isinstance(body, list):
                            out.extend(expanded)
                        else:
                            merged.update(expanded)
                    if not isinstance(body, list):
                        out.append(merged)
                    continue
            if isinstance(item, dict) and "template" in item and "steps" not in item:
                out.extend(_include(item, scope, base))
                continue
            if isinstance(item, str) and _WHOLE.match(item):
                value = _value(_WHOLE.match(item).group(1), scope)  # type: ignore[union-attr]
                out.extend(value if isinstance(value, list) else [value])
                continue
            out.append(expand(item, scope, base))
        return out
    if isinstance(node, dict):
        result: dict[str, Any] = {}
        for key, body in node.items():
            if isinstance(key, str) and (cond := _IF.match(key)):
                if _value(cond.group(1), scope):
                    result.update(expand(body, scope, base))
                continue
            if isinstance(key, str) and (each := _EACH.match(key)):
                for element in _items(each.group(2), scope):
                    result.update(expand(body, {**scope, each.group(1): element}, base))
                continue
            result[expand(key, scope, base) if isinstance(key, str) else key] = expand(
                body, scope, base
            )
        return result
    return node


def _parameters(declared: list[dict[str, Any]], given: Mapping[str, Any]) -> dict[str, Any]:
    known = {item["name"] for item in declared}
    unknown = set(given) - known
    if unknown:
        raise Unsupported(f"unknown template parameters {sorted(unknown)}")
    values: dict[str, Any] = {}
    for item in declared:
        if item["name"] in given:
            value = given[item["name"]]
        elif "default" in item:
            value = item["default"]
        else:
            raise Unsupported(f"parameter {item['name']!r} is required")
        if "values" in item and value not in item["values"]:
            raise Unsupported(f"parameter {item['name']!r}: {value!r} not in {item['values']}")
        values[item["name"]] = value
    return values


def _include(item: dict[str, Any], scope: Mapping[str, Any], base: Path) -> list[Any]:
    path = base / expand(item["template"], scope, base)
    document = yaml.safe_load(path.read_text())
    given = expand(item.get("parameters", {}), scope, base)
    inner = {"parameters": _parameters(document.get("parameters", []), given)}
    steps: list[Any] = expand(document["steps"], inner, path.parent)
    return steps


def compile_pipeline(template: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline an `extends` of `template` with `parameters` compiles to."""
    document = yaml.safe_load(template.read_text())
    scope = {"parameters": _parameters(document.get("parameters", []), parameters)}
    body = {key: value for key, value in document.items() if key != "parameters"}
    compiled: dict[str, Any] = expand(body, scope, template.parent)
    return compiled


# --- run time -----------------------------------------------------------------------------


@dataclass
class StepRun:
    stage: str
    name: str
    code: int | None  # None: not run (its condition was false)
    stdout: str = ""
    stderr: str = ""


@dataclass
class Agent:
    """Runs a compiled pipeline. `predefined`: Azure variables by their names
    (`Build.BuildId`); `secrets`: the variable groups' secret values; `connections`: the
    workload-identity environment each service connection gives an AzureCLI@2 step."""

    workdir: Path
    path: str
    predefined: dict[str, str]
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    # A value may be a callable: Azure DevOps issues the step's idToken when the step starts.
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    # System.AccessToken: a secret, reaching a step's environment only where it is mapped.
    access_token: str = ""
    checks: dict[str, Callable[[], bool]] = field(default_factory=dict)
    cancel_before: str | None = None
    on_step: Callable[[StepRun], None] | None = None
    log: list[StepRun] = field(default_factory=list)
    canceled: bool = False
    added_path: list[str] = field(default_factory=list)

    def run(self, pipeline: Mapping[str, Any]) -> dict[str, str]:
        """Run every stage; return each stage's result.

        Conditions as Azure DevOps documents them: a stage, job or step without one has
        `succeeded()`; `succeeded()`, `failed()` and `succeededOrFailed()` are false once the
        run is cancelled, `always()` and `canceled()` are not; a stage's condition does not
        carry over to its jobs (a job with the default condition in an `always()` stage does
        not run in a cancelled run)."""
        results: dict[str, str] = {}
        for stage in pipeline["stages"]:
            name = stage["stage"]
            depends = stage.get("dependsOn", [])
            depends = [depends] if isinstance(depends, str) else list(depends)
            condition = stage.get("condition", "succeeded()")
            if not self._true(condition, [results[d] for d in depends], results):
                results[name] = "Canceled" if self.canceled else "Skipped"
                continue
            check = self.checks.get(name)
            if check is not None and not self.canceled and not check():
                # A check's final negative decision fails the stage; a run cancelled while
                # the stage waits at its checks cancels it (the check sets `canceled`).
                results[name] = "Canceled" if self.canceled else "Failed"
                continue
            variables = dict(self._stage_variables(stage, results))
            [job] = stage["jobs"]
            job_condition = job.get("condition", "succeeded()")
            if not self._true(job_condition, [], {}):  # one job: no job dependencies
                results[name] = "Canceled" if self.canceled else "Skipped"
                self._record(StepRun(name, f"job {job.get('job') or job.get('deployment')}", None))
                continue
            results[name] = self._job(name, job, variables)
        return results

    def _stage_variables(self, stage: Mapping[str, Any], results: Mapping[str, str]) -> Any:
        for item in stage.get("variables", []):
            value = str(item["value"])
            runtime = _RUNTIME.match(value)
            if runtime:
                value = results[runtime.group(1)]
            elif "$[" in value:
                raise Unsupported(f"runtime expression {value!r}")
            yield item["name"], value

    def _job(self, stage: str, job: Mapping[str, Any], stage_vars: dict[str, str]) -> str:
        variables = dict(self.predefined)
        variables.update(stage_vars)
        secrets: dict[str, str] = {}
        for item in job.get("variables", []):
            if "group" in item:
                secrets.update(self.secrets[item["group"]])
            else:
                variables[item["name"]] = str(item["value"])
        if "deployment" in job:
            steps = job["strategy"]["runOnce"]["deploy"]["steps"]
            variables["Environment.Name"] = job["environment"]
        else:
            steps = job["steps"]
        status = "Canceled" if self.canceled else "Succeeded"
        temp = self.workdir.parent / "agent-temp"
        temp.mkdir(exist_ok=True)
        variables["Agent.TempDirectory"] = str(temp)
        self.added_path = []  # ##vso[task.prependpath] lasts for the rest of the job
        for step in steps:
            label = step.get("displayName") or step.get("script") or step.get("bash") or str(step)
            if (
                self.cancel_before
                and not self.canceled
                and self.cancel_before in str(label) + str(step.get("script", ""))
            ):
                self.canceled = True
                status = "Canceled"
            condition = step.get("condition", "succeeded()")
            if not self._true(condition, [status], {}, variables):
                self._record(StepRun(stage, str(label), None))
                continue
            code, out, err = self._step(step, variables, secrets, status)
            self._record(StepRun(stage, str(label), code, out, err))
            if code != 0 and status != "Canceled":
                status = "Failed"
        return status

    def _record(self, run: StepRun) -> None:
        self.log.append(run)
        if self.on_step is not None:
            self.on_step(run)

    def _true(
        self,
        condition: str,
        previous: list[str],
        dependencies: Mapping[str, str],
        variables: Mapping[str, str] | None = None,
    ) -> bool:
        """Evaluate a condition: `previous` are the results the status functions look at (a
        stage's or job's dependencies, or a step's job so far); `variables` the job's, with
        those earlier steps set (`variables['NAME']`)."""
        return bool(_Condition(condition, self.canceled, previous, dependencies, variables).value())

    def _step(
        self,
        step: Mapping[str, Any],
        variables: dict[str, str],
        secrets: dict[str, str],
        status: str,
    ) -> tuple[int, str, str]:
        macros = {
            **variables,
            **secrets,
            "Agent.JobStatus": status,
            "System.AccessToken": self.access_token,
        }

        def macro(text: str) -> str:
            return _MACRO.sub(lambda m: macros.get(m.group(1), m.group(0)), text)

        env = {
            "PATH": os.pathsep.join([*reversed(self.added_path), self.path]),
            "HOME": str(self.workdir),
            "LANG": "C.UTF-8",
            "TF_BUILD": "True",
            "AGENT_JOBSTATUS": status,
        }
        # Non-secret variables reach the environment by name (upper case, '.' -> '_').
        for name, value in variables.items():
            env[name.upper().replace(".", "_")] = macro(value)
        if "checkout" in step:
            return 0, "", ""
        if "bash" in step or "script" in step:
            script = step.get("bash", step.get("script"))
        elif step.get("task") == "AzureCLI@2":
            inputs = step["inputs"]
            if (inputs["scriptType"], inputs["scriptLocation"]) != ("bash", "inlineScript"):
                raise Unsupported(f"AzureCLI@2 inputs {inputs}")
            if inputs.get("addSpnToEnvironment") is not True:
                raise Unsupported("AzureCLI@2 without addSpnToEnvironment")
            connection = self.connections[inputs["azureSubscription"]]
            env.update({k: v() if callable(v) else v for k, v in connection.items()})
            script = inputs["inlineScript"]
        else:
            raise Unsupported(f"step {step}")
        for name, value in (step.get("env") or {}).items():
            env[name] = macro(str(value))
        path = self.workdir / ".step.sh"
        path.write_text(macro(str(script)))
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", str(path)],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for line in done.stdout.splitlines():
            if line.startswith("##vso[task.prependpath]"):
                self.added_path.append(line.split("]", 1)[1].strip())
            set_variable = re.match(r"^##vso\[task\.setvariable variable=([\w.]+)\](.*)$", line)
            if set_variable:  # a variable for the job's later steps (in their environment too)
                variables[set_variable.group(1)] = set_variable.group(2)
        return done.returncode, done.stdout, done.stderr


_SUCCEEDED = ("Succeeded", "SucceededWithIssues")


class _Condition:
    """The condition language's functions the kit may use: always(), succeeded(), failed(),
    succeededOrFailed(), canceled(), and(), or(), not(), eq(), ne(), in(), string literals,
    `variables['NAME']` and `dependencies.<stage>.result`. Anything else is Unsupported."""

    _TOKEN = re.compile(r"\s*(?:(variables\['[\w.]+'\])|(\w+(?:\.\w+)*)|('(?:[^']|'')*')|([(),]))")

    def __init__(
        self,
        text: str,
        canceled: bool,
        previous: list[str],
        dependencies: Mapping[str, str],
        variables: Mapping[str, str] | None = None,
    ) -> None:
        self.text = text
        self.tokens: list[str] = []
        position = 0
        stripped = text.strip()
        while position < len(stripped):
            match = self._TOKEN.match(stripped, position)
            if not match or match.end() == position:
                raise Unsupported(f"condition {text!r}")
            self.tokens.append(match.group(0).strip())
            position = match.end()
        self.canceled = canceled
        self.previous = previous
        self.dependencies = dependencies
        self.variables = variables or {}

    def value(self) -> Any:
        result = self._expr()
        if self.tokens:
            raise Unsupported(f"condition {self.text!r}: trailing {self.tokens}")
        return result

    def _take(self, expected: str | None = None) -> str:
        if not self.tokens:
            raise Unsupported(f"condition {self.text!r}: ends early")
        token = self.tokens.pop(0)
        if expected is not None and token != expected:
            raise Unsupported(f"condition {self.text!r}: {expected!r} expected, not {token!r}")
        return token

    def _expr(self) -> Any:
        token = self._take()
        if token.startswith("'"):
            return token[1:-1].replace("''", "'")
        if token.startswith("variables['"):
            # A variable not set reads as the empty string, as Azure DevOps documents.
            return self.variables.get(token[len("variables['") : -2], "")
        if token.startswith("dependencies."):
            parts = token.split(".")
            if len(parts) != 3 or parts[2] != "result":
                raise Unsupported(f"condition {self.text!r}: {token}")
            return self.dependencies[parts[1]]
        if token in ("true", "false"):
            return token == "true"
        self._take("(")
        args: list[Any] = []
        if self.tokens and self.tokens[0] == ")":
            self._take(")")
        else:
            while True:
                args.append(self._expr())
                if self._take() == ")":
                    break
        return self._call(token, args)

    def _call(self, name: str, args: list[Any]) -> Any:
        status = {
            "always": lambda: True,
            "canceled": lambda: self.canceled,
            "succeeded": lambda: not self.canceled and all(r in _SUCCEEDED for r in self.previous),
            "failed": lambda: not self.canceled and any(r == "Failed" for r in self.previous),
            "succeededOrFailed": lambda: not self.canceled,
        }
        if name in status:
            if args:
                raise Unsupported(f"condition {self.text!r}: {name} with arguments")
            return status[name]()
        same = [str(a).lower() for a in args]
        if name == "and":
            return all(args)
        if name == "or":
            return any(args)
        if name == "not" and len(args) == 1:
            return not args[0]
        if name == "eq" and len(args) == 2:
            return same[0] == same[1]
        if name == "ne" and len(args) == 2:
            return same[0] != same[1]
        if name == "in" and len(args) >= 2:
            return same[0] in same[1:]
        raise Unsupported(f"condition {self.text!r}: {name}")


def agent_path(tools: Path) -> str:
    """PATH for the agent: the test's tools first (a python3 whose pip checks its arguments),
    then the system. `ica` is not on it: the pipeline's own install step must put it there."""
    return os.pathsep.join([str(tools), "/usr/bin", "/bin"])
