"""The policy's `budgets` section (seed 000 §7.2): when a cost warns against its budget.

A cost impact of at least `warn_percent` (default 80) of the approved budget raises the
`budget.threshold` warning, once per approval (`services/alerts.py`). Above 100 % the gate
also denies (`budget_exceeded`); the warning is the early signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class BudgetPolicy:
    warn_percent: Decimal = Decimal(80)

    def reached(self, cost_minor: int | None, budget_minor: int | None) -> bool:
        """Whether a (positive) cost has reached the warning share of the budget."""
        if cost_minor is None or budget_minor is None or cost_minor <= 0:
            return False
        return Decimal(cost_minor) * 100 >= self.warn_percent * Decimal(budget_minor)


def budget_policy(content: dict[str, Any]) -> BudgetPolicy:
    """The `budgets` section of a validated policy document (defaults when absent)."""
    section = content.get("budgets") or {}
    return BudgetPolicy(warn_percent=Decimal(str(section.get("warn_percent", 80))))
