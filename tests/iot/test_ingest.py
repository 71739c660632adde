"""Ingestion: validation reasons and dead letters, mixed batches, idempotency, credentials."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from citybrain import clock
from citybrain.iot import service
from citybrain.iot.models import DeadLetter, Device, Reading


def _dead(db, **where):
    with db.read() as s:
        q = select(DeadLetter.reason, func.count()).group_by(DeadLetter.reason)
        for k, v in where.items():
            q = q.where(getattr(DeadLetter, k) == v)
        return dict(s.execute(q).all())


def _stored(db, code):
    with db.read() as s:
        did = s.scalar(select(Device.id).where(Device.code == code))
        return service.count_readings(s, device_id=did)


def test_each_rejection_reason_is_dead_lettered_and_counted(client, db, register, gateway, frozen, as_role):
    wl, _ = register("water_level", "水务")
    other, _ = register("air", "生态环境")
    off, _ = register("water_level", "水务")
    h = as_role("sysadmin")
    op = as_role("operator")
    key = gateway("水务")
    handler_hdr = as_role("handler")
    assert handler_hdr  # (logged in before disabling nothing)
    r = client.patch(f"/api/v1/iot/devices/{off}", json={"enabled": False}, headers=as_role("operator"))
    # operators lack iot.device.manage; the owner department's handler would need to be 水务: use the service
    assert r.status_code == 403
    from citybrain import context
    from citybrain.iot import service

    with db.write() as s:
        service.update_device(s, code=off, principal=context.SYSTEM, enabled=False)
    now = frozen
    batch = {"readings": [
        {"device": "NOPE-0001", "ts": now.isoformat(), "values": {"water_level": 1.0}},         # unknown_device
        {"device": off, "ts": now.isoformat(), "values": {"water_level": 1.0}},                 # device_disabled
        {"device": other, "ts": now.isoformat(), "values": {"pm25": 30}},                       # not_permitted
        {"device": wl, "ts": "yesterday-ish", "values": {"water_level": 1.0}},                  # bad_timestamp
        {"device": wl, "ts": (now + dt.timedelta(hours=1)).isoformat(), "values": {"water_level": 1.0}},  # ts_future
        {"device": wl, "ts": (now - dt.timedelta(days=400)).isoformat(), "values": {"water_level": 1.0}},  # ts_past
        {"device": wl, "ts": now.isoformat(), "values": {"salinity": 3}},                        # unknown_property
        {"device": wl, "ts": now.isoformat(), "values": {"water_level": "high"}},                # wrong_type
        {"device": wl, "ts": now.isoformat(), "values": {"water_level": 99.0}},                  # out_of_range
        {"device": wl, "ts": now.isoformat()},                                                    # malformed
        "not an object",                                                                          # malformed
        {"device": wl, "ts": now.isoformat(), "values": {"water_level": 1.5}},                   # good
    ]}
    r = client.post("/api/v1/iot/telemetry", json=batch, headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1 and body["rejected"] == 11
    reasons = {x["reason"] for x in body["rejections"]}
    assert reasons == {"unknown_device", "device_disabled", "not_permitted", "bad_timestamp", "ts_future", "ts_past",
                       "unknown_property", "wrong_type", "out_of_range", "malformed"}
    assert all(x["message_zh"] and x["message_en"] for x in body["rejections"])
    dead = _dead(db)
    assert dead == {"unknown_device": 1, "device_disabled": 1, "not_permitted": 1, "bad_timestamp": 1,
                    "ts_future": 1, "ts_past": 1, "unknown_property": 1, "wrong_type": 1, "out_of_range": 1,
                    "malformed": 2}
    # counted per device, visible through the API
    summary = client.get("/api/v1/iot/dead-letters/summary", params={"device_code": wl}, headers=op).json()
    assert sum(x["count"] for x in summary) == 7
    with db.read() as s:
        dev = s.scalar(select(Device).where(Device.code == wl))
        assert dev.rejected_count == 7
    listed = client.get("/api/v1/iot/dead-letters", params={"reason": "out_of_range"}, headers=op).json()
    assert listed["total"] == 1 and listed["items"][0]["value"] == "99.0"
    assert _stored(db, wl) == 1
    assert h


def test_mixed_batch_keeps_the_good_readings(client, db, register, gateway, frozen):
    a, _ = register("water_level")
    b, _ = register("water_level")
    key = gateway("水务")
    items = []
    for i in range(10):
        t = (frozen - dt.timedelta(minutes=10 - i)).isoformat()
        items.append({"device": a, "ts": t, "values": {"water_level": 1.0 + i / 100, "battery": 90}})
        items.append({"device": b, "ts": t, "values": {"water_level": -99 if i % 2 else 0.5}})
    r = client.post("/api/v1/iot/telemetry", json={"readings": items}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    assert r.json()["accepted"] == 25 and r.json()["rejected"] == 5
    assert _stored(db, a) == 20 and _stored(db, b) == 5
    assert _dead(db) == {"out_of_range": 5}


def test_repeated_reading_is_idempotent(client, db, register, send, frozen):
    code, secret = register("noise", "生态环境")
    ts = (frozen - dt.timedelta(seconds=30)).isoformat()
    first = send(code, secret, {"laeq": 55.5}, ts=ts).json()
    again = send(code, secret, {"laeq": 55.5}, ts=ts).json()
    assert first["stored"] == 1 and first["duplicates"] == 0
    assert again["accepted"] == 1 and again["duplicates"] == 1 and again["stored"] == 0
    # the same instant as epoch milliseconds is the same reading
    ms = int((frozen - dt.timedelta(seconds=30)).timestamp() * 1000)
    assert send(code, secret, {"laeq": 55.5}, ts=ms).json()["duplicates"] == 1
    assert _stored(db, code) == 1


def test_repeats_are_idempotent_per_property_within_one_message_row(client, db, register, send, frozen):
    """One row per (device, ts) message: a later message for the same instant adds only the new properties,
    and a property already stored keeps its first value (also when repeated inside one batch)."""
    code, secret = register("air", "生态环境")
    ts = (frozen - dt.timedelta(seconds=60)).isoformat()
    assert send(code, secret, {"pm25": 35.0}, ts=ts).json()["stored"] == 1
    later = (frozen - dt.timedelta(seconds=10)).isoformat()
    assert send(code, secret, {"pm25": 40.0, "no2": 9.0}, ts=later).json()["stored"] == 2
    # late message for the first instant: pm25 again (different value) plus pm10 and o3
    r = send(code, secret, {"pm25": 99.0, "pm10": 60.0, "o3": 70.0}, ts=ts).json()
    assert r["accepted"] == 3 and r["duplicates"] == 1 and r["stored"] == 2
    body = {"device": code, "readings": [{"ts": later, "values": {"o3": 1.0}}, {"ts": later, "values": {"o3": 2.0}}]}
    r = client.post("/api/v1/iot/telemetry", json=body, headers={"X-Device-Code": code, "X-Device-Secret": secret})
    assert r.json()["accepted"] == 2 and r.json()["duplicates"] == 1 and r.json()["stored"] == 1
    assert _stored(db, code) == 6
    with db.read() as s:
        did = s.scalar(select(Device.id).where(Device.code == code))
        assert s.scalar(select(func.count()).select_from(Reading).where(Reading.device_id == did)) == 2  # 2 rows
        assert service.count_readings(s, device_id=did, prop="pm25") == 2
    from citybrain import context

    reader = context.SYSTEM
    with db.read() as s:
        pts = service.readings(s, code=code, prop="pm25", principal=reader, since=frozen - dt.timedelta(hours=1),
                               until=frozen)["points"]
        assert [p["value"] for p in pts] == [35.0, 40.0]  # the first stored value kept
        o3 = service.readings(s, code=code, prop="o3", principal=reader, since=frozen - dt.timedelta(hours=1),
                              until=frozen)["points"]
        assert [p["value"] for p in o3] == [70.0, 1.0]


def test_wrong_secret_is_401_and_disabled_device_is_403(client, db, register, send, frozen, as_role):
    code, secret = register("water_level")
    r = send(code, "cbd_wrong", {"water_level": 1.0})
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    assert send("UNKNOWN-1", secret, {"water_level": 1.0}).status_code == 401
    r = client.post("/api/v1/iot/telemetry", json={"ts": frozen.isoformat(), "values": {"water_level": 1}})
    assert r.status_code == 401
    from citybrain import context
    from citybrain.iot import service

    with db.write() as s:
        service.update_device(s, code=code, principal=context.SYSTEM, enabled=False)
    r = send(code, secret, {"water_level": 1.0})
    assert r.status_code == 403 and r.json()["code"] == "device_disabled"
    assert _dead(db, device_code=code) == {"device_disabled": 1}  # kept, with the reason
    with db.write() as s:
        service.update_device(s, code=code, principal=context.SYSTEM, enabled=True)
    assert send(code, secret, {"water_level": 1.0}).status_code == 200


def test_rotated_secret_replaces_the_old_one(client, db, register, send, frozen, as_role):
    code, secret = register("manhole", "城管")
    h = as_role("handler")  # 张城管 of 城管: manages the department's devices
    r = client.post(f"/api/v1/iot/devices/{code}/secret", headers=h)
    assert r.status_code == 200
    new = r.json()["secret"]
    assert send(code, secret, {"tilt": 1.0}).status_code == 401
    assert send(code, new, {"tilt": 1.0}).status_code == 200


def test_unreadable_body_is_422_and_kept(client, db, register, frozen):
    code, secret = register("water_level")
    r = client.post("/api/v1/iot/telemetry", content=b"{not json",
                    headers={"X-Device-Code": code, "X-Device-Secret": secret, "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == "malformed_payload"
    assert _dead(db) == {"malformed": 1}


def test_all_rejected_is_a_problem_with_counts(client, db, register, send, frozen):
    code, secret = register("water_level")
    r = send(code, secret, {"water_level": 1000})
    assert r.status_code == 422
    body = r.json()
    assert body["accepted"] == 0 and body["rejected"] == 1 and body["rejections"][0]["reason"] == "out_of_range"


def test_gateway_of_another_department_cannot_report(client, db, register, gateway, frozen):
    code, _ = register("gas", "应急管理")
    key = gateway("水务")
    r = client.post("/api/v1/iot/telemetry", headers={"X-API-Key": key},
                    json={"readings": [{"device": code, "ts": frozen.isoformat(), "values": {"lel": 3}}]})
    assert r.status_code == 422 and r.json()["rejections"][0]["reason"] == "not_permitted"
    assert _stored(db, code) == 0


def test_device_batch_and_naive_local_time(client, db, register, frozen):
    code, secret = register("air", "生态环境")
    local = (frozen.astimezone(dt.timezone(dt.timedelta(hours=8))) - dt.timedelta(minutes=1)).replace(tzinfo=None)
    body = {"device": code, "readings": [{"ts": local.isoformat(), "values": {"pm25": 35, "pm10": 60}},
                                         {"ts": int(frozen.timestamp()), "values": {"o3": 80, "no2": 20}}]}
    r = client.post("/api/v1/iot/telemetry", json=body, headers={"X-Device-Code": code, "X-Device-Secret": secret})
    assert r.status_code == 200 and r.json()["accepted"] == 4
    with db.read() as s:
        ts = s.scalar(select(func.min(Reading.ts)))
    assert ts == int((frozen - dt.timedelta(minutes=1)).timestamp() * 1000)  # naive = China Standard Time
    clock.reset()


def test_hostile_payloads_never_cause_a_500(client, db, register, gateway, frozen):
    code, secret = register("water_level")
    key = gateway("水务")
    now = frozen.isoformat()
    bodies = [
        b"", b"null", b"[]", b"{}", b"[1, 2]", b'{"readings": 5}', b'{"readings": [null]}', b"\x00\xff\xfe",
        b'{"readings": [{"device": "\\u0000evil", "ts": "x", "values": {"\\u0000": "\\u0000"}}]}',
        orjson_dumps({"readings": [{"device": code, "ts": 1e300, "values": {"water_level": 1}}]}),
        orjson_dumps({"readings": [{"device": code, "ts": -1, "values": {"water_level": 1}}]}),
        orjson_dumps({"readings": [{"device": code, "ts": now, "values": {"water_level": True}}]}),
        orjson_dumps({"readings": [{"device": code, "ts": now, "values": {"water_level": [1]}}]}),
        orjson_dumps({"readings": [{"device": code, "ts": now, "values": {"water_level": 1e30}}]}),
        orjson_dumps({"readings": [{"device": [code], "ts": now, "values": {"water_level": 1}}]}),
        orjson_dumps({"readings": [{"device": code, "ts": {"a": 1}, "values": {"water_level": 1}}]}),
        b'{"readings": [{"device": "%s", "ts": "%s", "values": {"water_level": NaN}}]}' % (code.encode(), now.encode()),
    ]
    for body in bodies:
        r = client.post("/api/v1/iot/telemetry", content=body,
                        headers={"X-API-Key": key, "content-type": "application/json"})
        assert r.status_code in (200, 422), (body, r.status_code, r.text)
        assert r.headers["content-type"].startswith(("application/json", "application/problem+json"))
    for hdr in ({"X-Device-Code": "bad code", "X-Device-Secret": "x"}, {"Authorization": "Device nope"},
                {"X-API-Key": "cbk_bad"}, {"Authorization": "Bearer cbk_x_y"}):
        r = client.post("/api/v1/iot/telemetry", content=b"{}", headers=hdr)
        assert r.status_code == 401, (hdr, r.text)
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Reading)) == 0


def orjson_dumps(doc):
    import orjson

    return orjson.dumps(doc)


def test_large_batch_with_repeats(client, db, register, gateway, frozen):
    """A batch big enough for the COPY path on PostgreSQL: every reading stored once, repeats counted."""
    code, _ = register("air", "生态环境")
    key = gateway("生态环境")
    items = [{"device": code, "ts": int((frozen - dt.timedelta(seconds=700 - i)).timestamp() * 1000),
              "values": {"pm25": 10.0, "pm10": 20.0, "o3": 30.0, "no2": 5.0}} for i in range(700)]
    r = client.post("/api/v1/iot/telemetry", json={"readings": items}, headers={"X-API-Key": key})
    assert r.status_code == 200 and r.json()["stored"] == 2800
    r = client.post("/api/v1/iot/telemetry", json={"readings": items[:600]}, headers={"X-API-Key": key})
    assert r.json()["duplicates"] == 2400 and r.json()["stored"] == 0
    assert _stored(db, code) == 2800


def test_a_row_written_behind_the_servers_back_is_merged_not_lost(client, db, register, send, frozen):
    """The fast path assumes no stored row is newer than the server knows; if one is (another writer), the
    batch is still stored completely: merged on conflict (SQLite) or redone with ON CONFLICT (PostgreSQL)."""
    from sqlalchemy import text

    from citybrain import context

    code, secret = register("air", "生态环境")
    assert send(code, secret, {"pm25": 10.0}, ts=frozen - dt.timedelta(minutes=5)).json()["stored"] == 1
    ts = frozen - dt.timedelta(minutes=1)
    ms = int(ts.timestamp() * 1000)
    with db.write() as s:
        did = s.scalar(select(Device.id).where(Device.code == code))
        s.execute(text("INSERT INTO iot_reading (device_id, ts, vals) VALUES (:d, :t, :v)"),
                  {"d": did, "t": ms, "v": '{"pm10": 77.0}'})
        s.commit()
    r = send(code, secret, {"pm25": 20.0, "pm10": 1.0}, ts=ts)
    assert r.status_code == 200 and r.json()["accepted"] == 2
    with db.read() as s:
        assert service.count_readings(s, device_id=did) == 3
        pts = service.readings(s, code=code, prop="pm10", principal=context.SYSTEM,
                               since=frozen - dt.timedelta(hours=1), until=frozen)["points"]
        assert [p["value"] for p in pts] == [77.0]  # the stored value wins


def test_postgresql_array_literals_carry_every_json_text_unchanged(db):
    """PostgreSQL: readings and device rows travel as array literals made by orjson; quotes, backslashes,
    escaped control characters and non-ASCII text must come back exactly."""
    import orjson

    if db.is_sqlite:
        pytest.skip("array literals are a feature of the other backend")
    texts = [orjson.dumps(v).decode() for v in ({"a": 'quote " and \\ backslash'}, {"b": "line\nbreak\ttab\x01"},
                                                {"c": "城市大脑 ✓"}, {"d": None, "e": [1.5, -2]}, {})]
    ints = [1, 2_147_483_647, 1_763_700_000_000]
    with db.read() as s:
        conn = s.connection()
        got = conn.exec_driver_sql("SELECT unnest(%s::text[])", (service._pg_array(texts),)).scalars().all()
        nums = conn.exec_driver_sql("SELECT unnest(%s::int8[])", (service._pg_array(ints),)).scalars().all()
    assert got == texts
    assert nums == ints


def test_postgresql_pipeline_keeps_alarms_audit_and_connection_mode(client, db, register, send, frozen):
    """PostgreSQL sends a batch's INSERT before the rules run and the rest with the COMMIT: a batch that also
    raises an alarm (statements in between) stores readings, alarm, bus event and audit record exactly once,
    also when the INSERT meets a row written behind the server's back (redone with ON CONFLICT), and every
    connection is back in its usual transaction mode afterwards."""
    from sqlalchemy import text

    from citybrain.audit.models import AuditRecord
    from citybrain.audit.service import verify
    from citybrain.bus import BusEvent
    from citybrain.iot.models import Alarm

    if db.is_sqlite:
        pytest.skip("the pipeline belongs to the other backend")
    code, secret = register("gas", "应急管理")  # lel > 20: alarm
    assert send(code, secret, {"lel": 5.0}, ts=frozen - dt.timedelta(minutes=5)).json()["stored"] == 1
    ts = frozen - dt.timedelta(minutes=1)
    with db.write() as s:
        did = s.scalar(select(Device.id).where(Device.code == code))
        s.execute(text("INSERT INTO iot_reading (device_id, ts, vals) VALUES (:d, :t, :v)"),
                  {"d": did, "t": int(ts.timestamp() * 1000), "v": '{"battery": 80.0}'})
        s.commit()
    r = send(code, secret, {"lel": 25.0, "battery": 1.0}, ts=ts)  # conflicts with the row above, raises an alarm
    assert r.status_code == 200 and r.json()["accepted"] == 2 and r.json()["alarms_raised"] == 1, r.text
    r = send(code, secret, {"lel": 5.0}, ts=frozen)  # clears it: the usual path, alarm statements in between
    assert r.status_code == 200 and r.json()["alarms_cleared"] == 1, r.text
    with db.read() as s:
        assert service.count_readings(s, device_id=did) == 4
        alarms = list(s.scalars(select(Alarm).where(Alarm.device_code == code)))
        assert len(alarms) == 1 and alarms[0].status == "cleared"
        actions = list(s.scalars(select(AuditRecord.action).where(AuditRecord.target_type == "iot_alarm",
                                                                  AuditRecord.target_id == str(alarms[0].id))))
        assert sorted(actions) == ["iot.alarm.clear", "iot.alarm.raise"]
        topics = list(s.scalars(select(BusEvent.topic).where(BusEvent.topic.like("iot.alarm.%"))))
        assert sorted(topics) == ["iot.alarm.cleared", "iot.alarm.raised"]
    assert verify(db)["ok"]
    with db.write_engine.connect() as conn:  # pooled connections: none left in autocommit or in a pipeline
        raw = conn.connection.dbapi_connection
        assert raw.autocommit is False and raw._pipeline is None


def test_compiled_model_check_accepts_exactly_what_the_property_checks_accept():
    """Each model's generated `check` (the hot path) gives the same accepted values, in the same order, as the
    property-by-property check whenever that one rejects nothing, and defers (None) whenever it would reject."""
    from citybrain.iot import catalog

    odd = [0, 1, 2, -1, 0.5, 1e308, -1e308, 1e400, float("nan"), float("-inf"), True, False, None, "", "x",
           "a\x00b", "y" * 201, [1], {"a": 1}, 10**400]
    for model in catalog.MODELS:
        props = model.props
        cases = [{}, {"no_such_property": 1.0}]
        for p in props:
            lo = 0.0 if p.min is None else float(p.min)
            hi = lo + 1 if p.max is None else float(p.max)
            samples = [*odd, lo, hi, (lo + hi) / 2, int(lo), int(hi), hi + 1, lo - 1, *p.values]
            cases += [{p.key: v} for v in samples]
            cases += [{q.key: v for q in props} for v in samples]
            cases.append({p.key: samples[-1], "no_such_property": 1.0})
        cases.append({q.key: (q.values[0] if q.values else 1) for q in reversed(props)})
        for values in cases:
            rejected: list[tuple] = []
            slow = service._check_each(model, values, 0, "c", 1, None, lambda *a, out=rejected: out.append(a))
            fast = model.check(values)
            if rejected or not slow:
                assert fast is None, (model.code, values)
            else:
                assert fast == slow and list(fast) == list(slow), (model.code, values, fast, slow)
                assert all(type(a) is type(b) for a, b in zip(fast.values(), slow.values(), strict=True))


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast_path", "route"])
def test_nul_characters_in_readings_are_dead_lettered_not_refused(client, db, register, gateway, frozen, monkeypatch,
                                                                  fast_path):
    """A NUL (U+0000) in a reading's device code, property or value rejects that reading (dead-lettered with its
    reason, counted, stored with the NUL written out) and no other: the request is not refused as a whole, through
    the fast path or the route (which the app-wide NUL check leaves to ingestion)."""
    from fastapi.testclient import TestClient

    from citybrain.app import create_app
    from citybrain.iot import api as iot_api

    wl, _ = register("water_level", "水务")
    key = gateway("水务")
    now = frozen.isoformat()
    batch = {"readings": [
        {"device": "NOPE\u0000", "ts": now, "values": {"water_level": 1.0}},
        {"device": wl, "ts": now, "values": {"water\u0000level": 1.0}},
        {"device": wl, "ts": now, "values": {"water_level": "1\u0000"}},
        {"device": wl, "ts": now, "values": {"water_level": 1.5}},
    ]}
    if not fast_path:
        monkeypatch.setattr(iot_api, "middleware", [])  # an app answering only through the route
    with TestClient(create_app(background=False)) as c:
        r = c.post("/api/v1/iot/telemetry", json=batch, headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["rejected"]) == (1, 3)
    assert _dead(db) == {"unknown_device": 1, "unknown_property": 1, "wrong_type": 1}
    assert _stored(db, wl) == 1
    with db.read() as s:
        texts = {d.reason: (d.device_code, d.prop, d.value) for d in s.scalars(select(DeadLetter))}
        assert s.scalar(select(Device.rejected_count).where(Device.code == wl)) == 2
    assert texts["unknown_device"][0] == "NOPE\\u0000" and texts["unknown_property"][1] == "water\\u0000level"
    assert "\x00" not in repr(texts)
