"""The parsed policy: plain, immutable values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from azdev_ica.policy.budgets import BudgetPolicy
from azdev_ica.policy.gates import GatePolicy
from azdev_ica.policy.promotion import PromotionPolicy
from azdev_ica.policy.retention import RetentionPolicy


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
class ApprovalPolicy:
    """The `approvals` section: when a request is late (SLA), when it warns, when it expires,
    and where the business half may sign first (default: technical first, as in the seed)."""

    sla_hours: float = 4.0
    warning_hours: float = 2.0
    expiry_hours: float = 24.0
    business_first_stages: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Policy:
    """A validated policy document and its hash (of the canonical JSON of its content)."""

    tenants: dict[str, Tenant]
    stages: tuple[Stage, ...]
    sha256: str
    content: dict[str, Any] = field(repr=False, compare=False)
    approvals: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    gates: GatePolicy = field(default_factory=GatePolicy)
    # The `promotion` section (seed 002); None: no promotion rules (the gate as before).
    promotion: PromotionPolicy | None = None
    # The `budgets` and `retention` sections (seed 000 §7.2, §4.2); defaults when absent.
    budgets: BudgetPolicy = field(default_factory=BudgetPolicy)
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)

    def stage(self, name: str) -> Stage | None:
        return next((stage for stage in self.stages if stage.name == name), None)
