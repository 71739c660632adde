"""IOC summary, the map's GeoJSON, hotspots (未诉先办) and the notification inbox."""

import datetime as dt

from citybrain import clock
from citybrain.cases import service

G = "440115001001001"


def _report(s, who, code="06010", lon=113.5500, lat=22.7800, grid=G, title="暴露垃圾"):
    return service.report(s, principal=who("operator"), source="superior", title=title, category_code=code,
                          lon=lon, lat=lat, grid_code=grid)


def test_ioc_summary_has_the_keys_the_web_uses(client, cdb, who, as_role):
    with cdb.write() as s:
        for i in range(3):
            _report(s, who, lon=113.55 + i * 0.01)
        c = _report(s, who, code="01002", title="井盖破损")
        service.act(s, case_id=c.id, action="supervise", principal=who("leader"), comment="请加快", level=2)
    r = client.get("/api/v1/cases/ioc-summary", headers=as_role("leader"))
    assert r.status_code == 200
    d = r.json()
    for key in ("cases_today", "cases_open", "cases_overdue", "closure_rate", "on_time_rate", "satisfaction_rate",
                "by_status", "by_source", "trend_30d", "dept_ranking", "town_ranking", "hotspots"):
        assert key in d, key
    assert d["cases_today"] == 4 and d["cases_open"] == 4 and d["by_status"]["dispatched"] == 4
    assert d["by_source"] == {"superior": 4}
    assert len(d["trend_30d"]) == 30 and d["trend_30d"][-1]["reported"] == 4
    assert {x["name"] for x in d["dept_ranking"]} == {"区城市管理和综合执法局", "区水务局"}
    assert set(d["dept_ranking"][0]) >= {"org_id", "name", "score", "closure_rate", "on_time_rate"}
    # a handler's IOC covers only their department
    h = client.get("/api/v1/cases/ioc-summary", headers=as_role("handler")).json()
    assert h["cases_open"] == 3


def test_geojson_filters_by_bbox_status_and_overdue(client, cdb, who, as_role):
    with cdb.write() as s:
        _report(s, who, lon=113.50, lat=22.75)
        _report(s, who, lon=113.60, lat=22.80)
    op = as_role("operator")
    fc = client.get("/api/v1/cases.geojson", headers=op).json()
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 2
    f = fc["features"][0]
    assert f["geometry"]["type"] == "Point" and {"ticket", "status", "overdue"} <= set(f["properties"])
    assert len(client.get("/api/v1/cases.geojson?bbox=113.45,22.70,113.55,22.77", headers=op).json()["features"]) == 1
    assert len(client.get("/api/v1/cases.geojson?status=closed", headers=op).json()["features"]) == 0
    assert len(client.get("/api/v1/cases.geojson?status=open&overdue=false", headers=op).json()["features"]) == 2
    assert len(client.get("/api/v1/cases.geojson?overdue=true", headers=op).json()["features"]) == 0


def test_hotspot_flagged_once_for_clustered_same_category_cases(cdb, who, org):
    with cdb.write() as s:
        # three 暴露垃圾 within ~100 m, one far away, two of another category nearby
        _report(s, who, lon=113.5500, lat=22.7800)
        _report(s, who, lon=113.5505, lat=22.7803)
        _report(s, who, lon=113.5509, lat=22.7798)
        _report(s, who, lon=113.6000, lat=22.8200)
        _report(s, who, code="07001", title="小广告", lon=113.5501, lat=22.7801)
        _report(s, who, code="07001", title="小广告", lon=113.5502, lat=22.7802)
    with cdb.write() as s:
        assert service.sweep(s)["hotspots"] == 1
        assert service.sweep(s)["hotspots"] == 0  # not flagged twice
        hs = service.hotspot_list(s, principal=who("operator"))
        assert len(hs) == 1 and hs[0]["category_code"] == "06010" and hs[0]["count"] == 3
        inbox = service.notifications(s, principal=who("operator"))
        assert any(n["kind"] == "hotspot" for n in inbox)  # the operator belongs to the command centre
    clock.advance(dt.timedelta(hours=1))
    with cdb.write() as s:
        _report(s, who, lon=113.5503, lat=22.7801)
    with cdb.write() as s:
        assert service.sweep(s)["hotspots"] == 0
        assert service.hotspot_list(s, principal=who("operator"))[0]["count"] == 4  # the hotspot grew


def test_notification_inbox_and_read(client, cdb, who, as_role):
    with cdb.write() as s:
        _report(s, who)
    hd = as_role("handler")
    inbox = client.get("/api/v1/cases/notifications", headers=hd).json()
    assert len(inbox) == 1 and inbox[0]["kind"] == "new_task" and inbox[0]["read_at"] is None
    assert client.post(f"/api/v1/cases/notifications/{inbox[0]['id']}/read", headers=hd).status_code == 204
    assert client.get("/api/v1/cases/notifications?unread=true", headers=hd).json() == []
    # someone else's notification is not theirs to read
    assert client.post(f"/api/v1/cases/notifications/{inbox[0]['id']}/read",
                       headers=as_role("gridworker")).status_code == 404


def test_lists_are_scoped_and_filtered(client, cdb, who, as_role, org):
    with cdb.write() as s:
        _report(s, who)
        _report(s, who, code="01002", title="井盖破损")
        _report(s, who, grid="440115002001001")
    op, hd, gw = as_role("operator"), as_role("handler"), as_role("gridworker")
    assert client.get("/api/v1/cases", headers=op).json()["total"] == 3
    assert client.get("/api/v1/cases", headers=hd).json()["total"] == 2  # 城管 only
    assert client.get("/api/v1/cases", headers=gw).json()["total"] == 2  # their community only
    assert client.get(f"/api/v1/cases?dept_org_id={org('D-SWJ')}", headers=op).json()["total"] == 1
    assert client.get(f"/api/v1/cases?grid_code={G}&category_code=06010", headers=op).json()["total"] == 1
    assert client.get("/api/v1/cases?status=open&overdue=false", headers=op).json()["total"] == 3
    assert client.get("/api/v1/cases?status=closed", headers=op).json()["total"] == 0


def test_config_calendar_is_validated_and_used(client, cdb, as_role):
    op = as_role("operator")
    cal = client.get("/api/v1/cases/config/calendar", headers=op).json()
    assert cal["office_hours"] == [["08:00", "12:00"], ["14:00", "18:00"]] and cal["day_minutes"] == 480
    bad = client.put("/api/v1/cases/config/calendar", json={"office_hours": [["25:00", "x"]]}, headers=op)
    assert bad.status_code == 422
    assert client.put("/api/v1/cases/config/rules", json={"nonsense": 1}, headers=op).status_code == 422
    ok = client.put("/api/v1/cases/config/calendar", json={"office_hours": [["08:30", "12:00"], ["14:00", "18:00"]]},
                    headers=op)
    assert ok.status_code == 200
    r = client.get("/api/v1/cases/calendar/deadline?start=2026-11-20T16:00:00%2B08:00&value=4&unit=work_hours",
                   headers=op).json()
    assert r["deadline"] == "2026-11-23T02:30:00Z"  # Fri 16-18 (2 h), Mon 08:30-10:30 -> 10:30 CST
    assert client.put("/api/v1/cases/config/rules", json={"warn_ratio": 0.7}, headers=as_role("handler")).status_code == 403
