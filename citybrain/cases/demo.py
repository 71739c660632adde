"""Demo seeding for cases: default departments, a responsibility matrix, department handlers and grid
workers, and 30 days of realistic case history (patrol reports, hotline calls, alarm-driven cases, some
overdue, some reworked, some rated) so the indicators are not trivial."""

from __future__ import annotations

import datetime as dt
import random

from sqlalchemy import func, select

from citybrain import clock, context, modules
from citybrain import demo_district as dd
from citybrain.cases import service
from citybrain.cases.models import Case, DeptAlias, Responsibility
from citybrain.config import get_settings
from citybrain.context import SYSTEM
from citybrain.db import Database
from citybrain.identity import service as identity
from citybrain.workcal import CST

# (category code, title, weight) of the GB/T 47678.5-2026 classes the demo reports most
DEMO_CATEGORIES = [
    ("06010", "暴露垃圾", 14), ("07001", "非法小广告", 12), ("09009", "机动车乱停放", 10), ("06036", "乱堆杂物", 8),
    ("09005", "店外经营", 8), ("06012", "道路不洁", 7), ("06013", "道路破损", 5), ("01002", "污水井盖破损", 5),
    ("06042", "垃圾站满溢", 5), ("08004", "工地扬尘", 4), ("06028", "噪声扰民", 4), ("01037", "路灯不亮", 4),
    ("06001", "私搭乱建", 3), ("06025", "水域不洁", 3), ("09010", "非机动车乱停放", 3), ("02014", "信号灯故障", 2),
]
HOTLINE_TEXTS = [
    ("03", "06028", "投诉夜间施工噪声扰民"), ("03", "06027", "投诉餐馆油烟直排"), ("02", "01037", "小区门口路灯不亮"),
    ("04", "06001", "举报楼顶违章搭建"), ("03", "09006", "投诉路边占道经营"), ("05", "06051", "建议修复盲道"),
    ("02", "06030", "反映路面污水横流"),
]


def seed_config(db: Database) -> None:
    """Default-department mapping and a responsibility matrix for the demo district (idempotent)."""
    context.set_principal(SYSTEM)
    with db.write() as s:
        service.load_reference(s)
        if s.scalar(select(func.count()).select_from(DeptAlias)):
            return
        for d in dd.DEPARTMENTS:
            org = identity.org_by_code(s, code=d.code)
            if org is not None:
                service.set_dept_alias(s, short=d.short, org_id=org.id)
        if s.scalar(select(func.count()).select_from(Responsibility)):
            return
        cg = identity.org_by_code(s, code=dd.department("城管").code)
        gov = identity.org_by_code(s, code=dd.GOV_CODE)
        if cg is None:
            return
        # 街面秩序 in the towns (镇) is handled by each town's 综合执法 unit under the urban-management bureau
        for t in dd.TOWNS:
            town = identity.org_by_code(s, code=t.code)
            if town is not None and t.kind == "镇":
                service.add_responsibility(s, dept_org_id=cg.id, big_code="09", area_code=t.code,
                                           unit_org_id=town.id, note=f"{t.name}综合行政执法办公室")
        # 暴露垃圾 in 南沙街道 goes to the subdistrict's environment unit
        first = identity.org_by_code(s, code=dd.TOWNS[0].code)
        if first is not None:
            service.add_responsibility(s, dept_org_id=cg.id, category_code="06010", area_code=dd.TOWNS[0].code,
                                       unit_org_id=first.id, note="南沙街道环卫所")
        if gov is not None:
            service.add_responsibility(s, dept_org_id=cg.id, big_code="07", area_code=dd.DISTRICT_CODE,
                                       note="宣传广告类：区城管局")


def _users(db: Database) -> dict[str, int]:
    """Department handlers (one per department) and a grid worker in the first community of each town."""
    password = get_settings().demo_password
    out: dict[str, int] = {}
    with db.write() as s:
        for d in dd.DEPARTMENTS[1:]:
            name = f"handler-{d.code[2:].lower()}"
            u = identity.user_by_username(s, username=name)
            if u is None:
                org = identity.org_by_code(s, code=d.code)
                if org is None:
                    continue
                u = identity.create_user(s, username=name, real_name=f"{d.short}处置员", password=password,
                                         org_id=org.id, phone=None, roles=["handler"])
            out[d.short] = u.id
        for t in dd.TOWNS:
            c = next(c for c in dd.COMMUNITIES if c.town_code == t.code)
            name = f"grid-{c.code}"
            u = identity.user_by_username(s, username=name)
            if u is None:
                org = identity.org_by_code(s, code=c.code)
                if org is None:
                    continue
                u = identity.create_user(s, username=name, real_name=f"{c.name}网格员", password=password,
                                         org_id=org.id, phone=None, roles=["gridworker"])
            out[c.code] = u.id
    return out


# The simulator's own people (citybrain.sim.cases), so it never works as the accounts the README gives users.
SIM_USERS: tuple[tuple[str, str, str, str], ...] = (
    ("sim-operator", "模拟坐席", "operator", "D-YXZX"),
    ("sim-leader", "模拟领导", "leader", dd.GOV_CODE),
)


def sim_users(db: Database) -> None:
    """Create the simulator's command-centre operator and leader (idempotent)."""
    password = get_settings().demo_password
    with db.write() as s:
        for username, real_name, role, org_code in SIM_USERS:
            org = identity.org_by_code(s, code=org_code)
            if org is None or identity.user_by_username(s, username=username) is not None:
                continue
            identity.create_user(s, username=username, real_name=real_name, password=password, org_id=org.id,
                                 phone=None, roles=[role])


def _principal(db: Database, username: str):
    with db.read() as s:
        u = identity.user_by_username(s, username=username)
        return identity.principal_for_user(s, user=u) if u else None


def _demo_photos(db: Database) -> list[str]:
    """Stand-in scene photos (a few colours) stored as uploads, as their urls; [] without the web module."""
    web = modules.part("web", "service")
    if web is None:
        return []
    with db.write() as s:
        return [web.store_attachment(s, data=dd.demo_photo(rgb), filename=f"demo-{n}.png", principal=SYSTEM)["url"]
                for n, rgb in enumerate(((132, 150, 104), (150, 140, 120), (96, 120, 150), (160, 120, 96)))]


def seed(db: Database, *, days: int = 30, per_day: int = 12, rng_seed: int = 4) -> None:
    """Seed the demo's configuration, users and case history (skipped when cases already exist)."""
    seed_config(db)
    sim_users(db)
    with db.read() as s:
        if s.scalar(select(func.count()).select_from(Case)):
            return
    _users(db)
    rnd = random.Random(rng_seed)
    operator = _principal(db, "operator")
    leader = _principal(db, "leader")
    if operator is None:
        return
    handlers = {}
    gridworkers = {}
    with db.read() as s:
        for d in dd.DEPARTMENTS:
            org = identity.org_by_code(s, code=d.code)
            if org is not None:
                handlers[org.id] = "handler" if d.short == "城管" else f"handler-{d.code[2:].lower()}"
        for c in dd.COMMUNITIES:
            org = identity.org_by_code(s, code=c.code)
            if org is not None:
                gridworkers[org.id] = "gridworker" if c.code == dd.COMMUNITIES[0].code else f"grid-{c.code}"
    cache: dict[str, object] = {}

    def who(username: str | None):
        if not username:
            return operator
        if username not in cache:
            cache[username] = _principal(db, username) or operator
        return cache[username]

    urls = _demo_photos(db)

    def photo(i: int) -> list[str]:
        return urls[i % len(urls):][:1] if urls else []

    real_now = clock.now()
    start = (real_now - dt.timedelta(days=days)).astimezone(CST).replace(hour=8, minute=0, second=0, microsecond=0)
    cats, weights = zip(*[((c, t), w) for c, t, w in DEMO_CATEGORIES], strict=True)
    plans = []
    for day in range(days + 1):
        for _ in range(rnd.randint(per_day // 2, per_day + per_day // 2)):
            at = start + dt.timedelta(days=day, minutes=rnd.randint(0, 11 * 60))
            if at >= real_now:
                continue
            plans.append(at)
    plans.sort()
    try:
        for i, at in enumerate(plans):
            clock.freeze(at.astimezone(dt.UTC))
            community = rnd.choice(dd.COMMUNITIES)
            lon = rnd.uniform(dd.BBOX[0], dd.BBOX[2])
            lat = rnd.uniform(dd.BBOX[1], dd.BBOX[3])
            # with the map installed the position decides the grid; without it, a plausible grid code
            grid = f"{community.code}{rnd.randint(1, 4):03d}"
            geo = service._geo_service()
            with db.read() as s:
                if geo is not None:
                    for _try in range(20):
                        loc = geo.locate(s, lon=lon, lat=lat)
                        if loc:
                            community = next((c for c in dd.COMMUNITIES if c.code == loc.get("community_code")),
                                             community)
                            grid = None
                            break
                        lon = rnd.uniform(dd.BBOX[0], dd.BBOX[2])
                        lat = rnd.uniform(dd.BBOX[1], dd.BBOX[3])
                reporter = who(gridworkers.get(service._org_id(s, community.code)))
            kind = rnd.random()
            with db.write() as s:
                if kind < 0.55:
                    code, title = rnd.choices(cats, weights)[0]
                    case = service.report(s, principal=reporter, source="patrol", title=title, category_code=code,
                                          lon=round(lon, 6), lat=round(lat, 6), grid_code=grid,
                                          address=f"{community.name}{rnd.randint(1, 200)}号附近",
                                          photos=photo(i))
                elif kind < 0.85:
                    htype, code, text = rnd.choice(HOTLINE_TEXTS)
                    case = service.report(s, principal=operator, source="hotline", title=text, hotline_type=htype,
                                          category_code=code, address=f"{community.name}{rnd.randint(1, 300)}号",
                                          grid_code=grid, lon=round(lon, 6), lat=round(lat, 6),
                                          reporter_phone=f"139{rnd.randint(10000000, 99999999)}",
                                          reporter_name="市民")
                elif kind < 0.93:
                    case = service.on_alarm_raised(s, payload={
                        "alarm_id": f"demo-{i}", "device_code": f"4401150100{rnd.randint(1, 40):02d}",
                        "rule_id": "wl_high", "rule_name": "积水超警戒", "severity": rnd.choice([2, 3]),
                        "property": "water_level", "value": round(rnd.uniform(0.3, 0.8), 2), "lon": lon, "lat": lat,
                        "grid_code": grid, "message_zh": "积水深度超过警戒值", "message_en": "Water above warning",
                        "at": at.isoformat(), "org_ids": [], "category_hint": "01067"})
                else:
                    code, title = rnd.choices(cats, weights)[0]
                    case = service.report(s, principal=SYSTEM, source="web", title=f"市民反映：{title}",
                                          category_code=code, lon=round(lon, 6), lat=round(lat, 6), grid_code=grid,
                                          reporter_phone=f"137{rnd.randint(10000000, 99999999)}")
                case_id = case.id if case is not None else None
            if case_id is not None:
                _walk(db, rnd, case_id, at, who, handlers, gridworkers, operator, leader, real_now, urls)
        # a cluster the hotspot detector flags: 暴露垃圾 around a market over the last day
        market = (113.5612, 22.7893)
        gw = who(gridworkers.get(next(iter(gridworkers))) if gridworkers else None)
        for k in range(4):
            clock.freeze((real_now - dt.timedelta(hours=20 - k * 5)).astimezone(dt.UTC))
            with db.write() as s:
                service.report(s, principal=gw, source="patrol", title="农贸市场周边暴露垃圾", category_code="06010",
                               lon=market[0] + rnd.uniform(-0.0008, 0.0008), lat=market[1] + rnd.uniform(-0.0008, 0.0008),
                               grid_code=None if service._geo_service() else f"{dd.COMMUNITIES[1].code}001",
                               address="农贸市场周边",
                               photos=photo(k), auto_file=True)
    finally:
        clock.reset()
    with db.write() as s:
        service.sweep(s)


def _walk(db, rnd, case_id, at, who, handlers, gridworkers, operator, leader, real_now, urls) -> None:
    """Move one case along its life at plausible times (stopping at the present)."""
    t = at

    def step(minutes: float) -> bool:
        nonlocal t
        t = t + dt.timedelta(minutes=minutes)
        if t >= real_now:
            return False
        clock.freeze(t.astimezone(dt.UTC))
        return True

    def do(action: str, principal, **kw) -> bool:
        try:
            with db.write() as s:
                service.act(s, case_id=case_id, action=action, principal=principal, **kw)
            return True
        except Exception:
            return False

    def case() -> Case:
        with db.read() as s:
            return s.get(Case, case_id)

    c = case()
    if c.status == "reported":
        if not step(rnd.uniform(5, 90)):
            return
        if rnd.random() < 0.08:
            do("reject", operator, comment="不符合立案条件：现场核实无此问题")
            return
        do("file", operator, comment="符合立案条件")
        c = case()
        if c.status == "filed" and c.queue == "manual":
            do("dispatch", operator, dept_org_id=next(iter(handlers)), comment="人工派遣")
    c = case()
    if c.status != "dispatched":
        return
    handler = who(handlers.get(c.unit_org_id or c.dept_org_id) or handlers.get(c.dept_org_id))
    if not step(rnd.uniform(10, 240)):
        return
    if rnd.random() < 0.05:
        do("return", handler, comment="非本部门职责，申请退单")
        if step(rnd.uniform(10, 60)):
            do("dispatch", operator, comment="改派")
        return
    do("accept", handler, comment="已签收")
    slow = rnd.random() < 0.2
    limit_min = (c.deadline_at - c.dispatched_at).total_seconds() / 60 if c.deadline_at else 600
    if slow and rnd.random() < 0.3 and step(rnd.uniform(30, 120)):
        do("request_extension", handler, comment="需协调产权单位，申请延期", extra_value=2, extra_unit="work_days")
        if step(rnd.uniform(20, 90)):
            do("approve_extension" if rnd.random() < 0.7 else "refuse_extension", operator, comment="同意/不同意")
    if slow and leader is not None and rnd.random() < 0.3 and step(rnd.uniform(60, 600)):
        do("supervise", leader, comment="请加快办理", level=2)
    if not step(limit_min * (rnd.uniform(1.2, 3.0) if slow else rnd.uniform(0.1, 0.7))):
        return
    do("handle", handler, comment="已处置完毕", attachments=urls[1:2])
    c = case()
    verifier = who(gridworkers.get(c.community_org_id)) if c.community_org_id in gridworkers else operator
    if not step(rnd.uniform(20, 300)):
        return
    if rnd.random() < 0.12:
        do("rework", verifier, comment="现场仍有问题，返工")
        if not step(rnd.uniform(60, 600)):
            return
        do("handle", handler, comment="已重新处置", attachments=urls[2:3])
        if not step(rnd.uniform(20, 200)):
            return
    do("verify", verifier, comment="现场核查已处置")
    if not step(rnd.uniform(10, 120)):
        return
    do("close", operator, comment="结案", public_reply="您反映的问题已处理完毕，感谢您对城市管理的支持。")
    c = case()
    if c.source in ("hotline", "web") and c.reporter_phone and rnd.random() < 0.7 and step(rnd.uniform(60, 2000)):
        sat = rnd.choices(["satisfied", "basic", "dissatisfied"], [0.75, 0.17, 0.08])[0]
        try:
            with db.write() as s:
                service.rate(s, ticket=c.ticket, phone=c.reporter_phone, satisfaction=sat,
                             comment="回访评价", principal=context.ANONYMOUS)
        except Exception:
            pass
