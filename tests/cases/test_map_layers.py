"""The map layers' server-side filters, the hotspot layer, English names in rankings, the clustering's
neighbour search and the bulk history loader."""

import dataclasses
import datetime as dt
import math
import random
from types import SimpleNamespace

from citybrain import clock
from citybrain.cases import analytics, service
from tests.cases.test_ioc_map_hotspots import G, _report

OPEN = "open"


def _ids(client, headers, **params):
    r = client.get("/api/v1/cases.geojson", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return {f["properties"]["ticket"] for f in r.json()["features"]}


def test_geojson_filters_category_department_and_period_on_the_server(client, cdb, who, as_role, org):
    with cdb.write() as s:
        old = _report(s, who, lon=113.50, lat=22.75).ticket  # 暴露垃圾 -> 城管
    clock.advance(dt.timedelta(days=3))
    with cdb.write() as s:
        garbage = _report(s, who, lon=113.51, lat=22.75).ticket
        manhole = _report(s, who, code="01002", title="井盖破损", lon=113.52, lat=22.76).ticket  # -> 水务
        far = _report(s, who, lon=113.63, lat=22.85).ticket
    op = as_role("operator")
    box = "113.45,22.70,113.55,22.80"
    assert _ids(client, op) == {old, garbage, manhole, far}
    for extra in ({}, {"bbox": box, "status": OPEN}):  # without, and with the (status, lon, lat) index path
        want_all = {old, garbage, manhole} | (set() if extra else {far})
        assert _ids(client, op, **extra) == want_all
        assert _ids(client, op, category_code="06010", **extra) == want_all - {manhole}
        assert _ids(client, op, category_code="01002", **extra) == {manhole}
        assert _ids(client, op, dept_org_id=org("D-SWJ"), **extra) == {manhole}
        assert _ids(client, op, dept_org_id=org("D-CGJ"), **extra) == want_all - {manhole}
        since = (clock.now() - dt.timedelta(days=1)).isoformat()
        assert _ids(client, op, since=since, **extra) == want_all - {old}
        assert _ids(client, op, until=since, **extra) == {old}
        assert _ids(client, op, since=since, category_code="06010", dept_org_id=org("D-CGJ"),
                    **extra) == want_all - {old, manhole}
    bad = client.get("/api/v1/cases.geojson", params={"since": clock.now().isoformat(),
                                                      "until": clock.now().isoformat()}, headers=op)
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    naive = client.get("/api/v1/cases.geojson", params={"since": "2026-11-16T09:00:00"}, headers=op)
    assert naive.status_code == 422  # a time without its zone is refused, not guessed


def test_hotspot_layer_is_the_clustering_result(client, cdb, who, as_role, org):
    with cdb.write() as s:
        for dx, dy in ((0, 0), (0.0005, 0.0003), (0.0009, -0.0002)):
            _report(s, who, lon=113.55 + dx, lat=22.78 + dy)
        _report(s, who, code="07001", title="小广告", lon=113.60, lat=22.82)
    op = as_role("operator")
    empty = client.get("/api/v1/cases/hotspots.geojson", headers=op).json()
    assert empty == {"type": "FeatureCollection", "features": []}  # nothing flagged before the sweep
    with cdb.write() as s:
        assert service.sweep(s)["hotspots"] == 1
    fc = client.get("/api/v1/cases/hotspots.geojson", headers=op).json()
    assert len(fc["features"]) == 1
    f = fc["features"][0]
    assert f["geometry"]["type"] == "Point" and abs(f["geometry"]["coordinates"][0] - 113.5505) < 0.001
    p = f["properties"]
    assert p["count"] == 3 and p["category_code"] == "06010" and p["radius_m"] == 300 and p["grid_code"] == G
    assert client.get("/api/v1/cases/hotspots.geojson", params={"bbox": "113.58,22.80,113.62,22.84"},
                      headers=op).json()["features"] == []
    assert client.get("/api/v1/cases/hotspots.geojson", params={"category_code": "07001"},
                      headers=op).json()["features"] == []
    assert client.get("/api/v1/cases/hotspots.geojson", params={"bbox": "1,2,3"},
                      headers=op).status_code == 422
    # the department handling the cases sees the hotspot; a department handling none of them does not
    assert len(client.get("/api/v1/cases/hotspots.geojson", headers=as_role("handler")).json()["features"]) == 1
    water = dataclasses.replace(who("handler"), org_scope=frozenset({org("D-SWJ")}), id=None)
    clock.advance(dt.timedelta(days=8))
    with cdb.read() as s:
        assert analytics.hotspots_geojson(s, principal=water, days=10)["features"] == []
        assert analytics.hotspots_geojson(s, principal=who("operator"))["features"] == []  # older than 7 days
        assert len(analytics.hotspots_geojson(s, principal=who("operator"), days=10)["features"]) == 1


def test_rankings_carry_english_names(client, cdb, who, as_role):
    with cdb.write() as s:
        _report(s, who)
        _report(s, who, code="01002", title="井盖破损")
    d = client.get("/api/v1/cases/ioc-summary", headers=as_role("leader")).json()
    names = {r["name"]: r["name_en"] for r in d["dept_ranking"]}
    assert names["区水务局"] and names["区水务局"] != "区水务局" and all(names.values())
    assert d["town_ranking"] and all(r["name_en"] for r in d["town_ranking"])
    period = {"start": (clock.now() - dt.timedelta(days=1)).isoformat(), "end": (clock.now() + dt.timedelta(hours=1)).isoformat()}
    ev = client.get("/api/v1/cases/evaluation", params={"group_by": "town", **period}, headers=as_role("leader")).json()
    assert ev["rows"] and all(r["name_en"] for r in ev["rows"])


def test_ioc_summary_matches_the_evaluation(cdb, who):
    """The IOC's one grouped scan gives the same numbers as the evaluation per department, town and overall."""
    with cdb.write() as s:
        for i in range(4):
            c = _report(s, who, lon=113.5 + i * 0.02)
        _report(s, who, code="01002", title="井盖破损")
        service.act(s, case_id=c.id, action="accept", principal=who("handler"))
    leader = who("leader")
    with cdb.read() as s:
        d = analytics.ioc_summary(s, principal=leader)
        start, end = d["period_start"], clock.now() + dt.timedelta(seconds=1)
        for group, key in (("dept", "dept_ranking"), ("town", "town_ranking")):
            ev = analytics.evaluate(s, principal=leader, group_by=group, start=start, end=end)
            assert [(r["key"], r["score"], r["reported"]) for r in ev["rows"] if r["key"] is not None] == \
                [(r["org_id"], r["score"], r["cases"]) for r in d[key]]
        tot = analytics.evaluate(s, principal=leader, group_by="all", start=start, end=end)["rows"][0]
        assert (d["closure_rate"], d["satisfaction_rate"]) == (tot["closure_rate"], tot["satisfaction_rate"])
        assert d["by_status"]["in_progress"] == 1 and d["cases_open"] == 5


def test_neighbour_search_matches_brute_force():
    rnd = random.Random(3)
    pts = [SimpleNamespace(id=i, lon=113.5 + rnd.random() * 0.02, lat=22.75 + rnd.random() * 0.02)
           for i in range(400)]
    got = analytics._neighbours(pts, 300.0)
    for p in pts:
        want = [o for o in pts if analytics._metres((p.lon, p.lat), (o.lon, o.lat)) <= 300.0]
        assert [o.id for o in got[p.id]] == [o.id for o in want]
    assert analytics._neighbours([], 300.0) == {}
    assert math.isclose(analytics._metres((113.5, 22.75), (113.5, 22.76)), 1105.4, rel_tol=1e-3)


def test_bulk_history_loader(cdb):
    from sqlalchemy import func, select

    from citybrain.cases import bench
    from citybrain.cases import workflow as wf
    from citybrain.cases.models import Case

    info = bench.load_history(cdb, n=500, rnd=random.Random(1), open_share=0.2, batch=200)
    more = bench.load_history(cdb, n=100, rnd=random.Random(2))
    assert info["cases"] == 500 and 50 < info["open"] < 150 and more["open"] == 0
    with cdb.read() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 600
        n_open = s.scalar(select(func.count()).select_from(Case).where(Case.status.in_(list(wf.OPEN))))
        assert n_open == info["open"]
        bad = s.scalar(select(func.count()).select_from(Case).where(Case.status.in_(list(wf.OPEN)),
                                                                    Case.closed_at.is_not(None)))
        assert bad == 0
        if cdb.write_engine.dialect.name == "sqlite":  # the indexes dropped for the load are back
            names = {r[0] for r in s.connection().exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='cases_case'")}
            assert {"ix_cases_case_status_lon_lat", "ix_cases_case_status_reported"} <= names


def test_geojson_answers_clusters_when_the_area_holds_too_many_cases(client, cdb, who, as_role):
    with cdb.write() as s:
        for i in range(5):
            _report(s, who, lon=113.5015 + i * 0.0001, lat=22.7515)  # one cell (cells are 0.003125° here)
        _report(s, who, lon=113.540, lat=22.790)  # another cell
        _report(s, who, lon=113.62, lat=22.85)  # outside the area
    op = as_role("operator")
    box = {"bbox": "113.45,22.70,113.55,22.80", "status": "open"}
    points = client.get("/api/v1/cases.geojson", params={**box, "max_points": 6}, headers=op).json()
    assert "clustered" not in points and len(points["features"]) == 6
    fc = client.get("/api/v1/cases.geojson", params={**box, "max_points": 5}, headers=op).json()
    assert fc["clustered"] is True and fc["total"] == 6
    counts = sorted(f["properties"]["count"] for f in fc["features"])
    assert counts == [1, 5] and all(f["properties"]["cluster"] for f in fc["features"])
    big = max(fc["features"], key=lambda f: f["properties"]["count"])
    assert abs(big["geometry"]["coordinates"][0] - 113.5017) < 1e-6 and big["geometry"]["coordinates"][1] == 22.7515
    # filters apply to the clusters too
    one = client.get("/api/v1/cases.geojson", params={**box, "max_points": 1, "category_code": "06010",
                                                     "since": (clock.now() - dt.timedelta(hours=1)).isoformat()},
                     headers=op).json()
    assert one["total"] == 6
    none = client.get("/api/v1/cases.geojson", params={**box, "max_points": 1, "category_code": "01002"},
                      headers=op).json()
    assert none["features"] == [] and "clustered" not in none


def test_counts_by_grid_leave_out_merged_cases(cdb, who):
    g1, g2 = "440115001001001", "440115001001002"
    with cdb.write() as s:
        a = [service.report(s, principal=who("gridworker"), source="patrol", title="暴露垃圾", category_code="06010",
                            lon=113.55, lat=22.78, grid_code=g1) for _ in range(3)]
        assert a[2].status == "reported"
        _report(s, who, grid=g2)
        _report(s, who, grid=g2)
        service.act(s, case_id=a[2].id, action="merge", principal=who("operator"), target_case_id=a[0].id)
    with cdb.read() as s:
        fast = analytics.hotspot_counts(s, principal=who("operator"), window_h=24, by="grid")
        by_cat = analytics.hotspot_counts(s, principal=who("operator"), window_h=24, by="grid_category")
        scoped = analytics.hotspot_counts(s, principal=who("handler"), window_h=24, by="grid")
    assert sorted((r["grid_code"], r["count"]) for r in fast) == [(g1, 2), (g2, 2)]
    assert sorted((r["grid_code"], r["count"]) for r in by_cat) == [(g1, 2), (g2, 2)]
    assert [(r["grid_code"], r["count"]) for r in scoped] == [(g2, 2)]  # dispatched to the handler's department
