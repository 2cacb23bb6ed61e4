"""Maintenance windows and freezes across time zones and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azdev_ica.domain.windows import (
    Freeze,
    Schedule,
    WeeklyWindow,
    WindowError,
    WindowState,
    parse_window,
)

ZONES = [
    "Pacific/Apia",
    "Pacific/Rarotonga",
    "Pacific/Guadalcanal",
    "Pacific/Tongatapu",
    "Pacific/Efate",
    "Europe/London",
    "America/New_York",
    "Australia/Lord_Howe",  # a 30-minute daylight-saving shift
    "Asia/Kathmandu",  # a +05:45 offset
    "UTC",
]
zones = st.sampled_from(ZONES).map(ZoneInfo)
# Hypothesis takes naive bounds and attaches the time zone itself.
instants = st.datetimes(
    min_value=datetime(2024, 1, 1),  # noqa: DTZ001
    max_value=datetime(2030, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)
SUNDAY_EARLY = parse_window("sun 00:00-04:00")


def _minutes_open(schedule: Schedule, start: datetime, end: datetime) -> int:
    moment, count = start, 0
    while moment < end:
        count += schedule.evaluate(moment).open
        moment += timedelta(minutes=1)
    return count


@settings(max_examples=300, deadline=None)
@given(zone=zones, at=instants, offset_minutes=st.integers(-14 * 60, 14 * 60))
def test_the_decision_depends_on_the_instant_not_on_how_it_is_written(zone, at, offset_minutes):
    schedule = Schedule(zone, windows=(SUNDAY_EARLY,))
    from datetime import timezone

    written_elsewhere = at.astimezone(timezone(timedelta(minutes=offset_minutes)))
    assert schedule.evaluate(at).state is schedule.evaluate(written_elsewhere).state


@settings(max_examples=300, deadline=None)
@given(zone=zones, at=instants)
def test_open_exactly_when_the_local_wall_clock_reads_sunday_before_four(zone, at):
    local = at.astimezone(zone)
    expected = local.weekday() == 6 and local.hour < 4
    assert Schedule(zone, windows=(SUNDAY_EARLY,)).evaluate(at).open is expected


@settings(max_examples=200, deadline=None)
@given(zone=zones, at=instants, window=st.sampled_from(["sun 00:00-04:00", "mon-fri 22:00-02:00"]))
def test_deny_wins_and_no_window_means_open(zone, at, window):
    local = at.astimezone(zone).replace(tzinfo=None)
    covering = Freeze("audit", timedelta(hours=1), start=local - timedelta(minutes=30))
    assert Schedule(zone).evaluate(at).open
    always = parse_window("mon-sun 00:00-24:00")
    assert Schedule(zone, windows=(always,)).evaluate(at).open
    frozen = Schedule(zone, windows=(always, parse_window(window)), freezes=(covering,))
    assert frozen.evaluate(at).state is WindowState.FROZEN


@settings(max_examples=100, deadline=None)
@given(zone=zones, at=instants)
def test_next_open_is_open_and_nothing_before_it_is(zone, at):
    schedule = Schedule(zone, windows=(SUNDAY_EARLY,))
    found = schedule.next_open(at)
    assert found is not None
    assert schedule.evaluate(found).open
    assert found - at < timedelta(days=7, minutes=1)
    probe = found - timedelta(minutes=1)
    if probe >= at:
        assert not schedule.evaluate(probe).open


@pytest.mark.parametrize(
    ("zone", "week_of", "minutes"),
    [
        ("Europe/London", datetime(2026, 3, 22, tzinfo=UTC), 240),  # an ordinary Sunday
        ("Europe/London", datetime(2026, 3, 29, tzinfo=UTC), 180),  # 01:00 jumps to 02:00
        ("Europe/London", datetime(2026, 10, 25, tzinfo=UTC), 300),  # 01:00-02:00 twice
        ("Pacific/Apia", datetime(2026, 3, 29, tzinfo=UTC), 240),  # Samoa keeps no DST now
    ],
)
def test_daylight_saving_lengthens_or_shortens_a_wall_clock_window(zone, week_of, minutes):
    schedule = Schedule(ZoneInfo(zone), windows=(SUNDAY_EARLY,))
    start = week_of - timedelta(days=1)
    assert _minutes_open(schedule, start, start + timedelta(days=2)) == minutes


def test_a_window_across_midnight_and_half_open_ends():
    schedule = Schedule(ZoneInfo("Pacific/Tongatapu"), windows=(parse_window("sat 22:00-02:00"),))
    tz = ZoneInfo("Pacific/Tongatapu")
    assert not schedule.evaluate(datetime(2026, 11, 7, 21, 59, tzinfo=tz)).open
    assert schedule.evaluate(datetime(2026, 11, 7, 22, 0, tzinfo=tz)).open
    assert schedule.evaluate(datetime(2026, 11, 8, 1, 59, tzinfo=tz)).open
    decision = schedule.evaluate(datetime(2026, 11, 8, 2, 0, tzinfo=tz))
    assert decision.state is WindowState.OUTSIDE_WINDOW
    assert "Sun 02:00 Pacific/Tongatapu" in decision.reason


def test_a_quarter_end_freeze_from_a_recurrence_rule():
    tz = ZoneInfo("Pacific/Efate")
    quarter_end = Freeze(
        "quarter-end close",
        timedelta(days=3),
        rule="DTSTART:20260101T000000\nRRULE:FREQ=MONTHLY;BYMONTH=3,6,9,12;BYMONTHDAY=-2",
    )
    schedule = Schedule(tz, freezes=(quarter_end,))
    assert schedule.evaluate(datetime(2026, 3, 29, 23, 59, tzinfo=tz)).open
    assert schedule.evaluate(datetime(2026, 3, 30, 0, 0, tzinfo=tz)).state is WindowState.FROZEN
    assert schedule.evaluate(datetime(2026, 4, 1, 23, 59, tzinfo=tz)).state is WindowState.FROZEN
    assert schedule.evaluate(datetime(2026, 4, 2, 0, 0, tzinfo=tz)).open
    assert schedule.evaluate(datetime(2026, 12, 30, 12, 0, tzinfo=tz)).state is WindowState.FROZEN
    assert schedule.evaluate(datetime(2026, 11, 30, 12, 0, tzinfo=tz)).open


@pytest.mark.parametrize(
    ("text", "days", "start", "end"),
    [
        ("sun 00:00-04:00", {6}, time(0), time(4)),
        ("Mon-Fri 22:00-02:00", {0, 1, 2, 3, 4}, time(22), time(2)),
        ("fri-mon 12:30-13:00", {4, 5, 6, 0}, time(12, 30), time(13)),
        ("sat, sun 00:00-24:00", {5, 6}, time(0), None),
    ],
)
def test_parse_window(text, days, start, end):
    assert parse_window(text) == WeeklyWindow(frozenset(days), start, end)


@pytest.mark.parametrize(
    "text", ["sunday 00:00-04:00", "sun 00:00", "sun 25:00-26:00", "sun 04:00-04:00", "xyz 1-2"]
)
def test_bad_windows_are_refused_clearly(text):
    with pytest.raises(WindowError):
        parse_window(text)


def test_bad_freezes_and_naive_instants_are_refused():
    with pytest.raises(WindowError):
        Freeze("x", timedelta(hours=1))
    with pytest.raises(WindowError):
        Freeze("x", timedelta(hours=1), rule="FREQ=SOMETIMES")
    with pytest.raises(WindowError):
        Freeze("x", timedelta(0), start=datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(WindowError):
        Schedule(ZoneInfo("UTC")).evaluate(datetime(2026, 1, 1))  # noqa: DTZ001 - refused
