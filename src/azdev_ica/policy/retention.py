"""The policy's `retention` section (seed 000 §4.2): how long operational rows are kept.

The scheduler's `retention` job (`services/retention.py`) deletes delivered and failed
outbox notifications after `outbox_days` (default 90) and web sessions that ended (signed
out, or past their absolute expiry) more than `sessions_days` ago (default 30); sign-in
throttle rows go a day after their last failure. The audit ledger is never touched: it is kept
for at least 7 years, and retiring a yearly shard is a separate step its owner runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any


@dataclass(frozen=True)
class RetentionPolicy:
    outbox_days: int = 90
    sessions_days: int = 30

    @property
    def outbox(self) -> timedelta:
        return timedelta(days=self.outbox_days)

    @property
    def sessions(self) -> timedelta:
        return timedelta(days=self.sessions_days)


def retention_policy(content: dict[str, Any]) -> RetentionPolicy:
    """The `retention` section of a validated policy document (defaults when absent)."""
    section = content.get("retention") or {}
    defaults = RetentionPolicy()
    return RetentionPolicy(
        outbox_days=int(section.get("outbox_days", defaults.outbox_days)),
        sessions_days=int(section.get("sessions_days", defaults.sessions_days)),
    )
