"""Cases API (一网统管): intake, lists, the workflow, citizen tracking and rating, configuration, evaluation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AwareDatetime

from citybrain.cases import analytics, ratelimit, service
from citybrain.cases import workflow as wf
from citybrain.cases.schemas import (
    ActionIn,
    CaseBatchIn,
    CaseIn,
    CasePage,
    CategoryPatch,
    DeptAliasIn,
    PublicCaseIn,
    RatingIn,
    ReportedOut,
    ResponsibilityIn,
    TrackIn,
)
from citybrain.context import ANONYMOUS, Principal
from citybrain.deps import CurrentUser, ReadDB, WriteDB, require
from citybrain.errors import Forbidden, Invalid, request_language

router = APIRouter(prefix="/api/v1", tags=["cases 一网统管"])


def _lang(request: Request) -> str:
    return request_language(request)


def _reported(case: Any, lang: str) -> ReportedOut:
    return ReportedOut(id=case.id, ticket=case.ticket, status=case.status,
                       status_name=wf.status_label(case.status, lang), dept_org_id=case.dept_org_id,
                       deadline_at=case.deadline_at,
                       message_zh=f"已受理，工单号 {case.ticket}，可凭工单号和手机号查询进度",
                       message_en=f"Received; ticket {case.ticket}. Track it with the ticket and your phone number")


# --- reference and configuration (static paths before /cases/{id}) ----------------------------------------------------


@router.get("/cases/dictionaries", summary="分类字典 Classification dictionaries")
def dictionaries(db: ReadDB, _who: Principal = Depends(require("case.read"))) -> list[dict]:
    return service.list_dictionaries(db)


@router.post("/cases/dictionaries/{code}/activate", summary="启用分类字典 Activate a dictionary")
def activate(code: str, db: WriteDB, _who: Principal = Depends(require("case.config.manage"))) -> dict:
    return service.activate_dictionary(db, code=code)


@router.get("/cases/categories", summary="案件分类 Categories (active dictionary by default)")
def categories(db: ReadDB, _who: CurrentUser, dictionary: str | None = Query(None, max_length=40),
               kind: str | None = Query(None, pattern="^(component|event|hotline)$"),
               q: str | None = Query(None, max_length=50), limit: int = Query(500, ge=1, le=1000),
               offset: int = Query(0, ge=0)) -> dict:
    total, items = service.list_categories(db, dictionary=dictionary, kind=kind, q=q, limit=limit, offset=offset)
    return {"total": total, "items": items}


@router.patch("/cases/categories/{category_id}", summary="修改分类 Edit a category")
def patch_category(category_id: int, body: CategoryPatch, db: WriteDB,
                   _who: Principal = Depends(require("case.config.manage"))) -> dict:
    return service.update_category(db, category_id=category_id, **body.model_dump(exclude_none=True))


@router.get("/cases/responsibilities", summary="权责清单 Responsibility matrix")
def responsibilities(db: ReadDB, _who: Principal = Depends(require("case.read"))) -> list[dict]:
    return service.list_responsibilities(db)


@router.post("/cases/responsibilities", status_code=201, summary="新增权责条目 Add a responsibility row")
def add_responsibility(body: ResponsibilityIn, db: WriteDB,
                       _who: Principal = Depends(require("case.config.manage"))) -> dict:
    return service.add_responsibility(db, **body.model_dump())


@router.delete("/cases/responsibilities/{rid}", status_code=204, summary="删除权责条目 Delete a row")
def delete_responsibility(rid: int, db: WriteDB, _who: Principal = Depends(require("case.config.manage"))) -> Response:
    service.delete_responsibility(db, responsibility_id=rid)
    return Response(status_code=204)


@router.put("/cases/dept-aliases/{short}", status_code=204, summary="默认责任部门映射 Map a default department")
def dept_alias(short: str, body: DeptAliasIn, db: WriteDB,
               _who: Principal = Depends(require("case.config.manage"))) -> Response:
    service.set_dept_alias(db, short=short, org_id=body.org_id)
    return Response(status_code=204)


@router.get("/cases/config/{key}", summary="案件配置 Configuration (calendar, rules, hotspot, iot)")
def get_config(key: str, db: ReadDB, _who: Principal = Depends(require("case.read"))) -> dict:
    value = service.get_config(db, key=key)
    if key == "calendar":
        value = {**value, **service.calendar(db).to_dict()}
    return value


@router.put("/cases/config/{key}", summary="修改案件配置 Change configuration")
def put_config(key: str, body: dict[str, Any], db: WriteDB,
               _who: Principal = Depends(require("case.config.manage"))) -> dict:
    return service.set_config(db, key=key, value=body)


@router.get("/cases/calendar/deadline", summary="计算办理时限 Compute a deadline")
def deadline(db: ReadDB, _who: Principal = Depends(require("case.read")), start: AwareDatetime = Query(...),
             value: float = Query(..., gt=0, le=1000),
             unit: str = Query(..., pattern="^(work_hours|work_days|hours)$")) -> dict:
    cal = service.calendar(db)
    return {"start": start, "value": value, "unit": unit, "deadline": cal.add(start, value, unit)}


# --- lists, map, IOC, evaluation ------------------------------------------------------------------------------------


def _status_list(status: str | None) -> list[str] | None:
    if not status:
        return None
    if status == "open":
        return sorted(wf.OPEN)
    items = [s.strip() for s in status.split(",") if s.strip()]
    bad = [s for s in items if s not in wf.STATUSES]
    if bad:
        raise Invalid(f"未知状态：{'、'.join(bad)}", f"Unknown status: {', '.join(bad)}",
                      errors=[{"field": "status", "message": f"one of open, {', '.join(wf.STATUSES)}"}])
    return items


@router.get("/cases", response_model=CasePage, summary="案件列表 List cases (in your scope)")
def list_cases(request: Request, db: ReadDB, who: Principal = Depends(require("case.read")),
               status: str | None = Query(None, max_length=200, description="comma list, or `open`"),
               dept_org_id: int | None = None, grid_code: str | None = Query(None, max_length=20),
               category_code: str | None = Query(None, max_length=12), overdue: bool | None = None,
               source: str | None = Query(None, max_length=12), town_code: str | None = Query(None, max_length=9),
               q: str | None = Query(None, max_length=100), since: AwareDatetime | None = None,
               until: AwareDatetime | None = None,
               assigned_to_me: bool = Query(False, description="only cases assigned to the caller (指派给我)"),
               limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=100000)) -> CasePage:
    total, capped, rows = service.list_cases(db, principal=who, status=_status_list(status), dept_org_id=dept_org_id,
                                             grid_code=grid_code, category_code=category_code, overdue=overdue,
                                             source=source, town_code=town_code, q=q, since=since, until=until,
                                             assignee_user_id=(who.id or -1) if assigned_to_me else None,
                                             limit=limit, offset=offset)
    lang = _lang(request)
    return CasePage(total=total, total_capped=capped, items=[service.case_dict(c, lang=lang) for c in rows])


@router.get("/cases/mine", response_model=CasePage, summary="我上报的案件 Cases I reported")
def my_cases(request: Request, db: ReadDB, who: Principal = Depends(require("case.report")),
             limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)) -> CasePage:
    total, capped, rows = service.list_cases(db, principal=who, mine=True, limit=limit, offset=offset)
    lang = _lang(request)
    return CasePage(total=total, total_capped=capped, items=[service.case_dict(c, lang=lang) for c in rows])


@router.get("/cases/assigned", response_model=CasePage, summary="指派给我的案件 Open cases assigned to me")
def assigned_cases(request: Request, db: ReadDB, who: Principal = Depends(require("case.handle")),
                   limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=100000)) -> CasePage:
    total, capped, rows = service.list_cases(db, principal=who, status=sorted(wf.OPEN), assignee_user_id=who.id or -1,
                                             limit=limit, offset=offset)
    lang = _lang(request)
    return CasePage(total=total, total_capped=capped, items=[service.case_dict(c, lang=lang) for c in rows])


def _bbox(bbox: str | None) -> tuple[float, float, float, float] | None:
    from citybrain.geo import service as geo

    return geo.parse_bbox(bbox)


def _geojson(doc: dict) -> Response:
    """A map layer rendered once with orjson (thousands of features: no per-value encoder pass)."""
    import orjson

    return Response(orjson.dumps(doc, default=str, option=orjson.OPT_UTC_Z), media_type="application/json")


BBOX_QUERY = Query(None, max_length=100, description="minLon,minLat,maxLon,maxLat (the visible area)")


@router.get("/cases.geojson", summary="案件地图 Cases as GeoJSON")
def cases_geojson(db: ReadDB, who: Principal = Depends(require("case.read")), bbox: str | None = BBOX_QUERY,
                  status: str | None = Query(None, max_length=200, description="comma list, or `open`"),
                  overdue: bool | None = None,
                  category_code: str | None = Query(None, max_length=12, description="案件分类 category code"),
                  dept_org_id: int | None = Query(None, description="责任部门 responsible department"),
                  since: AwareDatetime | None = Query(None, description="reported at or after"),
                  until: AwareDatetime | None = Query(None, description="reported before"),
                  limit: int = Query(5000, ge=1, le=20000),
                  max_points: int | None = Query(None, ge=1, le=20000, description=(
                      "with bbox: more matching cases than this in the area are answered as counted clusters"))
                  ) -> Response:
    if since is not None and until is not None and since >= until:
        raise Invalid("since 须早于 until", "since must be before until",
                      errors=[{"field": "since", "message": "must be before until"}])
    return _geojson(analytics.cases_geojson(
        db, principal=who, bbox=_bbox(bbox), status=_status_list(status), overdue=overdue,
        category_code=category_code or None, dept_org_id=dept_org_id, since=since, until=until, limit=limit,
        max_points=max_points))


@router.get("/cases/hotspots.geojson", summary="热点图层 Flagged hotspots as GeoJSON")
def hotspots_geojson(db: ReadDB, who: Principal = Depends(require("case.read")), bbox: str | None = BBOX_QUERY,
                     days: int = Query(7, ge=1, le=90),
                     category_code: str | None = Query(None, max_length=12)) -> Response:
    return _geojson(analytics.hotspots_geojson(db, principal=who, bbox=_bbox(bbox), days=days,
                                               category_code=category_code or None))


@router.get("/cases/ioc-summary", summary="运行态势 IOC indicators")
def ioc(db: ReadDB, who: Principal = Depends(require("case.read"))) -> dict:
    return service.ioc_summary(db, principal=who)


@router.get("/cases/evaluation", summary="考核评价 Evaluation (JSON or CSV)")
def evaluation(db: ReadDB, who: Principal = Depends(require("case.evaluate")),
               group_by: str = Query("dept", pattern="^(dept|town|community|grid|gridworker|all)$"),
               start: AwareDatetime | None = None, end: AwareDatetime | None = None,
               format: str = Query("json", pattern="^(json|csv)$")) -> Any:
    res = analytics.evaluate(db, principal=who, group_by=group_by, start=start, end=end)
    if format == "csv":
        name = f"evaluation-{group_by}-{res['start']:%Y%m%d}-{res['end']:%Y%m%d}.csv"
        return Response(analytics.evaluation_csv(res), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    return res


@router.get("/cases/hotspots", summary="热点 Hotspots flagged and counts by grid/category")
def hotspots(db: ReadDB, who: Principal = Depends(require("case.read")), days: int = Query(7, ge=1, le=90),
             window_h: int = Query(24, ge=1, le=24 * 90),
             by: str = Query("grid", pattern="^(grid|category|grid_category)$")) -> dict:
    return {"flagged": service.hotspot_list(db, principal=who, days=days),
            "counts": analytics.hotspot_counts(db, principal=who, window_h=window_h, by=by)}


@router.get("/cases/notifications", summary="我的消息 My inbox")
def inbox(db: ReadDB, who: CurrentUser, unread: bool = False, limit: int = Query(50, ge=1, le=500)) -> list[dict]:
    return service.notifications(db, principal=who, unread_only=unread, limit=limit)


@router.post("/cases/notifications/{nid}/read", status_code=204, summary="标记已读 Mark read")
def read(nid: int, db: WriteDB, who: CurrentUser) -> Response:
    service.mark_read(db, notification_id=nid, principal=who)
    return Response(status_code=204)


@router.post("/cases/sweep", summary="立即执行时限巡检 Run the deadline sweep now")
def run_sweep(db: WriteDB, _who: Principal = Depends(require("case.config.manage"))) -> dict:
    return service.sweep(db)


# --- intake -----------------------------------------------------------------------------------------------------------


def _check_source(who: Principal, source: str) -> None:
    """Who may use which channel: patrol = grid workers (or city-wide staff), hotline = 12345 operators,
    superior = officials who dispatch or supervise; video/api = systems and staff with case.report."""
    ok = {"patrol": "gridworker" in who.roles or who.org_scope is None,
          "hotline": who.can("case.accept"),
          "superior": who.can("case.dispatch") or who.can("case.supervise"),
          "video": who.kind == "apikey" or who.can("case.accept"),
          "api": who.kind == "apikey" or who.can("case.accept")}.get(source, False)
    if not ok:
        raise Forbidden(f"无权通过该渠道上报（{wf.SOURCES.get(source, (source,))[0]}）",
                        f"You may not report through the '{source}' channel", code="channel_not_allowed")


@router.post("/cases", status_code=201, response_model=ReportedOut,
             summary="上报案件 Report a case (patrol, hotline, video, superior, api)")
def create(request: Request, body: CaseIn, db: WriteDB, who: Principal = Depends(require("case.report"))) -> ReportedOut:
    _check_source(who, body.source)
    if body.auto_file is not None and not who.can("case.accept"):
        body.auto_file = None
    if body.dept_org_id is not None and not who.can("case.dispatch") and body.source != "superior":
        body.dept_org_id = None
    case = service.report(db, principal=who, **body.model_dump())
    return _reported(case, _lang(request))


@router.post("/cases/batch", status_code=201, summary="批量接入案件 Report many cases in one request")
def create_batch(body: CaseBatchIn, db: WriteDB, who: Principal = Depends(require("case.report"))) -> dict:
    items = []
    for it in body.items:
        _check_source(who, it.source)
        d = it.model_dump()
        if d["auto_file"] is not None and not who.can("case.accept"):
            d["auto_file"] = None
        if d["dept_org_id"] is not None and not who.can("case.dispatch") and d["source"] != "superior":
            d["dept_org_id"] = None
        items.append(d)
    return {"items": service.report_batch(db, principal=who, items=items)}


def _limit(request: Request, phone: str | None) -> None:
    """Per-IP and per-phone rate limit of the citizen endpoints (429 problem with Retry-After)."""
    ratelimit.check(ip=request.client.host if request.client else None, phone=phone)


@router.post("/public/cases", status_code=201, response_model=ReportedOut, tags=["cases public 市民"],
             summary="市民反映问题 Citizen report (no login)")
def public_report(request: Request, body: PublicCaseIn, db: WriteDB) -> ReportedOut:
    _limit(request, body.phone)
    service.check_public_location(db, lon=body.lon, lat=body.lat)
    other = body.category_code == "other"  # "其他": no class; the command centre classifies it (12345 02 求助)
    case = service.report(db, principal=ANONYMOUS, source="web", title=body.title, description=body.description,
                          category_code=None if other else body.category_code, hotline_type="02" if other else None, lon=body.lon, lat=body.lat, address=body.address,
                          reporter_name=body.name, reporter_phone=body.phone, photos=body.photos)
    return _reported(case, _lang(request))


@router.post("/public/cases/track", tags=["cases public 市民"], summary="进度查询 Track a case by ticket + phone")
def public_track(request: Request, body: TrackIn, db: ReadDB) -> dict:
    _limit(request, body.phone)
    return service.track(db, ticket=body.ticket, phone=body.phone, lang=_lang(request))


@router.post("/public/cases/rating", tags=["cases public 市民"], summary="满意度评价 Rate a closed case")
def public_rate(request: Request, body: RatingIn, db: WriteDB) -> dict:
    _limit(request, body.phone)
    if not body.ticket or not body.phone:
        raise Invalid("须填写工单号和手机号", "Ticket and phone are required",
                      errors=[{"field": "ticket", "message": "required"}, {"field": "phone", "message": "required"}])
    service.rate(db, ticket=body.ticket, phone=body.phone, satisfaction=body.satisfaction, resolved=body.resolved,
                 contacted=True, comment=body.comment, principal=ANONYMOUS)
    return service.track(db, ticket=body.ticket, phone=body.phone, lang=_lang(request))


# --- one case ------------------------------------------------------------------------------------------------------


@router.get("/cases/{case_id:int}", summary="案件详情 Case detail with its log")
def detail(case_id: int, request: Request, db: ReadDB, who: Principal = Depends(require("case.read"))) -> dict:
    return service.case_detail(db, case_id=case_id, principal=who, lang=_lang(request))


@router.post("/cases/{case_id:int}/callback", summary="回访评价 Record a callback (operator)")
def callback(case_id: int, body: RatingIn, request: Request, db: WriteDB,
             who: Principal = Depends(require("case.close"))) -> dict:
    service.rate(db, case_id=case_id, satisfaction=body.satisfaction, resolved=body.resolved,
                 contacted=body.contacted, comment=body.comment, principal=who)
    return service.case_detail(db, case_id=case_id, principal=who, lang=_lang(request))


@router.post("/cases/{case_id:int}/actions/{action}", summary="办理操作 Take a workflow action")
def action(case_id: int, action: str, request: Request, db: WriteDB, who: CurrentUser,
           body: ActionIn | None = None) -> dict:
    body = body or ActionIn()
    case = service.act(db, case_id=case_id, action=action, principal=who, **body.model_dump())
    if not service.can_see(who, case):  # e.g. returned by the department: no longer in its scope
        return {**service.case_dict(case, lang=_lang(request)), "events": [], "allowed_actions": []}
    return service.case_detail(db, case_id=case_id, principal=who, lang=_lang(request))


@router.get("/cases/workflow", summary="状态机 The state machine (statuses and actions)")
def workflow() -> dict:
    return {"statuses": {k: {"zh": v[0], "en": v[1]} for k, v in wf.STATUSES.items()},
            "actions": {a.code: {"zh": a.zh, "en": a.en, "from": sorted(a.sources), "to": a.target,
                                 "permission": a.permission, "scope": a.scope, "needs_comment": a.needs_comment}
                        for a in wf.ACTIONS.values()},
            "sources": {k: {"zh": v[0], "en": v[1]} for k, v in wf.SOURCES.items()}}

