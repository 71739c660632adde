"""In-process spatial index for point -> unit grid lookup (pure Python + numpy, exact predicates).

How it works
------------
The extent of all grids is cut into a uniform raster of cells (about 64 per grid). While building,
each cell is classified with shapely (GEOS):

* **definite** — exactly one grid contains the (slightly enlarged) cell in its interior and no other
  grid touches it: every point in the cell belongs to that grid, so a lookup is one array read;
* **candidates** — some grid boundary crosses the cell: the lookup runs an exact point-in-polygon
  test against the grids whose polygons touch the cell, in code order;
* **empty** — no grid touches the cell: the point is outside every grid (``None``).

Edge semantics: a grid *covers* a point when the point is in its interior or on its boundary. A point
on an edge or vertex shared by several grids belongs to the covering grid with the **lowest code**
(codes sort as strings; they have equal length). Points covered by no grid give ``None``.

The point-in-polygon test is exact: each edge is normalised (lower endpoint first) so two grids
sharing an edge evaluate the very same orientation predicate, and orientations too close to zero for
floating point are recomputed with exact rational arithmetic. So a point is on an edge exactly when it
is on it mathematically (the same answer GEOS's robust ``covers`` gives), and a point near a shared
edge falls on one side for both grids — never in both, never in neither.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import shapely

_ERRBOUND = 1e-15  # > (3 + 16 eps) eps, Shewchuk's orient2d static filter bound
_PAD = 1e-9  # cells are enlarged by this many degrees (~0.1 mm) before classification
EMPTY = -1


def _orient_exact(x1: float, y1: float, x2: float, y2: float, px: float, py: float) -> int:
    fx1, fy1 = Fraction(x1), Fraction(y1)
    d = (Fraction(x2) - fx1) * (Fraction(py) - fy1) - (Fraction(y2) - fy1) * (Fraction(px) - fx1)
    return (d > 0) - (d < 0)


def covers(edges: Sequence[tuple[float, float, float, float]], px: float, py: float) -> bool:
    """True if the point is inside the polygon whose normalised edges are given, or on its boundary."""
    inside = False
    for x1, y1, x2, y2 in edges:  # y1 < y2, or y1 == y2 and x1 <= x2
        if y1 <= py < y2:
            left = (x2 - x1) * (py - y1)
            right = (y2 - y1) * (px - x1)
            det = left - right
            if abs(det) <= _ERRBOUND * (abs(left) + abs(right)):
                s = _orient_exact(x1, y1, x2, y2, px, py)
                if s == 0:
                    return True
                if s > 0:
                    inside = not inside
            elif det > 0:
                inside = not inside
        elif py == y2:
            if y1 == y2:
                if x1 <= px <= x2:
                    return True
            elif px == x2:
                return True
    return inside


def normalised_edges(geom: Any) -> list[tuple[float, float, float, float]]:
    """The edges of every ring of a (Multi)Polygon, each with its lower endpoint first."""
    out: list[tuple[float, float, float, float]] = []
    polys = geom.geoms if geom.geom_type == "MultiPolygon" else [geom]
    for poly in polys:
        for ring in (poly.exterior, *poly.interiors):
            coords = list(ring.coords)
            for (ax, ay), (bx, by) in zip(coords, coords[1:], strict=False):
                if ax == bx and ay == by:
                    continue
                if (ay, ax) <= (by, bx):
                    out.append((float(ax), float(ay), float(bx), float(by)))
                else:
                    out.append((float(bx), float(by), float(ax), float(ay)))
    return out


class GridIndex:
    """Point -> grid lookup over a fixed set of grids (build once, query many times, thread-safe reads)."""

    def __init__(self, codes: Sequence[str], geoms: Sequence[Any], infos: Sequence[dict[str, Any]],
                 *, cells_per_grid: int = 64, max_cells: int = 4_000_000):
        order = sorted(range(len(codes)), key=lambda i: codes[i])
        self.codes = [codes[i] for i in order]
        self.geoms = [geoms[i] for i in order]
        self.infos = [infos[i] for i in order]
        n = len(self.codes)
        self.size = n
        self.edges = [normalised_edges(g) for g in self.geoms]
        self.bboxes = [tuple(map(float, g.bounds)) for g in self.geoms]
        self.candidates: list[tuple[int, ...]] = []
        if n == 0:
            self.nx = self.ny = 0
            self.x0 = self.y0 = 0.0
            self.inv_dx = self.inv_dy = 0.0
            self.cells = array("i")
            self.cells_np = np.zeros(0, dtype=np.int32)
            self.stats = {"grids": 0, "cells": 0, "definite_cells": 0, "candidate_cells": 0}
            return
        b = np.array(self.bboxes)
        x0, y0 = float(b[:, 0].min()), float(b[:, 1].min())
        x1, y1 = float(b[:, 2].max()), float(b[:, 3].max())
        w, h = max(x1 - x0, 1e-9), max(y1 - y0, 1e-9)
        target = min(max_cells, max(64, cells_per_grid * n))
        dx = math.sqrt(w * h / target)
        nx, ny = max(1, math.ceil(w / dx)), max(1, math.ceil(h / dx))
        # A little slack so points on the far edges still fall in the last cell.
        dx, dy = w / nx * (1 + 1e-12), h / ny * (1 + 1e-12)
        self.x0, self.y0, self.nx, self.ny = x0, y0, nx, ny
        self.dx, self.dy = dx, dy
        self.inv_dx, self.inv_dy = 1.0 / dx, 1.0 / dy
        ncell = nx * ny
        contain = np.zeros(ncell, dtype=np.int32)  # how many grids contain the cell in their interior
        owner = np.full(ncell, -1, dtype=np.int32)
        touched = np.zeros(ncell, dtype=bool)  # some grid's polygon meets the cell without containing it
        touching: dict[int, list[int]] = {}
        for gi, geom in enumerate(self.geoms):
            gx0, gy0, gx1, gy1 = self.bboxes[gi]
            ix0 = max(0, int((gx0 - x0 - _PAD) / dx))
            ix1 = min(nx - 1, int((gx1 - x0 + _PAD) / dx))
            iy0 = max(0, int((gy0 - y0 - _PAD) / dy))
            iy1 = min(ny - 1, int((gy1 - y0 + _PAD) / dy))
            ixs = np.arange(ix0, ix1 + 1)
            iys = np.arange(iy0, iy1 + 1)
            gx, gy = np.meshgrid(ixs, iys)
            gx, gy = gx.ravel(), gy.ravel()
            boxes = shapely.box(x0 + gx * dx - _PAD, y0 + gy * dy - _PAD,
                                x0 + (gx + 1) * dx + _PAD, y0 + (gy + 1) * dy + _PAD)
            shapely.prepare(geom)
            inter = shapely.intersects(geom, boxes)
            inside = shapely.contains_properly(geom, boxes)
            flat = gy * nx + gx
            ci = flat[inside]
            contain[ci] += 1
            owner[ci] = gi
            edge_cells = flat[inter & ~inside]
            touched[edge_cells] = True
            for c in flat[inter].tolist():
                touching.setdefault(c, []).append(gi)
        cells = np.full(ncell, EMPTY, dtype=np.int32)
        definite = (contain == 1) & ~touched
        cells[definite] = owner[definite]
        n_cand = 0
        for c, gis in touching.items():
            if definite[c]:
                continue
            cells[c] = -2 - n_cand
            self.candidates.append(tuple(sorted(gis)))
            n_cand += 1
        self.cells_np = cells
        self.cells = array("i", cells.tobytes())
        self.stats = {"grids": n, "cells": ncell, "definite_cells": int(definite.sum()), "candidate_cells": n_cand}

    def lookup(self, lon: float, lat: float) -> int | None:
        """The index (in code order) of the grid that owns the point, or None."""
        fx = (lon - self.x0) * self.inv_dx
        fy = (lat - self.y0) * self.inv_dy
        if not (0.0 <= fx < self.nx and 0.0 <= fy < self.ny):  # also rejects NaN
            return None
        v = self.cells[int(fy) * self.nx + int(fx)]
        if v >= 0:
            return v
        if v == EMPTY:
            return None
        bboxes, edges = self.bboxes, self.edges
        for gi in self.candidates[-2 - v]:
            bx0, by0, bx1, by1 = bboxes[gi]
            if bx0 <= lon <= bx1 and by0 <= lat <= by1 and covers(edges[gi], lon, lat):
                return gi
        return None

    def lookup_many(self, lons: Any, lats: Any) -> np.ndarray:
        """Grid indexes (or -1) for arrays of points: the raster in numpy, the exact tests per point."""
        lons = np.asarray(lons, dtype=np.float64)
        lats = np.asarray(lats, dtype=np.float64)
        out = np.full(lons.shape, -1, dtype=np.int64)
        if self.size == 0 or lons.size == 0:
            return out
        with np.errstate(invalid="ignore"):
            fx = (lons - self.x0) * self.inv_dx
            fy = (lats - self.y0) * self.inv_dy
            ok = (fx >= 0) & (fx < self.nx) & (fy >= 0) & (fy < self.ny)
        idx = np.nonzero(ok)[0]
        v = self.cells_np[fy[idx].astype(np.int64) * self.nx + fx[idx].astype(np.int64)]
        out[idx[v >= 0]] = v[v >= 0]
        for i in idx[v <= -2].tolist():
            g = self.lookup(float(lons[i]), float(lats[i]))
            if g is not None:
                out[i] = g
        return out
