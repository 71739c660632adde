"""Intake channels: patrol, hotline, citizen web, superior, API (idempotent), validation, manual queue."""

from sqlalchemy import select

from citybrain.cases import service
from citybrain.cases.models import Case, Notification


def test_citizen_web_report_needs_no_login_and_gets_a_ticket(client, cdb):
    r = client.post("/api/v1/public/cases", json={"phone": "13812345678", "title": "人行道井盖缺失", "category_code": "01002",
                                                  "lon": 113.551, "lat": 22.781, "address": "港前大道 18 号"})
    assert r.status_code == 201
    body = r.json()
    assert body["status"] == "reported" and len(body["ticket"]) >= 10 and body["ticket"] in body["message_zh"]
    t = client.post("/api/v1/public/cases/track", json={"ticket": body["ticket"], "phone": "13812345678"}).json()
    assert t["status"] == "reported" and t["steps"][0]["action"] == "report" and t["public_reply"] is None
    # a wrong phone and an unknown ticket look the same
    a = client.post("/api/v1/public/cases/track", json={"ticket": body["ticket"], "phone": "13812345679"})
    b = client.post("/api/v1/public/cases/track", json={"ticket": "209901010000001", "phone": "13812345678"})
    assert a.status_code == b.status_code == 404 and a.json()["message_zh"] == b.json()["message_zh"]


def test_bad_input_is_problem_json_naming_fields(client, cdb, as_role):
    r = client.post("/api/v1/public/cases", json={"phone": "12345", "title": "x", "category_code": "06010"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert {"phone", "title"} <= {e["field"] for e in r.json()["errors"]}
    r = client.post("/api/v1/public/cases", json={"phone": "13812345678", "title": "无位置", "category_code": "06010"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "address"
    r = client.post("/api/v1/public/cases", json={"phone": "13812345678", "title": "未知分类", "category_code": "99999",
                                                  "address": "某处"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "category_code"
    gw = as_role("gridworker")
    r = client.post("/api/v1/cases", json={"source": "patrol", "title": "无定位上报", "category_code": "06010"}, headers=gw)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "lon"
    r = client.post("/api/v1/cases", json={"source": "hotline", "title": "来电", "category_code": "06010",
                                           "reporter_phone": "13912345678", "address": "x"}, headers=as_role("operator"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "hotline_type"
    r = client.post("/api/v1/cases", json={"source": "web", "title": "伪造来源", "category_code": "06010"}, headers=gw)
    assert r.status_code == 422
    r = client.post("/api/v1/cases", json={"source": "patrol", "title": "坐标越界", "category_code": "06010",
                                           "lon": 500, "lat": 22.7}, headers=gw)
    assert r.status_code == 422
    assert client.get("/api/v1/cases?status=nonsense", headers=gw).status_code == 422
    assert client.get("/api/v1/cases.geojson?bbox=1,2,3", headers=gw).status_code == 422


def test_hotline_order_is_accepted_filed_and_dispatched(client, cdb, as_role, org):
    op = as_role("operator")
    r = client.post("/api/v1/cases", json={"source": "hotline", "title": "投诉夜间施工噪声", "hotline_type": "03",
                                           "category_code": "08001", "reporter_phone": "13912345678",
                                           "reporter_name": "陈先生", "address": "蕉门社区 8 栋"}, headers=op)
    assert r.status_code == 201
    c = r.json()
    assert c["status"] == "dispatched" and c["dept_org_id"] == org("D-ZJJ")  # 施工 -> 住建 by default
    d = client.get(f"/api/v1/cases/{c['id']}", headers=op).json()
    assert d["source"] == "hotline" and d["hotline_type"] == "03" and d["reporter_phone"] == "139****5678"


def test_external_ref_makes_api_intake_idempotent(client, cdb, as_role):
    op = as_role("operator")
    body = {"source": "api", "title": "视频识别：占道经营", "category_code": "09006", "lon": 113.5, "lat": 22.75,
            "external_ref": "video-evt-0001"}
    a = client.post("/api/v1/cases", json=body, headers=op).json()
    b = client.post("/api/v1/cases", json=body, headers=op).json()
    assert a["id"] == b["id"]
    with cdb.read() as s:
        assert len(s.scalars(select(Case).where(Case.external_ref == "video-evt-0001")).all()) == 1


def test_no_matrix_match_goes_to_manual_queue(cdb, who, org):
    with cdb.write() as s:
        s.execute(service.DeptAlias.__table__.delete())
        s.commit()
    service._matrix_cache.clear()
    with cdb.write() as s:
        c = service.report(s, principal=who("operator"), source="superior", title="路灯不亮", category_code="01037",
                           lon=113.5, lat=22.75)
        assert c.status == "filed" and c.queue == "manual" and c.dept_org_id is None
        n = s.scalars(select(Notification).where(Notification.kind == "manual_queue")).all()
        assert n and n[0].org_id == org("D-YXZX")
        c = service.act(s, case_id=c.id, action="dispatch", principal=who("operator"), dept_org_id=org("D-CGJ"))
        assert c.status == "dispatched" and c.queue is None


def test_matrix_most_specific_row_wins(cdb, who, org):
    with cdb.write() as s:
        # 09 街面秩序 in 黄阁镇 -> the town's unit under 城管 (demo matrix); a grid-level row beats it
        grid = "440115101001001"
        c = service.report(s, principal=who("operator"), source="superior", title="占道经营", category_code="09006",
                           grid_code=grid)
        assert (c.dept_org_id, c.unit_org_id) == (org("D-CGJ"), org("440115101"))
        service.add_responsibility(s, dept_org_id=org("D-SCJG"), category_code="09006", area_code=grid)
        c = service.report(s, principal=who("operator"), source="superior", title="占道经营", category_code="09006",
                           grid_code=grid)
        assert c.dept_org_id == org("D-SCJG") and c.unit_org_id is None
        # elsewhere the default department still applies
        c = service.report(s, principal=who("operator"), source="superior", title="占道经营", category_code="09006",
                           grid_code="440115002001001")
        assert c.dept_org_id == org("D-CGJ") and c.unit_org_id is None


def test_dictionaries_switch_and_cases_keep_their_code(client, cdb, as_role):
    op = as_role("operator")
    ds = {d["code"]: d for d in client.get("/api/v1/cases/dictionaries", headers=op).json()}
    assert ds["gbt47678.5-2026"]["active"] and ds["gbt47678.5-2026"]["entries"] == 403
    assert not ds["cjt214-2007"]["active"] and ds["hotline12345"]["entries"] == 5
    comps = client.get("/api/v1/cases/categories?kind=component&limit=1000", headers=op).json()
    assert comps["total"] == 153
    events = client.get("/api/v1/cases/categories?kind=event&limit=1000", headers=op).json()
    assert events["total"] == 250
    first = next(e for e in events["items"] if e["code"] == "01001")
    assert first["name"] == "供水井盖异常" and first["standard_ref"].startswith("GB/T 47678.5-2026")
    old = client.post("/api/v1/cases", json={"source": "superior", "title": "暴露垃圾", "category_code": "06010",
                                             "lon": 113.5, "lat": 22.75}, headers=op).json()
    assert client.post("/api/v1/cases/dictionaries/cjt214-2007/activate", headers=as_role("handler")).status_code == 403
    assert client.post("/api/v1/cases/dictionaries/cjt214-2007/activate", headers=op).status_code == 200
    new = client.post("/api/v1/cases", json={"source": "superior", "title": "暴露垃圾", "category_code": "0102",
                                             "lon": 113.5, "lat": 22.75}, headers=op)
    assert new.status_code == 201
    d_old = client.get(f"/api/v1/cases/{old['id']}", headers=op).json()
    d_new = client.get(f"/api/v1/cases/{new.json()['id']}", headers=op).json()
    assert (d_old["dictionary_code"], d_old["category_code"]) == ("gbt47678.5-2026", "06010")
    assert (d_new["dictionary_code"], d_new["category_code"], d_new["category_name"]) == ("cjt214-2007", "0102", "暴露垃圾")
    # 06010 is not in the CJ/T 214 dictionary
    r = client.post("/api/v1/cases", json={"source": "superior", "title": "x", "category_code": "06010",
                                           "lon": 113.5, "lat": 22.75}, headers=op)
    assert r.status_code == 422


def test_category_edit_changes_time_limit_of_new_cases(client, cdb, as_role):
    op = as_role("operator")
    cat = next(c for c in client.get("/api/v1/cases/categories?q=暴露垃圾", headers=op).json()["items"]
               if c["code"] == "06010")
    assert (cat["limit_value"], cat["limit_unit"]) == (4, "work_hours")
    r = client.patch(f"/api/v1/cases/categories/{cat['id']}", json={"limit_value": 2, "limit_unit": "hours"}, headers=op)
    assert r.status_code == 200 and r.json()["limit_unit"] == "hours"
    c = client.post("/api/v1/cases", json={"source": "superior", "title": "暴露垃圾", "category_code": "06010",
                                           "lon": 113.5, "lat": 22.75}, headers=op).json()
    d = client.get(f"/api/v1/cases/{c['id']}", headers=op).json()
    assert (d["limit_value"], d["limit_unit"]) == (2, "hours")
    assert d["deadline_at"] == "2026-11-16T03:00:00Z"  # 09:00 CST + 2 h on the continuous clock


def test_batch_intake_files_dispatches_and_is_idempotent(client, cdb, as_role, org):
    op = as_role("operator")
    items = [{"source": "api", "title": f"外部系统工单 {i}", "category_code": code, "lon": 113.5 + i / 1000, "lat": 22.75,
              "grid_code": "440115002001001", "external_ref": f"ext-{i}"}
             for i, code in enumerate(["06010", "01002", "09009"])]
    r = client.post("/api/v1/cases/batch", json={"items": items}, headers=op)
    assert r.status_code == 201, r.text
    out = r.json()["items"]
    assert [x["status"] for x in out] == ["dispatched"] * 3
    assert [x["dept_org_id"] for x in out] == [org("D-CGJ"), org("D-SWJ"), org("D-JTJ")]
    d = client.get(f"/api/v1/cases/{out[1]['id']}", headers=op).json()
    assert d["ticket"] == out[1]["ticket"] and d["deadline_at"] and d["limit_unit"] == "work_hours"
    assert [e["action"] for e in d["events"]] == ["report", "file", "dispatch"]
    again = client.post("/api/v1/cases/batch", json={"items": items[:1]}, headers=op).json()["items"]
    assert again[0]["duplicate"] and again[0]["id"] == out[0]["id"]
    bad = client.post("/api/v1/cases/batch", json={"items": [items[2] | {"external_ref": "new"},
                                                              items[0] | {"category_code": "00000", "external_ref": "x"}]},
                      headers=op)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "items.1.category_code"
    with cdb.read() as s:
        assert s.scalar(select(Case).where(Case.external_ref == "new")) is None  # all or nothing
    inbox = client.get("/api/v1/cases/notifications", headers=as_role("handler")).json()
    assert any(n["case_id"] == out[0]["id"] and n["kind"] == "new_task" for n in inbox)


def test_channels_are_limited_to_their_people(client, cdb, as_role):
    body = {"title": "测试", "category_code": "06010", "lon": 113.5, "lat": 22.75, "reporter_phone": "13912345678",
            "address": "x", "hotline_type": "03"}
    for role, source, status in (("citizen", "patrol", 403), ("gridworker", "hotline", 403),
                                 ("gridworker", "superior", 403), ("citizen", "api", 403),
                                 ("operator", "hotline", 201), ("gridworker", "patrol", 201)):
        r = client.post("/api/v1/cases", json=body | {"source": source}, headers=as_role(role))
        assert r.status_code == status, (role, source, r.text)
