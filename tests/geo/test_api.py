"""The geography HTTP API: GeoJSON layers, bbox filtering, locate, imports, permissions, problem+json."""

from __future__ import annotations

import shapely
from shapely.geometry import shape

from citybrain import demo_district as dd
from citybrain.geo import demo


def test_areas_by_level(client, as_role):
    h = as_role("operator")
    r = client.get("/api/v1/geo/areas", params={"level": "town"}, headers=h)
    assert r.status_code == 200
    doc = r.json()
    assert doc["type"] == "FeatureCollection"
    assert {f["properties"]["code"]: f["properties"]["name"] for f in doc["features"]} == {
        t.code: t.name for t in dd.TOWNS}
    assert all(shape(f["geometry"]).is_valid for f in doc["features"])
    r = client.get("/api/v1/geo/areas", params={"parent_code": dd.TOWNS[0].code}, headers=h)
    assert len(r.json()["features"]) == 10
    r = client.get(f"/api/v1/geo/areas/{dd.DISTRICT_CODE}", headers=h)
    assert r.status_code == 200 and r.json()["properties"]["name"] == dd.DISTRICT_NAME
    r = client.get("/api/v1/geo/areas", params={"level": "province"}, headers=h)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    r = client.get("/api/v1/geo/areas/999999", headers=h)
    assert r.status_code == 404 and r.json()["message_en"] == "Area 999999 not found"


def test_grids_limited_to_visible_area(client, as_role):
    h = as_role("gridworker")
    _areas, grids = demo.build()
    view = (113.50, 22.74, 113.53, 22.76)
    expected = {g.code for g in grids if shapely.intersects(g.geom.envelope, shapely.box(*view))}
    r = client.get("/api/v1/geo/grids", params={"bbox": ",".join(map(str, view))}, headers=h)
    assert r.status_code == 200
    got = {f["properties"]["code"] for f in r.json()["features"]}
    assert got == expected and 10 < len(got) < len(grids) / 4
    r = client.get("/api/v1/geo/grids", params={"bbox": ",".join(map(str, view)), "limit": 3}, headers=h)
    assert len(r.json()["features"]) == 3 and r.json()["truncated"] is True
    comm = dd.COMMUNITIES[7].code
    r = client.get("/api/v1/geo/grids", params={"community_code": comm}, headers=h)
    assert {f["properties"]["community_code"] for f in r.json()["features"]} == {comm}
    code = r.json()["features"][0]["id"]
    r = client.get(f"/api/v1/geo/grids/{code}", headers=h)
    assert r.status_code == 200 and r.json()["properties"]["community_code"] == comm
    for bad in ("1,2,3", "a,b,c,d", "nan,1,2,3", "1,2,3,4,5"):
        r = client.get("/api/v1/geo/grids", params={"bbox": bad}, headers=h)
        assert r.status_code == 422, bad
        assert r.json()["errors"][0]["field"] == "bbox" and r.json()["message_zh"]
    # corners in either order; a far-away view is simply empty
    flipped = ",".join(map(str, (view[2], view[3], view[0], view[1])))
    r = client.get("/api/v1/geo/grids", params={"bbox": flipped}, headers=h)
    assert {f["properties"]["code"] for f in r.json()["features"]} == expected
    r = client.get("/api/v1/geo/grids", params={"bbox": "1e9,1,2e9,3"}, headers=h)
    assert r.status_code == 200 and r.json()["features"] == []


def test_locate_endpoint(client, as_role):
    h = as_role("analyst")
    _areas, grids = demo.build()
    g = grids[42]
    p = g.geom.representative_point()
    r = client.get("/api/v1/geo/locate", params={"lon": p.x, "lat": p.y}, headers=h)
    assert r.status_code == 200
    body = r.json()
    assert body["found"] and body["grid_code"] == g.code and body["community_code"] == g.community_code
    comm = next(c for c in dd.COMMUNITIES if c.code == g.community_code)
    assert body["community_name"] == comm.name
    assert body["town_name"] == next(t.name for t in dd.TOWNS if t.code == comm.town_code)
    r = client.get("/api/v1/geo/locate", params={"lon": 0, "lat": 0}, headers=h)
    assert r.status_code == 200 and r.json()["found"] is False and r.json()["grid_code"] is None
    for params in ({"lon": 200, "lat": 0}, {"lon": "x", "lat": 0}, {"lon": 113.5}, {"lon": "nan", "lat": 22}):
        r = client.get("/api/v1/geo/locate", params=params, headers=h)
        assert r.status_code == 422, params


def test_permissions(client, as_role):
    assert client.get("/api/v1/geo/areas").status_code == 401
    assert client.get("/api/v1/geo/locate", params={"lon": 113.5, "lat": 22.8},
                      headers=as_role("citizen")).status_code == 403
    doc = {"type": "FeatureCollection", "features": []}
    for role in ("operator", "gridworker", "auditor", "secadmin"):
        assert client.post("/api/v1/geo/import/grids", json=doc, headers=as_role(role)).status_code == 403, role
    assert client.get("/api/v1/geo/imports", headers=as_role("operator")).status_code == 403


def test_import_over_http(client, as_role):
    h = as_role("sysadmin")
    sq = [[101, 11], [101.001, 11], [101.001, 11.001], [101, 11.001], [101, 11]]
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"code": "440115001001301", "name": "导入网格"},
         "geometry": {"type": "Polygon", "coordinates": [sq]}},
        {"type": "Feature", "properties": {"code": "x"}, "geometry": {"type": "Polygon", "coordinates": [sq]}},
        "garbage",
    ]}
    r = client.post("/api/v1/geo/import/grids", json=doc, headers=h, params={"source": "upload.geojson"})
    assert r.status_code == 200, r.text
    rep = r.json()
    assert (rep["created"], rep["rejected"], rep["actor"]) == (1, 2, "user:sysadmin")
    r = client.get(f"/api/v1/geo/imports/{rep['import_id']}/rejected", headers=h)
    assert [x["index"] for x in r.json()] == [1, 2] and r.json()[1]["feature"] == "garbage"
    assert client.get("/api/v1/geo/imports", headers=h).json()[0]["source"] == "upload.geojson"
    assert client.get("/api/v1/geo/imports/9999/rejected", headers=h).status_code == 404
    r = client.get("/api/v1/geo/locate", params={"lon": 101.0005, "lat": 11.0005}, headers=as_role("operator"))
    assert r.json()["grid_code"] == "440115001001301"
    r = client.post("/api/v1/geo/import/areas", json={"type": "Feature"}, headers=h)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    r = client.post("/api/v1/geo/import/areas", content=b"{", headers={**h, "content-type": "application/json"})
    assert r.status_code == 422


def test_public_outline_needs_no_login_and_shows_only_boundaries_and_names(client, db):
    from citybrain.geo import service

    r = client.get("/api/v1/public/geo/outline")
    assert r.status_code == 200 and r.headers["cache-control"] == "public, max-age=300"
    doc = r.json()
    levels = {f["properties"]["code"]: f["properties"]["level"] for f in doc["features"]}
    assert levels == {dd.DISTRICT_CODE: "district", **{t.code: "town" for t in dd.TOWNS}}  # no communities, no grids
    assert all(set(f["properties"]) == {"code", "name", "name_en", "level", "parent_code"} for f in doc["features"])
    assert all(shape(f["geometry"]).is_valid for f in doc["features"])
    again = client.get("/api/v1/public/geo/outline", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    # the service area: inside the district, outside it, and nothing loaded to check against
    with db.read() as s:
        assert service.in_service_area(s, lon=dd.CENTER[0], lat=dd.CENTER[1]) is True
        assert service.in_service_area(s, lon=0, lat=0) is False
    # a changed map is a new revision: the browser's copy is no longer current
    with db.write() as s:
        service.store_areas(s, areas=[{"code": "440115199", "name": "测试镇", "level": "town", "parent_code": "440115",
                                       "geometry": {"type": "Polygon", "coordinates": [[[120, 30], [120.01, 30],
                                                                                        [120.01, 30.01], [120, 30]]]}}])
        s.commit()
    fresh = client.get("/api/v1/public/geo/outline", headers={"If-None-Match": r.headers["etag"]})
    assert fresh.status_code == 200 and "440115199" in {f["id"] for f in fresh.json()["features"]}
