"""Devices: registration, CSV import report, scope, queries, map layers, summary, retention."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from citybrain import clock, context
from citybrain.iot import service
from citybrain.iot.models import DeadLetter, Device


def test_register_via_api_generates_unified_code(client, as_role):
    h = as_role("handler")  # 城管
    r = client.post("/api/v1/iot/devices", headers=h,
                    json={"name": "金洲路井盖", "model": "manhole", "lon": 113.55, "lat": 22.78, "address": "金洲路1号"})
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["secret"].startswith("cbd_") and d["status"] == "offline"
    assert len(d["code"]) == 19 and d["code"].startswith("440115" + "01003" + "02")
    r2 = client.post("/api/v1/iot/devices", headers=h, json={"name": "x", "model": "manhole"}).json()
    assert int(r2["code"][-6:]) == int(d["code"][-6:]) + 1
    assert "secret" not in client.get(f"/api/v1/iot/devices/{d['code']}", headers=h).json()
    bad = client.post("/api/v1/iot/devices", headers=h, json={"name": "x", "model": "toaster", "lon": 200, "lat": 1})
    assert bad.status_code == 422
    dup = client.post("/api/v1/iot/devices", headers=h, json={"name": "x", "model": "manhole", "code": d["code"]})
    assert dup.status_code == 409
    other = client.post("/api/v1/iot/devices", headers=h, json={"name": "x", "model": "gas", "org_id": 1})
    assert other.status_code == 403
    assert client.post("/api/v1/iot/devices", headers=as_role("analyst"), json={"name": "x", "model": "gas"}
                       ).status_code == 403


def test_csv_import_reports_each_row(client, db, as_role):
    h = as_role("handler")
    csv_text = ("code,name,model,org,lon,lat,address,installed_at\n"
                ",井盖A,manhole,D-CGJ,113.51,22.75,路A,2025-03-01\n"
                "MC-TEST-0002,井盖B,manhole,,113.52,22.76,,\n"
                ",灯杆C,lamp,D-CGJ,abc,22.7,,\n"
                ",井盖D,teapot,D-CGJ,113.5,22.7,,\n"
                ",水位E,water_level,D-SWJ,113.5,22.7,,\n"
                "MC-TEST-0002,井盖F,manhole,,,,,\n"
                ",,manhole,,,,,2025-13-01\n")
    dry = client.post("/api/v1/iot/devices/import?dry_run=true", headers=h, content=csv_text.encode(),
                      params={"dry_run": True})
    assert dry.status_code == 200 and dry.json()["created"] == 0
    r = client.post("/api/v1/iot/devices/import", headers=h, files={"file": ("d.csv", csv_text.encode(), "text/csv")})
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["rows"] == 7 and rep["created"] == 2 and rep["errors"] == 5
    by_row = {x["row"]: x for x in rep["report"]}
    assert by_row[2]["status"] == "created" and by_row[2]["secret"] and len(by_row[2]["code"]) == 19
    assert by_row[3]["code"] == "MC-TEST-0002" and by_row[3]["status"] == "created"
    assert by_row[4]["errors"][0]["field"] == "lon"
    assert by_row[5]["errors"][0]["field"] == "model"
    assert by_row[6]["errors"][0]["field"] == "org"  # 水务 is outside 城管's scope
    assert by_row[7]["errors"][0]["field"] == "code"  # duplicate within the file
    assert {e["field"] for e in by_row[8]["errors"]} == {"name", "installed_at"}
    # the created devices authenticate with the secrets from the report
    r = client.post("/api/v1/iot/telemetry", headers={"X-Device-Code": "MC-TEST-0002",
                                                       "X-Device-Secret": by_row[3]["secret"]},
                    json={"values": {"tilt": 2}, "ts": clock.now().isoformat()})
    assert r.status_code == 200
    missing = client.post("/api/v1/iot/devices/import", headers=h, content=b"foo,bar\n1,2\n")
    assert missing.status_code == 422


def test_csv_import_refuses_rows_with_nul_characters(client, db, as_role):
    """A NUL (U+0000) in a CSV cell is an error of that row on every backend (PostgreSQL cannot store it; SQLite
    would): the other rows are imported."""
    h = as_role("handler")
    csv_text = ("name,model,org,address\n"
                "井盖\x00A,manhole,D-CGJ,\n"
                "井盖B,manhole,D-CGJ,路\x00B\n"
                "井盖C,manhole,D\x00CGJ,\n"
                "井盖D,manhole,D-CGJ,\n")
    r = client.post("/api/v1/iot/devices/import", headers=h, files={"file": ("d.csv", csv_text.encode(), "text/csv")})
    assert r.status_code == 200, r.text
    rep = r.json()
    assert (rep["rows"], rep["created"], rep["errors"]) == (4, 1, 3)
    by_row = {x["row"]: x for x in rep["report"]}
    assert [[e["field"] for e in by_row[n]["errors"]] for n in (2, 3, 4)] == [["name"], ["address"], ["org"]]
    assert all("NUL" in by_row[n]["errors"][0]["message"] for n in (2, 3, 4))
    assert by_row[5]["status"] == "created"
    with db.read() as s:
        assert s.scalars(select(Device.name).where(Device.name.like("井盖%"))).all() == ["井盖D"]


def test_device_scope_and_list_filters(client, register, as_role):
    wl, _ = register("water_level", "水务")
    mc, _ = register("manhole", "城管")
    h = as_role("handler")
    listed = client.get("/api/v1/iot/devices", headers=h).json()
    assert {d["code"] for d in listed["items"]} == {mc}
    assert client.get(f"/api/v1/iot/devices/{wl}", headers=h).status_code == 404
    op = as_role("operator")
    assert client.get("/api/v1/iot/devices", headers=op, params={"model": "water_level"}).json()["total"] == 1
    assert client.get("/api/v1/iot/devices", headers=op, params={"bbox": "1,2,3"}).status_code == 422
    assert client.get("/api/v1/iot/devices", headers=as_role("citizen")).status_code == 403


def test_readings_raw_and_downsampled_and_aggregate(client, db, register, gateway, frozen, as_role):
    code, _ = register("noise", "生态环境")
    key = gateway("生态环境")
    items = [{"device": code, "ts": (frozen - dt.timedelta(minutes=60 - i)).isoformat(), "values": {"laeq": 40 + i}}
             for i in range(60)]
    assert client.post("/api/v1/iot/telemetry", json={"readings": items}, headers={"X-API-Key": key}
                       ).json()["stored"] == 60
    assert client.get(f"/api/v1/iot/devices/{code}/readings", headers=as_role("analyst"),
                      params={"property": "laeq"}).status_code == 404  # 政数 analyst: not the owner
    h = as_role("leader")
    raw = client.get(f"/api/v1/iot/devices/{code}/readings", headers=h,
                     params={"property": "laeq", "since": (frozen - dt.timedelta(minutes=30)).isoformat()}).json()
    assert len(raw["points"]) == 30 and raw["points"][0]["value"] == 70
    ds = client.get(f"/api/v1/iot/devices/{code}/readings", headers=h,
                    params={"property": "laeq", "interval_s": 600,
                            "since": (frozen - dt.timedelta(hours=2)).isoformat()}).json()
    assert sum(p["count"] for p in ds["points"]) == 60 and len(ds["points"]) == 6
    first = ds["points"][0]
    assert first["min"] == 40 and first["max"] == 49 and first["avg"] == 44.5
    agg = client.get("/api/v1/iot/aggregate", headers=h, params={"property": "laeq", "level": "grid"}).json()
    assert sum(a["count"] for a in agg["areas"]) == 60
    assert client.get(f"/api/v1/iot/devices/{code}/readings", headers=h, params={"property": "pm25"}
                      ).status_code == 422


def test_grid_latest_and_geojson_and_summary(client, db, register, send, frozen, as_role):
    code, secret = register("gas", "应急管理", lon=113.56, lat=22.79)
    cold, _ = register("gas", "应急管理", lon=113.47, lat=22.71)
    assert send(code, secret, {"lel": 30, "battery": 80}).status_code == 200
    h = as_role("operator")
    with db.read() as s:
        grid = service.get_device(s, code=code, principal=context.SYSTEM).grid_code
    assert grid and len(grid) >= 12  # resolved by the geo module from the location
    got = client.get(f"/api/v1/iot/grids/{grid}/latest", headers=h).json()["devices"]
    assert [d["code"] for d in got] == [code] and got[0]["values"]["lel"]["value"] == 30
    gj = client.get("/api/v1/iot/devices.geojson", headers=h, params={"bbox": "113.5,22.75,113.6,22.8"}).json()
    assert [f["properties"]["code"] for f in gj["features"]] == [code]
    assert gj["features"][0]["properties"]["alarm_severity"] == 3
    assert client.get("/api/v1/iot/devices.geojson", headers=h, params={"status": "offline"}
                      ).json()["features"][0]["properties"]["code"] == cold
    aj = client.get("/api/v1/iot/alarms.geojson", headers=h, params={"status": "active"}).json()
    assert aj["features"][0]["geometry"]["coordinates"] == [113.56, 22.79]
    s = client.get("/api/v1/iot/summary", headers=h).json()
    assert s["devices_total"] == 2 and s["devices_online"] == 1 and s["online_rate"] == 0.5
    assert s["alarms_active_by_severity"] == {"1": 0, "2": 0, "3": 1, "4": 0}
    assert s["alarms_today"] == 1 and s["readings_today"] == 2
    with db.read() as ss:
        direct = service.ioc_summary(ss, principal=context.SYSTEM)
    assert direct["alarms_active_by_severity"][3] == 1


def test_retention_purge(client, db, register, send, frozen):
    code, secret = register("noise", "生态环境")
    send(code, secret, {"laeq": 50}, ts=frozen - dt.timedelta(days=20))
    send(code, secret, {"laeq": 50}, ts=frozen - dt.timedelta(days=5))
    send(code, secret, {"laeq": 500})  # rejected
    clock.advance(dt.timedelta(days=3))
    with db.write() as s:
        out = service.purge(s, days=10)
    assert out["readings"] == 1 and out["dead_letters"] == 0
    with db.read() as s:
        assert service.count_readings(s) == 1
        assert s.scalar(select(func.count()).select_from(DeadLetter)) == 1
    clock.advance(dt.timedelta(days=30))
    with db.write() as s:
        out = service.purge(s, days=10)
    assert out["dead_letters"] == 1  # the remaining reading went by DELETE or with its monthly partition (PG)
    assert out["readings"] + out["partitions_dropped"] >= 1
    with db.read() as s:
        assert service.count_readings(s) == 0


def test_models_listed(client, as_role):
    models = client.get("/api/v1/iot/models", headers=as_role("operator")).json()
    codes = {m["code"] for m in models}
    assert codes == {"water_level", "manhole", "hydrant", "air", "noise", "lamp", "parking", "gas", "tunnel", "tilt"}
    air = next(m for m in models if m["code"] == "air")
    assert {p["key"] for p in air["properties"]} == {"pm25", "pm10", "o3", "no2"}


def test_device_layer_answers_counted_cells_above_max_points(client, register, send, as_role):
    """A district view with more devices than the page draws gets counted cells with their status mix."""
    a, sa = register("gas", "应急管理", lon=113.5601, lat=22.7901)
    b, sb = register("gas", "应急管理", lon=113.5602, lat=22.7902)
    register("gas", "应急管理", lon=113.47, lat=22.71)  # never reported: offline
    assert send(a, sa, {"lel": 1, "battery": 80}).status_code == 200
    assert send(b, sb, {"lel": 1, "battery": 80}).status_code == 200
    h = as_role("operator")
    box = "113.3,22.5,113.7,22.9"
    points = client.get("/api/v1/iot/devices.geojson", headers=h, params={"bbox": box, "max_points": 3}).json()
    assert "clustered" not in points and len(points["features"]) == 3
    cells = client.get("/api/v1/iot/devices.geojson", headers=h, params={"bbox": box, "max_points": 2}).json()
    assert cells["clustered"] is True and cells["total"] == 3
    by_count = sorted((f["properties"]["count"], f["properties"]["online"], f["properties"]["offline"])
                      for f in cells["features"])
    assert by_count == [(1, 0, 1), (2, 2, 0)]
    assert all(f["properties"]["cluster"] for f in cells["features"])
    assert client.get("/api/v1/iot/devices.geojson", headers=h, params={"bbox": box, "max_points": 0}
                      ).status_code == 422
