"""Evaluation formulas against a hand-computed fixture (STANDARDS.md §3 and §5.3; docs/cases.md)."""

import datetime as dt

import pytest

from citybrain import clock
from citybrain.cases import analytics, service
from citybrain.context import ANONYMOUS
from citybrain.workcal import CST

G1 = "440115001001001"  # 金洲社区, 南沙街道 (the demo grid worker's community)
G2 = "440115002001001"  # 珠江街道


def at(h, m=0, day=16):
    clock.freeze(dt.datetime(2026, 11, day, h, m, tzinfo=CST).astimezone(dt.UTC))


@pytest.fixture
def fixture_cases(cdb, who):
    """Eight cases with known outcomes (see docs/cases.md, "worked example")."""
    op, hd, gw = who("operator"), who("handler"), who("gridworker")
    from citybrain.identity import service as identity

    with cdb.write() as s:
        org = identity.org_by_code(s, code="D-SWJ")
        identity.create_user(s, username="water1", real_name="水务员", password="Water@2026x", org_id=org.id,
                             roles=["handler"])
        service.set_config(s, key="rules", value={"reopen_on_dissatisfied": False})
    wt = who("water1")
    ids = {}

    def act(name, action, p, **kw):
        with cdb.write() as s:
            service.act(s, case_id=ids[name], action=action, principal=p, **kw)

    at(9)
    with cdb.write() as s:
        ids["c1"] = service.report(s, principal=gw, source="patrol", title="暴露垃圾", category_code="06010",
                                   grid_code=G1).id
        ids["c2"] = service.report(s, principal=op, source="superior", title="道路不洁", category_code="06012",
                                   grid_code=G1).id
        ids["c3"] = service.report(s, principal=op, source="superior", title="小广告", category_code="07001",
                                   grid_code=G1).id
        ids["c4"] = service.report(s, principal=op, source="superior", title="店外经营", category_code="09005",
                                   grid_code=G1).id
        ids["c5"] = service.report(s, principal=op, source="hotline", title="乱堆杂物", hotline_type="03",
                                   category_code="06036", grid_code=G1, reporter_phone="13900000005").id
        ids["c6"] = service.report(s, principal=ANONYMOUS, source="web", title="噪声", category_code="06028",
                                   grid_code=G1, reporter_phone="13900000006").id
        ids["c7"] = service.report(s, principal=op, source="hotline", title="井盖破损", hotline_type="02",
                                   category_code="01002", grid_code=G2, reporter_phone="13900000007").id
        ids["c8"] = service.report(s, principal=ANONYMOUS, source="web", title="雨水井盖松动",
                                   category_code="01003", grid_code=G2, reporter_phone="13900000008").id
    act("c1", "file", op)
    act("c6", "reject", op, comment="非城市管理问题")
    act("c8", "file", op)
    at(9, 30)
    for c in ("c1", "c3"):
        act(c, "accept", hd)
        act(c, "handle", hd, comment="已处置")
    act("c4", "return", hd, comment="非本部门")
    with cdb.read() as s:
        cg = identity.org_by_code(s, code="D-CGJ").id
    act("c4", "dispatch", op, dept_org_id=cg)
    act("c4", "accept", hd)
    act("c4", "suspend", op, comment="待整治方案")
    act("c5", "accept", hd)
    for c in ("c7", "c8"):
        act(c, "accept", wt)
        act(c, "handle", wt, comment="已更换井盖")
    at(10)
    act("c1", "verify", gw)
    act("c1", "close", op)
    act("c3", "rework", op, comment="仍有残留")
    act("c3", "handle", hd, comment="已清除")
    for c in ("c7", "c8"):
        act(c, "verify", op)
        act(c, "close", op)
    at(10, 30)
    act("c3", "verify", op)
    act("c3", "close", op)
    with cdb.write() as s:
        service.rate(s, ticket=s.get(service.Case, ids["c7"]).ticket, phone="13900000007", satisfaction="satisfied",
                     principal=ANONYMOUS)
    with cdb.write() as s:
        service.rate(s, ticket=s.get(service.Case, ids["c8"]).ticket, phone="13900000008", satisfaction="basic",
                     principal=ANONYMOUS)
    with cdb.write() as s:
        service.rate(s, case_id=ids["c3"], satisfaction="dissatisfied", resolved=False, contacted=True, principal=op)
    at(14, 30)
    act("c2", "accept", hd)
    act("c2", "handle", hd, comment="已清扫")  # deadline was 11:00: late
    at(9, 0, day=17)
    act("c2", "verify", gw)  # 270 working minutes after handling: late (limit 240)
    act("c2", "close", op)
    at(12, 0, day=17)
    return ids


def _rows(cdb, who, group_by):
    with cdb.read() as s:
        res = analytics.evaluate(s, principal=who("leader"), group_by=group_by,
                                 start=dt.datetime(2026, 11, 16, tzinfo=CST), end=dt.datetime(2026, 11, 18, tzinfo=CST))
    return res["rows"]


def test_indicators_match_the_hand_computation(cdb, who, org, fixture_cases):
    rows = {r["key"]: r for r in _rows(cdb, who, "dept")}
    cg = rows[org("D-CGJ")]
    assert (cg["reported"], cg["filed"], cg["dispatched"], cg["due"], cg["closed"]) == (5, 5, 5, 4, 3)
    assert (cg["handled"], cg["handled_on_time"], cg["closed_on_time"]) == (3, 2, 2)
    assert (cg["reworked"], cg["returned"], cg["overdue"]) == (1, 1, 1)
    assert cg["closure_rate"] == pytest.approx(0.75)
    assert cg["on_time_handling_rate"] == pytest.approx(0.5)
    assert cg["on_time_closure_rate"] == pytest.approx(0.5)
    assert cg["rework_rate"] == pytest.approx(1 / 3)
    assert cg["return_rate"] == pytest.approx(0.2)
    assert cg["timely_dispatch_rate"] == pytest.approx(1.0)
    # 三率 over one valid callback (c3: contacted, not resolved, dissatisfied)
    assert (cg["response_rate"], cg["resolution_rate"], cg["satisfaction_rate"]) == (1.0, 0.0, 0.0)
    assert cg["hotline_score"] == pytest.approx(10.0)
    # 100×10% + 75×30% + 50×30% + (100 − 33.33)×30% = 67.5 -> C
    assert cg["score"] == pytest.approx(67.5) and cg["grade"] == "C"
    sw = rows[org("D-SWJ")]
    assert (sw["reported"], sw["closed"], sw["closure_rate"], sw["rework_rate"]) == (2, 2, 1.0, 0.0)
    # 满意率 = (1 + 0.9 × 1) / 2; 热线综合 = 100×10% + 100×50% + 95×40%
    assert sw["satisfaction_rate"] == pytest.approx(0.95) and sw["hotline_score"] == pytest.approx(98.0)
    assert sw["score"] == pytest.approx(100.0) and sw["grade"] == "A"
    assert rows[None]["reported"] == 1 and rows[None]["not_filed"] == 1  # c6, never dispatched
    ranked = [r["key"] for r in _rows(cdb, who, "dept")]
    assert ranked[0] == org("D-SWJ") and ranked[-1] is None
    # the same fixture, by area and by grid worker
    towns = {r["key"]: r for r in _rows(cdb, who, "town")}
    t = towns[org("440115001")]
    assert (t["reported"], t["filed"], t["public_filed"], t["due"], t["closed"], t["closed_on_time"]) == (6, 5, 1, 4, 3, 2)
    assert t["filing_rate"] == pytest.approx(5 / 6)
    # (100 − 20)×10% + 100×20% + 75×30% + 50×40% = 70.5
    assert t["score"] == pytest.approx(70.5) and t["grade"] == "C"
    grids = {r["key"]: r for r in _rows(cdb, who, "grid")}
    # both G2 cases came from the public: (100 − 100)×10% + 100×20% + 100×30% + 100×40% = 90
    assert grids[G2]["reported"] == 2 and grids[G2]["score"] == pytest.approx(90.0)
    workers = {r["name"]: r for r in _rows(cdb, who, "gridworker")}
    w = workers["赵网格"]
    assert (w["reported"], w["filed"], w["verified"], w["verified_on_time"]) == (1, 1, 2, 1)
    assert (w["missed"], w["community_filed"]) == (1, 5)
    # 100×40% + (100 − 20)×20% + 50×40% = 76 -> B
    assert w["score"] == pytest.approx(76.0) and w["grade"] == "B"


def test_evaluation_api_json_csv_and_permissions(client, cdb, as_role, fixture_cases):
    q = "start=2026-11-16T00:00:00%2B08:00&end=2026-11-18T00:00:00%2B08:00"
    r = client.get(f"/api/v1/cases/evaluation?group_by=dept&{q}", headers=as_role("leader"))
    assert r.status_code == 200 and r.json()["rows"][0]["grade"] == "A"
    r = client.get(f"/api/v1/cases/evaluation?group_by=dept&format=csv&{q}", headers=as_role("leader"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.lstrip("\ufeff").splitlines()
    assert lines[0].startswith("名称,编码,上报数,立案数") and "区水务局" in lines[1] and "100.00%" in lines[1]
    assert client.get(f"/api/v1/cases/evaluation?{q}", headers=as_role("handler")).status_code == 403
    bad = client.get("/api/v1/cases/evaluation?start=2026-11-18T00:00:00Z&end=2026-11-16T00:00:00Z",
                     headers=as_role("leader"))
    assert bad.status_code == 422


def test_banded_scores_and_grades():
    assert [analytics.filed_count_score(n) for n in (0, 50, 51, 100, 200, 500, 1000, 1001)] == \
        [100, 100, 90, 90, 75, 60, 40, 0]
    assert [analytics.grade(x) for x in (95, 90, 89.9, 75, 60, 40, 39.9)] == ["A", "A", "B", "B", "C", "D", "E"]
