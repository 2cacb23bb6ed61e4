"""A small reader of the Dockerfile's instructions (no Docker engine runs here), enough to run
the image's own commands outside a container."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        values = [value for name, value in self.instructions if name == keyword]
        return values[-1] if values else None

    def env(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for name, value in self.instructions:
            if name == "ENV":
                for item in shlex.split(value):
                    key, _, text = item.partition("=")
                    found[key] = text
        return found

    def exec_form(self, keyword: str) -> list[str]:
        """An ENTRYPOINT or CMD in exec form (a JSON array); shell form is refused."""
        value = self.last(keyword)
        assert value is not None, f"no {keyword}"
        command = json.loads(value)
        assert isinstance(command, list), f"{keyword} is not in exec form"
        return [str(part) for part in command]

    def healthcheck(self) -> tuple[dict[str, str], list[str]]:
        """The HEALTHCHECK's options and its command (exec form)."""
        value = self.last("HEALTHCHECK")
        assert value is not None, "no HEALTHCHECK"
        head, _, command = value.partition("CMD ")
        options = dict(option.lstrip("-").split("=", 1) for option in head.split())
        parsed = json.loads(command)
        assert isinstance(parsed, list), "the HEALTHCHECK's CMD is not in exec form"
        return options, [str(part) for part in parsed]


def read_stages(path: Path) -> list[Stage]:
    """The build stages, each with its instructions (continuations joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stages.append(Stage(base=value.split()[0]))
        elif stages:
            stages[-1].instructions.append((keyword, value.strip()))
    return stages
