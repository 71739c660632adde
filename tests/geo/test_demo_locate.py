"""The demo district's map and point -> grid lookup through the service (SQLite and PostgreSQL)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import shapely
from shapely.geometry import shape

from citybrain import demo_district as dd
from citybrain.geo import demo, service


@pytest.fixture(scope="module")
def demo_map():
    return demo.build()


def test_demo_district_shape(db):
    with db.read() as s:
        n = service.counts(s)
        assert n == {"district": 1, "town": 6, "community": 60, "grid": n["grid"]}
        assert n["grid"] >= 1000
        grids = service.grids_geojson(s)["features"]
    per_comm = Counter(f["properties"]["community_code"] for f in grids)
    assert set(per_comm) == {c.code for c in dd.COMMUNITIES}
    assert min(per_comm.values()) >= 15
    for f in grids:
        code = f["properties"]["code"]
        assert len(code) == 15 and code.isdigit()
        assert code[:12] == f["properties"]["community_code"]
        assert code[:9] == f["properties"]["town_code"] and code[:6] == dd.DISTRICT_CODE
    for comm, n_grids in per_comm.items():  # sequences 001..n without gaps
        seqs = sorted(int(f["properties"]["code"][12:]) for f in grids if f["properties"]["community_code"] == comm)
        assert seqs == list(range(1, n_grids + 1))


def test_demo_is_deterministic_and_idempotent(db, demo_map):
    areas, grids = demo_map
    demo.build.cache_clear()
    again_areas, again_grids = demo.build()
    assert [g.geom.wkb for g in grids] == [g.geom.wkb for g in again_grids]
    assert [a.geom.wkb for a in areas] == [a.geom.wkb for a in again_areas]
    with db.read() as s:
        before = service.counts(s)
    demo.seed(db)
    with db.read() as s:
        assert service.counts(s) == before


def test_grids_tile_communities_exactly(demo_map):
    areas, grids = demo_map
    by_code = {a.code: a.geom for a in areas}
    district = by_code[dd.DISTRICT_CODE]
    x0, y0, x1, y1 = dd.BBOX
    assert district.geom_type == "Polygon" and len(district.exterior.coords) > 20  # not a box
    assert x0 <= district.bounds[0] and district.bounds[2] <= x1 and y0 <= district.bounds[1]
    assert shapely.contains(district, shapely.Point(*dd.CENTER))
    # no overlaps: the union's area equals the sum of the areas, and equals the district
    total = sum(g.geom.area for g in grids)
    union = shapely.union_all([g.geom for g in grids])
    assert union.area == pytest.approx(total, rel=1e-12)
    assert shapely.symmetric_difference(union, district).area < 1e-15
    for comm in dd.COMMUNITIES:
        parts = [g.geom for g in grids if g.community_code == comm.code]
        assert shapely.symmetric_difference(shapely.union_all(parts), by_code[comm.code]).area < 1e-15
        assert by_code[comm.code].geom_type == "Polygon"  # each community is one piece
    for town in dd.TOWNS:
        parts = [by_code[c.code] for c in dd.COMMUNITIES if c.town_code == town.code]
        assert shapely.symmetric_difference(shapely.union_all(parts), by_code[town.code]).area < 1e-15


_TREES: dict[int, shapely.STRtree] = {}


def _covering(grids, x, y):
    """Brute force with GEOS: the codes of every grid covering the point."""
    tree = _TREES.setdefault(id(grids), shapely.STRtree([g.geom for g in grids]))
    p = shapely.Point(x, y)
    return sorted(grids[i].code for i in tree.query(p) if shapely.covers(grids[i].geom, p))


def test_locate_interior_edge_vertex_outside(db, demo_map):
    _areas, grids = demo_map
    g = grids[100]
    inner = g.geom.representative_point()
    # a vertex shared by four grids and the midpoint of an edge shared by two
    counts = Counter(c for gg in grids for c in list(gg.geom.exterior.coords)[:-1])
    vertex = next(v for v, n in counts.items() if n == 4)
    edge_pts = []
    for gg in grids[:200]:
        cs = list(gg.geom.exterior.coords)
        for a, b in zip(cs, cs[1:], strict=False):
            mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
            if len(_covering(grids, *mid)) == 2:
                edge_pts.append(mid)
    assert len(edge_pts) > 50
    with db.read() as s:
        hit = service.locate(s, lon=inner.x, lat=inner.y)
        assert hit == {"grid_code": g.code, "grid_name": g.name, "community_code": g.community_code,
                       "town_code": g.town_code, "district_code": dd.DISTRICT_CODE}
        owners = _covering(grids, *vertex)
        assert len(owners) == 4
        assert service.locate(s, lon=vertex[0], lat=vertex[1])["grid_code"] == min(owners)
        for x, y in edge_pts:
            owners = _covering(grids, x, y)
            assert service.locate(s, lon=x, lat=y)["grid_code"] == min(owners)
        # outside: bbox corner (outside the irregular outline), far away, nonsense
        x0, y0, x1, y1 = dd.BBOX
        for lon, lat in ((x0, y0), (x1, y1), (x0 - 1, y0), (0.0, 0.0), (float("nan"), 22.78)):
            assert service.locate(s, lon=lon, lat=lat) is None
        many = service.locate_many(s, points=[(inner.x, inner.y), vertex, (0.0, 0.0), *edge_pts[:20]])
        assert many[0]["grid_code"] == g.code and many[2] is None
        assert [m["grid_code"] for m in many[3:]] == [min(_covering(grids, *p)) for p in edge_pts[:20]]


def test_locate_on_district_boundary(db, demo_map):
    areas, grids = demo_map
    district = next(a.geom for a in areas if a.level == "district")
    cs = list(district.exterior.coords)
    with db.read() as s:
        for a, b in list(zip(cs, cs[1:], strict=False))[:30]:
            mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
            owners = _covering(grids, *mid)
            assert len(owners) == 1
            assert service.locate(s, lon=mid[0], lat=mid[1])["grid_code"] == owners[0]


def test_locate_matches_brute_force(db, demo_map):
    _areas, grids = demo_map
    rng = random.Random(2)
    x0, y0, x1, y1 = dd.BBOX
    pts = [(rng.uniform(x0 - 0.01, x1 + 0.01), rng.uniform(y0 - 0.01, y1 + 0.01)) for _ in range(600)]
    tree = shapely.STRtree([g.geom for g in grids])
    with db.read() as s:
        many = service.locate_many(s, points=pts)
        for (x, y), m in zip(pts, many, strict=True):
            hits = sorted(grids[i].code for i in tree.query(shapely.Point(x, y), predicate="intersects"))
            expected = hits[0] if hits else None
            assert (m and m["grid_code"]) == expected
            one = service.locate(s, lon=x, lat=y)
            assert (one and one["grid_code"]) == expected


def test_store_grids_invalidates_index(db):
    far = {"type": "Polygon", "coordinates": [[[100, 10], [100.01, 10], [100.01, 10.01], [100, 10.01], [100, 10]]]}
    with db.read() as s:
        assert service.locate(s, lon=100.005, lat=10.005) is None
    with db.write() as s:
        assert service.locate(s, lon=100.005, lat=10.005) is None
        service.store_grids(s, grids=[{"code": "44011500100199", "name": "旧编码网格", "geometry": far}])
        assert service.locate(s, lon=100.005, lat=10.005)["grid_code"] == "440115001001099"  # same transaction
        s.commit()
    with db.read() as s:
        hit = service.locate(s, lon=100.005, lat=10.005)
        assert hit["grid_code"] == "440115001001099" and hit["community_code"] == "440115001001"
        assert service.get_grid(s, code="44011500100199")["legacy_code"] == "44011500100199"


def test_grid_codes_under_and_getters(db):
    comm = dd.COMMUNITIES[3]
    with db.read() as s:
        codes = service.grid_codes_under(s, area_code=comm.code)
        assert codes and all(c.startswith(comm.code) for c in codes) and codes == sorted(codes)
        town = service.grid_codes_under(s, area_code=comm.town_code)
        assert set(codes) < set(town)
        assert len(service.grid_codes_under(s, area_code=dd.DISTRICT_CODE)) == service.counts(s)["grid"]
        assert service.grid_codes_under(s, area_code="nonsense") == []
        assert service.grid_codes_under(s, area_code=codes[0]) == [codes[0]]
        area = service.get_area(s, code=comm.code)
        assert area["name"] == comm.name and area["level"] == "community" and area["parent_code"] == comm.town_code
        assert shape(area["geometry"]).contains(shape(service.get_grid(s, code=codes[0])["geometry"]).centroid)
        assert service.get_area(s, code="999999") is None
        assert service.get_grid(s, code="440115999999001") is None
        assert service.get_grid(s, code="bad") is None
        areas = service.areas_geojson(s, level="town")
        assert [f["properties"]["code"] for f in areas["features"]] == sorted(t.code for t in dd.TOWNS)


def test_postgis_agrees_with_index(db, demo_map):
    with db.read() as s:
        if not db.url.startswith("postgresql"):
            assert service.locate_postgis(s, lon=dd.CENTER[0], lat=dd.CENTER[1]) is None
            return
        assert service.postgis_enabled(s), "PostGIS is installed on this machine; the migration should enable it"
        _areas, grids = demo_map
        rng = random.Random(3)
        pts = [c for g in grids[:60] for c in list(g.geom.exterior.coords)[:2]]
        pts += [(rng.uniform(113.46, 113.64), rng.uniform(22.70, 22.86)) for _ in range(60)]
        for x, y in pts:
            hit = service.locate(s, lon=x, lat=y)
            assert service.locate_postgis(s, lon=x, lat=y) == (hit and hit["grid_code"])


def test_change_by_another_process_is_picked_up(db, monkeypatch):
    """Another process (e.g. `citybrain geo import` beside the server) changes grids and the revision in SQL."""
    from sqlalchemy import text

    with db.read() as s:
        assert service.locate(s, lon=100.005, lat=10.005) is None
    poly = '{"type":"Polygon","coordinates":[[[100,10],[100.01,10],[100.01,10.01],[100,10.01],[100,10]]]}'
    with db.write() as s:  # raw SQL: this process's caches are not told
        s.execute(text(
            "INSERT INTO geo_grid (code, name, community_code, town_code, district_code, geojson, min_lon, min_lat, "
            "max_lon, max_lat, area_m2, props, updated_at) VALUES ('440115001001098', 'x', '440115001001', "
            "'440115001', '440115', :g, 100, 10, 100.01, 10.01, 1, '{}', CURRENT_TIMESTAMP)"), {"g": poly})
        s.execute(text("UPDATE geo_meta SET value = 'other-process' WHERE key = 'revision'"))
        s.commit()
    monkeypatch.setattr(service, "REVISION_TTL", 0.0)  # instead of waiting a second
    with db.read() as s:
        assert service.locate(s, lon=100.005, lat=10.005)["grid_code"] == "440115001001098"


def test_parse_bbox():
    assert service.parse_bbox("113.5,22.7,113.6,22.8") == (113.5, 22.7, 113.6, 22.8)
    assert service.parse_bbox([113.6, 22.8, 113.5, 22.7]) == (113.5, 22.7, 113.6, 22.8)
    assert service.parse_bbox(None) is None
    from citybrain.errors import Invalid

    for bad in ("1,2,3", "inf,1,2,3", "x,1,2,3", [1, 2, 3, float("nan")]):
        with pytest.raises(Invalid):
            service.parse_bbox(bad)
