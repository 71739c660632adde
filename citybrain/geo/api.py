"""Geography API: areas and grids as GeoJSON, point lookup, imports (时空一张图 base layer)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from citybrain.context import Principal
from citybrain.deps import ReadDB, WriteDB, require, require_any
from citybrain.errors import NotFound
from citybrain.geo import service
from citybrain.geo.schemas import Feature, FeatureCollection, GeoJSONIn, ImportReport, LocateOut, RejectDetail

router = APIRouter(prefix="/api/v1/geo", tags=["geo 时空一张图"])
public_router = APIRouter(prefix="/api/v1/public/geo", tags=["geo 时空一张图"])
routers = [router, public_router]
# Reading the map: `geo.read`, or `geo.manage` (the administrator who maintains it may look at it).
GeoReader = Annotated[Principal, Depends(require_any("geo.read", "geo.manage"))]
_NUM = r" *[-+]?\d{1,3}(\.\d{0,17})?([eE][-+]?\d{1,2})? *"
_BBOX = rf"^{_NUM}(,{_NUM}){{3}}$"


class _JSON(Response):
    media_type = "application/json"


def _json(doc: dict) -> Response:
    import orjson

    return _JSON(orjson.dumps(doc, default=str, option=orjson.OPT_UTC_Z))


@router.get("/areas", response_model=FeatureCollection, summary="行政区划 Administrative areas (GeoJSON)")
def areas(db: ReadDB, _who: GeoReader,
          level: Annotated[Literal["district", "town", "community"] | None, Query()] = None,
          parent_code: Annotated[str | None, Query(pattern=r"^\d{6}(\d{3})?$")] = None) -> Response:
    return _json(service.areas_geojson(db, level=level, parent_code=parent_code))


@router.get("/areas/{code}", response_model=Feature, summary="区划详情 One area (GeoJSON Feature)")
def area(code: str, db: ReadDB, _who: GeoReader) -> Response:
    a = service.get_area(db, code=code)
    if a is None:
        raise NotFound(f"区划 {code} 不存在", f"Area {code} not found")
    geometry = a.pop("geometry")
    a.pop("bbox")
    return _json({"type": "Feature", "id": a["code"], "geometry": geometry, "properties": a})


@router.get("/grids", response_model=FeatureCollection,
            summary="单元网格 Unit grids in the visible area (GeoJSON; bbox=minx,miny,maxx,maxy)")
def grids(db: ReadDB, _who: GeoReader,
          bbox: Annotated[str | None, Query(max_length=200, pattern=_BBOX, description="minx,miny,maxx,maxy (WGS84)")] = None,
          community_code: Annotated[str | None, Query(pattern=r"^\d{12}$")] = None,
          limit: Annotated[int, Query(ge=1, le=20_000)] = 5000) -> Response:
    return _json(service.grids_geojson(db, bbox=bbox, community_code=community_code, limit=limit))


@router.get("/grids/{code}", response_model=Feature, summary="网格详情 One unit grid (15- or legacy 14-digit code)")
def grid(code: str, db: ReadDB, _who: GeoReader) -> Response:
    g = service.get_grid(db, code=code)
    if g is None:
        raise NotFound(f"网格 {code} 不存在", f"Grid {code} not found")
    geometry = g.pop("geometry")
    g.pop("bbox")
    return _json({"type": "Feature", "id": g["code"], "geometry": geometry, "properties": g})


@router.get("/locate", response_model=LocateOut, summary="坐标定位网格 Which grid covers a point (WGS84)")
def locate(db: ReadDB, _who: GeoReader,
           lon: Annotated[float, Query(ge=-180, le=180)], lat: Annotated[float, Query(ge=-90, le=90)]) -> LocateOut:
    hit = service.locate(db, lon=lon, lat=lat)
    if hit is None:
        return LocateOut(lon=lon, lat=lat, found=False)
    names = service.area_names(db, codes=[hit["community_code"], hit["town_code"]])
    return LocateOut(lon=lon, lat=lat, found=True, **hit, community_name=names.get(hit["community_code"]),
                     town_name=names.get(hit["town_code"]))


def _import(kind: str, body: GeoJSONIn, db, source: str | None) -> dict:  # noqa: ANN001
    return service.import_geojson(db, kind=kind, data=body.model_dump(), source=source or "api")


@router.post("/import/areas", response_model=ImportReport, summary="导入行政区划 Import areas (GeoJSON)")
def import_areas(body: GeoJSONIn, db: WriteDB, _who: Annotated[Principal, Depends(require("geo.manage"))],
                 source: Annotated[str | None, Query(max_length=300)] = None) -> dict:
    return _import("area", body, db, source)


@router.post("/import/grids", response_model=ImportReport, summary="导入单元网格 Import unit grids (GeoJSON)")
def import_grids(body: GeoJSONIn, db: WriteDB, _who: Annotated[Principal, Depends(require("geo.manage"))],
                 source: Annotated[str | None, Query(max_length=300)] = None) -> dict:
    return _import("grid", body, db, source)


@router.get("/imports", response_model=list[ImportReport], summary="导入记录 Recent imports")
def imports(db: ReadDB, _who: Annotated[Principal, Depends(require("geo.manage"))],
            limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict]:
    return service.list_imports(db, limit=limit)


@router.get("/imports/{import_id}/rejected", response_model=list[RejectDetail],
            summary="被拒要素 Features an import rejected, with reasons")
def rejected(import_id: Annotated[int, Path(ge=1, le=2**31 - 1)], db: ReadDB, _who: Annotated[Principal, Depends(require("geo.manage"))]) -> list[dict]:
    return service.import_rejects(db, import_id=import_id)


@public_router.get("/outline", response_model=FeatureCollection,
                   summary="辖区边界（公开）The district and town boundaries with names, no login (for the citizen pages)")
def outline(request: Request, db: ReadDB) -> Response:
    """Boundaries, codes and names of the district and its towns only; cached by the browser and revalidated
    with the map revision (ETag)."""
    body, rev = service.public_outline(db)
    etag = f'"{rev}"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=300"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
