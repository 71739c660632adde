"""Geo's protected actions for the role x action matrix (see tests/core/actions.py)."""

from __future__ import annotations

from tests.core.actions import Action

READ = ("geo.read", "geo.manage")
GRID = "440115001001001"


def _grid_doc(ctx) -> dict:  # noqa: ANN001
    """A one-feature grid collection with a fresh code (far from the demo district, so no overlap)."""
    n = int(ctx.uid())
    x = 100 + (n % 300) * 0.01
    ring = [[x, 10], [x + 0.001, 10], [x + 0.001, 10.001], [x, 10.001], [x, 10]]
    return {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {
        "code": f"440115001001{600 + n % 300:03d}", "name": f"矩阵网格{n}"},
        "geometry": {"type": "Polygon", "coordinates": [ring]}}]}


def _area_doc(ctx) -> dict:  # noqa: ANN001
    n = int(ctx.uid())
    ring = [[120, 30], [120.001, 30], [120.001, 30.001], [120, 30.001], [120, 30]]
    return {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {
        "code": "440115001001", "name": f"金洲社区{n}"}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}


ACTIONS = [
    Action("GET", "/api/v1/geo/areas", READ, params={"level": "town"}),
    Action("GET", "/api/v1/geo/areas/{code}", READ, prepare=lambda _ctx: {"code": "440115"}),
    Action("GET", "/api/v1/geo/grids", READ, params={"bbox": "113.50,22.74,113.52,22.76"}),
    Action("GET", "/api/v1/geo/grids/{code}", READ, prepare=lambda _ctx: {"code": GRID}),
    Action("GET", "/api/v1/geo/locate", READ, params={"lon": 113.55, "lat": 22.78}),
    Action("POST", "/api/v1/geo/import/grids", "geo.manage", body=_grid_doc),
    Action("POST", "/api/v1/geo/import/areas", "geo.manage", body=_area_doc),
    Action("GET", "/api/v1/geo/imports", "geo.manage"),
    Action("GET", "/api/v1/geo/imports/{import_id}/rejected", "geo.manage", prepare=lambda ctx: {"import_id": _an_import(ctx)}),
]


def _an_import(ctx) -> int:  # noqa: ANN001
    """An import (made on the console) whose rejects can be listed."""
    from citybrain import context
    from citybrain.geo import service

    context.set_principal(context.SYSTEM)
    with ctx.db.write() as s:
        return service.import_geojson(s, kind="grid", data={"type": "FeatureCollection", "features": [{}]},
                                      source="matrix")["import_id"]
