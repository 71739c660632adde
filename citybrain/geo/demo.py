"""Demo map: the synthetic district of `citybrain.demo_district` as polygons.

A jittered lattice of quadrilaterals covers the district's bounding box; the cells whose centres fall
inside an irregular (star-shaped) outline form the district. Cells are split into the 6 towns and each
town into its 10 communities by equal-count cuts, and every cell is one unit grid. Because all polygons
are built from the same lattice vertices, grids share edges exactly (no gaps, no overlaps), communities
are exact unions of their grids, towns of their communities, and the district of its towns.
Coordinates are multiples of 2^-20 degree (~0.1 m), so midpoints of edges are exactly on the edge.
Deterministic: the same input gives the same map, byte for byte.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache

import shapely
from shapely.geometry import Polygon

from citybrain import demo_district as dd

COLS, ROWS = 40, 36
_Q = 2.0**20


def _q(v: float) -> float:
    return round(v * _Q) / _Q


@dataclass(frozen=True)
class DemoGrid:
    code: str
    name: str
    community_code: str
    town_code: str
    geom: Polygon
    col: int
    row: int


@dataclass(frozen=True)
class DemoArea:
    code: str
    name: str
    name_en: str | None
    level: str
    kind: str | None
    parent_code: str | None
    geom: object


def _inside_outline(u: float, v: float) -> bool:
    """Is the normalised point (-1..1 across the bbox) inside the district's irregular outline?"""
    r = math.hypot(u, v)
    t = math.atan2(v, u)
    return r < 0.97 * (1 + 0.07 * math.sin(3 * t + 0.5) + 0.04 * math.cos(2 * t - 1.0))


def _split(items: list, n: int) -> list[list]:
    """Cut a list into n consecutive chunks of (nearly) equal length."""
    k, m = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + k + (1 if i < m else 0)
        out.append(items[start:end])
        start = end
    return out


def lattice(cols: int, rows: int, bbox: tuple[float, float, float, float], *, seed: int,
            jitter: float = 0.22) -> dict[tuple[int, int], tuple[float, float]]:
    """Vertices (i, j) -> (lon, lat) of a jittered cols x rows lattice over bbox (outer vertices not jittered)."""
    x0, y0, x1, y1 = bbox
    dx, dy = (x1 - x0) / cols, (y1 - y0) / rows
    rng = random.Random(seed)
    verts: dict[tuple[int, int], tuple[float, float]] = {}
    for i in range(cols + 1):
        for j in range(rows + 1):
            jx = rng.uniform(-jitter, jitter) * dx if 0 < i < cols else 0.0
            jy = rng.uniform(-jitter, jitter) * dy if 0 < j < rows else 0.0
            vx, vy = _q(x0 + i * dx + jx), _q(y0 + j * dy + jy)
            # keep the outermost vertices inside the bbox after rounding
            vx = min(max(vx, math.ceil(x0 * _Q) / _Q), math.floor(x1 * _Q) / _Q)
            vy = min(max(vy, math.ceil(y0 * _Q) / _Q), math.floor(y1 * _Q) / _Q)
            verts[(i, j)] = (vx, vy)
    return verts


def cell(verts: dict[tuple[int, int], tuple[float, float]], i: int, j: int) -> Polygon:
    """The lattice quadrilateral whose south-west vertex is (i, j)."""
    return Polygon([verts[(i, j)], verts[(i + 1, j)], verts[(i + 1, j + 1)], verts[(i, j + 1)], verts[(i, j)]])


@lru_cache(maxsize=1)
def build() -> tuple[tuple[DemoArea, ...], tuple[DemoGrid, ...]]:
    """The demo district's areas (district, towns, communities) and unit grids."""
    x0, y0, x1, y1 = dd.BBOX
    cx, cy = dd.CENTER
    dx, dy = (x1 - x0) / COLS, (y1 - y0) / ROWS
    verts = lattice(COLS, ROWS, dd.BBOX, seed=int(dd.DISTRICT_CODE))
    half_w, half_h = (x1 - x0) / 2, (y1 - y0) / 2
    cells = [(i, j) for i in range(COLS) for j in range(ROWS)
             if _inside_outline((x0 + (i + 0.5) * dx - cx) / half_w, (y0 + (j + 0.5) * dy - cy) / half_h)]

    # towns: 3 column groups (west -> east), each cut into north and south
    col_major = sorted(cells)
    town_cells: list[list[tuple[int, int]]] = []
    for group in _split(col_major, 3):
        row_major = sorted(group, key=lambda c: (-c[1], c[0]))
        town_cells.extend(_split(row_major, 2))
    communities_of = {t.code: [c for c in dd.COMMUNITIES if c.town_code == t.code] for t in dd.TOWNS}

    grids: list[DemoGrid] = []
    areas: list[DemoArea] = []
    town_geoms = []
    for town, tcells in zip(dd.TOWNS, town_cells, strict=True):
        row_major = sorted(tcells, key=lambda c: (-c[1], c[0]))
        comm_cells: list[list[tuple[int, int]]] = []
        for band in _split(row_major, 5):
            comm_cells.extend(_split(sorted(band, key=lambda c: (c[0], -c[1])), 2))
        comm_geoms = []
        for comm, ccells in zip(communities_of[town.code], comm_cells, strict=True):
            ordered = sorted(ccells, key=lambda c: (-c[1], c[0]))  # north -> south, west -> east
            polys = []
            for seq, (i, j) in enumerate(ordered, start=1):
                poly = cell(verts, i, j)
                polys.append(poly)
                grids.append(DemoGrid(f"{comm.code}{seq:03d}", f"{comm.name}第{seq:03d}网格", comm.code,
                                      town.code, poly, i, j))
            cgeom = shapely.coverage_union_all(polys)
            comm_geoms.append(cgeom)
            areas.append(DemoArea(comm.code, comm.name, None, "community", comm.kind, town.code, cgeom))
        tgeom = shapely.coverage_union_all(comm_geoms)
        town_geoms.append(tgeom)
        areas.append(DemoArea(town.code, town.name, town.name_en, "town", town.kind, dd.DISTRICT_CODE, tgeom))
    dgeom = shapely.coverage_union_all(town_geoms)
    areas.insert(0, DemoArea(dd.DISTRICT_CODE, dd.DISTRICT_NAME, dd.DISTRICT_NAME_EN, "district", "区",
                             dd.DISTRICT_CODE[:4] + "00", dgeom))
    areas.sort(key=lambda a: (len(a.code), a.code))
    grids.sort(key=lambda g: g.code)
    return tuple(areas), tuple(grids)


def seed(db) -> None:  # noqa: ANN001
    """Store the demo district's areas and grids if the district is not there yet (idempotent)."""
    from sqlalchemy import select

    from citybrain import context
    from citybrain.audit import service as audit
    from citybrain.context import SYSTEM
    from citybrain.geo import service
    from citybrain.geo.models import Area

    context.set_principal(SYSTEM)
    with db.write() as s:
        if s.scalar(select(Area.id).where(Area.code == dd.DISTRICT_CODE)):
            return
        areas, grids = build()
        n_areas = service.store_areas(s, areas=[
            {"code": a.code, "name": a.name, "name_en": a.name_en, "level": a.level, "kind": a.kind,
             "parent_code": a.parent_code, "geometry": a.geom} for a in areas])
        n_grids = service.store_grids(s, grids=[
            {"code": g.code, "name": g.name, "geometry": g.geom} for g in grids])
        audit.commit(s, action="geo.demo.seed", target_type="geo_district", target_id=dd.DISTRICT_CODE,
                     after={"areas": n_areas, "grids": n_grids})
    service.invalidate()
