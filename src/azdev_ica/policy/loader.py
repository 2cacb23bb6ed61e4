"""Reading and validating a policy file, with errors that name the line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import rfc8785
import yaml
from jsonschema import Draft202012Validator

from azdev_ica.errors import PolicyError
from azdev_ica.policy.model import Policy, Stage, Tenant

MAX_POLICY_BYTES = 1_000_000


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema of the policy file, as shipped in the package."""
    text = (resources.files("azdev_ica.policy") / "policy.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def load_policy_file(path: Path) -> Policy:
    """Read and validate the policy file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc}") from None
    return parse_policy(text, source=str(path))


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    """Validate `text` (YAML) and return the policy; raise PolicyError listing every problem."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise PolicyError(f"{source}: the policy file is larger than {MAX_POLICY_BYTES} bytes")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f"{source}:{line + 1}" if line is not None else source
        raise PolicyError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if root is None:
        raise PolicyError(f"{source}: the policy file is empty")
    problems = _duplicate_keys(root, source)
    if problems:
        raise PolicyError("; ".join(problems), problems=problems)
    content = yaml.safe_load(text)
    problems = [
        f"{source}:{_line_of(root, list(error.absolute_path))}: "
        f"{_pointer(error.absolute_path)}: {error.message}"
        for error in sorted(
            Draft202012Validator(schema()).iter_errors(content), key=lambda e: list(e.path)
        )
    ]
    if not problems:
        problems = _semantic_problems(content, root, source)
    if problems:
        raise PolicyError("; ".join(problems), problems=problems)
    return _build(content)


def _build(content: dict[str, Any]) -> Policy:
    digest = hashlib.sha256(rfc8785.dumps(content)).hexdigest()
    tenants = {
        item["code"]: Tenant(code=item["code"], name=item["name"], timezone=item["timezone"])
        for item in content["tenants"]
    }
    stages = tuple(
        Stage(
            name=item["name"],
            title=item.get("title", item["name"].title()),
            production=item.get("production", False),
            promotion=item.get("promotion", True),
        )
        for item in content["stages"]
    )
    return Policy(tenants=tenants, stages=stages, sha256=digest, content=content)


def _semantic_problems(content: dict[str, Any], root: yaml.Node, source: str) -> list[str]:
    problems: list[str] = []
    for section, key in (("tenants", "code"), ("stages", "name")):
        seen: set[str] = set()
        for index, item in enumerate(content[section]):
            if item[key] in seen:
                line = _line_of(root, [section, index, key])
                problems.append(
                    f"{source}:{line}: /{section}/{index}/{key}: duplicate {item[key]!r}"
                )
            seen.add(item[key])
    for index, tenant in enumerate(content["tenants"]):
        try:
            ZoneInfo(tenant["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            line = _line_of(root, ["tenants", index, "timezone"])
            problems.append(
                f"{source}:{line}: /tenants/{index}/timezone: "
                f"{tenant['timezone']!r} is not a known IANA time zone"
            )
    return problems


def _duplicate_keys(node: yaml.Node, source: str) -> list[str]:
    """PyYAML keeps the last of two equal keys silently; a policy must not."""
    problems: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                problems.append(f"{source}:{key.start_mark.line + 1}: duplicate key {key.value!r}")
            seen.add(key.value)
            problems.extend(_duplicate_keys(value, source))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            problems.extend(_duplicate_keys(item, source))
    return problems


def _line_of(root: yaml.Node, path: Sequence[str | int]) -> int:
    """The 1-based line of the deepest node on `path` that exists."""
    node = root
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None:
                break
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
        else:
            break
    return int(node.start_mark.line) + 1


def _pointer(path: Sequence[str | int]) -> str:
    return "/" + "/".join(str(part) for part in path) if path else "/"
