"""IoT alarms -> one case per device and rule; deadline warnings, overdue marking and automatic supervision."""

import datetime as dt

from sqlalchemy import func, select

from citybrain import bus, clock
from citybrain.cases import service
from citybrain.cases.models import Case, CaseEvent, Notification, Supervision


def alarm(n=1, **kw):
    p = {"alarm_id": f"A{n}", "device_code": "44011501067000001", "rule_id": "wl_high", "rule_name": "积水超警戒",
         "severity": 3, "property": "water_level", "value": 0.42, "lon": 113.55, "lat": 22.78,
         "grid_code": "440115001001001", "message_zh": "积水深度 0.42 m 超过警戒值", "message_en": "Water 0.42 m",
         "at": "2026-11-16T01:00:00+00:00", "org_ids": [], "category_hint": "01067"}
    p.update(kw)
    return p


def publish(db, topic, payload):
    with db.write() as s:
        bus.publish(s, topic, payload)
        s.commit()
    bus.drain()


def test_one_alarm_one_case_however_often_it_repeats(cdb, org):
    publish(cdb, "iot.alarm.raised", alarm(1))
    publish(cdb, "iot.alarm.raised", alarm(1))  # the same event delivered twice
    publish(cdb, "iot.alarm.raised", alarm(2, value=0.5))
    publish(cdb, "iot.alarm.raised", alarm(3, value=0.6))
    with cdb.read() as s:
        cases = s.scalars(select(Case).where(Case.source == "iot")).all()
        assert len(cases) == 1
        c = cases[0]
        assert c.repeat_count == 2 and c.alarm_ids == ["A1", "A2", "A3"]
        assert c.status == "dispatched" and c.dept_org_id == org("D-SWJ")  # 01067 防汛监测设施 -> 水务
        assert c.urgent and c.limit_unit == "hours"  # severity 3 runs on the continuous clock
        assert c.category_code == "01067" and c.category_name == "防汛监测设施异常"
    # another rule on the same device is another case
    publish(cdb, "iot.alarm.raised", alarm(4, rule_id="wl_rise"))
    publish(cdb, "iot.alarm.raised", alarm(5, category_hint=None, device_code="X-2", severity=1, rule_id="r9"))
    publish(cdb, "iot.alarm.cleared", alarm(1, message_zh="积水已消退"))
    with cdb.read() as s:
        assert s.scalar(select(func.count()).select_from(Case).where(Case.source == "iot")) == 3
        unknown = s.scalar(select(Case).where(Case.device_code == "X-2"))
        assert unknown.category_code is None and unknown.queue == "manual" and unknown.limit_unit == "work_days"
        assert s.scalar(select(func.count()).select_from(CaseEvent).where(CaseEvent.action == "alarm_cleared")) == 1


def test_iot_case_title_names_the_rule_once(cdb):
    text = "【严重】倾角计（44011501100000001）结构X向倾斜超限：X向倾角 1.6°（阈值>1°）"
    publish(cdb, "iot.alarm.raised", alarm(7, rule_id="tilt_x", rule_name="结构X向倾斜超限", message_zh=text,
                                           device_code="44011501100000001"))
    publish(cdb, "iot.alarm.raised", alarm(8, rule_id="r8", rule_name="积水超警戒", message_zh="水位 2.1 m",
                                           device_code="44011501067000009"))
    with cdb.read() as s:
        titles = dict(s.execute(select(Case.rule_id, Case.title).where(Case.source == "iot")).all())
    assert titles == {"tilt_x": text, "r8": "积水超警戒：水位 2.1 m"}


def test_new_alarm_after_closure_opens_a_new_case(cdb, who):
    publish(cdb, "iot.alarm.raised", alarm(1))
    with cdb.write() as s:
        cid = s.scalar(select(Case.id).where(Case.source == "iot"))
        c = s.get(Case, cid)
        c.status = "closed"  # closed by whatever path; only the status matters here
        s.commit()
    publish(cdb, "iot.alarm.raised", alarm(1))  # redelivery of the old alarm: nothing new
    publish(cdb, "iot.alarm.raised", alarm(9))
    with cdb.read() as s:
        assert s.scalar(select(func.count()).select_from(Case).where(Case.source == "iot")) == 2


def test_warning_at_80_percent_overdue_and_automatic_supervision(cdb, who, org):
    with cdb.write() as s:
        # 暴露垃圾 in 珠江街道: 4 working hours from Monday 09:00 -> 13:00 is lunch... deadline 15:00, warning 13:12→14:12
        c = service.report(s, principal=who("operator"), source="superior", title="暴露垃圾", category_code="06010",
                           grid_code="440115002001001")
        cid = c.id
        assert c.deadline_at.isoformat() == "2026-11-16T07:00:00+00:00"  # 15:00 CST
        assert c.warn_at.isoformat() == "2026-11-16T06:12:00+00:00"  # 80% of 240 min = 192 min -> 14:12 CST
    with cdb.write() as s:
        assert service.sweep(s)["warned"] == 0
    clock.advance(dt.timedelta(hours=5, minutes=13))  # 14:13 CST
    with cdb.write() as s:
        assert service.sweep(s)["warned"] == 1
        assert service.sweep(s)["warned"] == 0  # once only
        n = s.scalars(select(Notification).where(Notification.kind == "deadline_warning")).all()
        assert len(n) == 1 and n[0].org_id == org("D-CGJ")
    clock.advance(dt.timedelta(hours=1))  # 15:13 CST: overdue
    with cdb.write() as s:
        counts = service.sweep(s)
        assert counts["overdue"] == 1
        c = s.get(Case, cid)
        assert c.overdue and c.supervision_level == 1
        sup = s.scalars(select(Supervision).where(Supervision.case_id == cid)).all()
        assert [(x.level, x.auto) for x in sup] == [(1, True)]
    # a further full time limit late (4 working hours after 15:00 Mon: Mon 15-18 + Tue 08-09) -> 督办
    clock.advance(dt.timedelta(hours=17, minutes=37))  # Tue 08:50 CST: 3h50 of working time late
    with cdb.write() as s:
        assert service.sweep(s)["escalated"] == 0
    clock.advance(dt.timedelta(minutes=15))  # Tue 09:05 CST: 4h05 late
    with cdb.write() as s:
        assert service.sweep(s)["escalated"] == 1
        assert s.get(Case, cid).supervision_level == 2
    with cdb.write() as s:
        c = service.act(s, case_id=cid, action="accept", principal=who("handler"))
        c = service.act(s, case_id=cid, action="handle", principal=who("handler"), comment="已清理")
        assert c.handled_on_time is False


def test_deadline_over_a_holiday(cdb, who):
    # filed on Wed 2026-09-30 at 16:00 CST, 4 working hours: National Day holiday skipped -> Thu 10-08 10:00
    clock.freeze(dt.datetime(2026, 9, 30, 8, 0, tzinfo=dt.UTC))
    with cdb.write() as s:
        c = service.report(s, principal=who("operator"), source="superior", title="暴露垃圾", category_code="06010",
                           grid_code="440115002001001")
        assert c.deadline_at == dt.datetime(2026, 10, 8, 2, 0, tzinfo=dt.UTC)
    clock.freeze(dt.datetime(2026, 10, 5, 2, 0, tzinfo=dt.UTC))  # in the middle of the holiday
    with cdb.write() as s:
        assert service.sweep(s) == {"warned": 0, "overdue": 0, "escalated": 0, "hotspots": 0}


def test_sweep_publishes_notifications_on_the_bus(cdb, who):
    seen = []
    stop = bus.listen(lambda e: seen.append(e.topic))
    try:
        bus.dispatcher().prime_listeners()
        with cdb.write() as s:
            service.report(s, principal=who("operator"), source="superior", title="暴露垃圾", category_code="06010",
                           grid_code="440115002001001")
        clock.advance(dt.timedelta(days=2))
        with cdb.write() as s:
            service.sweep(s)
        bus.drain()
    finally:
        stop()
    assert "cases.case.created" in seen and "cases.case.transitioned" in seen
    assert "cases.notification.created" in seen and "cases.case.overdue" in seen
