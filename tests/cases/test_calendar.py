"""Deadlines in working time: weekends, the 2026 National Day holiday and its make-up working days (调休)."""

import datetime as dt

from citybrain.workcal import CST, WorkCalendar

cal = WorkCalendar()  # seeded default office hours 08:00-12:00, 14:00-18:00


def at(*a):
    return dt.datetime(*a, tzinfo=CST)


def test_working_hours_skip_lunch_and_night():
    # Mon 11:00 + 4 working hours = 1 h before lunch, 3 h after -> 17:00
    assert cal.add(at(2026, 11, 16, 11, 0), 4, "work_hours") == at(2026, 11, 16, 17, 0)
    # Mon 17:00 + 2 working hours -> Tue 09:00
    assert cal.add(at(2026, 11, 16, 17, 0), 2, "work_hours") == at(2026, 11, 17, 9, 0)
    # a report at night starts counting at the next opening
    assert cal.add(at(2026, 11, 16, 22, 0), 1, "work_hours") == at(2026, 11, 17, 9, 0)


def test_weekend_is_skipped():
    # Fri 2026-11-20 16:00 + 4 working hours: 2 h on Friday, 2 h on Monday 11-23
    assert cal.add(at(2026, 11, 20, 16, 0), 4, "work_hours") == at(2026, 11, 23, 10, 0)
    # 1 working day (8 h) from Fri 10:00 -> Mon 10:00
    assert cal.add(at(2026, 11, 20, 10, 0), 1, "work_days") == at(2026, 11, 23, 10, 0)


def test_national_day_holiday_and_make_up_days():
    # 2026-10-01..07 are holidays; Sat 2026-10-10 and Sun 2026-09-20 are make-up working days
    assert not cal.is_workday(dt.date(2026, 10, 1))
    assert not cal.is_workday(dt.date(2026, 10, 7))
    assert cal.is_workday(dt.date(2026, 10, 10))
    assert cal.is_workday(dt.date(2026, 9, 20))
    # Wed 09-30 16:00 + 4 working hours: 2 h on 09-30, the rest on Thu 10-08 after the holiday
    assert cal.add(at(2026, 9, 30, 16, 0), 4, "work_hours") == at(2026, 10, 8, 10, 0)
    # Fri 10-09 16:00 + 4 working hours: 2 h Friday, then the make-up Saturday 10-10
    assert cal.add(at(2026, 10, 9, 16, 0), 4, "work_hours") == at(2026, 10, 10, 10, 0)
    # Sat 09-19 (not a workday) + 1 working hour -> Sun 09-20 (make-up day) 09:00
    assert cal.add(at(2026, 9, 19, 10, 0), 1, "work_hours") == at(2026, 9, 20, 9, 0)
    # 5 working days from Tue 09-29 09:00: 09-29, 09-30, 10-08, 10-09, 10-10 -> Sun 10-11 is off -> 10-12 09:00
    assert cal.add(at(2026, 9, 29, 9, 0), 5, "work_days") == at(2026, 10, 12, 9, 0)


def test_continuous_clock_for_urgent_classes():
    assert cal.add(at(2026, 10, 1, 23, 0), 2, "hours") == at(2026, 10, 2, 1, 0)


def test_working_minutes_is_inverse_of_add():
    start = at(2026, 9, 30, 15, 17)
    end = cal.add(start, 13.5, "work_hours")
    assert cal.working_minutes(start, end) == 13.5 * 60


def test_local_override_and_office_hours():
    c = WorkCalendar((("08:30", "12:00"), ("14:00", "18:00")), {"2026-11-17": False})
    assert c.day_minutes == 450
    # Tuesday declared off locally: Mon 17:30 + 1 h -> Wed 09:00
    assert c.add(at(2026, 11, 16, 17, 30), 1, "work_hours") == at(2026, 11, 18, 9, 0)


def test_add_workdays_skips_the_national_day_holiday_and_counts_a_make_up_day():
    from citybrain.workcal import WorkCalendar

    cal = WorkCalendar()
    # 10-01..10-07 are the National Day holiday; Saturday 10-10 is a make-up working day
    assert cal.add_workdays(dt.date(2026, 9, 30), 1) == dt.date(2026, 10, 8)
    assert cal.add_workdays(dt.date(2026, 9, 30), 3) == dt.date(2026, 10, 10)
    # ten working days (the data-sharing answer limit) from a Friday span two weekends
    assert cal.add_workdays(dt.date(2026, 11, 20), 10) == dt.date(2026, 12, 4)


def test_years_beyond_the_official_schedule_fall_back_to_weekdays():
    from citybrain.workcal import WorkCalendar

    cal = WorkCalendar()
    # the State Council schedule is published a year at a time; 2099 is not in it
    assert cal.is_workday(dt.date(2099, 1, 2))  # a Friday
    assert not cal.is_workday(dt.date(2099, 1, 3))  # a Saturday
    assert WorkCalendar(overrides={"2099-01-03": True}).is_workday(dt.date(2099, 1, 3))  # local 调休 override
