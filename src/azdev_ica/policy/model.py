"""The parsed policy: plain, immutable values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Tenant:
    code: str
    name: str
    timezone: str


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    production: bool = False
    promotion: bool = True


@dataclass(frozen=True)
class Policy:
    """A validated policy document and its hash (of the canonical JSON of its content)."""

    tenants: dict[str, Tenant]
    stages: tuple[Stage, ...]
    sha256: str
    content: dict[str, Any] = field(repr=False, compare=False)

    def stage(self, name: str) -> Stage | None:
        return next((stage for stage in self.stages if stage.name == name), None)
