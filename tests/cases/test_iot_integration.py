"""End to end with the IoT module: telemetry -> rule -> iot.alarm.raised -> one case per device and rule."""

import datetime as dt

from sqlalchemy import select

from citybrain import bus, clock, context
from citybrain import demo_district as dd
from citybrain.cases.models import Case, CaseEvent
from citybrain.identity import service as identity


def test_gas_alarm_opens_one_urgent_case_and_repeats_are_noted(client, cdb, org):
    from citybrain.iot import service as iot

    context.set_principal(context.SYSTEM)
    with cdb.write() as s:
        owner = identity.org_by_code(s, code=dd.department("应急管理").code).id
        dev, secret = iot.create_device(s, name="测试燃气探测器", model="gas", org_id=owner, lon=113.55, lat=22.78)

    def send(lel):
        clock.advance(dt.timedelta(minutes=1))
        r = client.post("/api/v1/iot/telemetry", json={"ts": clock.now().isoformat(), "values": {"lel": lel}},
                        headers={"X-Device-Code": dev.code, "X-Device-Secret": secret})
        assert r.status_code == 200, r.text
        bus.drain()

    send(5)
    send(25)  # 严重 (3): the first alarm of this device and rule opens a case
    send(30)
    send(17.9)  # cleared: noted on the case, which still needs handling
    send(26)  # raised again while the case is open: a repeat on the same case
    with cdb.read() as s:
        cases = s.scalars(select(Case).where(Case.source == "iot", Case.device_code == dev.code)).all()
        assert len(cases) == 1
        c = cases[0]
        assert c.category_code == "01011" and c.category_name == "燃气井盖异常"
        assert c.urgent and c.limit_unit == "hours" and c.status == "dispatched"
        assert c.dept_org_id == org(dd.department("住建").code)  # 燃气 -> 住建 by the category default
        assert c.repeat_count == 1 and len(c.alarm_ids) == 2
        notes = [e.action for e in s.scalars(select(CaseEvent).where(CaseEvent.case_id == c.id))]
        assert notes.count("alarm_cleared") == 1 and notes.count("alarm_repeat") == 1
    send(60)  # 特别严重 (4) is another rule: another case
    with cdb.read() as s:
        assert len(s.scalars(select(Case).where(Case.source == "iot", Case.device_code == dev.code)).all()) == 2
