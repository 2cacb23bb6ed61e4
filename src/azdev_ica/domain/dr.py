"""Disaster recovery (seed 000 §9.1): the targets, what a drill measured, when one is due.

Pure: no database, no clock.

- RTO (recovery time) of a drill: from the start of the restore to service back.
- RPO (recovery point) of a drill: from the backup it restored to the moment the drill
  started, i.e. the data that a failure at that moment would have lost.
- A drill passes when the restore succeeded and both stayed within their targets.
- A drill is due every quarter (seed: "Quarterly restore test"); a tenant whose last passed
  drill is older than that, or that never had one, is overdue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

RTO_TARGET = timedelta(hours=4)
RPO_TARGET = timedelta(hours=1)
DRILL_EVERY = timedelta(days=92)  # a quarter, rounded up


@dataclass(frozen=True)
class DrillMeasure:
    rto: timedelta
    rpo: timedelta
    passed: bool


class DrillRefused(ValueError):
    """The drill's times do not make sense (the message says which)."""


def measure(
    *,
    backup_taken_at: datetime,
    started_at: datetime,
    finished_at: datetime,
    succeeded: bool,
    rto_target: timedelta = RTO_TARGET,
    rpo_target: timedelta = RPO_TARGET,
) -> DrillMeasure:
    if finished_at < started_at:
        raise DrillRefused("a drill finishes after it starts")
    if backup_taken_at > started_at:
        raise DrillRefused("a drill restores a backup taken before the drill started")
    rto = finished_at - started_at
    rpo = started_at - backup_taken_at
    return DrillMeasure(
        rto=rto, rpo=rpo, passed=succeeded and rto <= rto_target and rpo <= rpo_target
    )


def drill_overdue(
    last_passed: datetime | None, now: datetime, added_at: datetime | None = None
) -> bool:
    """More than a quarter since the last passed drill; a tenant that never passed one gets a
    quarter from when it was added to the policy (`added_at`; unknown: overdue)."""
    since = last_passed if last_passed is not None else added_at
    return since is None or now - since > DRILL_EVERY
