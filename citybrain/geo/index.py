"""In-process spatial index for point -> unit grid lookup (pure Python + numpy, exact predicates).

How it works
------------
The extent of all grids is cut into a uniform raster of cells (about 64 per grid). While building,
each cell is classified with vectorised numpy:

* **candidates** — the padded bounding box of some grid edge meets the cell (a conservative superset
  of the cells a boundary crosses), or several grids contain it (overlapping data): the lookup runs
  the exact point-in-polygon test against those grids, in code order;
* **definite** — no edge comes near the cell and exactly one grid contains its centre: every point in
  the cell belongs to that grid, so a lookup is one array read;
* **empty** — no edge near it and no grid contains it: the point is outside every grid (``None``).

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
        cells, self.candidates = self._classify(ncell)
        self.cells_np = cells
        self.cells = array("i", cells.tobytes())
        self.stats = {"grids": n, "cells": ncell, "definite_cells": int((cells >= 0).sum()),
                      "candidate_cells": len(self.candidates)}

    def _ranges(self, lo_x, lo_y, hi_x, hi_y):  # noqa: ANN001, ANN202
        """Cell index ranges (inclusive, clipped) of padded boxes, conservatively one cell wide extra."""
        ix0 = np.clip(np.floor((lo_x - self.x0 - 2 * _PAD) / self.dx), 0, self.nx - 1).astype(np.int64)
        ix1 = np.clip(np.floor((hi_x - self.x0 + 2 * _PAD) / self.dx), 0, self.nx - 1).astype(np.int64)
        iy0 = np.clip(np.floor((lo_y - self.y0 - 2 * _PAD) / self.dy), 0, self.ny - 1).astype(np.int64)
        iy1 = np.clip(np.floor((hi_y - self.y0 + 2 * _PAD) / self.dy), 0, self.ny - 1).astype(np.int64)
        return ix0, ix1, iy0, iy1

    def _pairs(self, owners, ix0, ix1, iy0, iy1):  # noqa: ANN001, ANN202
        """(cell, owner position) for every cell in each owner's index range."""
        wx = ix1 - ix0 + 1
        counts = wx * (iy1 - iy0 + 1)
        total = int(counts.sum())
        rep = np.repeat(np.arange(len(counts)), counts)
        offs = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        ix = ix0[rep] + offs % wx[rep]
        iy = iy0[rep] + offs // wx[rep]
        return iy * self.nx + ix, rep

    def _classify(self, ncell: int) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """Label every raster cell definite (grid index), EMPTY, or a candidate list (-2 - k)."""
        n = self.size
        e = np.array([edge for es in self.edges for edge in es], dtype=np.float64).reshape(-1, 4)
        e_grid = np.repeat(np.arange(n, dtype=np.int64), [len(es) for es in self.edges])
        e_count = np.array([len(es) for es in self.edges], dtype=np.int64)
        e_start = np.cumsum(e_count) - e_count
        x1, y1, x2, y2 = e[:, 0], e[:, 1], e[:, 2], e[:, 3]
        # 1. cells an edge passes through or near (padded cell box meets the segment): exact tests there
        t_cell, t_edge = self._pairs(e_grid, *self._ranges(np.minimum(x1, x2), y1, np.maximum(x1, x2), y2))
        ix, iy = t_cell % self.nx, t_cell // self.nx
        bx0, bx1 = self.x0 + ix * self.dx - _PAD, self.x0 + (ix + 1) * self.dx + _PAD
        by0, by1 = self.y0 + iy * self.dy - _PAD, self.y0 + (iy + 1) * self.dy + _PAD
        ax, ay = x1[t_edge], y1[t_edge]
        vx, vy = x2[t_edge] - ax, y2[t_edge] - ay
        pos = np.zeros(len(t_cell), dtype=np.int8)
        neg = np.zeros(len(t_cell), dtype=np.int8)
        for qx, qy in ((bx0, by0), (bx1, by0), (bx0, by1), (bx1, by1)):
            o = vx * (qy - ay) - vy * (qx - ax)
            pos |= o > 0
            neg |= o < 0
        meets = ~(pos.astype(bool) ^ neg.astype(bool)) | ((pos == 0) & (neg == 0))
        t_cell, t_grid = t_cell[meets], e_grid[t_edge[meets]]
        touched = np.zeros(ncell, dtype=bool)
        touched[t_cell] = True
        # 2. which grids contain each cell centre (crossing number, vectorised, in chunks)
        b = np.array(self.bboxes, dtype=np.float64)
        c_cell, c_grid = self._pairs(None, *self._ranges(b[:, 0], b[:, 1], b[:, 2], b[:, 3]))
        inside = np.zeros(len(c_cell), dtype=bool)
        step = 200_000
        for lo in range(0, len(c_cell), step):
            cc, cg = c_cell[lo:lo + step], c_grid[lo:lo + step]
            cx = self.x0 + (cc % self.nx + 0.5) * self.dx
            cy = self.y0 + (cc // self.nx + 0.5) * self.dy
            k = e_count[cg]
            row = np.repeat(np.arange(len(cc)), k)
            ei = np.repeat(e_start[cg], k) + (np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k))
            px, py = cx[row], cy[row]
            ex1, ey1, ex2, ey2 = x1[ei], y1[ei], x2[ei], y2[ei]
            cross = (ey1 <= py) & (py < ey2) & ((ex2 - ex1) * (py - ey1) - (ey2 - ey1) * (px - ex1) > 0)
            inside[lo:lo + step] = np.bincount(row, weights=cross, minlength=len(cc)) % 2 == 1
        in_cell, in_grid = c_cell[inside], c_grid[inside]
        contain = np.bincount(in_cell, minlength=ncell)
        owner = np.full(ncell, EMPTY, dtype=np.int32)
        owner[in_cell] = in_grid
        definite = (contain == 1) & ~touched
        cells = np.where(definite, owner, EMPTY).astype(np.int32)
        # 3. candidate lists: grids touching the cell, plus grids containing its centre (overlaps)
        need = touched | (contain > 1)
        keep = need[in_cell]
        key = np.sort(np.concatenate([t_cell * n + t_grid, in_cell[keep] * n + in_grid[keep]]))
        key = key[np.r_[True, key[1:] != key[:-1]]] if len(key) else key
        k_cell, k_grid = key // n, key % n
        if len(k_cell) == 0:
            return cells, []
        starts = np.flatnonzero(np.r_[True, k_cell[1:] != k_cell[:-1]])
        uniq = k_cell[starts]
        cells[uniq] = -2 - np.arange(len(uniq), dtype=np.int32)
        bounds = np.r_[starts, len(k_cell)].tolist()
        grids = k_grid.tolist()
        candidates = [tuple(grids[bounds[i]:bounds[i + 1]]) for i in range(len(uniq))]
        return cells, candidates

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
