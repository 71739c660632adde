"""Geography services: administrative areas, unit grids, point -> grid lookup, GeoJSON in and out.

Lookups use an in-process spatial index (`citybrain.geo.index`), built on first use from the grids in
the database and cached under the database's map revision (`geo_meta.revision`, a new random value
on every change). A process that changes grids invalidates its index at once; other processes pick the
change up within `REVISION_TTL` seconds. Edge semantics: a point on an edge or vertex shared by
several grids belongs to the covering grid with the lowest code; a point in no grid gives None.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import shapely
from shapely.geometry import shape
from sqlalchemy import delete, event, insert, select, text, update
from sqlalchemy.orm import Session

from citybrain.errors import Invalid
from citybrain.geo.index import GridIndex
from citybrain.geo.models import AREA_LEVELS, LEVEL_CODE_LENGTH, Area, Grid, Meta

REVISION_TTL = 1.0  # seconds a process trusts its cached map revision before re-reading it
_REV_KEY = "revision"
_GRID_CODE = re.compile(r"^\d{15}$")
_LEGACY_GRID_CODE = re.compile(r"^\d{14}$")
_AREA_CODE = re.compile(r"^(\d{6}|\d{9}|\d{12})$")
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_EQ = 111_320.0


# --- codes -------------------------------------------------------------------------------------------------


def level_of_code(code: str) -> str | None:
    """The area level a division code's length implies (6 district, 9 town, 12 community), or None."""
    for level, n in LEVEL_CODE_LENGTH.items():
        if len(code) == n and code.isdigit():
            return level
    return None


def normalise_grid_code(code: str) -> tuple[str, str | None]:
    """(15-digit code, legacy 14-digit code or None); legacy codes get a 0 before their 2-digit sequence."""
    code = (code or "").strip()
    if _GRID_CODE.match(code):
        return code, None
    if _LEGACY_GRID_CODE.match(code):
        return f"{code[:12]}0{code[12:]}", code
    raise Invalid(f"网格编码 {code!r} 无效：应为15位数字（12位社区代码+3位顺序码），或14位旧编码",
                  f"Invalid grid code {code!r}: 15 digits expected (12-digit community code + 3-digit "
                  f"sequence), or a legacy 14-digit code", errors=[{"field": "code", "message": "15 digits"}])


# --- geometry helpers --------------------------------------------------------------------------------------


def area_m2(geom: Any) -> float:
    """Approximate area in square metres of a WGS84 polygon (local equirectangular projection)."""
    if geom.is_empty:
        return 0.0
    lat0 = math.radians(geom.centroid.y)
    kx = _M_PER_DEG_LON_EQ * math.cos(lat0)
    projected = shapely.transform(geom, lambda c: c * [kx, _M_PER_DEG_LAT])
    return float(projected.area)


def _geometry_json(geom: Any) -> str:
    return shapely.to_geojson(geom)


def _bbox_cols(geom: Any) -> dict[str, float]:
    x0, y0, x1, y1 = geom.bounds
    return {"min_lon": x0, "min_lat": y0, "max_lon": x1, "max_lat": y1}


# --- revision and index cache ------------------------------------------------------------------------------

_index_lock = threading.Lock()
_indexes: OrderedDict[str, GridIndex] = OrderedDict()  # revision -> index (a few, most recent last)
_engine_revision: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> (revision, checked)
_postgis: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> bool


def invalidate() -> None:
    """Forget cached map revisions so the next lookup re-reads the database (after a change)."""
    with _index_lock:
        _engine_revision.clear()


def _bump_revision(session: Session) -> str:
    rev = uuid.uuid4().hex
    if session.get(Meta, _REV_KEY) is None:
        session.add(Meta(key=_REV_KEY, value=rev))
    else:
        session.execute(update(Meta).where(Meta.key == _REV_KEY).values(value=rev))
    session.flush()
    session.info["geo_changed"] = True
    event.listen(session, "after_commit", lambda _s: invalidate(), once=True)
    return rev


def _revision(session: Session) -> str:
    engine = session.get_bind()
    now = time.monotonic()
    hit = _engine_revision.get(engine)
    if hit is not None and now - hit[1] < REVISION_TTL and not session.info.get("geo_changed"):
        return hit[0]
    rev = session.scalar(select(Meta.value).where(Meta.key == _REV_KEY)) or "none"
    if not session.info.get("geo_changed"):
        _engine_revision[engine] = (rev, now)
    return rev


def grid_index(session: Session) -> GridIndex:
    """The spatial index of the grids in this database (built on first use, cached per revision)."""
    rev = _revision(session)
    idx = _indexes.get(rev)
    if idx is not None:
        return idx
    with _index_lock:
        idx = _indexes.get(rev)
        if idx is not None:
            return idx
        rows = session.execute(select(Grid.code, Grid.name, Grid.community_code, Grid.town_code,
                                      Grid.district_code, Grid.geojson)).all()
        geoms = shapely.from_geojson([r.geojson for r in rows]) if rows else []
        infos = [{"grid_code": r.code, "grid_name": r.name, "community_code": r.community_code,
                  "town_code": r.town_code, "district_code": r.district_code} for r in rows]
        idx = GridIndex([r.code for r in rows], list(geoms), infos)
        _indexes[rev] = idx
        while len(_indexes) > 4:
            _indexes.popitem(last=False)
        return idx


# --- lookups -----------------------------------------------------------------------------------------------


def locate(session: Session, *, lon: float, lat: float) -> dict | None:
    """The grid (and its community, town, district codes) covering a WGS84 point, or None."""
    idx = grid_index(session)
    gi = idx.lookup(float(lon), float(lat))
    return None if gi is None else dict(idx.infos[gi])


def locate_many(session: Session, *, points: Sequence[tuple[float, float]]) -> list[dict | None]:
    """`locate` for many (lon, lat) points at once (vectorised; same answers as `locate`)."""
    idx = grid_index(session)
    if not points:
        return []
    lons = [float(p[0]) for p in points]
    lats = [float(p[1]) for p in points]
    infos = idx.infos
    return [None if g < 0 else dict(infos[g]) for g in idx.lookup_many(lons, lats).tolist()]


def _feature(code: str, geojson: str, props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "id": code, "geometry": orjson.loads(geojson), "properties": props}


def _grid_props(g: Any) -> dict[str, Any]:
    props = {"code": g.code, "name": g.name, "level": "grid", "parent_code": g.community_code,
             "community_code": g.community_code, "town_code": g.town_code, "district_code": g.district_code,
             "area_m2": round(g.area_m2, 1)}
    if g.legacy_code:
        props["legacy_code"] = g.legacy_code
    for k, v in (g.props or {}).items():
        props.setdefault(k, v)
    return props


def _area_props(a: Any) -> dict[str, Any]:
    props = {"code": a.code, "name": a.name, "name_en": a.name_en, "level": a.level, "kind": a.kind,
             "parent_code": a.parent_code, "area_m2": round(a.area_m2, 1)}
    for k, v in (a.props or {}).items():
        props.setdefault(k, v)
    return props


def parse_bbox(value: str | Sequence[float] | None) -> tuple[float, float, float, float] | None:
    """`"minx,miny,maxx,maxy"` (or a 4-sequence) -> a checked bbox tuple; None stays None."""
    if value is None or value == "":
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        nums = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        nums = ()
    if len(nums) != 4 or not all(math.isfinite(n) for n in nums) or nums[0] > nums[2] or nums[1] > nums[3]:
        raise Invalid("bbox 应为 minx,miny,maxx,maxy 四个数（经度,纬度,经度,纬度，且 min <= max）",
                      "bbox must be minx,miny,maxx,maxy (lon,lat,lon,lat with min <= max)",
                      errors=[{"field": "bbox", "message": "minx,miny,maxx,maxy"}])
    return nums  # type: ignore[return-value]


def grids_geojson(session: Session, *, bbox: Sequence[float] | str | None = None,
                  community_code: str | None = None, limit: int | None = None) -> dict:
    """Grids as a GeoJSON FeatureCollection, optionally only those meeting a bbox or in one community."""
    q = select(Grid).order_by(Grid.code)
    box = parse_bbox(bbox) if isinstance(bbox, str) or bbox is None else parse_bbox(list(bbox))
    if box is not None:
        q = q.where(Grid.max_lon >= box[0], Grid.min_lon <= box[2], Grid.max_lat >= box[1], Grid.min_lat <= box[3])
    if community_code:
        q = q.where(Grid.community_code == community_code)
    if limit is not None:
        q = q.limit(limit + 1)
    rows = session.scalars(q).all()
    truncated = limit is not None and len(rows) > limit
    rows = rows[:limit] if truncated else rows
    out = {"type": "FeatureCollection", "features": [_feature(g.code, g.geojson, _grid_props(g)) for g in rows]}
    if limit is not None:
        out["truncated"] = truncated
    return out


def areas_geojson(session: Session, *, level: str | None = None, parent_code: str | None = None) -> dict:
    """Administrative areas as a GeoJSON FeatureCollection (optionally one level, or one parent's children)."""
    if level is not None and level not in AREA_LEVELS:
        raise Invalid(f"未知的区划级别 {level!r}（district/town/community）",
                      f"Unknown level {level!r} (district, town or community)",
                      errors=[{"field": "level", "message": "district | town | community"}])
    q = select(Area).order_by(Area.code)
    if level:
        q = q.where(Area.level == level)
    if parent_code:
        q = q.where(Area.parent_code == parent_code)
    return {"type": "FeatureCollection",
            "features": [_feature(a.code, a.geojson, _area_props(a)) for a in session.scalars(q)]}


def grid_codes_under(session: Session, *, area_code: str) -> list[str]:
    """Codes of the grids inside a district (6 digits), town (9), community (12), or the grid itself (15)."""
    code = (area_code or "").strip()
    col = {6: Grid.district_code, 9: Grid.town_code, 12: Grid.community_code, 15: Grid.code}.get(len(code))
    if col is None or not code.isdigit():
        if _LEGACY_GRID_CODE.match(code):
            col, code = Grid.code, normalise_grid_code(code)[0]
        else:
            return []
    return list(session.scalars(select(Grid.code).where(col == code).order_by(Grid.code)))


def _bbox_list(r: Any) -> list[float]:
    return [r.min_lon, r.min_lat, r.max_lon, r.max_lat]


def get_area(session: Session, *, code: str) -> dict | None:
    """One administrative area (properties, bbox, GeoJSON geometry), or None if unknown."""
    a = session.scalar(select(Area).where(Area.code == (code or "").strip()))
    if a is None:
        return None
    return {**_area_props(a), "bbox": _bbox_list(a), "geometry": orjson.loads(a.geojson)}


def get_grid(session: Session, *, code: str) -> dict | None:
    """One unit grid by its 15-digit (or legacy 14-digit) code, or None if unknown."""
    try:
        code15, _ = normalise_grid_code(code)
    except Invalid:
        return None
    g = session.scalar(select(Grid).where(Grid.code == code15))
    if g is None:
        return None
    return {**_grid_props(g), "name": g.name, "bbox": _bbox_list(g), "geometry": orjson.loads(g.geojson)}


def counts(session: Session) -> dict[str, int]:
    """How many areas of each level and how many grids are stored."""
    out = {level: 0 for level in AREA_LEVELS}
    for level, n in session.execute(text("SELECT level, COUNT(*) FROM geo_area GROUP BY level")).all():
        out[level] = n
    out["grid"] = session.scalar(text("SELECT COUNT(*) FROM geo_grid")) or 0
    return out


# --- storing (used by demo seeding and imports; callers audit and commit) ----------------------------------


def _as_geom(value: Any) -> Any:
    if isinstance(value, dict):
        return shape(value)
    if isinstance(value, str):
        return shapely.from_geojson(value)
    return value


def store_areas(session: Session, *, areas: Iterable[dict[str, Any]]) -> int:
    """Insert or replace areas (dicts with code, name, level, parent_code, geometry, ...); no commit."""
    rows = []
    for a in areas:
        geom = _as_geom(a["geometry"])
        rows.append({"code": a["code"], "name": a["name"], "name_en": a.get("name_en"), "level": a["level"],
                     "kind": a.get("kind"), "parent_code": a.get("parent_code"), "geojson": _geometry_json(geom),
                     "area_m2": area_m2(geom), "props": a.get("props") or {}, **_bbox_cols(geom)})
    if not rows:
        return 0
    codes = [r["code"] for r in rows]
    for chunk in _chunks(codes, 500):
        session.execute(delete(Area).where(Area.code.in_(chunk)))
    session.execute(insert(Area), rows)
    _sync_postgis(session, "geo_area", codes)
    return len(rows)


def store_grids(session: Session, *, grids: Iterable[dict[str, Any]]) -> int:
    """Insert or replace grids (dicts with code, name, geometry, optional props); bumps the map revision."""
    rows = []
    for g in grids:
        code, legacy = normalise_grid_code(g["code"])
        geom = _as_geom(g["geometry"])
        rows.append({"code": code, "legacy_code": legacy, "name": g["name"], "community_code": code[:12],
                     "town_code": code[:9], "district_code": code[:6], "geojson": _geometry_json(geom),
                     "area_m2": area_m2(geom), "props": g.get("props") or {}, **_bbox_cols(geom)})
    if not rows:
        return 0
    codes = [r["code"] for r in rows]
    for chunk in _chunks(codes, 500):
        session.execute(delete(Grid).where(Grid.code.in_(chunk)))
    session.execute(insert(Grid), rows)
    _sync_postgis(session, "geo_grid", codes)
    _bump_revision(session)
    return len(rows)


def _chunks(items: list, n: int) -> Iterable[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


# --- PostGIS -----------------------------------------------------------------------------------------------


def postgis_enabled(session: Session) -> bool:
    """True on PostgreSQL when the PostGIS `geom` columns exist (created by the migration if possible)."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    hit = _postgis.get(bind)
    if hit is None:
        hit = bool(session.scalar(text(
            "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'geo_grid' AND column_name = 'geom'")))
        _postgis[bind] = hit
    return hit


def _sync_postgis(session: Session, table: str, codes: list[str]) -> None:
    if not codes or not postgis_enabled(session):
        return
    session.execute(text(
        f"UPDATE {table} SET geom = ST_Multi(ST_SetSRID(ST_GeomFromGeoJSON(geojson), 4326)) "
        "WHERE code = ANY(:codes)"), {"codes": codes})


def locate_postgis(session: Session, *, lon: float, lat: float) -> str | None:
    """The covering grid's code by a PostGIS query (ST_Covers, lowest code first); None without PostGIS."""
    if not postgis_enabled(session):
        return None
    return session.scalar(text(
        "SELECT code FROM geo_grid WHERE ST_Covers(geom, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)) "
        "ORDER BY code LIMIT 1"), {"lon": float(lon), "lat": float(lat)})
