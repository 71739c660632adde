"""Rules and alarms: threshold with hysteresis, duration, rate, no data, lifecycle, no alarm flood; status."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from citybrain import bus, clock, context
from citybrain.bus import BusEvent
from citybrain.iot import service
from citybrain.iot.models import Alarm


def _events(db, topic):
    with db.read() as s:
        return [e.payload for e in s.scalars(select(BusEvent).where(BusEvent.topic == topic).order_by(BusEvent.id))]


def _alarms(db, code=None):
    with db.read() as s:
        q = select(Alarm).order_by(Alarm.id)
        if code:
            q = q.where(Alarm.device_code == code)
        return list(s.scalars(q))


def _step(send, code, secret, values, seconds=60):
    clock.advance(dt.timedelta(seconds=seconds))
    r = send(code, secret, values)
    assert r.status_code == 200, r.text
    return r.json()


def test_threshold_alarm_with_hysteresis_and_no_flood(client, db, register, send, frozen):
    code, secret = register("gas", "应急管理")  # default rules: lel > 20 (严重, hysteresis 2), lel > 50 (特别严重)
    assert _step(send, code, secret, {"lel": 5})["alarms_raised"] == 0
    assert _step(send, code, secret, {"lel": 25})["alarms_raised"] == 1
    for v in (30, 26, 19):  # still alarming, then inside the hysteresis band (18..20): no new alarm, no clear
        r = _step(send, code, secret, {"lel": v})
        assert r["alarms_raised"] == 0 and r["alarms_cleared"] == 0
    alarms = _alarms(db, code)
    assert len(alarms) == 1 and alarms[0].status == "active" and alarms[0].severity == 3
    assert alarms[0].count == 3 and alarms[0].last_value == 26  # repeats counted on the one alarm
    assert _step(send, code, secret, {"lel": 17.9})["alarms_cleared"] == 1
    a = _alarms(db, code)[0]
    assert a.status == "cleared" and a.clear_value == 17.9 and a.open_key is None
    # it can fire again after clearing: a new alarm
    assert _step(send, code, secret, {"lel": 60})["alarms_raised"] == 2  # both levels
    raised = _events(db, "iot.alarm.raised")
    assert [e["severity"] for e in raised] == [3, 3, 4]
    ev = raised[0]
    assert ev["device_code"] == code and ev["property"] == "lel" and ev["value"] == 25
    assert ev["org_ids"] and ev["category_hint"] == "01011" and ev["message_zh"] and ev["message_en"]
    # name, value and unit are spaced as written (not "可燃气体浓度25%LEL")
    assert "可燃气体浓度 25 %LEL（阈值>20 %LEL）" in ev["message_zh"]
    assert "Gas concentration 25 %LEL (limit >20 %LEL)" in ev["message_en"]
    assert {"alarm_id", "rule_id", "rule_name", "lon", "lat", "grid_code", "at"} <= ev.keys()
    assert len(_events(db, "iot.alarm.cleared")) == 1


def test_duration_rule_needs_the_condition_to_hold(client, db, register, send, frozen):
    code, secret = register("water_level")  # wl_flood: > 2.5 m for 5 minutes (严重); wl_warn: > 2.0 (较重)
    _step(send, code, secret, {"water_level": 2.6})
    flood = [a for a in _alarms(db, code) if a.severity == 3]
    assert not flood
    for _ in range(4):
        _step(send, code, secret, {"water_level": 2.7})
    assert not [a for a in _alarms(db, code) if a.severity == 3]  # 4 minutes so far
    _step(send, code, secret, {"water_level": 2.8})  # 5 minutes since the first reading above 2.5
    flood = [a for a in _alarms(db, code) if a.severity == 3]
    assert len(flood) == 1 and flood[0].value == 2.8
    # a dip below the limit resets the clock for the next episode
    _step(send, code, secret, {"water_level": 2.3})
    assert [a for a in _alarms(db, code) if a.severity == 3][0].status == "cleared"
    _step(send, code, secret, {"water_level": 2.6})
    _step(send, code, secret, {"water_level": 2.6})
    assert len([a for a in _alarms(db, code) if a.severity == 3]) == 1


def test_duration_state_survives_a_restart(client, db, register, send, frozen):
    code, secret = register("water_level")
    _step(send, code, secret, {"water_level": 2.6})
    _step(send, code, secret, {"water_level": 2.6}, seconds=120)
    service.reset_state()  # the server restarts: in-memory state is rebuilt from the database
    _step(send, code, secret, {"water_level": 2.6}, seconds=200)
    assert len([a for a in _alarms(db, code) if a.severity == 3]) == 1


def test_rate_of_change_rule(client, db, register, send, frozen):
    code, secret = register("water_level")  # wl_rise: rises faster than 0.05 m/min
    _step(send, code, secret, {"water_level": 1.00})
    _step(send, code, secret, {"water_level": 1.02})
    assert not _alarms(db, code)
    _step(send, code, secret, {"water_level": 1.20})  # +0.18 m in a minute
    a = _alarms(db, code)
    assert len(a) == 1 and a[0].rule_name == "水位快速上涨" and a[0].value == pytest.approx(0.18)
    _step(send, code, secret, {"water_level": 1.21})
    assert _alarms(db, code)[0].status == "cleared"


def test_between_and_outside_rules(client, db, register, send, frozen, as_role):
    code, secret = register("lamp", "城管")  # lp_volt: outside 187..253 V, hysteresis 3
    h = as_role("handler")
    r = client.post("/api/v1/iot/rules", headers=h, json={
        "name": "功率处于异常区间", "model": "lamp", "property": "power", "kind": "threshold", "op": "between",
        "threshold": 500, "threshold2": 800, "severity": 1, "device_code": code})
    assert r.status_code == 201, r.text
    _step(send, code, secret, {"voltage": 260, "power": 600})
    assert {a.rule_name for a in _alarms(db, code)} == {"灯杆电压异常", "功率处于异常区间"}
    _step(send, code, secret, {"voltage": 251, "power": 450})  # voltage in the band; power 450 < 500 - 0
    by = {a.rule_name: a.status for a in _alarms(db, code)}
    assert by == {"灯杆电压异常": "active", "功率处于异常区间": "cleared"}
    _step(send, code, secret, {"voltage": 249})
    assert {a.status for a in _alarms(db, code)} == {"cleared"}


def test_invalid_rule_is_422_with_fields(client, as_role):
    r = client.post("/api/v1/iot/rules", headers=as_role("handler"), json={
        "name": "x", "model": "lamp", "property": "nope", "kind": "sometimes", "op": "between", "threshold": 5})
    assert r.status_code == 422
    assert {"property", "kind", "threshold2"} <= {e["field"] for e in r.json()["errors"]}


def test_alarm_lifecycle_ack_then_auto_clear(client, db, register, send, frozen, as_role):
    code, secret = register("tunnel", "应急管理")
    _step(send, code, secret, {"o2": 18.0})
    h = as_role("operator")
    alarms = client.get("/api/v1/iot/alarms", params={"status": "active"}, headers=h).json()
    assert alarms["total"] == 1
    aid = alarms["items"][0]["id"]
    r = client.post(f"/api/v1/iot/alarms/{aid}/ack", json={"note": "已通知巡检"}, headers=h)
    assert r.status_code == 200 and r.json()["status"] == "acknowledged" and r.json()["acked_by"] == "user:operator"
    assert client.post(f"/api/v1/iot/alarms/{aid}/ack", headers=h).status_code == 409
    _step(send, code, secret, {"o2": 19.0})  # still low: the acknowledged alarm stays the only one
    assert len(_alarms(db, code)) == 1
    _step(send, code, secret, {"o2": 20.9})
    a = client.get(f"/api/v1/iot/alarms/{aid}", headers=h).json()
    assert a["status"] == "cleared" and a["acked_by"] == "user:operator"
    assert [e["alarm_id"] for e in _events(db, "iot.alarm.acknowledged")] == [aid]
    from citybrain.audit.models import AuditRecord

    with db.read() as s:
        actions = set(s.scalars(select(AuditRecord.action).where(AuditRecord.target_id == str(aid))))
    assert {"iot.alarm.raise", "iot.alarm.acknowledge", "iot.alarm.clear"} <= actions


def test_manual_close_needs_reason(client, db, register, send, frozen, as_role):
    code, secret = register("tilt", "住建")
    _step(send, code, secret, {"tilt_x": 2.0})
    aid = _alarms(db, code)[0].id
    h = as_role("operator")
    assert client.post(f"/api/v1/iot/alarms/{aid}/close", json={"note": ""}, headers=h).status_code == 422
    r = client.post(f"/api/v1/iot/alarms/{aid}/close", json={"note": "传感器松动，误报"}, headers=h)
    assert r.status_code == 200 and r.json()["status"] == "cleared"
    _step(send, code, secret, {"tilt_x": 2.1})  # still out of limits: a new alarm may be raised
    assert len(_alarms(db, code)) == 2


def test_offline_after_missed_intervals_and_back_online(client, db, register, send, frozen):
    code, secret = register("water_level")  # reports every 60 s; offline after 5 missed
    _step(send, code, secret, {"water_level": 1.0})
    with db.read() as s:
        assert service.get_device(s, code=code, principal=context.SYSTEM).status == "online"
    clock.advance(dt.timedelta(seconds=299))
    with db.write() as s:
        assert service.check_status(s)["offline"] == 0
    clock.advance(dt.timedelta(seconds=2))
    with db.write() as s:
        assert service.check_status(s)["offline"] == 1
    with db.read() as s:
        assert service.get_device(s, code=code, principal=context.SYSTEM).status == "offline"
    _step(send, code, secret, {"water_level": 1.0}, seconds=10)
    statuses = [(e["device_code"], e["status"]) for e in _events(db, "iot.device.status")]
    assert statuses == [(code, "online"), (code, "offline"), (code, "online")]
    assert all(e["org_ids"] for e in _events(db, "iot.device.status"))


def test_no_data_rule_fires_and_clears(client, db, register, send, frozen):
    code, secret = register("water_level")  # wl_silent: no water level for 10 minutes
    _step(send, code, secret, {"water_level": 1.0})
    clock.advance(dt.timedelta(minutes=9))
    with db.write() as s:
        assert service.check_status(s)["nodata_alarms"] == 0
    clock.advance(dt.timedelta(minutes=2))
    with db.write() as s:
        assert service.check_status(s)["nodata_alarms"] == 1
    with db.write() as s:
        assert service.check_status(s)["nodata_alarms"] == 0  # one alarm, not one per check
    a = _alarms(db, code)
    assert len(a) == 1 and a[0].rule_name == "水位计无数据"
    _step(send, code, secret, {"water_level": 1.0})
    assert _alarms(db, code)[0].status == "cleared"


def test_late_readings_are_stored_but_do_not_raise(client, db, register, send, frozen):
    code, secret = register("gas", "应急管理")
    _step(send, code, secret, {"lel": 1})
    r = send(code, secret, {"lel": 40}, ts=frozen - dt.timedelta(minutes=5))
    assert r.json()["stored"] == 1 and r.json()["alarms_raised"] == 0


def test_live_listener_gets_alarm_after_commit(client, db, register, send, frozen):
    code, secret = register("gas", "应急管理")
    got = []
    unsubscribe = bus.listen(lambda ev: got.append(ev))
    try:
        bus.dispatcher().prime_listeners()
        _step(send, code, secret, {"lel": 70})
        bus.drain()
    finally:
        unsubscribe()
    topics = [e.topic for e in got]
    assert topics.count("iot.alarm.raised") == 2 and "iot.device.status" in topics


def test_alarm_scope_follows_owner_department(client, db, register, send, frozen, as_role):
    gas, gs = register("gas", "应急管理")
    cover, cs = register("manhole", "城管")
    _step(send, gas, gs, {"lel": 30})
    _step(send, cover, cs, {"displaced": True})
    mine = client.get("/api/v1/iot/alarms", headers=as_role("handler")).json()  # 城管 handler
    assert {a["device_code"] for a in mine["items"]} == {cover}
    everyone = client.get("/api/v1/iot/alarms", headers=as_role("operator")).json()
    assert {a["device_code"] for a in everyone["items"]} == {gas, cover}
    gid = [a for a in everyone["items"] if a["device_code"] == gas][0]["id"]
    assert client.post(f"/api/v1/iot/alarms/{gid}/ack", headers=as_role("handler")).status_code == 404
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Alarm)) == 2


def test_alarm_events_and_audit_match_the_stored_alarm(client, db, register, send, frozen):
    """Raised and cleared in the telemetry transaction by Core statements: the events carry what the stored alarm
    row says (as the payload built from the ORM object would), and both changes are audited."""
    from citybrain.audit.models import AuditRecord

    code, secret = register("gas", "应急管理")
    assert _step(send, code, secret, {"lel": 25})["alarms_raised"] == 1
    assert _step(send, code, secret, {"lel": 10})["alarms_cleared"] == 1
    [a] = _alarms(db, code)
    assert a.status == "cleared" and a.clear_value == 10 and a.open_key is None and a.cleared_by == "system:auto"
    [raised], [cleared] = _events(db, "iot.alarm.raised"), _events(db, "iot.alarm.cleared")
    a.status = "active"  # as it was when raised
    assert {k: v for k, v in raised.items() if k != "at"} == {
        k: v for k, v in service._alarm_payload(a, None, a.raised_at).items() if k != "at"}
    a.status = "cleared"
    assert {k: v for k, v in cleared.items() if k != "at"} == {
        k: v for k, v in service._alarm_payload(a, None, a.cleared_at).items() if k != "at"}
    assert cleared["at"] == a.cleared_at.isoformat() and raised["at"] == a.raised_at.isoformat()
    with db.read() as s:
        audits = {r.action: r.summary for r in s.scalars(select(AuditRecord).where(AuditRecord.target_id == str(a.id)))}
    assert audits["iot.alarm.raise"]["after"]["value"] == 25
    assert audits["iot.alarm.clear"] == {"before": {"status": "active"},
                                         "after": {"status": "cleared", "value": 10, "by": "system:auto"}}


def test_a_clear_by_hand_keeps_the_loaded_alarm_current(client, db, frozen, register, send):
    """Closing by hand clears the alarm object the session holds (the ORM path), not behind its back."""
    code, secret = register("tilt", "住建")
    _step(send, code, secret, {"tilt_x": 2.0})
    aid = _alarms(db, code)[0].id
    context.set_principal(context.SYSTEM)
    with db.write() as s:
        a = service.close_alarm(s, alarm_id=aid, principal=context.SYSTEM, note="误报")
        assert a.status == "cleared" and a.open_key is None
    assert _alarms(db, code)[0].status == "cleared"
