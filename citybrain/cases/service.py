"""Cases service (一网统管 事件中心): reference data, responsibility matrix, intake from every channel,
the workflow, deadlines and supervision, notifications, citizen tracking and rating, IoT alarms.

Other modules use: `report`, `act`, `get_case`, `list_cases`, `resolve_for_case`, `ioc_summary`,
`evaluate` (see `citybrain.cases.evaluation`), `sweep`, `notifications`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
import time
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from citybrain import bus
from citybrain.audit import service as audit
from citybrain.cases import workflow as wf
from citybrain.cases.models import (
    Case,
    CaseEvent,
    Category,
    Config,
    DeptAlias,
    Dictionary,
    Extension,
    Hotspot,
    Notification,
    Responsibility,
    Supervision,
)
from citybrain.context import SYSTEM, Principal
from citybrain.db import utcnow
from citybrain.errors import Conflict, Forbidden, Invalid, NotFound
from citybrain.identity import service as identity
from citybrain.identity.permissions import PERMISSIONS
from citybrain.masking import mask_phone
from citybrain.workcal import CST, UNITS, WorkCalendar

log = logging.getLogger("citybrain.cases")

REFERENCE_DIR = Path(__file__).parent / "reference"
REFERENCE_FILES = ("gbt47678_5_2026.json", "cjt214_2007.json", "hotline12345.json")
DEFAULT_DICTIONARY = "gbt47678.5-2026"

DEFAULT_CONFIG: dict[str, dict[str, Any]] = {
    # Seeded defaults (STANDARDS.md §4.2 and §12); deployments change them with PUT /api/v1/cases/config/{key}.
    "calendar": {"office_hours": [["08:00", "12:00"], ["14:00", "18:00"]], "overrides": {}},
    "rules": {
        "auto_file_sources": ["hotline", "iot", "superior", "api", "video"],
        "auto_dispatch": True,
        "warn_ratio": 0.8,
        "dispatch_limit_work_minutes": 60,
        "verify_limit_work_minutes": 240,
        "rating_window_days": 7,
        "reopen_on_dissatisfied": True,
        "max_reopen": 1,
        "escalate_after_limit_ratio": 1.0,
        "command_center_org_code": "D-YXZX",
    },
    "hotspot": {"radius_m": 300, "window_h": 72, "min_count": 3},
    "iot": {"urgent_severity": 3, "limit_urgent_hours": 2, "limit_work_days": 1},
}

# --- configuration ---------------------------------------------------------------------------------------

_cache_lock = threading.Lock()
_config_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_org_cache: dict[tuple[str, str], int | None] = {}


_bind_keys: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _bind_key(session: Session) -> str:
    bind = session.get_bind()
    key = _bind_keys.get(bind)
    if key is None:
        key = _bind_keys[bind] = str(bind.url)  # read and write engines of one database share a key
    return key


def get_config(session: Session, *, key: str) -> dict[str, Any]:
    """A configuration section, stored values over the seeded defaults (cached for 5 s)."""
    if key not in DEFAULT_CONFIG:
        raise NotFound(f"配置项 {key} 不存在", f"No configuration section {key}", code="config_not_found")
    ck = f"{_bind_key(session)}|{key}"
    now = time.monotonic()
    cached = _config_cache.get(ck)
    if cached and now - cached[0] < 5:
        return cached[1]
    row = session.get(Config, key)
    value = {**DEFAULT_CONFIG[key], **(row.value if row else {})}
    with _cache_lock:
        _config_cache[ck] = (now, value)
    return value


def set_config(session: Session, *, key: str, value: dict[str, Any]) -> dict[str, Any]:
    """Change a configuration section (unknown keys are refused)."""
    before = get_config(session, key=key)
    unknown = set(value) - set(DEFAULT_CONFIG[key])
    if unknown:
        raise Invalid(f"未知配置项：{'、'.join(sorted(unknown))}", f"Unknown settings: {', '.join(sorted(unknown))}",
                      errors=[{"field": k, "message": "unknown setting"} for k in sorted(unknown)])
    bad = []
    for k, v in value.items():
        d = DEFAULT_CONFIG[key][k]
        if isinstance(d, bool):
            ok = isinstance(v, bool)
        elif isinstance(d, (int, float)):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 \
                and (k != "warn_ratio" or 0 < v < 1)
        else:
            ok = isinstance(v, type(d))
        if not ok:
            bad.append({"field": k, "message": f"expected {type(d).__name__}" + (" >= 0" if isinstance(d, (int, float))
                                                                                   and not isinstance(d, bool) else "")})
    if bad:
        raise Invalid(f"配置值类型或范围有误：{'、'.join(b['field'] for b in bad)}",
                      f"Bad setting values: {', '.join(b['field'] for b in bad)}", errors=bad)
    merged = {**before, **value}
    if key == "calendar":
        try:
            cal = WorkCalendar(tuple(tuple(p) for p in merged["office_hours"]),
                               {str(k): bool(v) for k, v in merged["overrides"].items()})
            if cal.day_minutes <= 0:
                raise ValueError
            for d in cal.overrides:
                dt.date.fromisoformat(d)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise Invalid("办公时间或节假日调整格式有误（如 [[\"08:00\",\"12:00\"]]，日期 YYYY-MM-DD）",
                          "Bad office hours or overrides (e.g. [[\"08:00\",\"12:00\"]], dates YYYY-MM-DD)",
                          errors=[{"field": "office_hours", "message": str(exc) or "invalid"}]) from exc
    row = session.get(Config, key)
    if row is None:
        session.add(Config(key=key, value=merged, updated_at=utcnow()))
    else:
        row.value, row.updated_at = merged, utcnow()
    _config_cache.pop(f"{_bind_key(session)}|{key}", None)
    audit.commit(session, action="case.config.set", target_type="case_config", target_id=key,
                 before=before, after=merged)
    return merged


_calendars: dict[str, tuple[dict, WorkCalendar]] = {}


def calendar(session: Session) -> WorkCalendar:
    """The deployment's working calendar."""
    c = get_config(session, key="calendar")
    k = _bind_key(session)
    hit = _calendars.get(k)
    if hit is not None and (hit[0] is c or hit[0] == c):
        return hit[1]
    cal = WorkCalendar(tuple(tuple(p) for p in c["office_hours"]), dict(c["overrides"]))
    _calendars[k] = (c, cal)
    return cal


def _org_id(session: Session, code: str | None) -> int | None:
    if not code:
        return None
    k = (_bind_key(session), code)
    if k not in _org_cache:
        org = identity.org_by_code(session, code=code)
        _org_cache[k] = org.id if org else None
    return _org_cache[k]


def command_center_org_id(session: Session) -> int | None:
    """The organisation of the command centre (its manual dispatch queue and notifications)."""
    return _org_id(session, get_config(session, key="rules")["command_center_org_code"])


# --- reference data ---------------------------------------------------------------------------------------


def load_reference(session: Session) -> int:
    """Load the shipped dictionaries that are not in the database yet; return how many were loaded."""
    have = set(session.scalars(select(Dictionary.code)))
    loaded = 0
    for name in REFERENCE_FILES:
        doc = json.loads((REFERENCE_DIR / name).read_text())
        if doc["code"] in have:
            continue
        family = "hotline" if doc["code"].startswith("hotline") else "urban"
        active = doc["code"] in (DEFAULT_DICTIONARY, "hotline12345")
        session.add(Dictionary(code=doc["code"], name=doc["name"], name_en=doc.get("name_en"),
                               standard_ref=doc["standard_ref"], version=doc["version"], family=family,
                               active=active, note=doc.get("note"), loaded_at=utcnow()))
        session.flush()
        session.execute(Category.__table__.insert(), [
            {"dictionary_code": doc["code"], "kind": e["kind"], "code": e["code"], "name": e["name"],
             "big_code": e["big_code"], "big_name": e["big_name"], "standard_ref": e["standard_ref"],
             "filing_condition": e.get("filing_condition", ""), "closing_condition": e.get("closing_condition", ""),
             "limit_value": e["limit_value"], "limit_unit": e["limit_unit"], "urgent": e.get("urgent", False),
             "default_dept": e.get("default_dept"), "active": True, "updated_at": utcnow()}
            for e in doc["entries"]])
        audit.record(session, action="case.dictionary.load", target_type="case_dictionary", target_id=doc["code"],
                     after={"entries": len(doc["entries"]), "standard_ref": doc["standard_ref"], "active": active})
        loaded += 1
    if loaded:
        session.commit()
    return loaded


def list_dictionaries(session: Session) -> list[dict[str, Any]]:
    """Every dictionary with its entry count and whether it is active."""
    counts = dict(session.execute(select(Category.dictionary_code, func.count()).group_by(Category.dictionary_code)).all())
    return [{"code": d.code, "name": d.name, "name_en": d.name_en, "standard_ref": d.standard_ref,
             "version": d.version, "family": d.family, "active": d.active, "note": d.note,
             "entries": counts.get(d.code, 0)} for d in session.scalars(select(Dictionary).order_by(Dictionary.code))]


def activate_dictionary(session: Session, *, code: str) -> dict[str, Any]:
    """Make a dictionary the active one of its family (new cases use it; old cases keep their codes)."""
    d = session.get(Dictionary, code)
    if d is None:
        raise NotFound(f"分类字典 {code} 不存在", f"No dictionary {code}", code="dictionary_not_found")
    before = [x.code for x in session.scalars(select(Dictionary).where(Dictionary.active.is_(True),
                                                                       Dictionary.family == d.family))]
    session.execute(update(Dictionary).where(Dictionary.family == d.family).values(active=False))
    d.active = True
    _active_cache.clear()
    _category_cache.clear()
    audit.commit(session, action="case.dictionary.activate", target_type="case_dictionary", target_id=code,
                 before={"active": before}, after={"active": [code]})
    return {"code": code, "active": True}


_active_cache: dict[tuple[str, str], str | None] = {}


def active_dictionary(session: Session, *, family: str = "urban") -> str | None:
    """The code of the active dictionary of a family (urban classes or hotline types)."""
    k = (_bind_key(session), family)
    if k not in _active_cache:
        _active_cache[k] = session.scalar(select(Dictionary.code).where(Dictionary.family == family,
                                                                        Dictionary.active.is_(True)))
    return _active_cache[k]


def category_dict(c: Category) -> dict[str, Any]:
    """A category as a plain dict."""
    return {"id": c.id, "dictionary_code": c.dictionary_code, "kind": c.kind, "code": c.code, "name": c.name,
            "big_code": c.big_code, "big_name": c.big_name, "standard_ref": c.standard_ref,
            "filing_condition": c.filing_condition, "closing_condition": c.closing_condition,
            "limit_value": c.limit_value, "limit_unit": c.limit_unit, "urgent": c.urgent,
            "default_dept": c.default_dept, "active": c.active}


def list_categories(session: Session, *, dictionary: str | None = None, kind: str | None = None,
                    q: str | None = None, limit: int = 500, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """Categories of a dictionary (the active urban one by default), filtered by kind and text."""
    code = dictionary or active_dictionary(session)
    stmt = select(Category).where(Category.dictionary_code == code)
    if kind:
        stmt = stmt.where(Category.kind == kind)
    if q:
        stmt = stmt.where(or_(Category.name.contains(q), Category.code.startswith(q)))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(Category.kind, Category.code).limit(limit).offset(offset))
    return total, [category_dict(c) for c in rows]


def find_category(session: Session, *, code: str, kind: str | None = None,
                  dictionary: str | None = None) -> Category | None:
    """A category of the active (or given) dictionary; an ambiguous code prefers the event (事项) class."""
    dcode = dictionary or active_dictionary(session)
    ck = (_bind_key(session), dcode, code, kind)
    hit = _category_cache.get(ck)
    if hit is not None and time.monotonic() - hit[0] < 30:
        return hit[1]
    stmt = select(Category).where(Category.dictionary_code == dcode, Category.code == code,
                                  Category.active.is_(True))
    if kind:
        stmt = stmt.where(Category.kind == kind)
    rows = list(session.scalars(stmt))
    rows.sort(key=lambda c: {"event": 0, "hotline": 1, "component": 2}.get(c.kind, 3))
    found = rows[0] if rows else None
    if found is not None:
        session.expunge(found)  # a detached snapshot, shared by later lookups
    _category_cache[ck] = (time.monotonic(), found)
    return found


_category_cache: dict[tuple, tuple[float, Category | None]] = {}


def update_category(session: Session, *, category_id: int, **changes: Any) -> dict[str, Any]:
    """Edit a category's conditions, time limit, default department or active flag (admins)."""
    c = session.get(Category, category_id)
    if c is None:
        raise NotFound(f"分类 {category_id} 不存在", f"No category {category_id}", code="category_not_found")
    before = category_dict(c)
    if changes.get("limit_unit") is not None and changes["limit_unit"] not in UNITS:
        raise Invalid(f"时限单位必须是 {', '.join(UNITS)}", f"limit_unit must be one of {', '.join(UNITS)}",
                      errors=[{"field": "limit_unit", "message": "unknown unit"}])
    for k in ("name", "filing_condition", "closing_condition", "limit_value", "limit_unit", "urgent", "default_dept",
              "active"):
        if changes.get(k) is not None:
            setattr(c, k, changes[k])
    c.updated_at = utcnow()
    _category_cache.clear()
    audit.commit(session, action="case.category.update", target_type="case_category", target_id=c.id,
                 before=before, after=category_dict(c))
    return category_dict(c)


# --- responsibility matrix (权责清单) ------------------------------------------------------------------------


def set_dept_alias(session: Session, *, short: str, org_id: int) -> None:
    """Bind a category default-department short name (e.g. "城管") to an organisation."""
    identity.get_org(session, org_id=org_id)
    row = session.get(DeptAlias, short)
    before = {"org_id": row.org_id} if row else None
    if row is None:
        session.add(DeptAlias(short=short, org_id=org_id))
    else:
        row.org_id = org_id
    audit.commit(session, action="case.dept_alias.set", target_type="case_dept_alias", target_id=short,
                 before=before, after={"org_id": org_id})


def responsibility_dict(r: Responsibility) -> dict[str, Any]:
    """A responsibility row as a plain dict."""
    return {"id": r.id, "category_code": r.category_code, "big_code": r.big_code, "area_code": r.area_code,
            "dept_org_id": r.dept_org_id, "unit_org_id": r.unit_org_id, "note": r.note}


def list_responsibilities(session: Session) -> list[dict[str, Any]]:
    """The whole responsibility matrix."""
    return [responsibility_dict(r) for r in session.scalars(select(Responsibility).order_by(Responsibility.id))]


def add_responsibility(session: Session, *, dept_org_id: int, category_code: str | None = None,
                       big_code: str | None = None, area_code: str | None = None, unit_org_id: int | None = None,
                       note: str | None = None) -> dict[str, Any]:
    """Add a row to the matrix: (category or big class, area) -> department (and unit)."""
    identity.get_org(session, org_id=dept_org_id)
    if unit_org_id is not None:
        identity.get_org(session, org_id=unit_org_id)
    r = Responsibility(category_code=category_code or None, big_code=big_code or None, area_code=area_code or None,
                       dept_org_id=dept_org_id, unit_org_id=unit_org_id, note=note, created_at=utcnow())
    session.add(r)
    session.flush()
    _matrix_cache.clear()
    audit.commit(session, action="case.responsibility.add", target_type="case_responsibility", target_id=r.id,
                 after=responsibility_dict(r))
    return responsibility_dict(r)


def delete_responsibility(session: Session, *, responsibility_id: int) -> None:
    """Remove a row from the matrix."""
    r = session.get(Responsibility, responsibility_id)
    if r is None:
        raise NotFound(f"权责条目 {responsibility_id} 不存在", f"No responsibility row {responsibility_id}",
                       code="responsibility_not_found")
    before = responsibility_dict(r)
    session.delete(r)
    _matrix_cache.clear()
    audit.commit(session, action="case.responsibility.delete", target_type="case_responsibility",
                 target_id=responsibility_id, before=before)


_matrix_cache: dict[str, tuple[float, list[Responsibility], dict[str, int]]] = {}


def _matrix(session: Session) -> tuple[list[Responsibility], dict[str, int]]:
    k = _bind_key(session)
    hit = _matrix_cache.get(k)
    if hit and time.monotonic() - hit[0] < 5:
        return hit[1], hit[2]
    rows = list(session.scalars(select(Responsibility)))
    for r in rows:
        session.expunge(r)
    aliases = {a.short: a.org_id for a in session.scalars(select(DeptAlias))}
    _matrix_cache[k] = (time.monotonic(), rows, aliases)
    return rows, aliases


def resolve_department(session: Session, *, category_code: str | None, big_code: str | None,
                       default_dept: str | None, area_codes: list[str]) -> tuple[int | None, int | None, str]:
    """The responsible (department, unit) for a category at a place: the most specific matrix row wins,
    then the category's default department; (None, None, "manual") sends the case to the manual queue."""
    rows, aliases = _matrix(session)
    best: tuple[int, Responsibility] | None = None
    for r in rows:
        if r.category_code is not None and r.category_code != category_code:
            continue
        if r.big_code is not None and r.big_code != big_code:
            continue
        if r.area_code is not None and r.area_code not in area_codes:
            continue
        score = (200 if r.category_code else 100 if r.big_code else 0) + (len(r.area_code) if r.area_code else 0)
        if best is None or score > best[0]:
            best = (score, r)
    if best is not None:
        return best[1].dept_org_id, best[1].unit_org_id, f"matrix:{best[1].id}"
    if default_dept and default_dept in aliases:
        return aliases[default_dept], None, f"default:{default_dept}"
    return None, None, "manual"


# --- location -----------------------------------------------------------------------------------------------


_geo: list[Any] = []


def _geo_service() -> Any:
    """The geo module's service if installed (looked up once)."""
    if not _geo:
        try:
            from citybrain.geo import service as geo

            _geo.append(geo if hasattr(geo, "locate") else None)
        except ImportError:
            _geo.append(None)
    return _geo[0]


def _outside_grids(session: Session, case: Case) -> bool:
    """True when the case has a position that no unit grid covers, on a map that has a district outline."""
    if case.grid_code or case.lon is None or case.lat is None:
        return False
    geo = _geo_service()
    return geo is not None and geo.in_service_area(session, lon=case.lon, lat=case.lat) is not None


def check_public_location(session: Session, *, lon: float | None, lat: float | None) -> None:
    """A citizen's report must lie in the district: 422 naming lon and lat otherwise (no outline loaded: no check)."""
    geo = _geo_service()
    if lon is None or lat is None or geo is None or geo.in_service_area(session, lon=lon, lat=lat) is not False:
        return
    raise Invalid("反映问题的位置不在本区辖区内，请在地图上重新选择问题所在位置",
                  "The location is outside this district; choose the place of the problem on the map again",
                  errors=[{"field": "lon", "message": "outside the district"},
                          {"field": "lat", "message": "outside the district"}], code="outside_district")


def _locate(session: Session, lon: float | None, lat: float | None) -> dict[str, Any] | None:
    if lon is None or lat is None:
        return None
    geo = _geo_service()
    if geo is None:
        return None
    try:
        return geo.locate(session, lon=lon, lat=lat)
    except Exception:  # the map is an aid; a case is never lost because the lookup failed
        log.exception("grid lookup failed for %s,%s", lon, lat)
        return None


def _area_from_grid(grid_code: str | None) -> dict[str, str | None]:
    """Community and town codes read from a grid code (15-digit 6+3+3+3; legacy 14-digit kept as is)."""
    if grid_code and grid_code.isdigit() and len(grid_code) >= 12:
        return {"community_code": grid_code[:12], "town_code": grid_code[:9], "district_code": grid_code[:6]}
    return {"community_code": None, "town_code": None, "district_code": None}


# --- cases: reading ---------------------------------------------------------------------------------------------


def can_see(principal: Principal, case: Case) -> bool:
    """True if the principal's data scope covers the case (department, unit, community or town; or own report)."""
    if principal.org_scope is None:
        return True
    if principal.id is not None and principal.kind == "user" and case.reporter_user_id == principal.id:
        return True
    return any(o is not None and o in principal.org_scope
               for o in (case.dept_org_id, case.unit_org_id, case.community_org_id, case.town_org_id))


def _scope_clause(principal: Principal):
    if principal.org_scope is None:
        return None
    scope = list(principal.org_scope)
    conds = [Case.dept_org_id.in_(scope), Case.unit_org_id.in_(scope), Case.community_org_id.in_(scope),
             Case.town_org_id.in_(scope)] if scope else []
    if principal.kind == "user" and principal.id is not None:
        conds.append(Case.reporter_user_id == principal.id)
    return or_(*conds) if conds else Case.id < 0


def get_case(session: Session, *, case_id: int, principal: Principal) -> Case:
    """A case the principal may see (404 otherwise, so other departments' cases are not disclosed)."""
    case = session.get(Case, case_id)
    if case is None or not can_see(principal, case):
        raise NotFound(f"案件 {case_id} 不存在", f"Case {case_id} does not exist", code="case_not_found")
    return case


def case_dict(case: Case, *, lang: str = "zh-CN", full_phone: bool = False) -> dict[str, Any]:
    """A case as a plain dict (reporter phone masked)."""
    return {
        "id": case.id, "ticket": case.ticket, "source": case.source, "title": case.title,
        "description": case.description, "dictionary_code": case.dictionary_code, "category_kind": case.category_kind,
        "category_code": case.category_code, "category_name": case.category_name, "hotline_type": case.hotline_type,
        "urgent": case.urgent, "address": case.address, "lon": case.lon, "lat": case.lat, "grid_code": case.grid_code,
        "community_code": case.community_code, "town_code": case.town_code,
        "community_org_id": case.community_org_id, "town_org_id": case.town_org_id,
        "status": case.status, "status_name": wf.status_label(case.status, lang), "queue": case.queue,
        "dept_org_id": case.dept_org_id, "unit_org_id": case.unit_org_id,
        "assignee_user_id": case.assignee_user_id, "assignee_name": case.assignee_name,
        "assigned_at": case.assigned_at, "reporter_user_id": case.reporter_user_id, "reporter_name": case.reporter_name,
        "reporter_phone": case.reporter_phone if full_phone else mask_phone(case.reporter_phone),
        "photos": case.photos or [], "limit_value": case.limit_value, "limit_unit": case.limit_unit,
        "reported_at": case.reported_at, "filed_at": case.filed_at, "dispatched_at": case.dispatched_at,
        "deadline_at": case.deadline_at, "warn_at": case.warn_at, "handled_at": case.handled_at,
        "verified_at": case.verified_at, "closed_at": case.closed_at, "warned": case.warned,
        "overdue": case.overdue, "supervision_level": case.supervision_level, "rework_count": case.rework_count,
        "return_count": case.return_count, "extension_count": case.extension_count,
        "reopen_count": case.reopen_count, "merged_into_id": case.merged_into_id, "device_code": case.device_code,
        "rule_id": case.rule_id, "repeat_count": case.repeat_count, "public_reply": case.public_reply,
        "rating": case.rating, "rated_at": case.rated_at, "external_ref": case.external_ref,
    }


def case_detail(session: Session, *, case_id: int, principal: Principal, lang: str = "zh-CN") -> dict[str, Any]:
    """A case with its log, extensions, supervisions and the actions the principal may take now."""
    case = get_case(session, case_id=case_id, principal=principal)
    d = case_dict(case, lang=lang)
    d["events"] = [_event_dict(e) for e in session.scalars(
        select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id))]
    d["extensions"] = [_extension_dict(x) for x in session.scalars(
        select(Extension).where(Extension.case_id == case.id).order_by(Extension.id))]
    d["supervisions"] = [{"id": s.id, "level": s.level, "level_name": wf.SUPERVISION_LEVELS[s.level][0],
                          "reason": s.reason, "auto": s.auto, "raised_by": s.raised_by, "at": s.at}
                         for s in session.scalars(select(Supervision).where(Supervision.case_id == case.id)
                                                  .order_by(Supervision.id))]
    d["allowed_actions"] = actions_for(case, principal)
    return d


def _event_dict(e: CaseEvent) -> dict[str, Any]:
    return {"id": e.id, "action": e.action, "action_name": wf.ACTIONS[e.action].zh if e.action in wf.ACTIONS else
            _EXTRA_ACTIONS.get(e.action, e.action), "from_status": e.from_status, "to_status": e.to_status,
            "actor": e.actor, "actor_org_id": e.actor_org_id, "comment": e.comment, "attachments": e.attachments or [],
            "data": e.data or {}, "at": e.at}


def _extension_dict(x: Extension) -> dict[str, Any]:
    return {"id": x.id, "reason": x.reason, "extra_value": x.extra_value, "extra_unit": x.extra_unit,
            "status": x.status, "requested_by": x.requested_by, "requested_at": x.requested_at,
            "decided_by": x.decided_by, "decided_at": x.decided_at, "decision_comment": x.decision_comment}


_EXTRA_ACTIONS = {"report": "上报", "deadline_warning": "临期预警", "overdue": "超期", "alarm_repeat": "告警重复",
                  "alarm_cleared": "告警恢复", "rate": "评价", "merged_in": "并入案件"}


def list_cases(session: Session, *, principal: Principal, status: list[str] | None = None,
               dept_org_id: int | None = None, grid_code: str | None = None, category_code: str | None = None,
               overdue: bool | None = None, source: str | None = None, town_code: str | None = None,
               q: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
               mine: bool = False, assignee_user_id: int | None = None, limit: int = 50,
               offset: int = 0) -> tuple[int, bool, list[Case]]:
    """Cases in the principal's scope, newest first; returns (total, total_capped_at_10000, page)."""
    stmt = select(Case)
    scope = _scope_clause(principal)
    if scope is not None:
        stmt = stmt.where(scope)
    if mine:
        stmt = stmt.where(Case.reporter_user_id == (principal.id or -1))
    if assignee_user_id is not None:
        stmt = stmt.where(Case.assignee_user_id == assignee_user_id)
    if status:
        stmt = stmt.where(Case.status.in_(status)) if len(status) > 1 else stmt.where(Case.status == status[0])
    if dept_org_id is not None:
        stmt = stmt.where(Case.dept_org_id == dept_org_id)
    if grid_code:
        stmt = stmt.where(Case.grid_code == grid_code)
    if category_code:
        stmt = stmt.where(Case.category_code == category_code)
    if overdue is not None:
        stmt = stmt.where(Case.overdue.is_(overdue))
    if source:
        stmt = stmt.where(Case.source == source)
    if town_code:
        stmt = stmt.where(Case.town_code == town_code)
    if q:
        stmt = stmt.where(or_(Case.title.contains(q), Case.ticket == q, Case.address.contains(q)))
    if since:
        stmt = stmt.where(Case.reported_at >= since)
    if until:
        stmt = stmt.where(Case.reported_at < until)
    cap = 2000
    total = session.scalar(select(func.count()).select_from(stmt.with_only_columns(Case.id).limit(cap + 1)
                                                             .subquery())) or 0
    rows = list(session.scalars(stmt.order_by(Case.reported_at.desc(), Case.id.desc()).limit(limit).offset(offset)))
    return min(total, cap), total > cap, rows


def actions_for(case: Case, principal: Principal) -> list[str]:
    """The actions this principal may take on the case now (state machine, permission and scope)."""
    out = []
    for code in wf.allowed_actions(case.status):
        a = wf.ACTIONS[code]
        if principal.can(a.permission) and _in_scope(principal, case, a):
            out.append(code)
    return out


def _in_scope(principal: Principal, case: Case, a: wf.Action) -> bool:
    if principal.org_scope is None:
        return True
    if a.scope == "dept":
        return principal.sees_org(case.dept_org_id) or principal.sees_org(case.unit_org_id)
    if a.scope == "community":
        return principal.sees_org(case.community_org_id)
    return can_see(principal, case)


# --- events, audit, notifications ------------------------------------------------------------------------------


def _org_ids(session: Session, case: Case) -> list[int]:
    ids = {case.dept_org_id, case.unit_org_id, case.community_org_id, case.town_org_id,
           command_center_org_id(session)}
    return sorted(i for i in ids if i is not None)


def _payload(session: Session, case: Case, action: str, frm: str | None, to: str | None) -> dict[str, Any]:
    return {"case_id": case.id, "ticket": case.ticket, "action": action, "from_status": frm, "to_status": to,
            "dept_org_id": case.dept_org_id, "grid_code": case.grid_code, "category_code": case.category_code,
            "at": utcnow().isoformat(), "org_ids": _org_ids(session, case)}


_EVENT_INSERT = insert(CaseEvent.__table__)
_NOTIFY_INSERT = insert(Notification.__table__).returning(Notification.__table__.c.id)


def _log(session: Session, case: Case, action: str, principal: Principal, *, frm: str | None = None,
         to: str | None = None, comment: str | None = None, attachments: list | None = None,
         data: dict | None = None, topic: str | None = "cases.case.transitioned") -> None:
    """Write one step of the case log, its audit record and (for transitions) its bus event; no commit."""
    now = utcnow()
    session.connection().execute(_EVENT_INSERT, {"case_id": case.id, "action": action, "from_status": frm, "to_status": to,
                                    "actor": principal.label, "actor_id": principal.id,
                                    "actor_org_id": principal.org_id, "comment": comment,
                                    "attachments": attachments or None, "data": data or None, "at": now})
    case.updated_at = now
    after = {"status": to or case.status}
    if data:
        after.update(data)
    if comment:
        after["comment"] = comment[:200]
    audit.record(session, action=f"case.{action}", target_type="case", target_id=case.id,
                 before={"status": frm} if frm else None, after=after, actor=principal)
    if topic:
        bus.publish(session, topic, _payload(session, case, action, frm, to))


def _notify(session: Session, *, case: Case | None, kind: str, zh: str, en: str, org_id: int | None = None,
            user_id: int | None = None) -> None:
    if org_id is None and user_id is None:
        return
    now = utcnow()
    case_id = case.id if case else None
    nid = session.execute(_NOTIFY_INSERT, {"user_id": user_id, "org_id": org_id, "case_id": case_id, "kind": kind,
                                           "title_zh": zh, "title_en": en, "created_at": now}).scalar_one()
    bus.publish(session, "cases.notification.created",
                {"notification_id": nid, "kind": kind, "case_id": case_id, "title_zh": zh, "title_en": en,
                 "user_id": user_id, "org_ids": [org_id] if org_id else [], "at": now.isoformat()})


def _notify_dept(session: Session, *, case: Case, kind: str, zh: str, en: str) -> None:
    """Notify the case's department and, if set, its unit."""
    for org in dict.fromkeys(o for o in (case.dept_org_id, case.unit_org_id) if o is not None):
        _notify(session, case=case, kind=kind, zh=zh, en=en, org_id=org)


def notifications(session: Session, *, principal: Principal, unread_only: bool = False,
                  limit: int = 50) -> list[dict[str, Any]]:
    """The principal's inbox: items for the user and for their organisation, newest first."""
    conds = []
    if principal.id is not None:
        conds.append(Notification.user_id == principal.id)
    if principal.org_id is not None:
        conds.append(Notification.org_id == principal.org_id)
    if not conds:
        return []
    stmt = select(Notification).where(or_(*conds))
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    return [{"id": n.id, "kind": n.kind, "case_id": n.case_id, "title_zh": n.title_zh, "title_en": n.title_en,
             "created_at": n.created_at, "read_at": n.read_at}
            for n in session.scalars(stmt.order_by(Notification.id.desc()).limit(limit))]


def mark_read(session: Session, *, notification_id: int, principal: Principal) -> None:
    """Mark an inbox item read."""
    n = session.get(Notification, notification_id)
    if n is None or not (n.user_id == principal.id or (n.org_id is not None and n.org_id == principal.org_id)):
        raise NotFound("通知不存在", "No such notification", code="notification_not_found")
    if n.read_at is None:
        n.read_at, n.read_by = utcnow(), principal.id
        audit.commit(session, action="case.notification.read", target_type="case_notification", target_id=n.id,
                     actor=principal)


# --- intake ---------------------------------------------------------------------------------------------------


def _ticket(case: Case) -> str:
    return f"{case.reported_at.astimezone(CST):%Y%m%d}{case.id:07d}"


def _check_point(lon: float | None, lat: float | None) -> None:
    bad = []
    if lon is not None and not (-180 <= lon <= 180 and math.isfinite(lon)):
        bad.append({"field": "lon", "message": "longitude must be within -180..180"})
    if lat is not None and not (-90 <= lat <= 90 and math.isfinite(lat)):
        bad.append({"field": "lat", "message": "latitude must be within -90..90"})
    if (lon is None) != (lat is None):
        bad.append({"field": "lon" if lon is None else "lat", "message": "give both lon and lat"})
    if bad:
        raise Invalid("位置坐标无效", "Invalid coordinates", errors=bad)


def report(session: Session, *, principal: Principal, source: str, title: str, description: str = "",
           category_code: str | None = None, category_kind: str | None = None, hotline_type: str | None = None,
           lon: float | None = None, lat: float | None = None, address: str | None = None,
           grid_code: str | None = None, reporter_name: str | None = None, reporter_phone: str | None = None,
           photos: list[str] | None = None, external_ref: str | None = None, urgent: bool | None = None,
           auto_file: bool | None = None, dept_org_id: int | None = None, device_code: str | None = None,
           rule_id: str | None = None, alarm_id: str | None = None, commit: bool = True) -> Case:
    """Take in a case from any channel; locate it, keep its category code, file and dispatch it by rule."""
    with session.no_autoflush:  # one flush for the new row; everything else goes out at commit
        return _report(session, **{k: v for k, v in locals().items() if k != "session"})


def _prepare(session: Session, *, principal: Principal, source: str, title: str, description: str,
             category_code: str | None, category_kind: str | None, hotline_type: str | None, lon: float | None,
             lat: float | None, address: str | None, grid_code: str | None, reporter_name: str | None,
             reporter_phone: str | None, photos: list[str] | None, external_ref: str | None, urgent: bool | None,
             device_code: str | None, rule_id: str | None, alarm_id: str | None, **_ignored: Any) -> dict[str, Any]:
    """Validate a report and work out its row: category, time limit, place (grid, community, town)."""
    _check_point(lon, lat)
    if source == "patrol" and lon is None and not grid_code:
        raise Invalid("巡查上报须带定位（经纬度）或网格编码", "A patrol report needs a GPS position or a grid code",
                      errors=[{"field": "lon", "message": "required for patrol reports"}])
    if source in ("hotline", "web") and not reporter_phone:
        raise Invalid("须填写来电（反映）人手机号", "The caller's phone number is required",
                      errors=[{"field": "reporter_phone", "message": "required"}])
    if source in ("hotline", "web") and lon is None and not address and not grid_code:
        raise Invalid("须填写地址或位置", "An address or a position is required",
                      errors=[{"field": "address", "message": "required when no position is given"}])
    cat = None
    if category_code:
        cat = find_category(session, code=category_code, kind=category_kind)
        if cat is None:
            raise Invalid(f"分类代码 {category_code} 不在当前启用的分类字典中",
                          f"Category {category_code} is not in the active dictionary",
                          errors=[{"field": "category_code", "message": "unknown in the active dictionary"}])
    htype = None
    if hotline_type:
        htype = find_category(session, code=hotline_type, dictionary=active_dictionary(session, family="hotline"))
        if htype is None:
            raise Invalid(f"诉求类型 {hotline_type} 无效（01 咨询 02 求助 03 投诉 04 举报 05 建议）",
                          f"Unknown request type {hotline_type} (01-05)",
                          errors=[{"field": "hotline_type", "message": "unknown"}])
    if source == "hotline" and htype is None:
        raise Invalid("12345 工单须选择诉求类型", "A 12345 work order needs a request type",
                      errors=[{"field": "hotline_type", "message": "required for hotline"}])
    if cat is None and htype is None and source not in ("iot",):
        raise Invalid("须选择案件分类", "A category is required",
                      errors=[{"field": "category_code", "message": "required"}])
    loc = None if grid_code else _locate(session, lon, lat)  # a grid given explicitly wins over the GPS lookup
    if loc:
        grid_code = loc.get("grid_code") or grid_code
        area = {"community_code": loc.get("community_code"), "town_code": loc.get("town_code"),
                "district_code": loc.get("district_code")}
    else:
        area = _area_from_grid(grid_code)
    now = utcnow()
    basis = cat or htype
    limit_value, limit_unit = (basis.limit_value, basis.limit_unit) if basis else (None, None)
    is_urgent = bool(urgent) or bool(basis and basis.urgent)
    if urgent and limit_unit != "hours":
        limit_value, limit_unit = 2.0, "hours"  # an urgent report runs on the continuous clock
    return dict(
        source=source, external_ref=external_ref, title=title.strip()[:200], description=description or "",
        dictionary_code=cat.dictionary_code if cat else None, category_kind=cat.kind if cat else None,
        category_code=cat.code if cat else None, category_name=cat.name if cat else None,
        hotline_type=htype.code if htype else None, urgent=is_urgent, address=address, lon=lon, lat=lat,
        grid_code=grid_code, community_code=area["community_code"], town_code=area["town_code"],
        community_org_id=_org_id(session, area["community_code"]), town_org_id=_org_id(session, area["town_code"]),
        status="reported", reporter_user_id=principal.id if principal.kind == "user" else None,
        reporter_name=reporter_name or (principal.extra.get("real_name") if principal.kind == "user" else None),
        reporter_phone=reporter_phone, photos=photos or None, limit_value=limit_value, limit_unit=limit_unit,
        reported_at=now, device_code=device_code, rule_id=rule_id, alarm_ids=[alarm_id] if alarm_id else None,
        updated_at=now)


def _report(session: Session, *, principal: Principal, source: str, title: str, description: str,
            category_code: str | None, category_kind: str | None, hotline_type: str | None, lon: float | None,
            lat: float | None, address: str | None, grid_code: str | None, reporter_name: str | None,
            reporter_phone: str | None, photos: list[str] | None, external_ref: str | None, urgent: bool | None,
            auto_file: bool | None, dept_org_id: int | None, device_code: str | None, rule_id: str | None,
            alarm_id: str | None, commit: bool) -> Case:
    if source not in wf.SOURCES:
        raise Invalid(f"未知来源 {source}", f"Unknown source {source}",
                      errors=[{"field": "source", "message": f"one of {', '.join(wf.SOURCES)}"}])
    if external_ref:
        existing = session.scalar(select(Case).where(Case.external_ref == external_ref))
        if existing is not None:
            return existing  # idempotent: a system re-sending the same record gets the same case
    row = _prepare(session, principal=principal, source=source, title=title, description=description,
                   category_code=category_code, category_kind=category_kind, hotline_type=hotline_type, lon=lon,
                   lat=lat, address=address, grid_code=grid_code, reporter_name=reporter_name,
                   reporter_phone=reporter_phone, photos=photos, external_ref=external_ref, urgent=urgent,
                   device_code=device_code, rule_id=rule_id, alarm_id=alarm_id)
    case = Case(**row)
    session.add(case)
    session.flush([case])
    case.ticket = _ticket(case)
    _log(session, case, "report", principal, to="reported",
         data={"source": source, "category_code": case.category_code, "grid_code": case.grid_code},
         attachments=photos, topic="cases.case.created")
    rules = get_config(session, key="rules")
    if auto_file is None:
        auto_file = source in rules["auto_file_sources"]
    if auto_file:
        _file(session, case, principal, comment="按规则自动立案" if source != "hotline" else "坐席受理立案",
              dept_org_id=dept_org_id)
    if commit:
        session.commit()
    return case


BATCH_MAX = 500
_CASE_COLS = [c.key for c in Case.__table__.columns if c.key != "id"]
_CASE_BLANK: dict[str, Any] = {**dict.fromkeys(_CASE_COLS), "warned": False, "overdue": False, "urgent": False,
                               **dict.fromkeys(("supervision_level", "rework_count", "return_count",
                                                "extension_count", "reopen_count", "repeat_count"), 0)}


def report_batch(session: Session, *, principal: Principal, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Take in many cases in one transaction (12345 platform sync, other systems): validated one by one, filed and
    dispatched by rule, written with executemany; every case gets its log steps, bus events and one audit record
    `case.report` (target the case id; the steps it went through, the batch's id range), written in bulk."""
    if not items:
        return []
    if len(items) > BATCH_MAX:
        raise Invalid(f"每批最多 {BATCH_MAX} 件", f"At most {BATCH_MAX} cases per batch",
                      errors=[{"field": "items", "message": f"max {BATCH_MAX}"}])
    rules = get_config(session, key="rules")
    refs = [i.get("external_ref") for i in items if i.get("external_ref")]
    known = dict(session.execute(select(Case.external_ref, Case.id).where(Case.external_ref.in_(refs))).all()) \
        if refs else {}
    out: list[dict[str, Any]] = []
    rows, plans = [], []
    seen: set[str] = set()
    now = utcnow()
    clocks: dict[tuple, tuple] = {}
    for n, item in enumerate(items):
        ref = item.get("external_ref")
        if ref and (ref in known or ref in seen):
            out.append({"index": n, "id": known.get(ref), "duplicate": True})
            continue
        if ref:
            seen.add(ref)
        try:
            row = _prepare(session, principal=principal, **{k: item.get(k) for k in (
                "source", "title", "description", "category_code", "category_kind", "hotline_type", "lon", "lat",
                "address", "grid_code", "reporter_name", "reporter_phone", "photos", "external_ref", "urgent",
                "device_code", "rule_id", "alarm_id")}, )
        except Invalid as exc:
            raise Invalid(f"第 {n + 1} 件：{exc.detail_zh}", f"Item {n + 1}: {exc.detail_en}",
                          errors=[{**e, "field": f"items.{n}.{e.get('field')}"} for e in exc.errors]) from exc
        row["description"] = row["description"] or ""
        case = SimpleNamespace(**{**_CASE_BLANK, **row})  # a plain row: the dispatch and deadline rules read it
        steps = [("report", None, "reported", None)]
        auto = item.get("auto_file")
        if auto is None:
            auto = row["source"] in rules["auto_file_sources"]
        if auto:
            case.status, case.filed_at = "filed", now
            steps.append(("file", "reported", "filed", "按规则自动立案"))
            dept, unit, how = (item["dept_org_id"], None, "given") if item.get("dept_org_id") else \
                (resolve_for_case(session, case) if rules["auto_dispatch"] and not _outside_grids(session, case)
                 else (None, None, "manual"))
            if dept is None:
                case.queue = "manual"
            else:
                case.status, case.dept_org_id, case.unit_org_id = "dispatched", dept, unit
                case.dispatched_at, case.dispatched_on_time = now, True
                key = (case.limit_value, case.limit_unit)  # one clock start for the batch: same now, same limit
                if key not in clocks:
                    _start_clock(session, case)
                    clocks[key] = (case.deadline_at, case.warn_at)
                case.deadline_at, case.warn_at = clocks[key]
                steps.append(("dispatch", "filed", "dispatched", how))
        rows.append(vars(case))
        plans.append((n, steps))
    if rows:
        table = Case.__table__
        ids = session.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows).scalars().all()
        cc = table.c
        tickets = []
        for r, cid in zip(rows, ids, strict=True):
            r["id"] = cid
            r["ticket"] = f"{r['reported_at'].astimezone(CST):%Y%m%d}{cid:07d}"
            tickets.append({"b_id": cid, "b_ticket": r["ticket"]})
        from sqlalchemy import bindparam

        session.execute(update(table).where(cc.id == bindparam("b_id")).values(ticket=bindparam("b_ticket"))
                        .execution_options(synchronize_session=False), tickets)
        events, created, moved, notes = [], [], [], []
        cc_org = command_center_org_id(session)
        for r, (n, steps) in zip(rows, plans, strict=True):
            org_ids = sorted({o for o in (r["dept_org_id"], r["unit_org_id"], r["community_org_id"],
                                          r["town_org_id"], cc_org) if o is not None})
            for action, frm, to, note in steps:
                events.append({"case_id": r["id"], "action": action, "from_status": frm, "to_status": to,
                               "actor": principal.label, "actor_id": principal.id, "actor_org_id": principal.org_id,
                               "comment": note if action != "dispatch" else None,
                               "attachments": (r["photos"] or None) if action == "report" else None,
                               "data": {"batch": True, "how": note} if action == "dispatch" else None, "at": now})
                payload = {"case_id": r["id"], "ticket": r["ticket"], "action": action, "from_status": frm,
                           "to_status": to, "dept_org_id": r["dept_org_id"], "grid_code": r["grid_code"],
                           "category_code": r["category_code"], "at": now.isoformat(), "org_ids": org_ids}
                (created if action == "report" else moved).append(payload)
            if r["status"] == "dispatched":
                for target in dict.fromkeys(o for o in (r["dept_org_id"], r["unit_org_id"]) if o is not None):
                    notes.append({"user_id": None, "org_id": target, "case_id": r["id"], "kind": "new_task",
                                  "title_zh": f"新任务：{r['ticket']} {r['title']}",
                                  "title_en": f"New task: {r['ticket']} {r['title']}", "created_at": now})
            out.append({"index": n, "id": r["id"], "ticket": r["ticket"], "status": r["status"],
                        "dept_org_id": r["dept_org_id"], "deadline_at": r["deadline_at"], "duplicate": False})
        session.execute(_EVENT_INSERT, events)
        bus.publish_many(session, "cases.case.created", created)
        bus.publish_many(session, "cases.case.transitioned", moved)
        if notes:
            session.execute(insert(Notification.__table__), notes)
            bus.publish_many(session, "cases.notification.created",
                             [{"notification_id": None, "kind": x["kind"], "case_id": x["case_id"],
                               "title_zh": x["title_zh"], "title_en": x["title_en"], "user_id": None,
                               "org_ids": [x["org_id"]], "at": now.isoformat()} for x in notes])
        batch = f"{ids[0]}-{ids[-1]}"
        audit.record_many(session, [
            {"action": "case.report", "target_type": "case", "target_id": r["id"],
             "after": {"status": r["status"], "ticket": r["ticket"], "source": r["source"],
                       "category_code": r["category_code"], "grid_code": r["grid_code"],
                       "dept_org_id": r["dept_org_id"], "deadline_at": r["deadline_at"],
                       "external_ref": r["external_ref"], "steps": [st[0] for st in p[1]], "batch": batch}}
            for r, p in zip(rows, plans, strict=True)], actor=principal)
    session.commit()
    out.sort(key=lambda x: x["index"])
    return out


def _file(session: Session, case: Case, principal: Principal, *, comment: str | None = None,
          dept_org_id: int | None = None, attachments: list | None = None) -> None:
    frm = case.status
    case.status, case.filed_at, case.queue = "filed", utcnow(), None
    _log(session, case, "file", principal, frm=frm, to="filed", comment=comment, attachments=attachments)
    rules = get_config(session, key="rules")
    if dept_org_id is not None:
        _dispatch(session, case, principal, dept_org_id=dept_org_id, unit_org_id=None, how="given")
        return
    if not rules["auto_dispatch"]:
        case.queue = "manual"
        return
    if _outside_grids(session, case):
        case.queue = "manual"  # no grid, so no community or town to match: the centre checks the place first
        _notify(session, case=case, kind="manual_queue", org_id=command_center_org_id(session),
                zh=f"案件 {case.ticket} 的位置不在任何单元网格内，请核实位置后人工派遣",
                en=f"Case {case.ticket} lies outside every unit grid; check the place and dispatch it manually")
        return
    dept, unit, how = resolve_for_case(session, case)
    if dept is None:
        case.queue = "manual"
        _notify(session, case=case, kind="manual_queue", org_id=command_center_org_id(session),
                zh=f"案件 {case.ticket} 无匹配的责任单位，待人工派遣",
                en=f"Case {case.ticket} has no responsible department; dispatch it manually")
        return
    _dispatch(session, case, SYSTEM if principal.kind == "anonymous" else principal, dept_org_id=dept,
              unit_org_id=unit, how=how)


def resolve_for_case(session: Session, case: Case) -> tuple[int | None, int | None, str]:
    """The (department, unit, how) the responsibility matrix gives a case: what dispatch uses and suggests."""
    cat = find_category(session, code=case.category_code, kind=case.category_kind,
                        dictionary=case.dictionary_code) if case.category_code else None
    areas = [a for a in (case.grid_code, case.community_code, case.town_code,
                         case.town_code[:6] if case.town_code else None) if a]
    return resolve_department(session, category_code=case.category_code, big_code=cat.big_code if cat else None,
                              default_dept=cat.default_dept if cat else None, area_codes=areas)


def _start_clock(session: Session, case: Case, *, minutes: float | None = None) -> None:
    """Set deadline and warning time from now (or from `minutes` of the limit's clock left)."""
    if case.limit_value is None or case.limit_unit is None:
        case.deadline_at = case.warn_at = None
        return
    cal = calendar(session)
    now = utcnow()
    total = cal.limit_minutes(case.limit_value, case.limit_unit) if minutes is None else minutes
    ratio = get_config(session, key="rules")["warn_ratio"]
    if case.limit_unit == "hours":
        case.deadline_at = now + dt.timedelta(minutes=total)
        case.warn_at = now + dt.timedelta(minutes=total * ratio)
    else:
        case.deadline_at = cal.add_working_minutes(now, total)
        case.warn_at = cal.add_working_minutes(now, total * ratio)
    case.warned = False


def _dispatch(session: Session, case: Case, principal: Principal, *, dept_org_id: int, unit_org_id: int | None,
              how: str, comment: str | None = None, attachments: list | None = None) -> None:
    org = identity.get_org(session, org_id=dept_org_id)
    if unit_org_id is not None:
        identity.get_org(session, org_id=unit_org_id)
    frm = case.status
    now = utcnow()
    case.status, case.dept_org_id, case.unit_org_id, case.queue = "dispatched", dept_org_id, unit_org_id, None
    case.assignee_user_id = case.assignee_name = case.assigned_at = None  # the new department assigns its own
    case.dispatched_at = now
    if case.filed_at is not None and case.dispatched_on_time is None:
        limit = get_config(session, key="rules")["dispatch_limit_work_minutes"]
        case.dispatched_on_time = calendar(session).working_minutes(case.filed_at, now) <= limit
    _start_clock(session, case)
    _log(session, case, "dispatch", principal, frm=frm, to="dispatched", comment=comment, attachments=attachments,
         data={"dept_org_id": dept_org_id, "unit_org_id": unit_org_id, "how": how,
               "deadline_at": case.deadline_at.isoformat() if case.deadline_at else None})
    for target in dict.fromkeys(o for o in (dept_org_id, unit_org_id) if o is not None):
        _notify(session, case=case, kind="new_task", org_id=target,
                zh=f"新任务：{case.ticket} {case.title}（{org.name}）", en=f"New task: {case.ticket} {case.title}")


def _ensure_comment(a: wf.Action, comment: str | None) -> None:
    if a.needs_comment and not (comment and comment.strip()):
        raise Invalid(f"「{a.zh}」须填写说明", f"'{a.en}' needs a comment",
                      errors=[{"field": "comment", "message": "required for this action"}])


def act(session: Session, *, case_id: int, action: str, principal: Principal, comment: str | None = None,
        attachments: list[str] | None = None, dept_org_id: int | None = None, unit_org_id: int | None = None,
        target_case_id: int | None = None, level: int | None = None, extra_value: float | None = None,
        extra_unit: str | None = None, extension_id: int | None = None, public_reply: str | None = None,
        assignee_user_id: int | None = None) -> Case:
    """Take a workflow action on a case (permission, scope and state checked; the step is logged and audited)."""
    with session.no_autoflush:
        return _act(session, case_id=case_id, action=action, principal=principal, comment=comment,
                    attachments=attachments, dept_org_id=dept_org_id, unit_org_id=unit_org_id,
                    target_case_id=target_case_id, level=level, extra_value=extra_value, extra_unit=extra_unit,
                    extension_id=extension_id, public_reply=public_reply, assignee_user_id=assignee_user_id)


def _act(session: Session, *, case_id: int, action: str, principal: Principal, comment: str | None,
         attachments: list[str] | None, dept_org_id: int | None, unit_org_id: int | None,
         target_case_id: int | None, level: int | None, extra_value: float | None, extra_unit: str | None,
         extension_id: int | None, public_reply: str | None, assignee_user_id: int | None) -> Case:
    a = wf.ACTIONS.get(action)
    if a is None:
        raise NotFound(f"未知操作 {action}", f"Unknown action {action}", code="unknown_action",
                       actions=sorted(wf.ACTIONS))
    if not principal.can(a.permission):
        _deny(session, principal, a.permission)
    case = get_case(session, case_id=case_id, principal=principal)
    if not _in_scope(principal, case, a):
        _deny(session, principal, a.permission, note=f"case {case.id} outside scope ({a.scope})")
    if case.status not in a.sources:
        allowed = actions_for(case, principal)
        raise Conflict(
            f"案件当前状态为「{wf.status_label(case.status)}」，不能「{a.zh}」；可执行：{'、'.join(wf.ACTIONS[x].zh for x in allowed) or '无'}",
            f"The case is '{wf.status_label(case.status, 'en')}'; '{a.en}' is not allowed. Allowed: "
            f"{', '.join(allowed) or 'none'}",
            code="illegal_transition", current_status=case.status, action=action, allowed_actions=allowed)
    _ensure_comment(a, comment)
    handler = _HANDLERS[action]
    handler(session, case, principal, a, comment=comment, attachments=attachments, dept_org_id=dept_org_id,
            unit_org_id=unit_org_id, target_case_id=target_case_id, level=level, extra_value=extra_value,
            extra_unit=extra_unit, extension_id=extension_id, public_reply=public_reply,
            assignee_user_id=assignee_user_id)
    session.commit()
    return case


def _deny(session: Session, principal: Principal, permission: str, *, note: str | None = None) -> None:
    """Record a refusal in this session's transaction and raise 403 (a second write session would wait on
    this one's SQLite lock)."""
    session.rollback()
    audit.commit(session, action=permission, target_type="permission", target_id=permission, outcome="denied",
                 actor=principal, note=note)
    if note:
        raise Forbidden("该案件不在您的管辖范围内", "That case is outside your organisation's scope",
                        code="out_of_scope")
    zh, en = PERMISSIONS.get(permission, (permission, permission))
    raise Forbidden(f"没有权限：{zh}", f"Permission required: {en}", code="permission_denied", permission=permission)


def _simple(session: Session, case: Case, principal: Principal, a: wf.Action, **kw: Any) -> None:
    frm = case.status
    case.status = a.target
    _log(session, case, a.code, principal, frm=frm, to=a.target, comment=kw.get("comment"),
         attachments=kw.get("attachments"))


def _h_file(session, case, principal, a, **kw):
    _file(session, case, principal, comment=kw.get("comment"), dept_org_id=kw.get("dept_org_id"),
          attachments=kw.get("attachments"))


def _tell_reporter(session: Session, case: Case, kind: str, zh: str, en: str) -> None:
    if case.reporter_user_id is not None:
        _notify(session, case=case, kind=kind, user_id=case.reporter_user_id, zh=zh, en=en)


def _h_reject(session, case, principal, a, **kw):
    _simple(session, case, principal, a, **kw)
    case.closed_at = utcnow()
    _tell_reporter(session, case, "not_filed", f"您上报的案件 {case.ticket} 不予立案：{kw.get('comment')}",
                   f"Your report {case.ticket} was not filed: {kw.get('comment')}")


def _h_answer(session, case, principal, a, **kw):
    _simple(session, case, principal, a, **kw)
    case.closed_at = utcnow()
    case.public_reply = kw.get("public_reply") or kw.get("comment")


def _h_merge(session, case, principal, a, **kw):
    target_id = kw.get("target_case_id")
    if not target_id or target_id == case.id:
        raise Invalid("须指定要并入的另一案件", "Name the other case to merge into",
                      errors=[{"field": "target_case_id", "message": "required, not this case"}])
    target = get_case(session, case_id=target_id, principal=principal)
    if target.status in wf.TERMINAL:
        raise Conflict(f"目标案件 {target.ticket} 已{wf.status_label(target.status)}，不能并入",
                       f"Target case {target.ticket} is {target.status}; cannot merge into it", code="merge_target_closed")
    case.merged_into_id = target.id
    _simple(session, case, principal, a, **kw)
    case.closed_at = utcnow()
    _log(session, target, "merged_in", principal, comment=f"并入案件 {case.ticket}", data={"case_id": case.id},
         topic=None)


def _h_dispatch(session, case, principal, a, **kw):
    dept, unit = kw.get("dept_org_id"), kw.get("unit_org_id")
    how = "manual"
    if dept is None:
        dept, unit, how = resolve_for_case(session, case)
        if dept is None:
            raise Invalid("权责清单中没有匹配的责任单位，请指定派遣部门", "No responsible department matched; choose one",
                          errors=[{"field": "dept_org_id", "message": "required"}])
    _dispatch(session, case, principal, dept_org_id=dept, unit_org_id=unit, how=how, comment=kw.get("comment"),
              attachments=kw.get("attachments"))


def _h_return(session, case, principal, a, **kw):
    frm = case.status
    old = case.dept_org_id
    case.status, case.dept_org_id, case.unit_org_id, case.queue = "filed", None, None, "manual"
    case.deadline_at = case.warn_at = None
    case.assignee_user_id = case.assignee_name = case.assigned_at = None
    case.return_count += 1
    _log(session, case, "return", principal, frm=frm, to="filed", comment=kw.get("comment"),
         data={"from_dept_org_id": old})
    _notify(session, case=case, kind="returned", org_id=command_center_org_id(session),
            zh=f"案件 {case.ticket} 被退单：{kw.get('comment')}", en=f"Case {case.ticket} was returned: {kw.get('comment')}")


def _h_handle(session, case, principal, a, **kw):
    if not kw.get("attachments") and not (kw.get("comment") or "").strip():
        raise Invalid("处置反馈须附说明或照片", "Handling feedback needs a comment or evidence")
    _simple(session, case, principal, a, **kw)
    now = utcnow()
    case.handled_at = now
    case.handled_on_time = case.deadline_at is None or now <= case.deadline_at
    if not case.handled_on_time:
        case.overdue = True


def _h_verify(session, case, principal, a, **kw):
    _simple(session, case, principal, a, **kw)
    _verified(session, case, principal)


def _verified(session: Session, case: Case, principal: Principal) -> None:
    now = utcnow()
    case.verified_at, case.verified_by = now, principal.id
    limit = get_config(session, key="rules")["verify_limit_work_minutes"]
    if case.handled_at is not None:
        case.verify_on_time = calendar(session).working_minutes(case.handled_at, now) <= limit


def _h_rework(session, case, principal, a, **kw):
    if case.status == "handled":
        _verified(session, case, principal)
    _simple(session, case, principal, a, **kw)
    case.rework_count += 1
    _notify_dept(session, case=case, kind="rework",
            zh=f"案件 {case.ticket} 核查未通过，需返工：{kw.get('comment')}",
            en=f"Case {case.ticket} failed verification; rework needed")


def _h_close(session, case, principal, a, **kw):
    _simple(session, case, principal, a, **kw)
    case.closed_at = utcnow()
    case.public_reply = kw.get("public_reply") or kw.get("comment") or "您反映的问题已处理完毕，感谢您的监督。"
    _tell_reporter(session, case, "closed", f"您上报的案件 {case.ticket} 已结案", f"Your report {case.ticket} is closed")


def _h_suspend(session, case, principal, a, **kw):
    if case.deadline_at is not None and case.limit_unit is not None:
        cal = calendar(session)
        case.suspended_minutes = max(0.0, cal.elapsed(utcnow(), case.deadline_at, case.limit_unit)) \
            if case.deadline_at > utcnow() else 0.0
    _simple(session, case, principal, a, **kw)


def _h_resume(session, case, principal, a, **kw):
    _simple(session, case, principal, a, **kw)
    if case.suspended_minutes is not None:
        _start_clock(session, case, minutes=case.suspended_minutes)
        case.suspended_minutes = None


def _h_reopen(session, case, principal, a, **kw):
    _simple(session, case, principal, a, **kw)
    case.reopen_count += 1
    case.closed_at = case.verified_at = case.rated_at = None
    case.overdue = False
    _start_clock(session, case)
    _notify_dept(session, case=case, kind="reopened",
            zh=f"案件 {case.ticket} 重新办理：{kw.get('comment')}", en=f"Case {case.ticket} reopened")


def _h_request_extension(session, case, principal, a, **kw):
    value, unit = kw.get("extra_value"), kw.get("extra_unit") or case.limit_unit or "work_days"
    if not value or value <= 0 or unit not in UNITS:
        raise Invalid("须填写延期时长（正数）和单位", "Give the extension length (positive) and unit",
                      errors=[{"field": "extra_value", "message": "positive number"},
                              {"field": "extra_unit", "message": f"one of {', '.join(UNITS)}"}])
    if session.scalar(select(Extension.id).where(Extension.case_id == case.id, Extension.status == "pending")):
        raise Conflict("已有待审批的延期申请", "An extension request is already pending", code="extension_pending")
    x = Extension(case_id=case.id, reason=kw["comment"], extra_value=value, extra_unit=unit, status="pending",
                  requested_by=principal.label, requested_at=utcnow())
    session.add(x)
    session.flush([x])
    _log(session, case, a.code, principal, comment=kw.get("comment"),
         data={"extension_id": x.id, "extra_value": value, "extra_unit": unit}, topic=None)
    _notify(session, case=case, kind="extension_request", org_id=command_center_org_id(session),
            zh=f"案件 {case.ticket} 申请延期 {value:g} {unit}", en=f"Case {case.ticket} asks for an extension")


def _pending_extension(session: Session, case: Case, extension_id: int | None) -> Extension:
    stmt = select(Extension).where(Extension.case_id == case.id, Extension.status == "pending")
    if extension_id:
        stmt = stmt.where(Extension.id == extension_id)
    x = session.scalar(stmt)
    if x is None:
        raise Conflict("没有待审批的延期申请", "No pending extension request", code="no_pending_extension",
                       allowed_actions=[c for c in ("request_extension",)])
    return x


def _h_approve_extension(session, case, principal, a, **kw):
    x = _pending_extension(session, case, kw.get("extension_id"))
    x.status, x.decided_by, x.decided_at, x.decision_comment = "approved", principal.label, utcnow(), kw.get("comment")
    cal = calendar(session)
    now = utcnow()
    base = case.deadline_at or now
    old = case.deadline_at
    case.deadline_at = cal.add(base, x.extra_value, x.extra_unit)
    remaining = cal.elapsed(now, case.deadline_at, case.limit_unit or x.extra_unit)
    ratio = get_config(session, key="rules")["warn_ratio"]
    case.warn_at = (now + dt.timedelta(minutes=remaining * ratio)) if (case.limit_unit == "hours") else \
        cal.add_working_minutes(now, remaining * ratio)
    case.warned = False
    if case.deadline_at > now:
        case.overdue = False
    case.extension_count += 1
    _log(session, case, a.code, principal, comment=kw.get("comment"),
         data={"extension_id": x.id, "old_deadline": old.isoformat() if old else None,
               "new_deadline": case.deadline_at.isoformat()}, topic=None)
    _notify_dept(session, case=case, kind="extension_decided",
            zh=f"案件 {case.ticket} 延期已批准", en=f"Extension of case {case.ticket} approved")


def _h_refuse_extension(session, case, principal, a, **kw):
    x = _pending_extension(session, case, kw.get("extension_id"))
    x.status, x.decided_by, x.decided_at, x.decision_comment = "refused", principal.label, utcnow(), kw.get("comment")
    _log(session, case, a.code, principal, comment=kw.get("comment"), data={"extension_id": x.id}, topic=None)
    _notify_dept(session, case=case, kind="extension_decided",
            zh=f"案件 {case.ticket} 延期申请被驳回", en=f"Extension of case {case.ticket} refused")


def _h_supervise(session, case, principal, a, **kw):
    level = kw.get("level") or min(3, case.supervision_level + 1)
    if level not in wf.SUPERVISION_LEVELS:
        raise Invalid("督办级别须为 1 催办、2 督办 或 3 挂牌督办", "Level must be 1, 2 or 3",
                      errors=[{"field": "level", "message": "1, 2 or 3"}])
    if level == 3 and "leader" not in principal.roles and principal.kind != "system":
        raise Forbidden("挂牌督办须由领导发起", "Only a leader may list a case for supervision (挂牌督办)",
                        code="leader_only")
    _supervise(session, case, principal, level=max(level, case.supervision_level), reason=kw["comment"], auto=False)


def _supervise(session: Session, case: Case, principal: Principal, *, level: int, reason: str, auto: bool) -> None:
    case.supervision_level = level
    session.add(Supervision(case_id=case.id, level=level, reason=reason, auto=auto, raised_by=principal.label,
                            dept_org_id=case.dept_org_id, at=utcnow()))
    name_zh, name_en = wf.SUPERVISION_LEVELS[level]
    _log(session, case, "supervise", principal, comment=reason, data={"level": level, "auto": auto},
         topic="cases.case.supervised")
    for org in dict.fromkeys((case.dept_org_id, case.unit_org_id, command_center_org_id(session))):
        _notify(session, case=case, kind="supervision", org_id=org,
                zh=f"【{name_zh}】案件 {case.ticket}：{reason}", en=f"[{name_en}] case {case.ticket}: {reason}")


def _h_note(session, case, principal, a, **kw):
    _log(session, case, "note", principal, comment=kw.get("comment"), attachments=kw.get("attachments"), topic=None)


def _h_assign(session, case, principal, a, **kw):
    """指派: the department names the handler who works the case (an active user of the case's department or
    unit who may handle cases); the handler is notified and finds it under "assigned to me"."""
    uid = kw.get("assignee_user_id")
    if uid is None:
        raise Invalid("请选择处置人员", "Choose the handler to assign",
                      errors=[{"field": "assignee_user_id", "message": "required"}])
    try:
        user = identity.get_user(session, user_id=uid)
    except NotFound:
        user = None
    target = identity.principal_for_user(session, user=user) if user is not None and user.active else None
    home = {o for o in (case.dept_org_id, case.unit_org_id) if o is not None}
    subtree: set[int] = set()
    for o in home:
        subtree |= identity.org_subtree_ids(session, org_id=o)
    if target is None or target.org_id not in subtree or not target.can("case.handle"):
        raise Invalid("只能指派给本部门（单位）内有处置权限的在岗人员",
                      "Assign only to an active handler of the case's department or unit",
                      errors=[{"field": "assignee_user_id", "message": "not a handler of this department"}])
    before = case.assignee_user_id
    case.assignee_user_id, case.assignee_name, case.assigned_at = user.id, user.real_name, utcnow()
    _log(session, case, "assign", principal, comment=kw.get("comment"),
         data={"assignee_user_id": user.id, "assignee": user.username, "assignee_name": user.real_name,
               "previous_assignee_user_id": before})
    _notify(session, case=case, kind="assigned", user_id=user.id,
            zh=f"指派给您：{case.ticket} {case.title}", en=f"Assigned to you: {case.ticket} {case.title}")


_HANDLERS = {
    "file": _h_file, "reject": _h_reject, "answer": _h_answer, "merge": _h_merge, "dispatch": _h_dispatch,
    "accept": _simple, "return": _h_return, "handle": _h_handle, "verify": _h_verify, "rework": _h_rework,
    "close": _h_close, "suspend": _h_suspend, "resume": _h_resume, "reopen": _h_reopen,
    "request_extension": _h_request_extension, "approve_extension": _h_approve_extension,
    "refuse_extension": _h_refuse_extension, "supervise": _h_supervise, "note": _h_note, "assign": _h_assign,
}


# --- citizens: tracking and rating --------------------------------------------------------------------------------


def _by_ticket(session: Session, ticket: str, phone: str) -> Case:
    case = session.scalar(select(Case).where(Case.ticket == ticket.strip()))
    if case is None or not phone or (case.reporter_phone or "") != phone.strip():
        # one answer for "no such ticket" and "wrong phone", so tickets cannot be probed
        raise NotFound("未找到该工单，请核对工单号和手机号", "No case with this ticket and phone number",
                       code="ticket_not_found")
    return case


def track(session: Session, *, ticket: str, phone: str, lang: str = "zh-CN") -> dict[str, Any]:
    """What a citizen sees of their case: status, progress steps, public reply; needs the right phone."""
    case = _by_ticket(session, ticket, phone)
    steps = [{"action": e.action, "name": wf.ACTIONS[e.action].zh if e.action in wf.ACTIONS
              else _EXTRA_ACTIONS.get(e.action, e.action), "status": e.to_status, "at": e.at}
             for e in session.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id,
                                                             CaseEvent.action.in_(_PUBLIC_STEPS))
                                      .order_by(CaseEvent.id))]
    rules = get_config(session, key="rules")
    can_rate = (case.status == "closed" and case.closed_at is not None
                and utcnow() - case.closed_at <= dt.timedelta(days=rules["rating_window_days"])
                and case.rated_at is None)
    return {"ticket": case.ticket, "title": case.title, "status": case.status,
            "status_name": wf.status_label(case.status, lang), "reported_at": case.reported_at,
            "closed_at": case.closed_at, "public_reply": case.public_reply if case.status == "closed" else None,
            "steps": steps, "rating": case.rating, "can_rate": can_rate}


_PUBLIC_STEPS = ("report", "file", "reject", "dispatch", "accept", "handle", "close", "answer", "reopen", "merge",
                 "rate")


def rate(session: Session, *, case_id: int | None = None, ticket: str | None = None, phone: str | None = None,
         satisfaction: str, resolved: bool | None = None, contacted: bool = True, comment: str | None = None,
         principal: Principal) -> Case:
    """Record the reporter's rating (satisfied/basic/dissatisfied) within the window; dissatisfaction reopens by rule.

    Citizens rate with ticket + phone; operators record a callback (回访) by case id."""
    if satisfaction not in wf.RATINGS:
        raise Invalid("评价须为 满意/基本满意/不满意", "Rating must be satisfied, basic or dissatisfied",
                      errors=[{"field": "satisfaction", "message": "satisfied | basic | dissatisfied"}])
    if ticket is not None:
        case = _by_ticket(session, ticket, phone or "")
    else:
        if not principal.can("case.close"):
            _deny(session, principal, "case.close")
        case = get_case(session, case_id=case_id or -1, principal=principal)
    rules = get_config(session, key="rules")
    now = utcnow()
    if case.status != "closed" or case.closed_at is None:
        raise Conflict(f"案件当前为「{wf.status_label(case.status)}」，结案后才能评价",
                       f"The case is '{wf.status_label(case.status, 'en')}'; it can be rated once closed",
                       code="not_closed", current_status=case.status, allowed_actions=[])
    if now - case.closed_at > dt.timedelta(days=rules["rating_window_days"]):
        raise Conflict(f"已超过结案后 {rules['rating_window_days']} 天的评价期限",
                       f"The {rules['rating_window_days']}-day rating window has passed", code="rating_window_closed")
    if case.rated_at is not None:
        raise Conflict("本次办理已评价过", "This closure has already been rated", code="already_rated")
    case.rating, case.rated_at = satisfaction, now
    case.rating_contacted = contacted
    case.rating_resolved = (satisfaction != "dissatisfied") if resolved is None else resolved
    _log(session, case, "rate", principal, comment=comment,
         data={"satisfaction": satisfaction, "resolved": case.rating_resolved, "contacted": contacted},
         topic="cases.case.rated")
    if satisfaction == "dissatisfied" and rules["reopen_on_dissatisfied"] and case.reopen_count < rules["max_reopen"]:
        frm = case.status
        case.status = "rework"
        case.reopen_count += 1
        case.closed_at = case.verified_at = case.rated_at = None
        case.overdue = False
        _start_clock(session, case)
        _log(session, case, "reopen", SYSTEM, frm=frm, to="rework",
             comment=f"市民不满意，按规则重新办理：{comment or ''}".strip("："))
        _notify_dept(session, case=case, kind="reopened",
                zh=f"案件 {case.ticket} 市民不满意，重新办理", en=f"Case {case.ticket} reopened: reporter dissatisfied")
    session.commit()
    return case


# --- deadlines sweep -------------------------------------------------------------------------------------------------


def sweep(session: Session, *, now: dt.datetime | None = None) -> dict[str, int]:
    """Deadline warnings at 80%, overdue marking, automatic 催办/督办, hotspot detection; returns the counts."""
    now = now or utcnow()
    rules = get_config(session, key="rules")
    counts = {"warned": 0, "overdue": 0, "escalated": 0, "hotspots": 0}
    running = list(wf.CLOCK_RUNNING)
    for case in session.scalars(select(Case).where(Case.status.in_(running), Case.warned.is_(False),
                                                   Case.warn_at <= now).limit(1000)).all():
        case.warned = True
        _log(session, case, "deadline_warning", SYSTEM, data={"deadline_at": case.deadline_at.isoformat()},
             topic="cases.case.warning")
        _notify_dept(session, case=case, kind="deadline_warning",
                zh=f"临期预警：案件 {case.ticket} 已用时 {int(rules['warn_ratio'] * 100)}%，请于 "
                   f"{case.deadline_at.astimezone(CST):%m-%d %H:%M} 前办结",
                en=f"Deadline warning: case {case.ticket} is due {case.deadline_at.astimezone(CST):%m-%d %H:%M}")
        counts["warned"] += 1
    for case in session.scalars(select(Case).where(Case.status.in_(running), Case.overdue.is_(False),
                                                   Case.deadline_at <= now).limit(1000)).all():
        case.overdue = True
        _log(session, case, "overdue", SYSTEM, data={"deadline_at": case.deadline_at.isoformat()},
             topic="cases.case.overdue")
        counts["overdue"] += 1
        if case.supervision_level < 1:
            _supervise(session, case, SYSTEM, level=1, reason="案件已超期，系统自动催办", auto=True)
    # 督办 when overdue by a further `escalate_after_limit_ratio` of the time limit
    cal = calendar(session)
    for case in session.scalars(select(Case).where(Case.status.in_(running), Case.overdue.is_(True),
                                                   Case.supervision_level == 1).limit(1000)).all():
        if case.limit_value is None or case.deadline_at is None:
            continue
        late = cal.elapsed(case.deadline_at, now, case.limit_unit)
        if late >= rules["escalate_after_limit_ratio"] * cal.limit_minutes(case.limit_value, case.limit_unit):
            _supervise(session, case, SYSTEM, level=2, reason="超期时间已超过一个办理时限，系统自动督办", auto=True)
            counts["escalated"] += 1
    from citybrain.cases import analytics

    counts["hotspots"] = analytics.detect_hotspots(session, now=now)
    if any(counts.values()):
        audit.record(session, action="case.sweep", target_type="case", after=counts, actor=SYSTEM)
    session.commit()
    return counts


# --- IoT alarms ---------------------------------------------------------------------------------------------------


def _iot_category(session: Session, hint: str | None) -> Category | None:
    if not hint:
        return None
    return find_category(session, code=str(hint).strip())


# built once (the alarm handler runs for every alarm event)
_OPEN_IOT_CASE = (select(Case).where(Case.device_code == bindparam("device"), Case.rule_id == bindparam("rule"),
                                     Case.source == "iot", Case.status.in_(list(wf.OPEN)))
                  .order_by(Case.id.desc()).limit(1))
_CASE_BY_REF = select(Case.id).where(Case.external_ref == bindparam("ref"))
_CLEARED_LOGGED = select(CaseEvent.id).where(CaseEvent.case_id == bindparam("case_id"),
                                             CaseEvent.action == "alarm_cleared", CaseEvent.comment == bindparam("key"))


def on_alarm_raised(session: Session, *, payload: dict[str, Any]) -> Case | None:
    """One open case per device and rule: the first alarm opens (files, dispatches) it, repeats are noted."""
    device, rule = str(payload.get("device_code") or ""), str(payload.get("rule_id") or "")
    alarm_id = str(payload.get("alarm_id") or "")
    if not device or not rule:
        log.warning("alarm without device_code/rule_id ignored: %s", payload)
        return None
    case = session.scalar(_OPEN_IOT_CASE, {"device": device, "rule": rule})
    if case is not None:
        if alarm_id and alarm_id in (case.alarm_ids or []):
            return case  # the same event delivered again
        case.alarm_ids = [*(case.alarm_ids or []), alarm_id][-50:]
        case.repeat_count += 1
        _log(session, case, "alarm_repeat", SYSTEM, comment=payload.get("message_zh"),
             data={"alarm_id": alarm_id, "value": payload.get("value"), "repeat_count": case.repeat_count},
             topic=None)
        session.commit()
        return case
    if alarm_id and session.scalar(_CASE_BY_REF, {"ref": f"iot-alarm:{alarm_id}"}):
        return None  # this alarm already produced a case that has since been closed
    cat = _iot_category(session, payload.get("category_hint"))
    iotc = get_config(session, key="iot")
    severity = int(payload.get("severity") or 1)
    urgent = severity >= iotc["urgent_severity"]
    lon, lat = payload.get("lon"), payload.get("lat")
    try:
        lon = float(lon) if lon is not None else None
        lat = float(lat) if lat is not None else None
        _check_point(lon, lat)
    except (TypeError, ValueError, Invalid):
        lon = lat = None
    dept = None
    for oid in payload.get("org_ids") or []:
        try:
            org = identity.get_org(session, org_id=int(oid))
        except (NotFound, TypeError, ValueError):
            continue
        if org.type in ("department", "external"):
            dept = org.id
            break
    rule_name = payload.get("rule_name") or "物联告警"
    message = payload.get("message_zh") or ""
    # the alarm text already names the rule (【严重】设备（编码）规则：…); otherwise "规则：设备"
    title = (message if rule_name in message else f"{rule_name}：{message or device}")[:200]
    case = report(session, principal=SYSTEM, source="iot", title=title,
                  description=f"设备 {device} 告警（规则 {payload.get('rule_name') or rule}，{payload.get('property')}="
                              f"{payload.get('value')}，级别 {severity}）。{payload.get('message_en') or ''}",
                  category_code=cat.code if cat else None, category_kind=cat.kind if cat else None,
                  lon=lon, lat=lat, grid_code=payload.get("grid_code"), urgent=urgent or None,
                  external_ref=f"iot-alarm:{alarm_id}" if alarm_id else None, device_code=device, rule_id=rule,
                  alarm_id=alarm_id or None, auto_file=False, commit=False)
    if cat is None:
        if urgent:
            case.limit_value, case.limit_unit, case.urgent = float(iotc["limit_urgent_hours"]), "hours", True
        else:
            case.limit_value, case.limit_unit = float(iotc["limit_work_days"]), "work_days"
    matrix_dept = resolve_for_case(session, case)[0]
    _file(session, case, SYSTEM, comment="物联告警自动立案",
          dept_org_id=dept if matrix_dept is None and dept is not None else None)
    session.commit()
    return case


def on_alarm_cleared(session: Session, *, payload: dict[str, Any]) -> Case | None:
    """Note the recovery on the open case of that device and rule (the case still needs handling and closure)."""
    device, rule = str(payload.get("device_code") or ""), str(payload.get("rule_id") or "")
    case = session.scalar(_OPEN_IOT_CASE, {"device": device, "rule": rule})
    if case is None:
        return None
    key = f"cleared:{payload.get('alarm_id')}:{payload.get('at')}"
    if session.scalar(_CLEARED_LOGGED, {"case_id": case.id, "key": key}):
        return case
    _log(session, case, "alarm_cleared", SYSTEM, comment=key,
         data={"alarm_id": payload.get("alarm_id"), "message": payload.get("message_zh") or "告警已恢复"}, topic=None)
    session.commit()
    return case


def _bus_alarm(event: bus.Event) -> None:
    from citybrain.db import get_db

    with get_db().write() as s:
        if event.topic.endswith(".raised"):
            on_alarm_raised(s, payload=event.payload)
        else:
            on_alarm_cleared(s, payload=event.payload)


bus.subscribe("cases.iot_alarms", ("iot.alarm.raised", "iot.alarm.cleared"), _bus_alarm)


# --- IOC and map -------------------------------------------------------------------------------------------------------


def ioc_summary(session: Session, *, principal: Principal) -> dict[str, Any]:
    """Indicators for the operations centre (in the principal's scope)."""
    from citybrain.cases import analytics

    return analytics.ioc_summary(session, principal=principal)


def hotspot_list(session: Session, *, principal: Principal, days: int = 7) -> list[dict[str, Any]]:
    """Hotspots flagged in the last days."""
    since = utcnow() - dt.timedelta(days=days)
    return [{"id": h.id, "category_code": h.category_code, "category_name": h.category_name, "lon": h.lon,
             "lat": h.lat, "grid_code": h.grid_code, "count": h.count, "case_ids": h.case_ids,
             "window_start": h.window_start, "window_end": h.window_end, "created_at": h.created_at}
            for h in session.scalars(select(Hotspot).where(Hotspot.created_at >= since)
                                     .order_by(Hotspot.created_at.desc()).limit(200))]
