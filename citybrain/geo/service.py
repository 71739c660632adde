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
from collections.abc import Callable, Iterable, Sequence
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


_epoch = [0]  # bumped by invalidate(): drops the per-session shortcuts too
_SESSION_KEY = "geo_index"


def invalidate() -> None:
    """Forget cached map revisions so the next lookup re-reads the database (after a change)."""
    with _index_lock:
        _engine_revision.clear()
        _epoch[0] += 1


def _bump_revision(session: Session) -> str:
    rev = uuid.uuid4().hex
    if session.get(Meta, _REV_KEY) is None:
        session.add(Meta(key=_REV_KEY, value=rev))
    else:
        session.execute(update(Meta).where(Meta.key == _REV_KEY).values(value=rev))
    session.flush()
    session.info["geo_changed"] = True
    session.info.pop(_SESSION_KEY, None)
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
    info = session.info
    hit = info.get(_SESSION_KEY)
    now = time.monotonic()
    if hit is not None and hit[2] == _epoch[0] and now - hit[1] < REVISION_TTL:
        return hit[0]
    idx = _index_for(session)
    if not info.get("geo_changed"):
        info[_SESSION_KEY] = (idx, now, _epoch[0])
    return idx


def _per_revision(cache: OrderedDict[str, Any], rev: str, build: Callable[[], Any]) -> Any:
    """`cache[rev]`, built once (under the lock) on first use; the cache keeps the last few revisions."""
    hit = cache.get(rev)
    if hit is not None:
        return hit
    with _index_lock:
        hit = cache.get(rev)
        if hit is None:
            hit = cache[rev] = build()
            while len(cache) > 4:
                cache.popitem(last=False)
        return hit


def _index_for(session: Session) -> GridIndex:
    def build() -> GridIndex:
        rows = session.execute(select(Grid.code, Grid.name, Grid.community_code, Grid.town_code,
                                      Grid.district_code, Grid.geojson)).all()
        geoms = shapely.from_geojson([r.geojson for r in rows]) if rows else []
        infos = [{"grid_code": r.code, "grid_name": r.name, "community_code": r.community_code,
                  "town_code": r.town_code, "district_code": r.district_code} for r in rows]
        return GridIndex([r.code for r in rows], list(geoms), infos)

    return _per_revision(_indexes, _revision(session), build)


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
    """`"minx,miny,maxx,maxy"` (or a 4-sequence) -> a checked bbox tuple (corners in either order); None stays None."""
    if value is None or value == "":
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        nums = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        nums = ()
    if len(nums) != 4 or not all(math.isfinite(n) for n in nums):
        raise Invalid("bbox 应为 minx,miny,maxx,maxy 四个数（经度,纬度,经度,纬度）",
                      "bbox must be four numbers minx,miny,maxx,maxy (lon,lat,lon,lat)",
                      errors=[{"field": "bbox", "message": "minx,miny,maxx,maxy"}])
    a, b, c, d = nums
    return (min(a, c), min(b, d), max(a, c), max(b, d))


def cluster_points(session: Session, stmt: Any, *, lon: Any, lat: Any, bbox: Sequence[float],
                   sums: dict[str, Any] | None = None) -> dict[str, Any]:
    """The points `stmt` selects, counted per cell of the visible area (about 48 x 32 cells) as a GeoJSON layer.

    One feature per non-empty cell at the mean position of its points, with `cluster: true`, `count` and one
    property per entry of `sums` (a column expression summed per cell, e.g. `case((status == 'online', 1), else_=0)`);
    the collection carries `clustered: true` and `total`. Map layers answer with this when the view holds more points
    than the page can draw.
    """
    from sqlalchemy import Integer, cast, func

    x1, y1, x2, y2 = (float(v) for v in bbox)
    cell = max((x2 - x1) / 48, (y2 - y1) / 32, 1e-6)
    sqlite = session.get_bind().dialect.name == "sqlite"  # its CAST truncates (>= 0 here); elsewhere floor first

    def index(expr: Any) -> Any:
        return cast(expr if sqlite else func.floor(expr), Integer)

    ix = index((lon - x1) / cell).label("ix")
    iy = index((lat - y1) / cell).label("iy")
    extra = [func.sum(expr).label(name) for name, expr in (sums or {}).items()]
    q = stmt.with_only_columns(ix, iy, func.count().label("n"), func.avg(lon).label("lon"), func.avg(lat).label("lat"),
                               *extra).group_by(ix, iy)
    feats, total = [], 0
    for r in session.execute(q):
        total += r.n
        props = {"cluster": True, "count": r.n}
        for name in sums or {}:
            props[name] = int(getattr(r, name) or 0)
        feats.append({"type": "Feature", "id": f"c{r.ix}_{r.iy}",
                      "geometry": {"type": "Point", "coordinates": [round(r.lon, 6), round(r.lat, 6)]},
                      "properties": props})
    return {"type": "FeatureCollection", "features": feats, "clustered": True, "total": total}


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


# --- the public outline and the service area ---------------------------------------------------------------------

_outlines: OrderedDict[str, tuple[bytes, Any]] = OrderedDict()


def _outline(session: Session) -> tuple[bytes, Any]:
    """(GeoJSON bytes of the district and towns with code and names only, the district's prepared shape or None),
    built once per map revision."""
    def build() -> tuple[bytes, Any]:
        rows = session.execute(select(Area.code, Area.name, Area.name_en, Area.level, Area.parent_code, Area.geojson)
                               .where(Area.level.in_(("district", "town"))).order_by(Area.code)).all()
        doc = {"type": "FeatureCollection", "features": [
            _feature(r.code, r.geojson, {"code": r.code, "name": r.name, "name_en": r.name_en, "level": r.level,
                                         "parent_code": r.parent_code}) for r in rows]}
        parts = [r.geojson for r in rows if r.level == "district"] or [r.geojson for r in rows]
        area = shapely.union_all(shapely.from_geojson(parts)) if parts else None
        if area is not None:
            shapely.prepare(area)
        return orjson.dumps(doc), area

    return _per_revision(_outlines, _revision(session), build)


def public_outline(session: Session) -> tuple[bytes, str]:
    """The district and town boundaries with their codes and names (nothing else) as GeoJSON bytes, and an ETag:
    what the citizen pages draw without a login."""
    return _outline(session)[0], _revision(session)


def in_service_area(session: Session, *, lon: float, lat: float) -> bool | None:
    """Whether a WGS84 point lies in the district (its boundary counts as inside); None when no district or town
    boundary is loaded (nothing to check against)."""
    area = _outline(session)[1]
    if area is None:
        return None
    return bool(area.intersects(shapely.Point(float(lon), float(lat))))


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
    _bump_revision(session)  # the outline (public map, service-area check) follows the areas
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


# --- import and export -------------------------------------------------------------------------------------

KINDS = ("area", "grid")
OVERLAP_TOLERANCE_DEG2 = 1e-10  # ~1.2 m² at this latitude: smaller overlaps are rounding, not data errors
MAX_FEATURES = 100_000


def _dump(obj: Any) -> str:
    """JSON text of anything a client sent (orjson, falling back to json for e.g. huge integers)."""
    try:
        return orjson.dumps(obj, default=str).decode()
    except TypeError:
        import json

        return json.dumps(obj, default=str)


def _text(value: str) -> str:
    """A client string made storable everywhere: no NUL characters, no lone surrogates."""
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def _clean(obj: Any) -> Any:
    """Client-sent properties made storable: integers beyond 64 bits become strings, strings are cleaned."""
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, str):
        return _text(obj)
    if isinstance(obj, int):
        return obj if -(2**63) <= obj < 2**63 else str(obj)
    if isinstance(obj, dict):
        return {_text(str(k)): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _load(text_: str) -> Any:
    try:
        return orjson.loads(text_)
    except orjson.JSONDecodeError:
        import json

        return json.loads(text_)


class _Reject(Exception):
    def __init__(self, zh: str, en: str):
        super().__init__(en)
        self.zh, self.en = zh, en


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise Invalid(f"未知的导入类型 {kind!r}（area 或 grid）", f"Unknown kind {kind!r} (area or grid)",
                      errors=[{"field": "kind", "message": "area | grid"}])


def _load_collection(data: Any) -> list[Any]:
    if isinstance(data, bytes | str):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise Invalid(f"文件不是有效的 JSON：{exc}", f"Not valid JSON: {exc}",
                          errors=[{"field": "file", "message": str(exc)}]) from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection" or not isinstance(
            data.get("features"), list):
        raise Invalid("应为 GeoJSON FeatureCollection（type 与 features 数组）",
                      "Expected a GeoJSON FeatureCollection (type and a features array)",
                      errors=[{"field": "type", "message": "FeatureCollection"}])
    feats = data["features"]
    if len(feats) > MAX_FEATURES:
        raise Invalid(f"要素过多（{len(feats)}），单次最多 {MAX_FEATURES} 个",
                      f"Too many features ({len(feats)}); at most {MAX_FEATURES} per import",
                      errors=[{"field": "features", "message": f"max {MAX_FEATURES}"}])
    return feats


def _prop_str(props: dict[str, Any], *keys: str) -> str | None:
    for k in keys:
        v = props.get(k)
        if v is None or v == "":
            continue
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise _Reject(f"属性 {k} 应为字符串", f"property {k} must be a string")
        v = str(v).strip()
        if _text(v) != v or any(ord(ch) < 32 for ch in v):
            raise _Reject(f"属性 {k} 含控制字符或无效字符", f"property {k} contains control or invalid characters")
        return v
    return None


def _geometry(feat: dict[str, Any]) -> Any:
    g = feat.get("geometry")
    if not isinstance(g, dict) or g.get("type") not in ("Polygon", "MultiPolygon"):
        raise _Reject("几何应为 Polygon 或 MultiPolygon", "geometry must be a Polygon or MultiPolygon")
    try:
        geom = shape(g)
    except Exception as exc:  # noqa: BLE001 - shapely raises many kinds on malformed coordinates
        raise _Reject(f"几何坐标无法解析：{exc}", f"geometry coordinates cannot be read: {exc}") from None
    if geom.is_empty:
        raise _Reject("几何为空", "geometry is empty")
    x0, y0, x1, y1 = geom.bounds
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise _Reject("坐标含非数值", "coordinates are not finite numbers")
    if x0 < -180 or x1 > 180 or y0 < -90 or y1 > 90:
        raise _Reject("坐标超出 WGS84 经纬度范围（应为 经度,纬度）",
                      "coordinates outside WGS84 lon/lat range (expected lon,lat order)")
    if not geom.is_valid:
        reason = shapely.is_valid_reason(geom)
        raise _Reject(f"几何无效：{reason}", f"invalid geometry: {reason}")
    if geom.area <= 0:
        raise _Reject("面积为零", "polygon has zero area")
    if geom.has_z:
        geom = shapely.force_2d(geom)
    return geom


def _area_row(feat: dict[str, Any]) -> dict[str, Any]:
    props = feat.get("properties") or {}
    if not isinstance(props, dict):
        raise _Reject("properties 应为对象", "properties must be an object")
    code = _prop_str(props, "code", "adcode", "division_code")
    if not code or not _AREA_CODE.match(code):
        raise _Reject(f"区划代码 {code!r} 无效：应为6位（区县）、9位（街镇）或12位（社区村）数字",
                      f"area code {code!r} invalid: 6 (district), 9 (town) or 12 (community) digits")
    level = level_of_code(code)
    given = _prop_str(props, "level")
    if given and given != level:
        raise _Reject(f"级别 {given!r} 与代码长度不符（应为 {level}）",
                      f"level {given!r} does not match the code's length ({level} expected)")
    name = _prop_str(props, "name")
    if not name or len(name) > 100:
        raise _Reject("名称必填，最多100字", "name is required (at most 100 characters)")
    parent = _prop_str(props, "parent_code", "parent")
    expected_parent = {"town": code[:6], "community": code[:9]}.get(level)
    if parent and expected_parent and parent != expected_parent:
        raise _Reject(f"上级代码 {parent} 与代码 {code} 不符（应为 {expected_parent}）",
                      f"parent code {parent} does not match code {code} ({expected_parent} expected)")
    name_en = _prop_str(props, "name_en")
    kind = _prop_str(props, "kind")
    extra = {k: v for k, v in props.items() if k not in (
        "code", "adcode", "division_code", "level", "name", "name_en", "parent_code", "parent", "kind", "area_m2")}
    return {"code": code, "name": name, "name_en": name_en[:160] if name_en else None, "level": level,
            "kind": kind[:12] if kind else None, "parent_code": parent or expected_parent, "props": _clean(extra),
            "geometry": _geometry(feat)}


def _grid_row(feat: dict[str, Any]) -> dict[str, Any]:
    props = feat.get("properties") or {}
    if not isinstance(props, dict):
        raise _Reject("properties 应为对象", "properties must be an object")
    raw = _prop_str(props, "code", "grid_code")
    try:
        code, legacy = normalise_grid_code(raw or "")
    except Invalid:
        raise _Reject(f"网格编码 {raw!r} 无效：应为15位数字（12位社区代码+3位顺序码），或14位旧编码",
                      f"grid code {raw!r} invalid: 15 digits (12-digit community code + 3-digit sequence) "
                      "or a legacy 14-digit code") from None
    level = _prop_str(props, "level")
    if level and level != "grid":
        raise _Reject(f"级别 {level!r} 不是 grid", f"level {level!r} is not grid")
    parent = _prop_str(props, "parent_code", "community_code", "parent")
    if parent and parent != code[:12]:
        raise _Reject(f"所属社区 {parent} 与网格编码前12位 {code[:12]} 不符",
                      f"community {parent} does not match the grid code's first 12 digits {code[:12]}")
    name = _prop_str(props, "name") or f"网格{code}"
    if len(name) > 100:
        raise _Reject("名称最多100字", "name is at most 100 characters")
    skip = ("code", "grid_code", "level", "name", "parent_code", "community_code", "parent", "town_code",
            "district_code", "legacy_code", "area_m2")
    return {"code": code, "legacy": legacy, "name": name, "props": _clean({k: v for k, v in props.items() if k not in skip}),
            "geometry": _geometry(feat)}


def _overlaps(session: Session, kind: str, rows: list[dict[str, Any]]) -> dict[int, tuple[str, str]]:
    """Rows (by position) whose polygon overlaps a kept polygon of the same kind/level, with the reason."""
    model = Grid if kind == "grid" else Area
    new_codes = {r["code"] for r in rows}
    q = select(model.code, model.geojson)
    if kind == "area":
        levels = {r["level"] for r in rows}
        q = q.where(Area.level.in_(levels))
        q = q.add_columns(Area.level)
    existing = [r for r in session.execute(q).all() if r.code not in new_codes]
    geoms = list(shapely.from_geojson([r.geojson for r in existing])) if existing else []
    labels = [(r.code, getattr(r, "level", "grid")) for r in existing]
    base = len(geoms)
    geoms += [r["geometry"] for r in rows]
    labels += [(r["code"], r.get("level", "grid")) for r in rows]
    tree = shapely.STRtree(geoms)
    bad: dict[int, tuple[str, str]] = {}
    for i in range(len(rows)):
        gi = base + i
        for j in sorted(tree.query(geoms[gi], predicate="intersects").tolist()):
            if j == gi or labels[j][1] != labels[gi][1]:
                continue
            if j >= base and (j >= gi or (j - base) in bad):
                continue  # only check against kept data and earlier accepted rows
            if shapely.intersection(geoms[gi], geoms[j]).area > OVERLAP_TOLERANCE_DEG2:
                bad[i] = (f"与 {labels[j][0]} 重叠", f"overlaps {labels[j][0]}")
                break
    return bad


def import_geojson(session: Session, *, kind: str, data: Any, source: str | None = None) -> dict:
    """Import a FeatureCollection of areas or grids: valid features are stored (replacing the same codes),
    bad ones are kept in `geo_import_rejected` with their reason; audited; returns the import report."""
    from citybrain import bus, context
    from citybrain.audit import service as audit
    from citybrain.geo.models import Import, Rejected

    _check_kind(kind)
    feats = _load_collection(data)
    if session.get_bind().dialect.name == "postgresql":  # one import at a time (SQLite: BEGIN IMMEDIATE)
        session.execute(text("SELECT pg_advisory_xact_lock(7349202)"))
    rows: list[dict[str, Any]] = []
    positions: list[int] = []
    rejects: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, feat in enumerate(feats):
        try:
            if not isinstance(feat, dict) or feat.get("type") != "Feature":
                raise _Reject("不是 GeoJSON Feature", "not a GeoJSON Feature")
            row = _area_row(feat) if kind == "area" else _grid_row(feat)
            if row["code"] in seen:
                raise _Reject(f"编码 {row['code']} 在文件中重复", f"code {row['code']} appears twice in the file")
            seen.add(row["code"])
            rows.append(row)
            positions.append(i)
        except _Reject as r:
            code = None
            if isinstance(feat, dict) and isinstance(feat.get("properties"), dict):
                c = feat["properties"].get("code")
                code = _text(str(c))[:40] if c is not None else None
            rejects.append({"index": i, "code": code, "reason_zh": _text(r.zh)[:400], "reason_en": _text(r.en)[:400],
                            "feature": _dump(feat)})
    if rows:
        bad = _overlaps(session, kind, rows)
        if bad:
            for k in sorted(bad):
                rejects.append({"index": positions[k], "code": rows[k]["code"], "reason_zh": bad[k][0],
                                "reason_en": bad[k][1], "feature": _dump(feats[positions[k]])})
            rows = [r for k, r in enumerate(rows) if k not in bad]
    rejects.sort(key=lambda r: r["index"])
    model = Area if kind == "area" else Grid
    codes = [r["code"] for r in rows]
    existing = set()
    for chunk in _chunks(codes, 500):
        existing |= set(session.scalars(select(model.code).where(model.code.in_(chunk))))
    if kind == "area":
        store_areas(session, areas=rows)
    else:
        store_grids(session, grids=[{"code": r["legacy"] or r["code"], "name": r["name"], "props": r["props"],
                                     "geometry": r["geometry"]} for r in rows])
    who = context.actor()
    imp = Import(kind=kind, source=_text(source or "")[:300] or None, actor=who.label[:100], total=len(feats),
                 created=len(rows) - len(existing), updated=len(existing), rejected=len(rejects))
    session.add(imp)
    session.flush()
    if rejects:
        session.execute(insert(Rejected), [
            {"import_id": imp.id, "feature_index": r["index"], "code": r["code"], "reason_zh": r["reason_zh"],
             "reason_en": r["reason_en"], "feature": r["feature"]} for r in rejects])
    report = import_report(imp, rejects)
    if rows:
        bus.publish(session, "geo.map.changed", {"kind": kind, "import_id": imp.id, "created": imp.created,
                                                 "updated": imp.updated, "org_ids": []})
    audit.commit(session, action="geo.import", target_type="geo_import", target_id=imp.id,
                 after={k: report[k] for k in ("kind", "source", "total", "created", "updated", "rejected")})
    return report


def import_report(imp: Any, rejects: list[dict[str, Any]], *, limit: int = 200) -> dict:
    """An import's summary with (up to `limit`) rejected features' positions, codes and reasons."""
    return {"import_id": imp.id, "kind": imp.kind, "source": imp.source, "actor": imp.actor, "at": imp.at,
            "total": imp.total, "created": imp.created, "updated": imp.updated, "rejected": imp.rejected,
            "rejects": [{"index": r["index"], "code": r["code"], "reason_zh": r["reason_zh"],
                         "reason_en": r["reason_en"]} for r in rejects[:limit]]}


def list_imports(session: Session, *, limit: int = 50) -> list[dict]:
    """Recent imports, newest first."""
    from citybrain.geo.models import Import

    return [import_report(i, []) | {"rejects": []} for i in
            session.scalars(select(Import).order_by(Import.id.desc()).limit(limit))]


def import_rejects(session: Session, *, import_id: int) -> list[dict]:
    """The features an import rejected: position, code, reasons and the original feature."""
    from citybrain.errors import NotFound
    from citybrain.geo.models import Import, Rejected

    if session.get(Import, import_id) is None:
        raise NotFound(f"导入记录 {import_id} 不存在", f"Import {import_id} not found")
    return [{"index": r.feature_index, "code": r.code, "reason_zh": r.reason_zh, "reason_en": r.reason_en,
             "feature": _load(r.feature)} for r in
            session.scalars(select(Rejected).where(Rejected.import_id == import_id).order_by(Rejected.feature_index))]


def export_geojson(session: Session, *, kind: str, level: str | None = None) -> dict:
    """All areas (optionally one level) or all grids as a FeatureCollection that `import_geojson` reads back."""
    _check_kind(kind)
    if kind == "area":
        return areas_geojson(session, level=level)
    return grids_geojson(session)


def area_names(session: Session, *, codes: Sequence[str]) -> dict[str, str]:
    """Names of the given area codes (unknown codes are left out)."""
    codes = [c for c in codes if c]
    if not codes:
        return {}
    return dict(session.execute(select(Area.code, Area.name).where(Area.code.in_(codes))).all())
