"""The state machine over HTTP, walked by each role: gridworker, operator, handler, leader, citizen."""

import datetime as dt

import pytest
from sqlalchemy import select

from citybrain import clock
from citybrain.audit.models import AuditRecord
from citybrain.identity import service as identity

GRID = "440115001001001"  # a grid in 金洲社区 (the demo grid worker's community), 南沙街道


def report(client, h, **kw):
    body = {"source": "patrol", "title": "道路破损", "category_code": "06013", "lon": 113.55, "lat": 22.78,
            "grid_code": GRID, "photos": ["/api/v1/attachments/" + "a1" * 32]}
    body.update(kw)
    r = client.post("/api/v1/cases", json=body, headers=h)
    assert r.status_code == 201, r.text
    return r.json()


def act(client, h, case_id, action, expect=200, **body):
    r = client.post(f"/api/v1/cases/{case_id}/actions/{action}", json=body, headers=h)
    assert r.status_code == expect, r.text
    return r.json()


def tick(minutes=5):
    clock.advance(dt.timedelta(minutes=minutes))


def test_full_path_each_role_and_audit(client, cdb, as_role, org):
    gw, op, hd = as_role("gridworker"), as_role("operator"), as_role("handler")
    c = report(client, gw)
    assert c["status"] == "reported" and c["ticket"]
    cid = c["id"]
    # the grid worker sees their own report but cannot file it
    act(client, gw, cid, "file", expect=403)
    tick()
    d = act(client, op, cid, "file", comment="符合立案条件")
    assert d["status"] == "dispatched"  # auto-dispatched by the responsibility matrix (城管 default)
    assert d["dept_org_id"] == org("D-CGJ") and d["deadline_at"]
    assert "accept" in client.get(f"/api/v1/cases/{cid}", headers=hd).json()["allowed_actions"]
    tick()
    act(client, hd, cid, "accept")
    tick()
    act(client, hd, cid, "handle", expect=422)  # handling needs a comment
    act(client, hd, cid, "handle", comment="已修补路面", attachments=["/api/v1/attachments/" + "b2" * 32])
    tick()
    d = act(client, gw, cid, "verify", comment="现场已修复")
    assert d["status"] == "verified"
    tick()
    d = act(client, op, cid, "close", public_reply="已修复，感谢反映")
    assert d["status"] == "closed" and d["public_reply"] == "已修复，感谢反映"
    inbox = client.get("/api/v1/cases/notifications", headers=gw).json()
    assert [n["kind"] for n in inbox if n["case_id"] == cid] == ["closed"]  # the reporter's own inbox
    steps = [(e["action"], e["from_status"], e["to_status"]) for e in d["events"]]
    assert steps == [("report", None, "reported"), ("file", "reported", "filed"), ("dispatch", "filed", "dispatched"),
                     ("accept", "dispatched", "in_progress"), ("handle", "in_progress", "handled"),
                     ("verify", "handled", "verified"), ("close", "verified", "closed")]
    actors = [e["actor"] for e in d["events"]]
    assert actors == ["user:gridworker", "user:operator", "user:operator", "user:handler", "user:handler",
                      "user:gridworker", "user:operator"]
    with cdb.read() as s:
        audited = [r.action for r in s.scalars(select(AuditRecord).where(AuditRecord.target_type == "case",
                                                                         AuditRecord.target_id == str(cid))
                                               .order_by(AuditRecord.seq))]
    assert audited == ["case.report", "case.file", "case.dispatch", "case.accept", "case.handle", "case.verify",
                       "case.close"]


def test_illegal_transition_is_409_naming_state_and_allowed_actions(client, cdb, as_role):
    gw, op = as_role("gridworker"), as_role("operator")
    cid = report(client, gw)["id"]
    r = client.post(f"/api/v1/cases/{cid}/actions/close", json={}, headers=op)
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == "illegal_transition" and body["current_status"] == "reported"
    assert set(body["allowed_actions"]) >= {"file", "reject", "merge"}
    assert "已上报待受理" in body["message_zh"] and "reported" in body["message_en"].lower()
    r = client.post(f"/api/v1/cases/{cid}/actions/fly", json={}, headers=op)
    assert r.status_code == 404 and r.json()["code"] == "unknown_action"


def test_handler_cannot_act_on_another_departments_case(client, cdb, as_role, org):
    op, hd = as_role("operator"), as_role("handler")
    with cdb.write() as s:
        identity.create_user(s, username="water1", real_name="水务员", password="Water@2026x",
                             org_id=org("D-SWJ"), roles=["handler"])
    water = {"Authorization": "Bearer " + client.post(
        "/api/v1/auth/token", data={"username": "water1", "password": "Water@2026x"}).json()["access_token"]}
    client.cookies.clear()
    # 污水井盖 -> 水务 by default
    c = report(client, op, source="superior", title="井盖破损", category_code="01002")
    assert c["status"] == "dispatched" and c["dept_org_id"] == org("D-SWJ")
    r = client.post(f"/api/v1/cases/{c['id']}/actions/accept", json={}, headers=hd)  # 城管 handler
    assert r.status_code in (403, 404)
    assert client.get(f"/api/v1/cases/{c['id']}", headers=hd).status_code == 404
    assert all(i["id"] != c["id"] for i in client.get("/api/v1/cases", headers=hd).json()["items"])
    act(client, water, c["id"], "accept")
    # and the water handler cannot touch 城管's case
    c2 = report(client, op, source="superior", title="暴露垃圾", category_code="06010")
    assert c2["dept_org_id"] == org("D-CGJ")
    r = client.post(f"/api/v1/cases/{c2['id']}/actions/accept", json={}, headers=water)
    assert r.status_code in (403, 404)


def test_return_and_redispatch_extension_suspend_resume(client, cdb, as_role, org):
    op, hd = as_role("operator"), as_role("handler")
    cid = report(client, op, source="superior", title="占道经营", category_code="09006")["id"]
    act(client, hd, cid, "return", expect=422)  # a reason is required
    d = act(client, hd, cid, "return", comment="属市场监管职责")
    assert d["status"] == "filed" and d["queue"] == "manual" and d["return_count"] == 1 and d["dept_org_id"] is None
    act(client, hd, cid, "accept", expect=404)  # no longer theirs
    d = act(client, op, cid, "dispatch", dept_org_id=org("D-CGJ"), comment="经核实仍属城管")
    assert d["status"] == "dispatched"
    act(client, hd, cid, "accept")
    old_deadline = d["deadline_at"]
    act(client, hd, cid, "request_extension", comment="需协调", extra_value=2, extra_unit="work_days")
    act(client, hd, cid, "request_extension", expect=409, comment="again", extra_value=1, extra_unit="work_days")
    act(client, hd, cid, "approve_extension", expect=403)
    d = act(client, op, cid, "approve_extension", comment="同意")
    assert d["deadline_at"] > old_deadline and d["extension_count"] == 1
    assert d["extensions"][0]["status"] == "approved"
    act(client, op, cid, "approve_extension", expect=409, comment="nothing pending")
    act(client, hd, cid, "request_extension", comment="再次申请", extra_value=1, extra_unit="work_days")
    d = act(client, op, cid, "refuse_extension", comment="不同意")
    assert d["extensions"][1]["status"] == "refused" and d["extension_count"] == 1
    d = act(client, op, cid, "suspend", comment="待资金到位")
    assert d["status"] == "suspended"
    act(client, hd, cid, "handle", expect=409, comment="x")
    tick(60 * 24 * 3)  # three days suspended do not count
    hd2 = {"Authorization": "Bearer " + client.post(
        "/api/v1/auth/token", data={"username": "handler", "password": "CityBrain@2026"}).json()["access_token"]}
    op2 = {"Authorization": "Bearer " + client.post(
        "/api/v1/auth/token", data={"username": "operator", "password": "CityBrain@2026"}).json()["access_token"]}
    client.cookies.clear()
    d = act(client, op2, cid, "resume", comment="恢复")
    assert d["status"] == "in_progress" and d["deadline_at"] > clock.now().isoformat()
    d = act(client, hd2, cid, "handle", comment="已清理")
    assert d["status"] == "handled"


def test_reject_answer_merge_supervise(client, cdb, as_role):
    gw, op, ld = as_role("gridworker"), as_role("operator"), as_role("leader")
    a = report(client, gw)["id"]
    d = act(client, op, a, "reject", comment="现场无此问题")
    assert d["status"] == "not_filed"
    act(client, op, a, "file", expect=409)
    # hotline consultation answered directly
    r = client.post("/api/v1/cases", json={"source": "hotline", "title": "咨询垃圾分类投放时间", "hotline_type": "01",
                                           "reporter_phone": "13912345678", "address": "金洲社区", "auto_file": False},
                    headers=op)
    assert r.status_code == 201
    d = act(client, op, r.json()["id"], "answer", comment="已告知投放时间为每日 7-9 时、18-21 时")
    assert d["status"] == "closed"
    # duplicates merged
    b = report(client, gw)["id"]
    c = report(client, gw)["id"]
    act(client, op, c, "merge", expect=422, comment="重复")
    d = act(client, op, c, "merge", target_case_id=b, comment="重复上报")
    assert d["status"] == "merged" and d["merged_into_id"] == b
    assert any(e["action"] == "merged_in" for e in client.get(f"/api/v1/cases/{b}", headers=op).json()["events"])
    act(client, op, b, "file")
    # supervision: operator 催办/督办, only a leader 挂牌督办
    act(client, op, b, "supervise", comment="请尽快处置", level=3, expect=403)
    d = act(client, op, b, "supervise", comment="请尽快处置")
    assert d["supervision_level"] == 1
    d = act(client, ld, b, "supervise", comment="挂牌督办", level=3)
    assert d["supervision_level"] == 3 and [s["level"] for s in d["supervisions"]] == [1, 3]
    act(client, as_role("handler"), b, "supervise", comment="x", expect=403)


def test_rework_then_citizen_dissatisfied_reopens(client, cdb, as_role):
    op, hd = as_role("operator"), as_role("handler")
    r = client.post("/api/v1/public/cases", json={"phone": "13700001111", "title": "楼下垃圾堆积", "category_code": "06010",
                                                  "lon": 113.55, "lat": 22.78, "address": "金洲社区 3 栋"})
    assert r.status_code == 201
    ticket, cid = r.json()["ticket"], r.json()["id"]
    act(client, op, cid, "file")
    act(client, hd, cid, "accept")
    act(client, hd, cid, "handle", comment="已清运")
    d = act(client, op, cid, "rework", comment="仍有残留")
    assert d["status"] == "rework" and d["rework_count"] == 1
    act(client, hd, cid, "handle", comment="已彻底清运")
    act(client, op, cid, "verify")
    act(client, op, cid, "close")
    # the citizen tracks and rates; wrong phone gets nothing
    assert client.post("/api/v1/public/cases/track", json={"ticket": ticket, "phone": "13700002222"}).status_code == 404
    t = client.post("/api/v1/public/cases/track", json={"ticket": ticket, "phone": "13700001111"}).json()
    assert t["status"] == "closed" and t["can_rate"] and t["public_reply"]
    bad = client.post("/api/v1/public/cases/rating", json={"ticket": ticket, "phone": "13700002222",
                                                           "satisfaction": "satisfied"})
    assert bad.status_code == 404
    t = client.post("/api/v1/public/cases/rating", json={"ticket": ticket, "phone": "13700001111",
                                                         "satisfaction": "dissatisfied", "comment": "没清干净"}).json()
    assert t["status"] == "rework"  # reopened by rule
    d = client.get(f"/api/v1/cases/{cid}", headers=op).json()
    assert d["reopen_count"] == 1 and d["rating"] == "dissatisfied"
    act(client, hd, cid, "handle", comment="第三次清运")
    act(client, op, cid, "verify")
    act(client, op, cid, "close")
    t = client.post("/api/v1/public/cases/rating", json={"ticket": ticket, "phone": "13700001111",
                                                         "satisfaction": "dissatisfied"}).json()
    assert t["status"] == "closed"  # max one automatic reopen
    again = client.post("/api/v1/public/cases/rating", json={"ticket": ticket, "phone": "13700001111",
                                                             "satisfaction": "satisfied"})
    assert again.status_code == 409 and again.json()["code"] == "already_rated"


def test_rating_window_is_seven_days(client, cdb, as_role):
    op, hd = as_role("operator"), as_role("handler")
    r = client.post("/api/v1/public/cases", json={"phone": "13700003333", "title": "路灯不亮", "category_code": "01037",
                                                  "address": "港前社区"}).json()
    assert client.post("/api/v1/public/cases/rating", json={"ticket": r["ticket"], "phone": "13700003333",
                                                            "satisfaction": "satisfied"}).status_code == 409
    act(client, op, r["id"], "file")
    act(client, op, r["id"], "dispatch", dept_org_id=None, expect=409)  # already dispatched by default
    d = client.get(f"/api/v1/cases/{r['id']}", headers=op).json()
    assert d["status"] == "dispatched"
    act(client, hd, r["id"], "accept")
    act(client, hd, r["id"], "handle", comment="已更换灯具")
    act(client, op, r["id"], "verify")
    act(client, op, r["id"], "close")
    clock.advance(dt.timedelta(days=8))
    late = client.post("/api/v1/public/cases/rating", json={"ticket": r["ticket"], "phone": "13700003333",
                                                            "satisfaction": "satisfied"})
    assert late.status_code == 409 and late.json()["code"] == "rating_window_closed"


@pytest.mark.parametrize("role", ["citizen", "analyst"])
def test_roles_without_case_read_cannot_list(client, cdb, as_role, role):
    assert client.get("/api/v1/cases", headers=as_role(role)).status_code == 403


def test_role_by_action_matrix(client, cdb, as_role):
    """Every action is refused (403 permission_denied) to each role that lacks its permission."""
    from citybrain.cases.workflow import ACTIONS
    from citybrain.identity.permissions import ROLES

    cid = report(client, as_role("gridworker"))["id"]
    refused = 0
    for role in ("operator", "handler", "gridworker", "leader", "citizen"):
        h = as_role(role)
        for code, a in ACTIONS.items():
            if a.permission in ROLES[role].permissions:
                continue  # what these roles may do is walked in the tests above
            r = client.post(f"/api/v1/cases/{cid}/actions/{code}", json={"comment": "x"}, headers=h)
            assert r.status_code == 403 and r.json()["code"] == "permission_denied", (role, code, r.text)
            refused += 1
    assert refused >= 40
    assert client.get(f"/api/v1/cases/{cid}", headers=as_role("operator")).json()["status"] == "reported"


def test_manual_reopen_and_note(client, cdb, as_role):
    op, hd = as_role("operator"), as_role("handler")
    cid = report(client, op, source="superior")["id"]
    d = act(client, hd, cid, "note", comment="已联系产权单位")
    assert d["events"][-1]["action"] == "note" and d["status"] == "dispatched"
    act(client, hd, cid, "accept")
    act(client, hd, cid, "handle", comment="已修补")
    act(client, op, cid, "verify")
    act(client, op, cid, "close")
    act(client, op, cid, "reopen", expect=422)  # a reason is required
    d = act(client, op, cid, "reopen", comment="上级督查发现问题复现")
    assert d["status"] == "rework" and d["reopen_count"] == 1 and d["closed_at"] is None and d["deadline_at"]
    act(client, hd, cid, "handle", comment="已重新修补")
    assert act(client, op, cid, "verify")["status"] == "verified"
