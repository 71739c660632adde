"""Demo data of the data hub: departments' catalogue resources, base databases filled with synthetic but
valid rows (GB 11643 / GB 32100 check digits, real GB/T 2260 area codes), sharing requests in every state,
a consumer key for the exchange simulator, and a week of exchange traffic so the IOC shows volume."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select

from citybrain import clock, codes, context
from citybrain import demo_district as dd
from citybrain.config import get_settings
from citybrain.context import SYSTEM, Principal
from citybrain.data import exchangelog, service
from citybrain.data.models import Resource
from citybrain.db import Database
from citybrain.identity import service as identity

KEY_FILE = "demo-exchange-key.txt"

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶程魏苏吕丁任卢姚沈钟姜崔谭陆范汪廖石金韦贾夏付方邹熊白孟秦邱侯江尹薛闫段雷龙黎史陶贺毛郝顾龚邵万覃武钱戴严莫孔向常汤康易乔赖文"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国志文斌鹏辉宇浩然子轩梓涵欣怡俊杰嘉怡思雨晨博宏海燕婷雪琳颖慧佳瑶晓东振家豪锦泽宁瑞凯"
ROADS = ("进港大道", "环市大道", "蕉门路", "金隆路", "港前大道", "黄阁大道", "凤凰大道", "海滨路", "双山大道",
         "丰泽东路", "灵山路", "横沥大道", "东涌大道", "市南公路", "金岭北路", "南沙大道")
AREAS = ("440115",) * 14 + ("440111", "440113", "440402", "341103", "110105", "350100")
ETHNIC = ("汉族",) * 40 + ("壮族", "回族", "满族", "苗族", "土家族", "瑶族", "畲族")
INDUSTRIES = ("软件和信息技术服务", "批发和零售", "道路货物运输", "港口装卸", "餐饮服务", "建筑装饰", "物业管理",
              "汽车零部件制造", "医疗器械销售", "跨境电子商务", "船舶代理", "仓储物流", "技术推广服务")


def _name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))


def _address(rng: random.Random, town: str | None = None) -> str:
    town = town or rng.choice(dd.TOWNS).name
    return (f"广东省广州市南沙区{town}{rng.choice(ROADS)}{rng.randint(1, 999)}号"
            f"{rng.randint(1, 30)}栋{rng.randint(1, 33)}{rng.randint(1, 8):02d}室")


def population_rows(n: int, seed: int = 7, start: int = 0) -> Iterator[dict[str, Any]]:
    """`n` synthetic people with valid, distinct ID numbers (sequence numbers are unique per area and day)."""
    rng = random.Random(seed)
    base = dt.date(1940, 1, 1).toordinal()
    span = dt.date(2020, 12, 31).toordinal() - base
    for i in range(start, start + n):
        area = AREAS[i % len(AREAS)]
        born = dt.date.fromordinal(base + (i * 7919) % span)
        seq = (i // span) % 1000
        idn = codes.make_id_number(area, born, seq)
        yield {
            "id_number": idn, "name": _name(rng), "gender": codes.id_gender(idn), "birth_date": born.isoformat(),
            "ethnicity": rng.choice(ETHNIC), "household_address": _address(rng),
            "residence_address": _address(rng), "phone": f"1{rng.choice('3456789')}{rng.randint(0, 999999999):09d}",
            "area_code": area,
        }


def entity_rows(n: int, seed: int = 11) -> Iterator[dict[str, Any]]:
    """`n` synthetic legal entities with valid unified social credit codes."""
    rng = random.Random(seed)
    seen: set[str] = set()
    while len(seen) < n:
        cc = codes.make_credit_code("440115", rng)
        if cc in seen:
            continue
        seen.add(cc)
        ind = rng.choice(INDUSTRIES)
        yield {
            "credit_code": cc, "name": f"广州{rng.choice(ROADS)[:2]}{rng.choice(GIVEN)}{rng.choice(GIVEN)}{ind[:2]}有限公司",
            "entity_type": rng.choice(("有限责任公司", "有限责任公司", "股份有限公司", "个人独资企业")),
            "legal_rep": _name(rng), "registration_authority": "广州市南沙区市场监督管理局",
            "established_on": dt.date.fromordinal(dt.date(1995, 1, 1).toordinal() + rng.randint(0, 10500)).isoformat(),
            "registered_capital": round(rng.choice((10, 50, 100, 200, 500, 1000, 5000)) * rng.uniform(0.5, 2), 2),
            "business_scope": f"{ind}；技术服务、技术开发、技术咨询", "status": rng.choice(("存续",) * 8 + ("注销", "吊销")),
            "address": _address(rng), "area_code": "440115",
        }


def place_rows(n: int, seed: int = 13) -> Iterator[dict[str, Any]]:
    """Synthetic place names, addresses and POIs inside the demo district."""
    rng = random.Random(seed)
    cats = ("学校", "医院", "公园", "派出所", "社区服务中心", "地铁站", "加油站", "商场", "码头", "政务服务中心")
    lon0, lat0, lon1, lat1 = dd.BBOX
    for i in range(n):
        town = rng.choice(dd.TOWNS)
        kind = ("地名", "地址", "POI", "POI")[i % 4]
        cat = rng.choice(cats) if kind == "POI" else None
        yield {"code": f"440115-P{i:06d}", "name": f"{town.name[:2]}{rng.choice(ROADS)[:2]}{cat or '片区'}{i % 97}",
               "kind": kind, "category": cat, "address": _address(rng, town.name),
               "lon": round(rng.uniform(lon0, lon1), 6), "lat": round(rng.uniform(lat0, lat1), 6),
               "area_code": "440115"}


def indicator_rows() -> Iterator[dict[str, Any]]:
    """Monthly and yearly macro-economy series of the district (synthetic values)."""
    rng = random.Random(17)
    series = (("GDP", "地区生产总值", "亿元", 2200.0), ("RETAIL", "社会消费品零售总额", "亿元", 380.0),
              ("FAI", "固定资产投资", "亿元", 900.0), ("PORT", "港口货物吞吐量", "万吨", 3000.0),
              ("POP", "常住人口", "万人", 95.0), ("CPI", "居民消费价格指数", "上年=100", 101.0))
    for code, name, unit, base in series:
        for y in range(2019, 2026):
            v = base * (1 + 0.05 * (y - 2019)) * rng.uniform(0.97, 1.03)
            yield {"series_key": f"{code}|440115|{y}", "indicator_code": code, "indicator_name": name,
                   "area_code": "440115", "period": str(y), "value": round(v, 2), "unit": unit}
            for mth in range(1, 13):
                if code in ("GDP", "POP"):
                    continue
                yield {"series_key": f"{code}|440115|{y}-{mth:02d}", "indicator_code": code,
                       "indicator_name": name, "area_code": "440115", "period": f"{y}-{mth:02d}",
                       "value": round(v / (12 if code != "CPI" else 1) * rng.uniform(0.9, 1.1), 2), "unit": unit}


def licence_rows(people: list[str], entities: list[str], seed: int = 19) -> Iterator[dict[str, Any]]:
    """E-licences held by people and entities that exist in the base databases."""
    rng = random.Random(seed)
    kinds = (("营业执照", "广州市南沙区市场监督管理局", True), ("食品经营许可证", "广州市南沙区市场监督管理局", True),
             ("道路运输经营许可证", "广州市南沙区交通运输局", True), ("居住证", "广州市公安局南沙区分局", False),
             ("残疾人证", "广州市南沙区残疾人联合会", False), ("不动产权证书", "广州市规划和自然资源局南沙区分局", False))
    for i in range(len(people) // 10 + len(entities) // 2):
        kind, issuer, for_entity = rng.choice(kinds)
        holder = rng.choice(entities) if for_entity else rng.choice(people)
        issued = dt.date(2018, 1, 1) + dt.timedelta(days=rng.randint(0, 2500))
        yield {"licence_no": f"4401152{i:09d}", "licence_type": kind, "holder_name": _name(rng), "holder_id": holder,
               "issuer": issuer, "issued_on": issued.isoformat(), "valid_from": issued.isoformat(),
               "valid_to": (issued + dt.timedelta(days=365 * 5)).isoformat(),
               "status": "有效" if issued.year > 2019 else rng.choice(("有效", "过期", "注销"))}


LEGAL_POP = "《中华人民共和国居民身份证法》第十三条、《中华人民共和国个人信息保护法》第三十四条"


def resources() -> list[tuple[str, dict[str, Any]]]:
    """The demo catalogue: (provider department code, metadata)."""
    def items(base: str, names: list[str] | None = None) -> list[dict[str, Any]]:
        from citybrain.data.quality import BASE_TABLES

        return [{"name": f["name"]} for f in BASE_TABLES[base].fields if names is None or f["name"] in names]

    return [
        ("D-GAJ", {"code": "440115-1-01-001-0001", "name": "人口基础信息", "name_en": "Population register",
                   "classification": "base", "category": "1-01-001 国家人口", "base_table": "population",
                   "summary": "南沙区实有人口基础信息：身份证号、姓名、性别、出生日期、户籍与居住地址、联系电话。",
                   "items": items("population"), "share_type": "conditional", "update_cycle": "daily",
                   "share_condition": "仅限履行法定职责所需，按最小必要原则申请信息项", "legal_basis": LEGAL_POP,
                   "share_methods": ["api", "subscription"], "open_type": "closed", "tags": ["人口", "基础库"]}),
        ("D-SCJG", {"code": "440115-1-02-001-0001", "name": "法人单位基础信息", "name_en": "Legal entity register",
                    "classification": "base", "category": "1-02-001 法人单位", "base_table": "legal_entity",
                    "summary": "南沙区登记的企业和其他法人单位：统一社会信用代码、名称、法定代表人、成立日期、经营范围、登记状态。",
                    "items": items("legal_entity"), "share_type": "unconditional", "update_cycle": "daily",
                    "share_methods": ["api", "file"], "open_type": "open", "tags": ["法人", "企业", "基础库"]}),
        ("D-ZSJ", {"code": "440115-1-03-001-0001", "name": "地名地址与兴趣点", "name_en": "Place names and POI",
                   "classification": "base", "category": "1-03-001 自然资源和空间地理", "base_table": "place",
                   "summary": "标准地名、标准地址和学校、医院、公园等兴趣点（WGS84 坐标）。", "items": items("place"),
                   "share_type": "unconditional", "update_cycle": "monthly", "share_methods": ["api", "file"],
                   "open_type": "open", "tags": ["地名", "地址", "POI", "空间地理"]}),
        ("D-ZSJ", {"code": "440115-1-04-001-0001", "name": "宏观经济指标", "name_en": "Macro-economy indicators",
                   "classification": "base", "category": "1-04-001 宏观经济", "base_table": "indicator",
                   "summary": "地区生产总值、社会消费品零售总额、固定资产投资、港口吞吐量等月度与年度指标序列。",
                   "items": items("indicator"), "share_type": "unconditional", "update_cycle": "monthly",
                   "share_methods": ["api", "file"], "open_type": "open", "tags": ["经济", "统计"]}),
        ("D-ZSJ", {"code": "440115-1-05-001-0001", "name": "电子证照信息", "name_en": "E-licences",
                   "classification": "base", "category": "1-05-001 电子证照", "base_table": "licence",
                   "summary": "营业执照、许可证、居住证等电子证照的编号、持证主体、发证机关和有效期。",
                   "items": items("licence"), "share_type": "conditional", "update_cycle": "realtime",
                   "share_condition": "用于政务服务办理时核验证照", "legal_basis": "《国务院关于在线政务服务的若干规定》第十条",
                   "share_methods": ["api"], "open_type": "closed", "tags": ["证照", "一网通办"]}),
        ("D-MZJ", {"code": "440115-3-MZJ-001", "name": "最低生活保障对象名单", "name_en": "Minimum-income recipients",
                   "classification": "department", "category": "3-MZJ 民政", "key_field": "id_number",
                   "summary": "低保对象的身份证号、姓名、保障人数、保障金额与所属镇街。",
                   "items": [{"name": "id_number", "label": "身份证号", "required": True, "check": "id_number",
                              "grade": "sensitive", "mask": "id_number"},
                             {"name": "name", "label": "姓名", "required": True, "grade": "sensitive", "mask": "name"},
                             {"name": "persons", "label": "保障人数", "type": "integer", "required": True},
                             {"name": "amount", "label": "月保障金额(元)", "type": "number", "required": True},
                             {"name": "town", "label": "镇街", "codes": [t.name for t in dd.TOWNS],
                              "filterable": True, "grade": "public"}],
                   "share_type": "conditional", "share_condition": "用于社会救助核对", "update_cycle": "monthly",
                   "legal_basis": "《社会救助暂行办法》第五十八条", "share_methods": ["api"], "open_type": "closed",
                   "tags": ["民政", "低保", "社会救助"]}),
        ("D-WJJ", {"code": "440115-2-JKBZ-001", "name": "医疗卫生机构名录", "name_en": "Health facilities",
                   "classification": "theme", "category": "2-健康保障", "key_field": "org_code",
                   "summary": "辖区医院、社区卫生服务中心、诊所的名称、类别、地址和床位数。",
                   "items": [{"name": "org_code", "label": "机构代码", "required": True, "grade": "public"},
                             {"name": "name", "label": "机构名称", "required": True, "grade": "public"},
                             {"name": "kind", "label": "机构类别", "grade": "public", "filterable": True,
                              "codes": ["综合医院", "社区卫生服务中心", "诊所", "专科医院"]},
                             {"name": "address", "label": "地址", "grade": "public"},
                             {"name": "beds", "label": "床位数", "type": "integer", "grade": "public"}],
                   "share_type": "unconditional", "update_cycle": "quarterly", "share_methods": ["api", "file"],
                   "open_type": "conditional", "tags": ["卫生", "医疗"]}),
        ("D-GAJ", {"code": "440115-3-GAJ-009", "name": "重点人员管控信息", "name_en": "Persons under supervision",
                   "classification": "department", "category": "3-GAJ 公安", "key_field": "id_number",
                   "summary": "公安机关依法管控的重点人员信息。",
                   "items": [{"name": "id_number", "label": "身份证号", "grade": "sensitive", "mask": "id_number",
                              "required": True}],
                   "share_type": "none", "legal_basis": "《中华人民共和国人民警察法》《公安机关办理行政案件程序规定》",
                   "share_methods": [], "open_type": "closed", "tags": ["公安"]}),
    ]


def seed(db: Database, *, people: int = 30000, entities: int = 8000, history_days: int = 7,
         calls_per_day: int = 1800) -> None:
    """Create the demo catalogue, base data, requests, a consumer key and exchange history (idempotent)."""
    context.set_principal(SYSTEM)
    with db.write() as s:
        if s.scalar(select(Resource.id).where(Resource.code == "440115-1-01-001-0001")):
            return
        for org_code, data in resources():
            service.create_resource(s, principal=SYSTEM, data=data, provider_code=org_code)
    rng = random.Random(23)
    with db.write() as s:
        pop = list(population_rows(people))
        ents = list(entity_rows(entities))
        service.load_records(s, principal=SYSTEM, code="440115-1-01-001-0001", rows=pop, source="demo")
        service.load_records(s, principal=SYSTEM, code="440115-1-02-001-0001", rows=ents, source="demo")
        service.load_records(s, principal=SYSTEM, code="440115-1-03-001-0001", rows=place_rows(2000), source="demo")
        service.load_records(s, principal=SYSTEM, code="440115-1-04-001-0001", rows=indicator_rows(), source="demo")
        service.load_records(s, principal=SYSTEM, code="440115-1-05-001-0001",
                             rows=licence_rows([p["id_number"] for p in pop[:5000]],
                                               [e["credit_code"] for e in ents if e["status"] == "存续"]),
                             source="demo")
        service.load_records(s, principal=SYSTEM, code="440115-3-MZJ-001", source="demo", rows=[
            {"id_number": p["id_number"], "name": p["name"], "persons": rng.randint(1, 5),
             "amount": rng.choice((1120, 1240, 1360)) * 1.0, "town": rng.choice(dd.TOWNS).name} for p in pop[:600]])
        service.load_records(s, principal=SYSTEM, code="440115-2-JKBZ-001", source="demo", rows=[
            {"org_code": codes.make_org_code(rng), "name": f"南沙区{t.name[:2]}{k}{i + 1}", "kind": k,
             "address": _address(rng, t.name), "beds": rng.choice((0, 0, 20, 80, 300, 800))}
            for i, (t, k) in enumerate((t, k) for t in dd.TOWNS for k in ("社区卫生服务中心", "诊所", "综合医院"))])
        # a sample of a provider's messy upload, so the quality report has failures to show
        bad = list(population_rows(40, seed=99, start=people + 10))
        bad[3]["id_number"] = bad[3]["id_number"][:17] + ("0" if bad[3]["id_number"][17] != "0" else "1")
        bad[7]["birth_date"] = "2099-01-01"
        bad[9]["phone"] = "1234"
        bad[12]["gender"] = "男" if bad[12]["gender"] == "女" else "女"
        bad[15]["name"] = ""
        bad[21] = dict(bad[20])
        service.load_records(s, principal=SYSTEM, code="440115-1-01-001-0001", rows=bad, source="file:南沙街道补录.csv")
    _requests(db)
    _key(db)
    _history(db, history_days, calls_per_day)


def _dept(s, code: str) -> Principal:
    org = identity.org_by_code(s, code=code)
    return Principal(kind="user", id=None, name=f"demo:{code}", org_id=org.id,
                     permissions=frozenset({"data.request", "data.approve", "data.exchange"}),
                     org_scope=frozenset({org.id}))


def _requests(db: Database) -> None:
    today = clock.now()
    with db.write() as s:
        yx, cg, yj, zj, swj, mz, gaj, zsj = (_dept(s, c) for c in ("D-YXZX", "D-CGJ", "D-YJJ", "D-ZJJ", "D-SWJ",
                                                                    "D-MZJ", "D-GAJ", "D-ZSJ"))
        pop = "440115-1-01-001-0001"
        r = service.create_request(s, principal=yx, code=pop, fields=["id_number", "name", "gender", "area_code",
                                                                        "residence_address", "phone"],
                                   purpose="城市运行事件处置中核实当事人身份与联系方式",
                                   legal_basis="《广州市城市管理综合执法条例》", unmasked_fields=["phone"])
        service.decide_request(s, principal=gaj, request_id=r.id, approve=True, reason="同意，联系电话明文仅限处置使用")
        for c in ("440115-1-02-001-0001", "440115-1-03-001-0001", "440115-1-04-001-0001", "440115-2-JKBZ-001"):
            service.create_request(s, principal=yx, code=c, fields=[it["name"] for it in
                                                                     service.get_resource(s, code=c)["items"]],
                                   purpose="城市运行监测与指挥调度")
        service.create_request(s, principal=cg, code=pop, fields=["id_number", "name", "residence_address"],
                               purpose="违法建设当事人身份核实", legal_basis="《中华人民共和国行政处罚法》第五十五条")
        r = service.create_request(s, principal=zj, code=pop, fields=["name", "phone", "birth_date"],
                                   purpose="住房保障资格审核", legal_basis="《公共租赁住房管理办法》")
        service.decide_request(s, principal=gaj, request_id=r.id, approve=False,
                               reason="出生日期不属于住房保障审核所必需的信息项，请按最小必要原则重新申请")
        service.create_request(s, principal=yj, code="440115-1-05-001-0001",
                               fields=["licence_no", "licence_type", "holder_name", "status"],
                               purpose="危险化学品经营许可核验", legal_basis="《危险化学品安全管理条例》")
        service.create_request(s, principal=cg, code="440115-1-02-001-0001",
                               fields=["credit_code", "name", "status", "address"], purpose="门前三包责任单位核对")
        # a researcher's application for a key to the conditionally open health facilities (for 卫健局)
        service.apply_open_key(s, code="440115-2-JKBZ-001", applicant="某大学公共卫生学院",
                               contact="lab@example.edu.cn", purpose="基层医疗资源可及性研究")
    # an overdue one: asked 16 days ago and never answered
    clock.freeze(today - dt.timedelta(days=16))
    try:
        with db.write() as s:
            service.create_request(s, principal=_dept(s, "D-SWJ"), code="440115-3-MZJ-001",
                                   fields=["id_number", "name", "town"], purpose="防汛转移安置困难群众摸底",
                                   legal_basis="《广东省防汛防旱防风条例》")
    finally:
        clock.freeze(None)


def _key(db: Database) -> None:
    path = get_settings().data_dir / KEY_FILE
    with db.write() as s:
        org = identity.org_by_code(s, code="D-YXZX")
        key, _k = identity.create_api_key(s, name="城市运行管理中心-交换前置机", scopes=["data.exchange"],
                                          kind="consumer", org_id=org.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key)
    path.chmod(0o600)


def _history(db: Database, days: int, calls_per_day: int) -> None:
    """Exchange traffic of the past days (as the exchange would have logged it)."""
    rng = random.Random(29)
    now = clock.now()
    with db.write() as s:
        res = {r.code: r for r in s.scalars(select(Resource))}
        consumers = [identity.org_by_code(s, code=c).id for c in ("D-YXZX", "D-CGJ", "D-YJJ", "D-SWJ", "D-JTJ")]
        usable = [r for r in res.values() if r.share_type != "none"]
        entries = []
        for d in range(days, 0, -1):
            day_start = now - dt.timedelta(days=d)
            for _ in range(int(calls_per_day * rng.uniform(0.85, 1.2))):
                r = rng.choice(usable)
                entries.append({"at": day_start + dt.timedelta(seconds=rng.randint(0, 86399)),
                                "consumer_org_id": rng.choice(consumers), "provider_org_id": r.provider_org_id,
                                "resource_id": r.id, "actor": "apikey:历史交换", "key_id": None,
                                "op": rng.choice(("get", "query", "query", "pull")),
                                "fields": ",".join(it["name"] for it in r.items[:4]), "unmasked": "",
                                "records": rng.choice((1, 1, 20, 100, 100, 100, 500)), "request_id": None})
        for i in range(0, len(entries), 2000):
            exchangelog.write_entries(s, entries[i:i + 2000])
        s.commit()
