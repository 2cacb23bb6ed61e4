"""The bookkeeping of an outside party that stops answering (a SIEM destination, a
witness): since when it fails, its last error, and one alert per outage once it has failed
for long enough; a failing SIEM destination also backs off between attempts.

The row is the caller's (`azdev_siem_cursor`, `azdev_witness_status`), written in the
caller's transaction; what the alert says stays the caller's."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

ERROR_LENGTH = 2000
"""How much of an error message a row keeps."""


class OutageRow(Protocol):
    failing_since: datetime | None
    last_error: str | None
    alerted: bool


def note_failure(row: OutageRow, error: str, *, at: datetime, alert_after: timedelta) -> bool:
    """Record a failure at `at` on `row`; True when the outage has now lasted `alert_after`
    and was not alerted yet (the row is marked alerted: the caller raises the alert)."""
    if row.failing_since is None:
        row.failing_since = at
    row.last_error = error[:ERROR_LENGTH]
    if row.alerted or at - row.failing_since < alert_after:
        return False
    row.alerted = True
    return True


def backoff_delay(failures: int, *, base: timedelta, cap: timedelta) -> timedelta:
    """The wait after the `failures`-th failure in a row: `base`, doubled at each further
    failure, never more than `cap`."""
    return min(base * (1 << min(max(failures - 1, 0), 30)), cap)
