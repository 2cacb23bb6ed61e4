"""Incidents (seed 000 §6.2): severities and their restore targets, the status machine, MTTR.

Pure: no database, no clock. The service applies these rules inside its transactions.

An incident is detected (at the failure, or when someone noticed), mitigated (the bleeding
stopped, e.g. rolled back), resolved (service restored: MTTR ends here) and closed, which
needs a root-cause analysis. A resolved incident that comes back is reopened, not duplicated.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class IncidentStatus(StrEnum):
    OPEN = "open"
    MITIGATED = "mitigated"
    RESOLVED = "resolved"
    CLOSED = "closed"


# Seed 000 §6.1 "Rollback SLA: <15 minutes (critical), <1 hour (high), <4 hours (medium)".
RESTORE_TARGET: dict[Severity, timedelta | None] = {
    Severity.CRITICAL: timedelta(minutes=15),
    Severity.HIGH: timedelta(hours=1),
    Severity.MEDIUM: timedelta(hours=4),
    Severity.LOW: None,
}

_NEXT: dict[IncidentStatus, frozenset[IncidentStatus]] = {
    IncidentStatus.OPEN: frozenset({IncidentStatus.MITIGATED, IncidentStatus.RESOLVED}),
    IncidentStatus.MITIGATED: frozenset({IncidentStatus.OPEN, IncidentStatus.RESOLVED}),
    IncidentStatus.RESOLVED: frozenset({IncidentStatus.OPEN, IncidentStatus.CLOSED}),
    IncidentStatus.CLOSED: frozenset(),
}


class TransitionRefused(Exception):
    """The move is not allowed from the current status (the message says why)."""


def restore_due(severity: Severity, detected_at: datetime) -> datetime | None:
    target = RESTORE_TARGET[severity]
    return None if target is None else detected_at + target


def check_transition(current: IncidentStatus, new: IncidentStatus, *, has_rca: bool) -> None:
    """Raise TransitionRefused unless `current` -> `new` is allowed."""
    if new == current:
        raise TransitionRefused(f"the incident is {current.value} already")
    if new not in _NEXT[current]:
        if current is IncidentStatus.CLOSED:
            raise TransitionRefused("a closed incident stays closed; open a new one")
        if new is IncidentStatus.CLOSED:
            raise TransitionRefused("resolve the incident before closing it")
        raise TransitionRefused(f"an incident cannot go from {current.value} to {new.value}")
    if new is IncidentStatus.CLOSED and not has_rca:
        raise TransitionRefused("an incident is closed only with a root-cause analysis")


def time_to_restore(detected_at: datetime, resolved_at: datetime | None) -> timedelta | None:
    """Detected -> resolved; None while unresolved."""
    return None if resolved_at is None else resolved_at - detected_at
