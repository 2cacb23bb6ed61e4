"""Maintenance windows and freezes of a target, in its tenant's local time. Pure, no I/O.

Semantics, chosen so that an operator reading the policy gets what the words say:

- Windows and freezes are written in **wall-clock time of the tenant's time zone** ("Sunday
  00:00-04:00" in Pacific/Apia). An instant is inside a window when the local wall clock at
  that instant reads a time inside it. Across daylight-saving changes this means: a window
  that overlaps the skipped hour is that much shorter that day, and one that overlaps the
  repeated hour is that much longer (both readings of the wall clock are inside).
- A target with **no windows is always open**; with windows, only inside one of them.
- A **freeze** is a one-off local interval or a recurrence (RFC 5545 RRULE, e.g. quarter
  end) with a duration. **Deny wins**: a frozen instant is closed even inside a window.
- Intervals are half-open, [start, end): a window ending 04:00 is closed at 04:00.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rrulestr

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW_RE = re.compile(
    r"^\s*(?P<days>[a-z]{3}(?:\s*-\s*[a-z]{3})?(?:\s*,\s*[a-z]{3}(?:\s*-\s*[a-z]{3})?)*)\s+"
    r"(?P<start>\d{2}:\d{2})\s*-\s*(?P<end>\d{2}:\d{2})\s*$",
    re.IGNORECASE,
)


class WindowError(ValueError):
    """A window or freeze that cannot be understood."""


@dataclass(frozen=True)
class WeeklyWindow:
    """Open on `days` (0 = Monday) from `start` to `end` local time; `end` 24:00 is `None`.

    A window whose end is not after its start crosses midnight into the next day
    ("sat 22:00-02:00" is open Saturday 22:00 to Sunday 02:00).
    """

    days: frozenset[int]
    start: time
    end: time | None

    def contains(self, local: datetime) -> bool:
        wall = local.time().replace(tzinfo=None, fold=0)
        day = local.weekday()
        end = self.end
        if end is None:
            return day in self.days and wall >= self.start
        if end > self.start:
            return day in self.days and self.start <= wall < end
        # Crosses midnight: the evening part on a listed day, the morning part on the next.
        return (day in self.days and wall >= self.start) or (
            (day - 1) % 7 in self.days and wall < end
        )


@dataclass(frozen=True)
class Freeze:
    """Closed from each start for `duration`: one start (one-off) or an RRULE's occurrences.

    Starts are local wall-clock times (naive datetimes) of the tenant's zone.
    """

    reason: str
    duration: timedelta
    start: datetime | None = None
    rule: str | None = None

    def __post_init__(self) -> None:
        if (self.start is None) == (self.rule is None):
            raise WindowError("a freeze has either a start or a recurrence rule")
        if self.duration <= timedelta(0):
            raise WindowError("a freeze lasts a positive time")
        if self.start is not None and self.start.tzinfo is not None:
            raise WindowError("a freeze's start is a local wall-clock time, without offset")
        if self.rule is not None:
            _parse_rule(self.rule)

    def covers(self, local: datetime) -> bool:
        wall = local.replace(tzinfo=None, fold=0)
        if self.start is not None:
            return self.start <= wall < self.start + self.duration
        assert self.rule is not None
        latest = _parse_rule(self.rule).before(wall, inc=True)
        return latest is not None and wall < latest + self.duration


def _parse_rule(rule: str) -> rrule:
    try:
        parsed = rrulestr(rule)
    except (ValueError, TypeError) as exc:
        raise WindowError(f"not an RFC 5545 recurrence rule: {rule!r} ({exc})") from None
    if not isinstance(parsed, rrule):
        raise WindowError(f"one RRULE per freeze, not a set: {rule!r}")
    dtstart = getattr(parsed, "_dtstart", None)
    if dtstart is not None and dtstart.tzinfo is not None:
        raise WindowError("a freeze's DTSTART is a local wall-clock time, without offset")
    return parsed


class WindowState(StrEnum):
    OPEN = "open"
    OUTSIDE_WINDOW = "outside_window"
    FROZEN = "frozen"


@dataclass(frozen=True)
class WindowDecision:
    state: WindowState
    local_time: datetime
    reason: str

    @property
    def open(self) -> bool:
        return self.state is WindowState.OPEN


@dataclass(frozen=True)
class Schedule:
    """When a target may be deployed to: its zone, its windows and its freezes."""

    timezone: ZoneInfo
    windows: tuple[WeeklyWindow, ...] = ()
    freezes: tuple[Freeze, ...] = ()

    def evaluate(self, at: datetime) -> WindowDecision:
        """Open, outside every window, or frozen, at the instant `at` (aware)."""
        if at.tzinfo is None:
            raise WindowError("evaluate an aware instant, not a naive time")
        local = at.astimezone(self.timezone)
        for freeze in self.freezes:
            if freeze.covers(local):
                return WindowDecision(WindowState.FROZEN, local, f"frozen: {freeze.reason}")
        if self.windows and not any(window.contains(local) for window in self.windows):
            return WindowDecision(
                WindowState.OUTSIDE_WINDOW,
                local,
                f"outside the maintenance window{'s' if len(self.windows) > 1 else ''} "
                f"(local time {local:%a %H:%M} {self.timezone.key})",
            )
        return WindowDecision(WindowState.OPEN, local, "open")

    def next_open(
        self, at: datetime, *, horizon: timedelta = timedelta(days=366)
    ) -> datetime | None:
        """The first instant at or after `at` when the target is open (minute resolution)."""
        step = timedelta(minutes=1)
        moment = at.astimezone(UTC).replace(second=0, microsecond=0)
        if moment < at:
            moment += step
        end = at + horizon
        while moment <= end:
            if self.evaluate(moment).open:
                return moment
            moment += step
        return None


def parse_window(text: str) -> WeeklyWindow:
    """`"sun 00:00-04:00"`, `"mon-fri 22:00-02:00"`, `"sat,sun 00:00-24:00"`."""
    match = _WINDOW_RE.match(text)
    if match is None:
        raise WindowError(f"not a window: {text!r} (e.g. 'sun 00:00-04:00')")
    days: set[int] = set()
    for part in match["days"].lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        begin = _day(first, text)
        finish = _day(last, text) if last else begin
        day = begin
        days.add(day)
        while day != finish:
            day = (day + 1) % 7
            days.add(day)
    start = _clock(match["start"], text, allow_24=False)
    end = _clock(match["end"], text, allow_24=True)
    assert start is not None  # 24:00 is refused as a start
    if end == start:
        raise WindowError(f"a window of no time: {text!r}")
    return WeeklyWindow(frozenset(days), start, end)


def _day(name: str, text: str) -> int:
    try:
        return DAYS.index(name)
    except ValueError:
        raise WindowError(f"unknown day {name!r} in {text!r}: use mon..sun") from None


def _clock(value: str, text: str, *, allow_24: bool) -> time | None:
    hours, minutes = (int(part) for part in value.split(":"))
    if allow_24 and (hours, minutes) == (24, 0):
        return None
    if hours > 23 or minutes > 59:
        raise WindowError(f"not a time of day: {value!r} in {text!r}")
    return time(hours, minutes)
