"""The shared outage bookkeeping of SIEM destinations and witnesses (services/outages.py):
the back-off doubles up to its cap, and an outage alerts once, when it has lasted long enough."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from azdev_ica.services.outages import backoff_delay, note_failure

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@dataclass
class Row:
    failing_since: datetime | None = None
    last_error: str | None = None
    alerted: bool = False


@given(
    base=st.integers(min_value=1, max_value=600).map(lambda s: timedelta(seconds=s)),
    cap=st.integers(min_value=1, max_value=86_400).map(lambda s: timedelta(seconds=s)),
    failures=st.integers(min_value=1, max_value=200),
)
def test_the_back_off_doubles_from_base_up_to_its_cap(base, cap, failures):
    delay = backoff_delay(failures, base=base, cap=cap)
    assert delay == min(base * 2 ** min(failures - 1, 30), cap)
    assert delay <= cap
    assert backoff_delay(failures + 1, base=base, cap=cap) >= delay
    assert backoff_delay(1, base=base, cap=cap) == min(base, cap)


@given(gaps=st.lists(st.integers(min_value=0, max_value=600), max_size=30))
def test_an_outage_alerts_once_when_it_has_lasted_long_enough(gaps):
    row, at = Row(), T0
    alerts = [note_failure(row, "x" * 3000, at=at, alert_after=timedelta(minutes=15))]
    moments = [at]
    for seconds in gaps:
        at += timedelta(seconds=seconds)
        moments.append(at)
        alerts.append(note_failure(row, "x" * 3000, at=at, alert_after=timedelta(minutes=15)))
    assert row.failing_since == T0
    assert row.last_error == "x" * 2000
    lasted = [moment - T0 >= timedelta(minutes=15) for moment in moments]
    # The first failure at or after 15 minutes alerts, and no other.
    expected = [lasted[i] and not any(lasted[:i]) for i in range(len(lasted))]
    assert alerts == expected
    assert row.alerted == any(lasted)
