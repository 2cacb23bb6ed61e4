"""Reading pipeline files the way a reviewer would: every script in them, every `ica` command in
those scripts (with `${{ }}`, `$(...)` and shell variables replaced by placeholder values), and
every place a secret could have been written down instead of referenced."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
AZURE_TEMPLATE = PIPELINES / "azure" / "azure-pipelines-template.yml"
AZURE_STEP = PIPELINES / "azure" / "steps" / "ica.yml"
AZURE_EXAMPLE = PIPELINES / "azure" / "example-pipeline.yml"
GITHUB_ACTION = PIPELINES / "github" / "action.yml"
GITHUB_EXAMPLE = PIPELINES / "github" / "example-deploy.yml"

SCRIPT_KEYS = frozenset({"bash", "script", "inlineScript", "run", "pwsh", "powershell"})

# Placeholder values by variable or expression: what the pipeline would put there at run time.
PLACEHOLDERS = {
    "Agent.JobStatus": "Succeeded",
    "status": "Succeeded",
    "ICA_STATUS": "success",
    "job.status": "success",
    "inputs.status": "success",
}
DEFAULT_PLACEHOLDER = "1"

_TEMPLATE_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_MACRO = re.compile(r"\$\(([A-Za-z_][\w.]*)\)")
# "${args[@]}": options built up in a bash array (empty when the input is not given).
_SHELL_ARRAY = re.compile(r'"?\$\{[A-Za-z_]\w*\[@\]\}"?')
_SHELL_VAR = re.compile(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)")
_OPERATORS = frozenset({";", ";;", "&&", "||", "|", "(", ")", "&", ">", ">>", "<", "2>", "|&"})
_COMMAND_WORDS = frozenset({"then", "else", "do", "!", "elif", "if", "while", "until"})


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def scripts(node: Any) -> Iterator[str]:
    """Every script text in a parsed pipeline file (ADO steps, step-template parameters,
    AzureCLI inline scripts, GitHub `run`)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SCRIPT_KEYS and isinstance(value, str):
                yield value
            else:
                yield from scripts(value)
    elif isinstance(node, list):
        for item in node:
            yield from scripts(item)


def _placeholder(name: str) -> str:
    return PLACEHOLDERS.get(name.strip(), DEFAULT_PLACEHOLDER)


def substitute(text: str) -> str:
    """Template expressions, macros and shell variables replaced by placeholder values."""
    text = _TEMPLATE_EXPR.sub(lambda m: _placeholder(m.group(1)), text)
    text = _MACRO.sub(lambda m: _placeholder(m.group(1)), text)
    text = _SHELL_ARRAY.sub("", text)
    return _SHELL_VAR.sub(lambda m: _placeholder(m.group(1) or m.group(2)), text)


def ica_commands(script: str) -> list[list[str]]:
    """The argument lists of every `ica` command in a shell script."""
    joined = re.sub(r"\\\n", " ", script)
    found: list[list[str]] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line.startswith("#") or not re.search(r"(^|[\s;&|()])ica(\s|$)", line):
            continue
        lexer = shlex.shlex(substitute(line), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        command: list[str] | None = None
        at_start = True
        for token in tokens:
            if command is not None:
                if token in _OPERATORS:
                    found.append(command)
                    command = None
                else:
                    command.append(token)
                    continue
            if at_start and token == "ica":
                command = []
                continue
            at_start = token in _OPERATORS or token in _COMMAND_WORDS or token.endswith(")")
        if command is not None:
            found.append(command)
    return found


def all_ica_commands(path: Path) -> list[list[str]]:
    return [command for text in scripts(load(path)) for command in ica_commands(text)]


class CommandError(AssertionError):
    pass


def check_command(argv: list[str]) -> Any:
    """Parse `ica ARGV` with the CLI's own parser; a usage error raises CommandError."""
    from azdev_ica.cli.main import build_parser

    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise CommandError(f"`ica {' '.join(argv)}` does not parse (exit {exc.code})") from None


# --- secrets ----------------------------------------------------------------------------------

SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|API[_-]?KEY|APIKEY|CREDENTIAL)", re.IGNORECASE)
REFERENCE = re.compile(
    r"^(\$\([A-Za-z_][\w.]*\)"  # $(Secret) Azure macro
    r"|\$\(\$\{\{\s*parameters\.\w+\s*\}\}\)"  # $(${{ parameters.secretName }})
    r"|\$\{\{\s*(secrets|inputs|parameters)\.[\w-]+\s*\}\})$"  # ${{ secrets.X }}, passed on
)
LITERAL_SECRETS = [
    re.compile(r"ica_[a-z2-7]{10}_[A-Za-z0-9_-]{20,}"),  # ICA API key
    re.compile(r"icp_[A-Za-z0-9_-]{20,}"),  # ICA personal token
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # a JWT
    re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub tokens
    re.compile(r"(?i)(password|secret|api[_-]?key|token)\s*[=:]\s*['\"]?[A-Za-z0-9+/_-]{16,}"),
]


def inlined_secrets(path: Path) -> list[str]:
    """Where a secret is written down in the file instead of referenced: a literal that looks
    like a token, or a secret-named setting whose value is not a variable or secret reference."""
    text = path.read_text(encoding="utf-8")
    problems = [
        f"literal secret {m.group(0)[:12]}..." for p in LITERAL_SECRETS for m in p.finditer(text)
    ]

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{where}.{key}"
                secret_named = isinstance(key, str) and SECRET_NAME.search(key) is not None
                if where.endswith(".permissions"):
                    secret_named = False  # `id-token: write` is a permission, not a token
                literal = isinstance(value, str | int) and value != ""
                if secret_named and literal and not REFERENCE.match(str(value).strip()):
                    problems.append(f"{here} = {str(value)[:12]!r} is not a secret reference")
                walk(value, here)
        elif isinstance(node, list):
            for number, item in enumerate(node):
                walk(item, f"{where}[{number}]")
        elif isinstance(node, str):
            for found in re.finditer(r"\b(ICA_TOKEN|ICA_API_KEY)=([^\s;]+)", node):
                if not REFERENCE.match(found.group(2)) and not found.group(2).startswith("$"):
                    problems.append(f"{where}: {found.group(1)} set inline in a script")

    walk(load(path), "$")
    return problems
