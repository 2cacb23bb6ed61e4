"""docs/api.md, the API reference, generated from the committed OpenAPI file (never written by
hand): `make openapi` regenerates both, and a test fails when either is stale.

    python -m azdev_ica.api.reference api/azdev-ica-openapi.yaml docs/api.md
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

METHODS = ("get", "post", "put", "patch", "delete")
HEADER = """# The API reference

Generated from [`api/azdev-ica-openapi.yaml`](../api/azdev-ica-openapi.yaml) by `make openapi`
(do not edit by hand; a test fails when it is stale). Paths are under `/api/v1/azdev` unless
shown otherwise; `/api/azdev/...` answers as an alias. Credentials go as
`Authorization: Bearer <key or token>` or as the password of HTTP Basic; errors are RFC 9457
`application/problem+json`. Who may call what: [the access matrix](access-matrix.md).
Running ICA serves the same document at `/openapi.json` and an interactive view at `/docs`.
"""


def _one_line(text: str | None) -> str:
    if not text:
        return ""
    first = text.strip().split("\n\n")[0]
    return " ".join(first.split()).replace("|", "\\|")


def _schema_name(schema: dict[str, Any] | None) -> str:
    if not schema:
        return ""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        return f"[`{name}`](#{name.lower()})"
    if schema.get("type") == "array":
        inner = _schema_name(schema.get("items"))
        return f"list of {inner}" if inner else "list"
    return f"`{schema.get('type', 'object')}`"


def _body(operation: dict[str, Any]) -> str:
    content = operation.get("requestBody", {}).get("content", {})
    for media, spec in content.items():
        return f"{_schema_name(spec.get('schema'))} ({media})"
    return ""


def _answers(operation: dict[str, Any]) -> str:
    parts = []
    for status, response in operation.get("responses", {}).items():
        if not str(status).startswith("2"):
            continue
        schema = None
        for spec in response.get("content", {}).values():
            schema = spec.get("schema")
            break
        name = _schema_name(schema)
        parts.append(f"{status} {name}".strip())
    return ", ".join(parts)


def _parameters(operation: dict[str, Any]) -> str:
    names = [
        f"`{p['name']}`" + ("" if p.get("required") else "?")
        for p in operation.get("parameters", [])
        if p.get("in") in ("query", "path")
    ]
    return ", ".join(names)


def reference_markdown(doc: dict[str, Any]) -> str:
    lines = [HEADER]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in doc.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            tag = (operation.get("tags") or ["other"])[0]
            by_tag.setdefault(tag, []).append((method, path, operation))
    count = sum(len(operations) for operations in by_tag.values())
    lines.append(f"{count} operations on {len(doc.get('paths', {}))} paths.\n")
    for tag in sorted(by_tag):
        lines.append(f"## {tag}\n")
        lines.append("| Method and path | What | Parameters | Body | Answers |")
        lines.append("|---|---|---|---|---|")
        for method, path, operation in by_tag[tag]:
            shown = path.removeprefix("/api/v1/azdev")
            what = _one_line(operation.get("description") or operation.get("summary"))
            lines.append(
                f"| `{method.upper()} {shown}` | {what} | {_parameters(operation)} | "
                f"{_body(operation)} | {_answers(operation)} |"
            )
        lines.append("")
    lines.append("## Schemas\n")
    for name, schema in sorted(doc.get("components", {}).get("schemas", {}).items()):
        lines.append(f"### {name}\n")
        description = _one_line(schema.get("description"))
        if description:
            lines.append(description + "\n")
        if "oneOf" in schema:
            lines.append(
                "One of: " + ", ".join(_schema_name(option) for option in schema["oneOf"]) + "\n"
            )
        properties = schema.get("properties", {})
        if properties:
            required = set(schema.get("required", []))
            lines.append("| Field | Type | Required | Description |")
            lines.append("|---|---|---|---|")
            for field, spec in properties.items():
                lines.append(
                    f"| `{field}` | {_type(spec)} | {'yes' if field in required else ''} | "
                    f"{_one_line(spec.get('description'))} |"
                )
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _type(spec: dict[str, Any]) -> str:
    if "const" in spec:
        return f"`{spec['const']}`"
    if "$ref" in spec or spec.get("type") == "array":
        return _schema_name(spec)
    if "enum" in spec:
        return " \\| ".join(f"`{value}`" for value in spec["enum"])
    options = spec.get("anyOf") or spec.get("oneOf")
    if options:
        return " or ".join(_type(option) for option in options)
    return f"`{spec.get('type', 'any')}`"


def main(argv: list[str]) -> int:
    source, target = Path(argv[0]), Path(argv[1])
    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    target.write_text(reference_markdown(doc), encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
