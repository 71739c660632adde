"""Working days (工作日) for answer deadlines: the official holiday and make-up-day calendar from the
`chinesecalendar` package, falling back to Monday-Friday for years it does not cover.

Kept local to the data module for now; the lead may unify it with the cases module's calendar.
"""

from __future__ import annotations

import datetime as dt

import chinese_calendar


def is_workday(day: dt.date) -> bool:
    """True if `day` is a working day in mainland China."""
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return day.weekday() < 5


def add_workdays(start: dt.date, n: int) -> dt.date:
    """The date `n` working days after `start` (the start day itself does not count)."""
    day, left = start, n
    while left > 0:
        day += dt.timedelta(days=1)
        if is_workday(day):
            left -= 1
    return day


def workdays_between(start: dt.date, end: dt.date) -> int:
    """Working days after `start` up to and including `end` (negative if end is before start)."""
    if end < start:
        return -workdays_between(end, start)
    n, day = 0, start
    while day < end:
        day += dt.timedelta(days=1)
        n += is_workday(day)
    return n
