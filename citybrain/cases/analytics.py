"""Evaluation (考核评价), IOC indicators and hotspots (未诉先办).

Formulas (STANDARDS.md §3 and §5.3; seeded defaults where the sheet says UNVERIFIED), over the cases
*reported* in the period [start, end):

- 上报数 reported; 立案数 filed; 有效上报率 filing_rate = filed / reported
- 按时派遣率 timely_dispatch_rate = dispatched within `dispatch_limit_work_minutes` of filing / dispatched
- 应结案数 due = dispatched - currently suspended (挂账 is taken out of the base)
- 结案率 closure_rate = closed / due; 按期处置率 on_time_handling_rate = handled by the deadline / due
- 按期结案率 on_time_closure_rate = closed and handled by the deadline / due
- 返工率 rework_rate = cases reworked at least once / handled (处置数)
- 退单率 return_rate = cases returned at least once / dispatched; overdue = cases marked overdue
- 12345 三率 over valid callbacks (rated cases): 响应率 = contacted / valid, 解决率 = resolved / valid,
  满意率 = (satisfied + 0.9 × basic) / valid; 热线综合 = 响应率×10% + 解决率×50% + 满意率×40%
- department score = 立案数分值×10% + 结案率×30% + 按期处置率×30% + (1-返工率)×30%
- area score (town, community, grid) = (1-公众举报率)×10% + 立案数分值×20% + 结案率×30% + 按期结案率×40%
- grid worker score = 有效上报率×40% + (1-漏报率)×20% + 按时核查率×40% (核实 and 核查 share one step here)
- a rate with an empty base counts as full marks in a score; grades A ≥90, B ≥75, C ≥60, D ≥40, else E.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from typing import Any

from sqlalchemy import and_, func, literal, select
from sqlalchemy import case as sa_case
from sqlalchemy.orm import Session

from citybrain.cases import workflow as wf
from citybrain.cases.models import Case, Hotspot
from citybrain.context import Principal
from citybrain.db import utcnow
from citybrain.errors import Invalid, NotFound
from citybrain.identity import service as identity
from citybrain.workcal import CST

GROUPS = ("dept", "town", "community", "grid", "gridworker", "all")


def filed_count_score(n: int) -> float:
    """Department 立案数分值: fewer cases score higher (≤50 → 100 … >1000 → 0)."""
    for limit, score in ((50, 100), (100, 90), (200, 75), (500, 60), (1000, 40)):
        if n <= limit:
            return float(score)
    return 0.0


def grade(score: float) -> str:
    """评价等级 A–E."""
    return "A" if score >= 90 else "B" if score >= 75 else "C" if score >= 60 else "D" if score >= 40 else "E"


def _rate(num: int, den: int) -> float | None:
    return None if not den else num / den


def _pct(rate: float | None) -> float:
    return 100.0 if rate is None else rate * 100.0


def _sum(cond) -> Any:
    return func.coalesce(func.sum(sa_case((cond, 1), else_=0)), 0)


def _aggregate(session: Session, key, start: dt.datetime, end: dt.datetime, scope,
               extra: tuple[tuple[str, Any], ...] = ()) -> list[Any]:
    """The counts of the cases reported in [start, end) grouped by `key` (and the `extra` (label, column) keys)."""
    public = Case.source.in_(list(wf.PUBLIC_SOURCES))
    stmt = select(
        key.label("key"),
        *[col.label(label) for label, col in extra],
        func.count().label("reported"),
        func.count(Case.filed_at).label("filed"),
        _sum(Case.status == "not_filed").label("not_filed"),
        func.count(Case.dispatched_at).label("dispatched"),
        _sum(Case.dispatched_on_time.is_(True)).label("dispatched_on_time"),
        _sum(and_(Case.status == "suspended", Case.dispatched_at.is_not(None))).label("suspended"),
        _sum(and_(Case.status == "closed", Case.dispatched_at.is_not(None))).label("closed"),
        _sum(and_(Case.handled_at.is_not(None), Case.dispatched_at.is_not(None))).label("handled"),
        _sum(and_(Case.handled_on_time.is_(True), Case.dispatched_at.is_not(None))).label("handled_on_time"),
        _sum(and_(Case.status == "closed", Case.handled_on_time.is_(True), Case.dispatched_at.is_not(None)))
        .label("closed_on_time"),
        _sum(Case.rework_count > 0).label("reworked"),
        _sum(Case.return_count > 0).label("returned"),
        _sum(Case.overdue.is_(True)).label("overdue"),
        _sum(and_(Case.filed_at.is_not(None), public)).label("public_filed"),
        func.count(Case.rating).label("valid_callbacks"),
        _sum(Case.rating_contacted.is_(True)).label("contacted"),
        _sum(Case.rating_resolved.is_(True)).label("resolved"),
        _sum(Case.rating == "satisfied").label("satisfied"),
        _sum(Case.rating == "basic").label("basic"),
        _sum(Case.rating == "dissatisfied").label("dissatisfied"),
    ).where(Case.reported_at >= start, Case.reported_at < end)
    if scope is not None:
        stmt = stmt.where(scope)
    return list(session.execute(stmt.group_by(key, *[col for _label, col in extra])).all())


def indicators(row: dict[str, int], *, kind: str) -> dict[str, Any]:
    """Rates, three rates and the composite score from the counts of one group."""
    r = dict(row)
    due = r["dispatched"] - r["suspended"]
    r["due"] = due
    r["filing_rate"] = _rate(r["filed"], r["reported"])
    r["timely_dispatch_rate"] = _rate(r["dispatched_on_time"], r["dispatched"])
    r["closure_rate"] = _rate(r["closed"], due)
    r["on_time_handling_rate"] = _rate(r["handled_on_time"], due)
    r["on_time_closure_rate"] = _rate(r["closed_on_time"], due)
    r["rework_rate"] = _rate(r["reworked"], r["handled"])
    r["return_rate"] = _rate(r["returned"], r["dispatched"])
    r["public_report_rate"] = _rate(r["public_filed"], r["filed"])
    v = r["valid_callbacks"]
    r["response_rate"] = _rate(r["contacted"], v)
    r["resolution_rate"] = _rate(r["resolved"], v)
    r["satisfaction_rate"] = None if not v else (r["satisfied"] + 0.9 * r["basic"]) / v
    r["hotline_score"] = None if not v else round(
        _pct(r["response_rate"]) * 0.1 + _pct(r["resolution_rate"]) * 0.5 + _pct(r["satisfaction_rate"]) * 0.4, 2)
    if kind == "dept":
        score = (filed_count_score(r["filed"]) * 0.1 + _pct(r["closure_rate"]) * 0.3
                 + _pct(r["on_time_handling_rate"]) * 0.3 + (100 - _pct(r["rework_rate"]) if r["rework_rate"]
                                                             is not None else 100.0) * 0.3)
    else:
        score = ((100 - _pct(r["public_report_rate"]) if r["public_report_rate"] is not None else 100.0) * 0.1
                 + filed_count_score(r["filed"]) * 0.2 + _pct(r["closure_rate"]) * 0.3
                 + _pct(r["on_time_closure_rate"]) * 0.4)
    rated = (("closure_rate", "on_time_handling_rate", "rework_rate") if kind == "dept"
             else ("public_report_rate", "closure_rate", "on_time_closure_rate"))
    # nothing to rate (every rate of the formula has an empty base): no score rather than full marks
    r["score"] = round(score, 2) if any(r[k] is not None for k in rated) else None
    r["grade"] = grade(r["score"]) if r["score"] is not None else None
    return r


def _period(start: dt.datetime | None, end: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    end = end or utcnow()
    start = start or end - dt.timedelta(days=30)
    if start >= end:
        raise Invalid("开始时间须早于结束时间", "start must be before end",
                      errors=[{"field": "start", "message": "must be before end"}])
    if end - start > dt.timedelta(days=3660):
        raise Invalid("统计周期不能超过十年", "The period may not exceed ten years",
                      errors=[{"field": "start", "message": "period too long"}])
    return start, end


def _name(session: Session, group_by: str, key: Any) -> str | None:
    if key is None:
        return "未派遣/未定位" if group_by != "all" else "全区"
    if group_by in ("dept", "town", "community"):
        try:
            return identity.get_org(session, org_id=int(key)).name
        except NotFound:
            return str(key)
    if group_by == "gridworker":
        try:
            u = identity.get_user(session, user_id=int(key))
            return u.real_name
        except NotFound:
            return str(key)
    if group_by == "all":
        return "全区"
    return str(key)


def evaluate(session: Session, *, principal: Principal, group_by: str = "dept", start: dt.datetime | None = None,
             end: dt.datetime | None = None) -> dict[str, Any]:
    """考核评价 per department, town, community, grid, grid worker (or all) over a period, best score first."""
    from citybrain.cases.service import _scope_clause

    if group_by not in GROUPS:
        raise Invalid(f"group_by 须为 {', '.join(GROUPS)}", f"group_by must be one of {', '.join(GROUPS)}",
                      errors=[{"field": "group_by", "message": "unknown grouping"}])
    start, end = _period(start, end)
    scope = _scope_clause(principal)
    if group_by == "gridworker":
        rows = _gridworkers(session, start, end, scope)
    else:
        key = {"dept": Case.dept_org_id, "town": Case.town_org_id, "community": Case.community_org_id,
               "grid": Case.grid_code, "all": literal("all")}[group_by]
        kind = "dept" if group_by in ("dept", "all") else "area"
        rows = []
        for row in _aggregate(session, key, start, end, scope):
            d = indicators({k: int(v or 0) for k, v in row._mapping.items() if k != "key"}, kind=kind)
            d["key"] = row.key if group_by != "all" else None
            rows.append(d)
    for d in rows:
        d["name"] = _name(session, group_by, d["key"])
        if d["key"] is None and group_by != "all":  # the cases with no department or place: listed, never ranked
            d["score"] = d["grade"] = None
        if d["key"] is None:
            d["name_en"] = "Not dispatched / not located" if group_by != "all" else "District"
        elif group_by in ("dept", "town", "community"):
            d["name_en"] = _org_names(session, d["key"])[1]
    rows.sort(key=lambda d: (d["key"] is None, d["score"] is None, -(d["score"] or 0), str(d["key"])))
    return {"group_by": group_by, "start": start, "end": end, "rows": rows}


def _gridworkers(session: Session, start: dt.datetime, end: dt.datetime, scope) -> list[dict[str, Any]]:
    base = [Case.reported_at >= start, Case.reported_at < end]
    if scope is not None:
        base.append(scope)
    reports = {r.key: r for r in session.execute(
        select(Case.reporter_user_id.label("key"), func.count().label("reported"),
               func.count(Case.filed_at).label("filed"))
        .where(Case.source == "patrol", Case.reporter_user_id.is_not(None), *base)
        .group_by(Case.reporter_user_id)).all()}
    checks = {r.key: r for r in session.execute(
        select(Case.verified_by.label("key"), func.count().label("verified"),
               _sum(Case.verify_on_time.is_(True)).label("verified_on_time"))
        .where(Case.verified_by.is_not(None), *base).group_by(Case.verified_by)).all()}
    out = []
    for uid in set(reports) | set(checks):
        try:
            user = identity.get_user(session, user_id=int(uid))
        except NotFound:
            continue
        if "gridworker" not in identity.user_roles(session, user_id=user.id):
            continue
        rep, chk = reports.get(uid), checks.get(uid)
        community = user.org_id
        filed_here = missed = 0
        if community is not None:
            filed_here, missed = session.execute(
                select(func.count(Case.filed_at), _sum(and_(Case.filed_at.is_not(None),
                                                            Case.source.in_(list(wf.PUBLIC_SOURCES)))))
                .where(Case.community_org_id == community, *base)).one()
        d = {"key": uid, "reported": rep.reported if rep else 0, "filed": rep.filed if rep else 0,
             "verified": chk.verified if chk else 0, "verified_on_time": int(chk.verified_on_time) if chk else 0,
             "community_filed": int(filed_here or 0), "missed": int(missed or 0)}
        d["filing_rate"] = _rate(d["filed"], d["reported"])
        d["missed_rate"] = _rate(d["missed"], d["community_filed"])
        d["on_time_verify_rate"] = _rate(d["verified_on_time"], d["verified"])
        d["score"] = round(_pct(d["filing_rate"]) * 0.4 + (100 - _pct(d["missed_rate"]) if d["missed_rate"]
                                                           is not None else 100.0) * 0.2
                           + _pct(d["on_time_verify_rate"]) * 0.4, 2)
        if d["filing_rate"] is None and d["missed_rate"] is None and d["on_time_verify_rate"] is None:
            d["score"] = None  # nothing to rate
        d["grade"] = grade(d["score"]) if d["score"] is not None else None
        out.append(d)
    return out


CSV_COLUMNS = [
    ("name", "名称"), ("key", "编码"), ("reported", "上报数"), ("filed", "立案数"), ("dispatched", "派遣数"),
    ("due", "应结案数"), ("closed", "结案数"), ("overdue", "超期数"), ("filing_rate", "有效上报率"),
    ("timely_dispatch_rate", "按时派遣率"), ("on_time_handling_rate", "按期处置率"), ("closure_rate", "结案率"),
    ("on_time_closure_rate", "按期结案率"), ("rework_rate", "返工率"), ("return_rate", "退单率"),
    ("response_rate", "响应率"), ("resolution_rate", "解决率"), ("satisfaction_rate", "满意率"),
    ("score", "综合得分"), ("grade", "等级"),
]
GRIDWORKER_CSV = [("name", "姓名"), ("key", "用户ID"), ("reported", "上报数"), ("filed", "有效上报数"),
                  ("filing_rate", "有效上报率"), ("missed", "漏报数"), ("missed_rate", "漏报率"),
                  ("verified", "核查数"), ("on_time_verify_rate", "按时核查率"), ("score", "综合得分"),
                  ("grade", "等级")]


def evaluation_csv(result: dict[str, Any]) -> str:
    """The evaluation as CSV (UTF-8 with BOM so spreadsheet software reads the Chinese headers)."""
    cols = GRIDWORKER_CSV if result["group_by"] == "gridworker" else CSV_COLUMNS
    buf = io.StringIO()
    buf.write("\ufeff")
    w = csv.writer(buf)
    w.writerow([zh for _k, zh in cols])
    for row in result["rows"]:
        out = []
        for k, _zh in cols:
            v = row.get(k)
            if isinstance(v, float) and k.endswith("rate"):
                v = f"{v * 100:.2f}%"
            out.append("" if v is None else v)
        w.writerow(out)
    return buf.getvalue()


# --- IOC ---------------------------------------------------------------------------------------------------------------


COUNTS = ("reported", "filed", "not_filed", "dispatched", "dispatched_on_time", "suspended", "closed", "handled",
          "handled_on_time", "closed_on_time", "reworked", "returned", "overdue", "public_filed", "valid_callbacks",
          "contacted", "resolved", "satisfied", "basic", "dissatisfied")


def _org_names(session: Session, org_id: Any) -> tuple[str | None, str | None]:
    try:
        org = identity.get_org(session, org_id=int(org_id))
    except NotFound:
        return str(org_id), None
    return org.name, org.name_en


def ioc_summary(session: Session, *, principal: Principal) -> dict[str, Any]:
    """Operations-centre indicators: today, open, overdue, the three rates, trend, rankings, hotspots.

    The 30-day indicators, the department and town rankings and the counts by status and source come from one
    grouped scan of the cases reported in the last 30 days (range on `reported_at`); the open, overdue and
    per-day counts are index-only range counts (`status, reported_at`, `overdue, status, reported_at`,
    `status, closed_at`, `reported_at`).
    """
    from citybrain.cases.service import _scope_clause, hotspot_list

    now = utcnow()
    scope = _scope_clause(principal)
    where = [scope] if scope is not None else []
    today = dt.datetime.combine(now.astimezone(CST).date(), dt.time(0), CST).astimezone(dt.UTC)
    start = today - dt.timedelta(days=29)
    end = now + dt.timedelta(seconds=1)
    cnt = lambda *c: session.scalar(select(func.count()).select_from(Case).where(*where, *c)) or 0  # noqa: E731
    open_st = list(wf.OPEN)

    tot = dict.fromkeys(COUNTS, 0)
    by_dept: dict[Any, dict[str, int]] = {}
    by_town: dict[Any, dict[str, int]] = {}
    by_status: dict[str, int] = {}
    by_source: dict[str, int] = {}
    for row in _aggregate(session, Case.dept_org_id, start, end, scope,
                          extra=(("town", Case.town_org_id), ("status", Case.status), ("source", Case.source))):
        m = row._mapping
        for acc in (tot, by_dept.setdefault(row.key, dict.fromkeys(COUNTS, 0)),
                    by_town.setdefault(row.town, dict.fromkeys(COUNTS, 0))):
            for k in COUNTS:
                acc[k] += int(m[k] or 0)
        by_status[row.status] = by_status.get(row.status, 0) + int(row.reported)
        by_source[row.source] = by_source.get(row.source, 0) + int(row.reported)
    tot = indicators(tot, kind="dept")
    for st in open_st:  # open cases count whenever they were reported
        by_status[st] = cnt(Case.status == st)

    trend = []
    for i in range(30):
        d0 = start + dt.timedelta(days=i)
        d1 = d0 + dt.timedelta(days=1)
        trend.append({"date": d0.astimezone(CST).date().isoformat(),
                      "reported": cnt(Case.reported_at >= d0, Case.reported_at < d1),
                      "closed": cnt(Case.status == "closed", Case.closed_at >= d0, Case.closed_at < d1)})

    def ranking(groups: dict[Any, dict[str, int]], kind: str) -> list[dict[str, Any]]:
        out = []
        for key, counts in groups.items():
            if key is None:
                continue
            r = indicators(counts, kind=kind)
            name, name_en = _org_names(session, key)
            out.append({"org_id": key, "name": name, "name_en": name_en, "score": r["score"], "grade": r["grade"],
                        "closure_rate": r["closure_rate"], "on_time_rate": r["on_time_closure_rate"],
                        "satisfaction_rate": r["satisfaction_rate"], "cases": r["reported"]})
        out.sort(key=lambda d: (d["score"] is None, -(d["score"] or 0), str(d["org_id"])))
        return out

    return {
        "generated_at": now,
        "period_start": start,
        "cases_today": cnt(Case.reported_at >= today),
        "cases_open": sum(by_status.get(st, 0) for st in open_st),
        "cases_overdue": cnt(Case.overdue.is_(True), Case.status.in_(open_st)),
        "closure_rate": tot["closure_rate"],
        "on_time_rate": tot["on_time_closure_rate"],
        "satisfaction_rate": tot["satisfaction_rate"],
        "response_rate": tot["response_rate"],
        "resolution_rate": tot["resolution_rate"],
        "by_status": by_status,
        "by_source": by_source,
        "trend_30d": trend,
        "dept_ranking": ranking(by_dept, "dept"),
        "town_ranking": ranking(by_town, "area"),
        "hotspots": hotspot_list(session, principal=principal, days=7)[:20],
        "top_grids": hotspot_counts(session, principal=principal, window_h=24 * 7, by="grid")[:10],
    }


# --- hotspots (未诉先办) ----------------------------------------------------------------------------------------------


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat = math.radians((a[1] + b[1]) / 2)
    dx = (b[0] - a[0]) * 111_320 * math.cos(lat)
    dy = (b[1] - a[1]) * 110_540
    return math.hypot(dx, dy)


def hotspot_counts(session: Session, *, principal: Principal, window_h: int = 24, by: str = "grid") -> list[dict]:
    """Case counts by grid (or category, or grid and category) over the last `window_h` hours, most first."""
    from citybrain.cases.service import _scope_clause

    keys = {"grid": [Case.grid_code], "category": [Case.category_code, Case.category_name],
            "grid_category": [Case.grid_code, Case.category_code, Case.category_name]}.get(by)
    if keys is None:
        raise Invalid("by 须为 grid、category 或 grid_category", "by must be grid, category or grid_category",
                      errors=[{"field": "by", "message": "unknown"}])
    since = utcnow() - dt.timedelta(hours=window_h)
    scope = _scope_clause(principal)
    where = [Case.reported_at >= since] + ([scope] if scope is not None else [])
    if by == "grid" and scope is None:
        # index-only count per grid over (grid_code, reported_at), less the merged cases (found by status): no row
        # of the window is read, which matters on the IOC with a million cases
        counts = dict(session.execute(select(Case.grid_code, func.count()).where(*where).group_by(Case.grid_code)).all())
        for grid in session.scalars(select(Case.grid_code).where(*where, Case.status == "merged")):
            counts[grid] -= 1
        top = sorted(((n, g) for g, n in counts.items() if n > 0), key=lambda x: (-x[0], x[1] is None, x[1] or ""))
        return [{"grid_code": g, "count": n} for n, g in top[:50]]
    stmt = select(*keys, func.count().label("n")).where(*where, Case.status != "merged")
    rows = session.execute(stmt.group_by(*keys).order_by(func.count().desc()).limit(50)).all()
    return [{**{k.key: getattr(r, k.key) for k in keys}, "count": r.n} for r in rows]


def _neighbours(items: list[Any], radius: float) -> dict[int, list[Any]]:
    """For each item (with .id, .lon, .lat), the items within `radius` metres (itself included), in input order.

    Items are bucketed into cells a little larger than the radius, so only the 3 × 3 cells around each are compared.
    """
    lat0 = math.radians(sum(r.lat for r in items) / len(items)) if items else 0.0
    cy = radius * 1.05 / 110_540
    cx = radius * 1.05 / (111_320 * max(math.cos(lat0) - 0.01, 0.01))
    cells: dict[tuple[int, int], list[tuple[int, Any]]] = {}
    for n, r in enumerate(items):
        cells.setdefault((math.floor(r.lon / cx), math.floor(r.lat / cy)), []).append((n, r))
    out: dict[int, list[Any]] = {}
    for r in items:
        i, j = math.floor(r.lon / cx), math.floor(r.lat / cy)
        near = [(n, o) for di in (-1, 0, 1) for dj in (-1, 0, 1) for n, o in cells.get((i + di, j + dj), ())
                if _metres((r.lon, r.lat), (o.lon, o.lat)) <= radius]
        out[r.id] = [o for _n, o in sorted(near, key=lambda x: x[0])]
    return out


def detect_hotspots(session: Session, *, now: dt.datetime | None = None) -> int:
    """Flag clusters of N same-category cases within R metres and T hours to the command centre; return new ones."""
    from citybrain.cases import service

    cfg = service.get_config(session, key="hotspot")
    now = now or utcnow()
    start = now - dt.timedelta(hours=cfg["window_h"])
    rows = session.execute(
        select(Case.id, Case.category_code, Case.category_name, Case.lon, Case.lat, Case.grid_code)
        .where(Case.reported_at >= start, Case.reported_at <= now, Case.lon.is_not(None),
               Case.category_code.is_not(None), Case.status.not_in(["not_filed", "merged"]))
        .order_by(Case.id).limit(20000)).all()
    by_cat: dict[str, list[Any]] = {}
    for r in rows:
        by_cat.setdefault(r.category_code, []).append(r)
    new = 0
    radius, need = float(cfg["radius_m"]), int(cfg["min_count"])
    for cat, items in by_cat.items():
        if len(items) < need:
            continue
        items = items[:2000]
        neigh = _neighbours(items, radius)
        used: set[int] = set()
        for r in sorted(items, key=lambda x: (-len(neigh[x.id]), x.id)):
            members = [o for o in neigh[r.id] if o.id not in used]
            if len(members) < need:
                continue
            used.update(o.id for o in members)
            ids = sorted(o.id for o in members)
            key = f"{cat}:{ids[0]}"
            h = session.scalar(select(Hotspot).where(Hotspot.key == key))
            lon = sum(o.lon for o in members) / len(members)
            lat = sum(o.lat for o in members) / len(members)
            if h is not None:
                if set(ids) - set(h.case_ids):
                    h.case_ids, h.count, h.lon, h.lat, h.window_end = sorted(set(h.case_ids) | set(ids)), \
                        len(set(h.case_ids) | set(ids)), lon, lat, now
                continue
            h = Hotspot(category_code=cat, category_name=r.category_name, lon=lon, lat=lat, grid_code=r.grid_code,
                        count=len(ids), case_ids=ids, key=key, window_start=start, window_end=now, created_at=now)
            session.add(h)
            session.flush([h])
            from citybrain import bus
            from citybrain.audit import service as audit

            audit.record(session, action="case.hotspot.flag", target_type="case_hotspot", target_id=h.id,
                         after={"category_code": cat, "count": len(ids), "case_ids": ids[:50]},
                         actor=service.SYSTEM)
            service._notify(session, case=None, kind="hotspot", org_id=service.command_center_org_id(session),
                            zh=f"热点预警：{cfg['window_h']} 小时内 {r.category_name or cat} 在 {int(radius)} 米范围内"
                               f"出现 {len(ids)} 起（网格 {r.grid_code or '-'}）",
                            en=f"Hotspot: {len(ids)} cases of {cat} within {int(radius)} m in {cfg['window_h']} h")
            bus.publish(session, "cases.hotspot.flagged",
                        {"hotspot_id": h.id, "category_code": cat, "category_name": r.category_name, "count": len(ids), "lon": lon, "lat": lat,
                         "grid_code": r.grid_code, "at": now.isoformat(),
                         "org_ids": [o for o in [service.command_center_org_id(session)] if o]})
            new += 1
    return new


# --- map layers (一张图) ------------------------------------------------------------------------------------------------

BBox = tuple[float, float, float, float]


def cases_geojson(session: Session, *, principal: Principal, bbox: BBox | None = None, status: list[str] | None = None,
                  overdue: bool | None = None, category_code: str | None = None, dept_org_id: int | None = None,
                  since: dt.datetime | None = None, until: dt.datetime | None = None,
                  limit: int = 5000, max_points: int | None = None) -> dict[str, Any]:
    """Cases with a position in the visible area as a GeoJSON FeatureCollection, newest first.

    Filters (all applied in the database): status list, overdue, category, responsible department and the
    reporting window [since, until). With `max_points` and a visible area holding more matching cases than that,
    the answer is clusters instead: the area cut into about 48 × 32 cells, one point per non-empty cell at the mean
    position of its cases, with `cluster: true` and `count` (and `clustered: true`, `total` on the collection).
    """
    from citybrain.cases.service import _scope_clause

    stmt = select(Case.id, Case.ticket, Case.title, Case.status, Case.category_code, Case.category_name,
                  Case.source, Case.overdue, Case.urgent, Case.supervision_level, Case.dept_org_id, Case.grid_code,
                  Case.reported_at, Case.deadline_at, Case.lon, Case.lat).where(Case.lon.is_not(None))
    scope = _scope_clause(principal)
    if scope is not None:
        stmt = stmt.where(scope)
    if bbox:
        x1, y1, x2, y2 = bbox
        stmt = stmt.where(Case.lon >= x1, Case.lon <= x2, Case.lat >= y1, Case.lat <= y2)
    if status:
        stmt = stmt.where(Case.status.in_(status))
    if overdue is not None:
        stmt = stmt.where(Case.overdue.is_(overdue))
    # With a visible area and a status list, the (status, lon, lat) index finds the few cases on screen; the other
    # filters are then checked on those rows. Wrapped in coalesce() they cannot lead the planner (SQLite's has no
    # value histograms) to walk a category or time index through years of closed cases instead.
    steer = bool(bbox and status)

    def col(c):
        return func.coalesce(c, c) if steer else c

    if category_code:
        stmt = stmt.where(col(Case.category_code) == category_code)
    if dept_org_id is not None:
        stmt = stmt.where(col(Case.dept_org_id) == dept_org_id)
    if since is not None:
        stmt = stmt.where(col(Case.reported_at) >= since)
    if until is not None:
        stmt = stmt.where(col(Case.reported_at) < until)
    if max_points and bbox:
        many = session.scalar(select(func.count()).select_from(
            stmt.with_only_columns(Case.id).limit(max_points + 1).subquery()))
        if many > max_points:
            from citybrain.geo import service as geo

            return geo.cluster_points(session, stmt, lon=Case.lon, lat=Case.lat, bbox=bbox)
    rows = session.execute(stmt.order_by(Case.reported_at.desc()).limit(limit)).all()
    feats = [{"type": "Feature", "id": r.id, "geometry": {"type": "Point", "coordinates": [r.lon, r.lat]},
              "properties": {"id": r.id, "ticket": r.ticket, "title": r.title, "status": r.status,
                             "status_name": wf.status_label(r.status), "category_code": r.category_code,
                             "category_name": r.category_name, "source": r.source, "overdue": r.overdue,
                             "urgent": r.urgent, "supervision_level": r.supervision_level,
                             "dept_org_id": r.dept_org_id, "grid_code": r.grid_code,
                             "reported_at": r.reported_at.isoformat(),
                             "deadline_at": r.deadline_at.isoformat() if r.deadline_at else None}} for r in rows]
    return {"type": "FeatureCollection", "features": feats}


def hotspots_geojson(session: Session, *, principal: Principal, bbox: BBox | None = None, days: int = 7,
                     category_code: str | None = None) -> dict[str, Any]:
    """The hotspots flagged by the spatio-temporal clustering (`detect_hotspots`: N same-category cases within
    R metres and T hours) in the last `days`, as GeoJSON points with their count and radius, largest first (at most
    500; their case ids are in `GET /cases/hotspots`).

    Hotspots are command-centre information: callers limited to part of the organisation see only hotspots whose
    cases include one they may see.
    """
    from citybrain.cases import service

    radius = float(service.get_config(session, key="hotspot")["radius_m"])
    stmt = select(Hotspot).where(Hotspot.created_at >= utcnow() - dt.timedelta(days=days))
    if bbox:
        x1, y1, x2, y2 = bbox
        stmt = stmt.where(Hotspot.lon >= x1, Hotspot.lon <= x2, Hotspot.lat >= y1, Hotspot.lat <= y2)
    if category_code:
        stmt = stmt.where(Hotspot.category_code == category_code)
    spots = list(session.scalars(stmt.order_by(Hotspot.count.desc(), Hotspot.id).limit(500)))
    scope = service._scope_clause(principal)
    if scope is not None and spots:
        ids = {i for h in spots for i in (h.case_ids or [])}
        visible = set(session.scalars(select(Case.id).where(Case.id.in_(ids), scope))) if ids else set()
        spots = [h for h in spots if visible & set(h.case_ids or [])]
    feats = [{"type": "Feature", "id": h.id, "geometry": {"type": "Point", "coordinates": [h.lon, h.lat]},
              "properties": {"id": h.id, "category_code": h.category_code, "category_name": h.category_name,
                             "count": h.count, "grid_code": h.grid_code, "radius_m": radius,
                             "window_start": h.window_start.isoformat(),
                             "window_end": h.window_end.isoformat(), "created_at": h.created_at.isoformat()}}
             for h in spots]
    return {"type": "FeatureCollection", "features": feats}
