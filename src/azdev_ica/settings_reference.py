"""The configuration reference in docs/operate.md, generated from the settings code: every
`ICA_*` variable with its default and the comment written above it in settings.py, and the
options of `ica serve`. tests/deploy/test_operate_doc.py fails when the document and the code
disagree; `make settings-reference` rewrites the document's block.

    python -m azdev_ica.settings_reference docs/operate.md
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from azdev_ica.settings import SECRETS_DIR_ENV, Settings

BEGIN = "<!-- settings-reference:begin (generated: make settings-reference) -->"
END = "<!-- settings-reference:end -->"
# Variables read outside the Settings model.
ENVIRONMENT_ONLY = {
    SECRETS_DIR_ENV: (
        "(none)",
        "A directory of secret files, one per setting, each named like its variable in "
        "lower case (`ica_database_url`, `ica_secret_key`, ...): what Compose secrets and a "
        "Key Vault CSI mount provide. A variable set in the environment wins over a file.",
    ),
}
_FIELD = re.compile(r"^    ([a-z_][a-z0-9_]*)\s*:")


def field_comments() -> dict[str, str]:
    """The full-line comments above each field of Settings; a field with none shares the
    comment of the group it follows directly (no blank line between)."""
    comments: dict[str, str] = {}
    block: list[str] = []
    current = ""
    after_field = False
    for line in inspect.getsource(Settings).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if after_field:
                block, after_field = [], False
            block.append(stripped.lstrip("#").strip())
            continue
        found = _FIELD.match(line)
        if found and found.group(1) in Settings.model_fields:
            if block:
                current, block = " ".join(block), []
            comments[found.group(1)] = current
            after_field = True
            continue
        if not stripped or stripped.startswith(("@", "def ", '"""')):
            current, block, after_field = "", [], False
    return comments


def _default(name: str) -> str:
    value: Any = Settings.model_fields[name].get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=True) or None
    if value is None or value == "":
        return "(none)"
    if isinstance(value, Path):
        return f"`{value.as_posix()}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_table() -> str:
    comments = field_comments()
    rows = ["| Variable | Default | What it does |", "| --- | --- | --- |"]
    previous = None
    for name in Settings.model_fields:
        text = comments[name]
        # A comment written once for a group of settings is shown once, on the first.
        shown = "(with the setting above)" if text and text == previous else _cell(text)
        previous = text
        rows.append(f"| `ICA_{name.upper()}` | {_default(name)} | {shown} |")
    for variable, (default, text) in ENVIRONMENT_ONLY.items():
        rows.append(f"| `{variable}` | {default} | {_cell(text)} |")
    return "\n".join(rows)


def serve_options_table() -> str:
    from azdev_ica.cli.main import build_parser

    parser = build_parser()
    serve = next(
        action.choices["serve"]
        for action in parser._actions  # argparse keeps its subparsers here
        if hasattr(action, "choices") and isinstance(action.choices, dict)
    )
    rows = ["| `ica serve` option | Default | What it does |", "| --- | --- | --- |"]
    for action in serve._actions:
        if not action.option_strings or action.dest == "help":
            continue
        text = (action.help or "").replace("%(default)s", str(action.default))
        text = re.sub(r"\s*\(default: [^)]*\)", "", text)
        rows.append(f"| `{action.option_strings[-1]}` | `{action.default}` | {_cell(text)} |")
    return "\n".join(rows)


def reference_block() -> str:
    return "\n".join([BEGIN, settings_table(), "", serve_options_table(), END])


def rewrite(path: Path) -> bool:
    """Replace the block in `path`; True when it changed."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    updated = text[:start] + reference_block() + text[end:]
    if updated == text:
        return False
    path.write_text(updated, encoding="utf-8")
    return True


if __name__ == "__main__":  # pragma: no cover
    for argument in sys.argv[1:]:
        print(f"{argument}: {'rewritten' if rewrite(Path(argument)) else 'up to date'}")
