"""Reading and validating a policy file, with errors that name the line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import rfc8785
import yaml
from jsonschema import Draft202012Validator, ValidationError

from azdev_ica.errors import PolicyError
from azdev_ica.policy.budgets import budget_policy
from azdev_ica.policy.gates import gate_policy, gate_problems
from azdev_ica.policy.model import ApprovalPolicy, Policy, Stage, Tenant
from azdev_ica.policy.promotion import promotion_policy, promotion_problems
from azdev_ica.policy.retention import retention_policy

MAX_POLICY_BYTES = 1_000_000
MAX_POLICY_NODES = 100_000


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
    root = _yaml(yaml.compose, text, source)
    # `---` alone (or `~`) is a document holding only null: as empty as no document.
    if root is None or root.tag == "tag:yaml.org,2002:null":
        raise PolicyError(f"{source}: the policy file is empty")
    problems = _structure_problems(root, source)
    if problems:
        raise PolicyError("; ".join(problems), problems=problems)
    content = _yaml(yaml.load, text, source)
    problems = [
        f"{source}:{_error_line(root, error)}: {_pointer(error.absolute_path)}: {error.message}"
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
    return Policy(
        tenants=tenants,
        stages=stages,
        sha256=digest,
        content=content,
        approvals=_approval_policy(content.get("approvals", {})),
        gates=gate_policy(content),
        promotion=promotion_policy(content),
        budgets=budget_policy(content),
        retention=retention_policy(content),
    )


def _approval_policy(section: dict[str, Any]) -> ApprovalPolicy:
    defaults = ApprovalPolicy()
    return ApprovalPolicy(
        sla_hours=float(section.get("sla_hours", defaults.sla_hours)),
        warning_hours=float(section.get("warning_hours", defaults.warning_hours)),
        expiry_hours=float(section.get("expiry_hours", defaults.expiry_hours)),
        business_first_stages=frozenset(section.get("business_first_stages", ())),
    )


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
    problems.extend(_approval_problems(content, root, source))
    problems.extend(gate_problems(content, lambda path: _line_of(root, path), source))
    problems.extend(promotion_problems(content, lambda path: _line_of(root, path), source))
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


def _approval_problems(content: dict[str, Any], root: yaml.Node, source: str) -> list[str]:
    """The approvals section's rules across fields: warn before the SLA, stages that exist."""
    section = content.get("approvals")
    if not section:
        return []
    problems: list[str] = []
    policy = _approval_policy(section)
    if policy.warning_hours >= policy.sla_hours:
        line = _line_of(root, ["approvals", "warning_hours"])
        problems.append(
            f"{source}:{line}: /approvals/warning_hours: the warning ({policy.warning_hours:g} h) "
            f"must come before the SLA ({policy.sla_hours:g} h)"
        )
    stages = {stage["name"] for stage in content["stages"]}
    for index, name in enumerate(section.get("business_first_stages", [])):
        if name not in stages:
            line = _line_of(root, ["approvals", "business_first_stages", index])
            problems.append(
                f"{source}:{line}: /approvals/business_first_stages/{index}: unknown stage {name!r}"
            )
    return problems


def _yaml(step: Callable[..., Any], text: str, source: str) -> Any:
    """Compose or construct `text` safely; every YAML failure becomes a PolicyError."""
    try:
        return step(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        # Construction errors (unknown tags, bad !!binary, unhashable keys) carry a mark too.
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f"{source}:{line + 1}" if line is not None else source
        raise PolicyError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise PolicyError(f"{source}: the policy file is nested too deeply") from None


def _structure_problems(root: yaml.Node, source: str) -> list[str]:
    """Duplicate keys (PyYAML keeps the last of two silently), recursive aliases and aliases
    that expand past MAX_POLICY_NODES. Iterative, and each node is visited once, so neither
    deep nesting nor shared aliases make the walk itself blow up."""
    problems: list[str] = []
    sizes: dict[int, int] = {}  # node id -> node count with aliases expanded
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        ident = id(node)
        children = _children(node)
        if children_done:
            on_path.discard(ident)
            sizes[ident] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[ident] > MAX_POLICY_NODES:
                line = node.start_mark.line + 1
                return [f"{source}:{line}: aliases expand to more than {MAX_POLICY_NODES} nodes"]
            continue
        if ident in sizes:
            continue
        if ident in on_path:
            return [f"{source}:{node.start_mark.line + 1}: a recursive alias"]
        on_path.add(ident)
        stack.append((node, True))
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, _ in node.value:
                # Non-scalar keys are refused when the document is constructed.
                if not isinstance(key, yaml.ScalarNode):
                    continue
                if key.value in seen:
                    line = key.start_mark.line + 1
                    problems.append(f"{source}:{line}: duplicate key {key.value!r}")
                seen.add(key.value)
        stack.extend((child, False) for child in reversed(children) if id(child) not in sizes)
    return problems


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _error_line(root: yaml.Node, error: ValidationError) -> int:
    """The line of a schema error; for an unknown field, the line of that field's key."""
    path = list(error.absolute_path)
    node = _node_at(root, path)
    if error.validator == "additionalProperties" and isinstance(node, yaml.MappingNode):
        allowed = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value not in allowed:
                return int(key.start_mark.line) + 1
    return int(node.start_mark.line) + 1


def _line_of(root: yaml.Node, path: Sequence[str | int]) -> int:
    """The 1-based line of the deepest node on `path` that exists."""
    return int(_node_at(root, path).start_mark.line) + 1


def _node_at(root: yaml.Node, path: Sequence[str | int]) -> yaml.Node:
    """The deepest node on `path` that exists."""
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
    return node


def _pointer(path: Sequence[str | int]) -> str:
    return "/" + "/".join(str(part) for part in path) if path else "/"
