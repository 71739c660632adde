"""`citybrain bench geo`: point -> grid lookups with 10,000 unit grids, in process.

Builds 10,000 grids (a 100 x 100 jittered lattice over the demo district's bbox, 100 communities) in a
temporary SQLite database through the service, then times random points (about 17% outside every grid):

* `lookups_per_s` — single calls of the public `service.locate(session, lon=, lat=)`;
* `batch_lookups_per_s` — `service.locate_many(session, points=...)`;
* baselines in the same process: a shapely 2 STRtree queried point by point (`covers`, lowest code),
  the same STRtree queried with all points at once (vectorised GEOS), and the naive database way
  (candidates by bbox columns in SQL, then shapely `covers`).

Every answer of `locate` is compared with the STRtree's: `mismatches` must be 0.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from citybrain import demo_district as dd

N_SIDE = 100  # 100 x 100 = 10,000 grids


def _grids() -> list[dict[str, Any]]:
    from citybrain.geo.demo import cell, lattice

    verts = lattice(N_SIDE, N_SIDE, dd.BBOX, seed=7)
    out = []
    for i in range(N_SIDE):
        for j in range(N_SIDE):
            ci = (i // 10) * 10 + j // 10  # 100 communities of 10 x 10 grids, 5 towns of 20 communities
            code = f"{dd.DISTRICT_CODE}{1 + ci // 20:03d}{1 + ci % 20:03d}{(9 - j % 10) * 10 + i % 10 + 1:03d}"
            out.append({"code": code, "name": f"基准网格{code[-6:]}", "geometry": cell(verts, i, j)})
    return out


def _points(n: int, seed: int) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    x0, y0, x1, y1 = dd.BBOX
    mx, my = (x1 - x0) * 0.05, (y1 - y0) * 0.05  # ~17% of the points fall outside the grids
    return [(rng.uniform(x0 - mx, x1 + mx), rng.uniform(y0 - my, y1 + my)) for _ in range(n)]


def _rate(n: int, seconds: float) -> int:
    return int(n / seconds) if seconds > 0 else 0


def bench_geo(quick: bool = False) -> dict:
    """Point -> grid lookups per second with 10,000 grids (goal >= 100,000/s), against shapely and SQL."""
    from sqlalchemy import select

    from citybrain import context
    from citybrain.app import startup
    from citybrain.config import Settings
    from citybrain.db import Database, set_db
    from citybrain.geo import service
    from citybrain.geo.models import Grid

    n_single = 100_000 if quick else 1_000_000
    n_batch = 200_000 if quick else 1_000_000
    n_strtree = 20_000 if quick else 100_000
    n_sql = 500 if quick else 3_000
    context.set_principal(context.SYSTEM)
    with tempfile.TemporaryDirectory(prefix="citybrain-bench-geo-") as tmp:
        db = Database(Settings(data_dir=Path(tmp), secret_key="bench-geo-secret"))
        set_db(db)
        try:
            startup(db)
            grids = _grids()
            t0 = time.perf_counter()
            with db.write() as s:
                service.store_grids(s, grids=grids)
                s.commit()
            store_s = time.perf_counter() - t0
            service.invalidate()
            with db.read() as s:
                t0 = time.perf_counter()
                idx = service.grid_index(s)
                build_s = time.perf_counter() - t0

                pts = _points(n_single, seed=1)
                locate = service.locate
                t0 = time.perf_counter()
                single = [locate(s, lon=x, lat=y) for x, y in pts]
                single_s = time.perf_counter() - t0

                bpts = _points(n_batch, seed=2)
                t0 = time.perf_counter()
                batch = service.locate_many(s, points=bpts)
                batch_s = time.perf_counter() - t0

                # baseline 1: shapely STRtree, one point at a time (covers, lowest code wins)
                codes = idx.codes
                tree = shapely.STRtree(idx.geoms)
                spts = pts[:n_strtree]
                t0 = time.perf_counter()
                base_single = []
                for x, y in spts:
                    hits = tree.query(shapely.Point(x, y), predicate="intersects")
                    base_single.append(codes[int(hits.min())] if len(hits) else None)
                strtree_s = time.perf_counter() - t0

                # baseline 2: the same STRtree, all points at once (vectorised GEOS)
                t0 = time.perf_counter()
                parr = shapely.points(np.asarray(bpts))
                pi, gi = tree.query(parr, predicate="intersects")
                best = np.full(len(bpts), -1, dtype=np.int64)
                order = np.lexsort((gi, pi))
                first = np.ones(len(order), dtype=bool)
                first[1:] = pi[order][1:] != pi[order][:-1]
                best[pi[order][first]] = gi[order][first]
                strtree_batch_s = time.perf_counter() - t0

                # baseline 3: the database's bbox columns, then an exact test per candidate
                qpts = pts[:n_sql]
                stmt = select(Grid.code, Grid.geojson).order_by(Grid.code)
                t0 = time.perf_counter()
                for x, y in qpts:
                    rows = s.execute(stmt.where(Grid.min_lon <= x, Grid.max_lon >= x, Grid.min_lat <= y,
                                                Grid.max_lat >= y)).all()
                    p = shapely.Point(x, y)
                    next((r.code for r in rows if shapely.covers(shapely.from_geojson(r.geojson), p)), None)
                sql_s = time.perf_counter() - t0

            mismatches = sum(1 for a, b in zip(single, base_single, strict=False) if (a and a["grid_code"]) != b)
            mismatches += sum(1 for a, g in zip(batch, best.tolist(), strict=True)
                              if (a and a["grid_code"]) != (codes[g] if g >= 0 else None))
            inside = sum(1 for r in single if r is not None)
        finally:
            set_db(None)
            db.dispose()
    lookups = _rate(n_single, single_s)
    return {
        "bench": "geo",
        "quick": quick,
        "grids": len(grids),
        "lookups_per_s": lookups,
        "goal_lookups_per_s": 100_000,
        "goal_met": lookups >= 100_000,
        "batch_lookups_per_s": _rate(n_batch, batch_s),
        "baseline_strtree_per_point_per_s": _rate(len(spts), strtree_s),
        "baseline_strtree_vectorised_per_s": _rate(n_batch, strtree_batch_s),
        "baseline_sql_bbox_then_covers_per_s": _rate(len(qpts), sql_s),
        "speedup_vs_strtree_per_point": round(lookups / max(1, _rate(len(spts), strtree_s)), 1),
        "points_single": n_single,
        "points_batch": n_batch,
        "share_inside": round(inside / n_single, 3),
        "mismatches_vs_strtree": mismatches,
        "index_build_s": round(build_s, 3),
        "store_10k_grids_s": round(store_s, 3),
        "index_cells": idx.stats["cells"],
        "index_definite_cells": idx.stats["definite_cells"],
        "index_candidate_cells": idx.stats["candidate_cells"],
    }


BENCHES = {"geo": bench_geo}
