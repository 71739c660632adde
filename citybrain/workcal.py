"""Working-time arithmetic (case deadlines, data-sharing answer deadlines): office hours, weekends,
statutory holidays and 调休.

Holidays and make-up working days come from the State Council schedule carried by the `chinese-calendar`
package (import name `chinese_calendar`), with local overrides. Time limits are in working hours
(`work_hours`), working days (`work_days`, one working day = the day's office minutes) or a continuous
clock (`hours`, urgent classes). Office hours are local time (Asia/Shanghai, UTC+8, no DST).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import chinese_calendar

CST = dt.timezone(dt.timedelta(hours=8), "CST")
DEFAULT_OFFICE_HOURS = (("08:00", "12:00"), ("14:00", "18:00"))  # STANDARDS.md §4.2: 8–12, 14–18
UNITS = ("work_hours", "work_days", "hours")


def _hm(s: str) -> dt.time:
    h, m = s.split(":")
    return dt.time(int(h), int(m))


@dataclass
class WorkCalendar:
    """Office hours plus the official holiday calendar; `overrides` maps ISO dates to workday True/False."""

    office_hours: tuple[tuple[str, str], ...] = DEFAULT_OFFICE_HOURS
    overrides: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._spans = [(_hm(a), _hm(b)) for a, b in self.office_hours]
        self.day_minutes = sum((b.hour * 60 + b.minute) - (a.hour * 60 + a.minute) for a, b in self._spans)
        self._days: dict[dt.date, bool] = {}  # is_workday answers (chinese_calendar's lookup is slow)

    def is_workday(self, day: dt.date) -> bool:
        """True if the date is a working day (holidays off, 调休 make-up days on)."""
        if self.overrides:
            iso = day.isoformat()
            if iso in self.overrides:
                return self.overrides[iso]  # read each time: the overrides may be edited in place
        hit = self._days.get(day)
        if hit is not None:
            return hit
        try:
            ans = chinese_calendar.is_workday(day)
        except NotImplementedError:  # a year the package does not know yet: weekdays
            ans = day.weekday() < 5
        if len(self._days) < 20_000:
            self._days[day] = ans
        return ans

    def add_workdays(self, start: dt.date, n: int) -> dt.date:
        """The date `n` working days after `start` (the start day itself does not count)."""
        day, left = start, n
        while left > 0:
            day += dt.timedelta(days=1)
            if self.is_workday(day):
                left -= 1
        return day

    def _intervals(self, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        if not self.is_workday(day):
            return []
        return [(dt.datetime.combine(day, a, CST), dt.datetime.combine(day, b, CST)) for a, b in self._spans]

    def limit_minutes(self, value: float, unit: str) -> float:
        """A time limit in minutes of its own clock (working minutes, or natural minutes for `hours`)."""
        if unit == "work_days":
            return value * self.day_minutes
        return value * 60.0

    def add(self, start: dt.datetime, value: float, unit: str) -> dt.datetime:
        """The moment a limit of `value` `unit` that starts at `start` runs out (UTC)."""
        if unit == "hours":
            return start + dt.timedelta(hours=value)
        return self.add_working_minutes(start, self.limit_minutes(value, unit))

    def add_working_minutes(self, start: dt.datetime, minutes: float) -> dt.datetime:
        """`start` plus this many minutes of office time (UTC)."""
        t = start.astimezone(CST)
        left = dt.timedelta(minutes=minutes)
        day = t.date()
        for _ in range(3660):  # ten years of days at most
            for a, b in self._intervals(day):
                if b <= t:
                    continue
                begin = max(a, t)
                span = b - begin
                if left <= span:
                    return (begin + left).astimezone(dt.UTC)
                left -= span
            day += dt.timedelta(days=1)
        raise ValueError("time limit too long")

    def working_minutes(self, start: dt.datetime, end: dt.datetime) -> float:
        """Office minutes between two moments (0 if end <= start)."""
        if end <= start:
            return 0.0
        s, e = start.astimezone(CST), end.astimezone(CST)
        total = dt.timedelta(0)
        day = s.date()
        while day <= e.date():
            for a, b in self._intervals(day):
                lo, hi = max(a, s), min(b, e)
                if hi > lo:
                    total += hi - lo
            day += dt.timedelta(days=1)
        return total.total_seconds() / 60.0

    def elapsed(self, start: dt.datetime, end: dt.datetime, unit: str) -> float:
        """Minutes of the limit's own clock used between start and end."""
        if unit == "hours":
            return max(0.0, (end - start).total_seconds() / 60.0)
        return self.working_minutes(start, end)

    def to_dict(self) -> dict:
        """The calendar's configuration."""
        return {"office_hours": [list(p) for p in self.office_hours], "overrides": dict(self.overrides),
                "timezone": "Asia/Shanghai", "day_minutes": self.day_minutes}
