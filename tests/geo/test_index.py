"""The spatial index on its own: exact edge semantics, holes, multipolygons, agreement with GEOS."""

from __future__ import annotations

import random

import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from citybrain.geo.index import GridIndex, covers, normalised_edges


def _index(items: dict[str, object]) -> GridIndex:
    codes = list(items)
    return GridIndex(codes, [items[c] for c in codes], [{"grid_code": c} for c in codes])


def _code(idx: GridIndex, lon: float, lat: float) -> str | None:
    gi = idx.lookup(lon, lat)
    return None if gi is None else idx.codes[gi]


# Four unit squares around the origin; codes deliberately not in geometric order.
SQUARES = {
    "440115001001004": box(0, 0, 1, 1),   # north-east
    "440115001001001": box(-1, 0, 0, 1),  # north-west
    "440115001001003": box(-1, -1, 0, 0),  # south-west
    "440115001001002": box(0, -1, 1, 0),  # south-east
}


def test_interior_points_belong_to_their_square():
    idx = _index(SQUARES)
    assert _code(idx, 0.5, 0.5) == "440115001001004"
    assert _code(idx, -0.5, 0.5) == "440115001001001"
    assert _code(idx, -0.5, -0.5) == "440115001001003"
    assert _code(idx, 0.5, -0.5) == "440115001001002"


def test_shared_edge_goes_to_lowest_code():
    idx = _index(SQUARES)
    assert _code(idx, 0.0, 0.5) == "440115001001001"  # between ...004 (east) and ...001 (west)
    assert _code(idx, 0.5, 0.0) == "440115001001002"  # between ...004 (north) and ...002 (south)
    assert _code(idx, -0.5, 0.0) == "440115001001001"  # between ...001 and ...003
    assert _code(idx, 0.0, -0.5) == "440115001001002"  # between ...003 and ...002


def test_shared_vertex_goes_to_lowest_code():
    assert _code(_index(SQUARES), 0.0, 0.0) == "440115001001001"


def test_outer_boundary_is_covered_and_outside_is_none():
    idx = _index(SQUARES)
    assert _code(idx, 1.0, 0.5) == "440115001001004"  # on the outer east edge
    assert _code(idx, 1.0, 1.0) == "440115001001004"  # outer corner
    assert _code(idx, 1.0 + 1e-12, 0.5) is None
    assert _code(idx, 5.0, 5.0) is None
    assert _code(idx, float("nan"), 0.5) is None
    assert _code(idx, 0.5, float("inf")) is None


def test_hole_and_multipolygon():
    ring = Polygon([(0, 0), (4, 0), (4, 4), (0, 4)], [[(1, 1), (3, 1), (3, 3), (1, 3)]])
    inner = box(1, 1, 3, 3)
    multi = MultiPolygon([box(10, 0, 11, 1), box(12, 0, 13, 1)])
    idx = _index({"440115001001002": ring, "440115001001001": inner, "440115001001003": multi})
    assert _code(idx, 0.5, 0.5) == "440115001001002"
    assert _code(idx, 2, 2) == "440115001001001"  # in the hole: the inner grid
    assert _code(idx, 1, 2) == "440115001001001"  # hole edge shared by both: lowest code
    assert _code(idx, 10.5, 0.5) == "440115001001003"
    assert _code(idx, 12.5, 0.5) == "440115001001003"
    assert _code(idx, 11.5, 0.5) is None  # between the parts


def test_diagonal_edges_are_exact():
    # two triangles sharing the diagonal (0,0)-(3,1): points exactly on it are on both boundaries
    a = Polygon([(0, 0), (3, 1), (0, 1)])
    b = Polygon([(0, 0), (3, 0), (3, 1)])
    idx = _index({"440115001001002": a, "440115001001001": b})
    for t in (0.25, 0.5, 0.75):
        x, y = 3 * t, t
        assert shapely.covers(a, shapely.Point(x, y)) and shapely.covers(b, shapely.Point(x, y))
        assert _code(idx, x, y) == "440115001001001"
    # a point a hair above the diagonal is in a only
    assert _code(idx, 1.5, 0.5 + 1e-15) == "440115001001002"


def test_agrees_with_geos_on_random_jittered_lattice():
    rng = random.Random(7)
    n = 12
    verts = {(i, j): (i + (rng.uniform(-0.3, 0.3) if 0 < i < n else 0), j + (rng.uniform(-0.3, 0.3) if 0 < j < n else 0))
             for i in range(n + 1) for j in range(n + 1)}
    items = {}
    for i in range(n):
        for j in range(n):
            items[f"440115001001{i * n + j:03d}"] = Polygon(
                [verts[(i, j)], verts[(i + 1, j)], verts[(i + 1, j + 1)], verts[(i, j + 1)]])
    idx = _index(items)
    codes = sorted(items)
    pts = [(rng.uniform(-1, n + 1), rng.uniform(-1, n + 1)) for _ in range(3000)]
    pts += [verts[k] for k in verts]  # every vertex, exactly
    pts += [((verts[(i, j)][0] + verts[(i + 1, j)][0]) / 2, (verts[(i, j)][1] + verts[(i + 1, j)][1]) / 2)
            for i in range(n) for j in range(n + 1)]  # edge midpoints
    many = idx.lookup_many([p[0] for p in pts], [p[1] for p in pts])
    for k, (x, y) in enumerate(pts):
        p = shapely.Point(x, y)
        expected = next((c for c in codes if shapely.covers(items[c], p)), None)
        got = _code(idx, x, y)
        assert got == expected, (x, y)
        assert (many[k] < 0 and got is None) or idx.codes[many[k]] == got


def test_covers_on_edges_directly():
    edges = normalised_edges(box(0, 0, 2, 2))
    assert covers(edges, 0, 0) and covers(edges, 2, 2) and covers(edges, 1, 2) and covers(edges, 2, 1)
    assert covers(edges, 1, 1)
    assert not covers(edges, 2.000001, 1) and not covers(edges, 1, -1e-300)
