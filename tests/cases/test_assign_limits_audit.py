"""Person-level assignment (指派) by role, rate limits of the citizen endpoints (fake clock), and the audit
trail of the batch intake (one record per case, found by case id)."""

import datetime as dt

import pytest
from sqlalchemy import select

from citybrain import clock
from citybrain.audit import service as audit
from citybrain.audit.models import AuditRecord
from citybrain.config import configure, get_settings
from citybrain.identity import service as identity

GRID = "440115001001001"


def _login(client, username, password):
    r = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    client.cookies.clear()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _user(cdb, org, username, org_code, roles):
    with cdb.write() as s:
        return identity.create_user(s, username=username, real_name=username + "名", password="Handler@2026x",
                                    org_id=org(org_code), roles=roles).id


def _uid(cdb, username):
    with cdb.read() as s:
        return identity.user_by_username(s, username=username).id


def _case(client, h, category="06010"):
    r = client.post("/api/v1/cases", json={"source": "superior", "title": "暴露垃圾", "category_code": category,
                                           "lon": 113.55, "lat": 22.78, "grid_code": GRID}, headers=h)
    assert r.status_code == 201, r.text
    return r.json()


def _assign(client, h, case_id, user_id, comment=None):
    body = {"assignee_user_id": user_id} | ({"comment": comment} if comment else {})
    return client.post(f"/api/v1/cases/{case_id}/actions/assign", json=body, headers=h)


def test_department_assigns_a_named_handler_who_sees_it_as_assigned_to_me(client, cdb, as_role, org):
    op, hd = as_role("operator"), as_role("handler")
    colleague = _user(cdb, org, "cg2", "D-CGJ", ["handler"])
    c = _case(client, op)
    assert c["dept_org_id"] == org("D-CGJ") and c["status"] == "dispatched"
    detail = client.get(f"/api/v1/cases/{c['id']}", headers=hd).json()
    assert "assign" in detail["allowed_actions"]

    r = _assign(client, hd, c["id"], colleague, comment="请到现场处置")
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["assignee_user_id"] == colleague and d["assignee_name"] == "cg2名" and d["status"] == "dispatched"
    step = d["events"][-1]
    assert step["action"] == "assign" and step["actor"] == "user:handler"
    assert step["data"]["assignee"] == "cg2" and step["comment"] == "请到现场处置"

    mine = _login(client, "cg2", "Handler@2026x")
    assigned = client.get("/api/v1/cases/assigned", headers=mine).json()
    assert [i["id"] for i in assigned["items"]] == [c["id"]]
    assert [i["id"] for i in client.get("/api/v1/cases?assigned_to_me=true", headers=mine).json()["items"]] == [c["id"]]
    assert client.get("/api/v1/cases/assigned", headers=hd).json()["items"] == []  # not the assigner's
    inbox = client.get("/api/v1/cases/notifications", headers=mine).json()
    assert any(n["kind"] == "assigned" and n["case_id"] == c["id"] for n in inbox)

    # the assignee works the case; reassigning moves it; the audit trail names who assigned whom
    assert client.post(f"/api/v1/cases/{c['id']}/actions/accept", json={}, headers=mine).status_code == 200
    assert _assign(client, mine, c["id"], _uid(cdb, "handler")).status_code == 200
    assert client.get("/api/v1/cases/assigned", headers=mine).json()["items"] == []
    with cdb.read() as s:
        total, recs = audit.search(s, target_type="case", target_id=str(c["id"]), action="case.assign")
    assert total == 2
    assert {r.actor for r in recs} == {"user:handler", "user:cg2"}
    assert recs[-1].summary["after"]["assignee_user_id"] == colleague

    # a return clears the assignment: the next department assigns its own people
    r = client.post(f"/api/v1/cases/{c['id']}/actions/return", json={"comment": "非本部门"}, headers=hd)
    assert r.status_code == 200
    with cdb.read() as s:
        from citybrain.cases.models import Case

        assert s.get(Case, c["id"]).assignee_user_id is None


def test_assignment_refused_by_role_department_and_person(client, cdb, as_role, org):
    op, hd = as_role("operator"), as_role("handler")
    water = _user(cdb, org, "sw1", "D-SWJ", ["handler"])
    cg_analyst = _user(cdb, org, "cgview", "D-CGJ", ["analyst"])  # in the department, no case.handle
    c = _case(client, op)
    me = _uid(cdb, "handler")
    for role in ("operator", "leader", "gridworker", "citizen"):
        r = _assign(client, as_role(role), c["id"], me)
        assert r.status_code == 403 and r.json()["code"] == "permission_denied", (role, r.text)
    # another department's handler does not see the case
    r = _assign(client, _login(client, "sw1", "Handler@2026x"), c["id"], water)
    assert r.status_code == 404
    # the assignee must be an active handler of the case's department
    for uid in (water, cg_analyst, 999999):
        r = _assign(client, hd, c["id"], uid)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "assignee_user_id", r.text
    assert _assign(client, hd, c["id"], None).status_code == 422
    # not in a state where work is assigned
    assert client.post(f"/api/v1/cases/{c['id']}/actions/accept", json={}, headers=hd).status_code == 200
    assert client.post(f"/api/v1/cases/{c['id']}/actions/handle", json={"comment": "已处置"},
                       headers=hd).status_code == 200
    r = _assign(client, hd, c["id"], me)
    assert r.status_code == 409 and r.json()["current_status"] == "handled"


@pytest.fixture
def limits(cdb):
    """Small citizen limits: 3 requests per IP per minute, 2 per phone per hour."""
    configure(get_settings().model_copy(update={"cases_public_ip_limit": 3, "cases_public_ip_window_s": 60,
                                                "cases_public_phone_limit": 2,
                                                "cases_public_phone_window_s": 3600}))


def _report(client, phone):
    return client.post("/api/v1/public/cases", json={"phone": phone, "title": "路灯不亮", "category_code": "01037",
                                                     "lon": 113.55, "lat": 22.78, "address": "南沙街道"})


def test_citizen_endpoints_are_limited_per_ip(client, limits):
    codes = [client.post("/api/v1/public/cases/track", json={"ticket": f"2026111600000{i}",
                                                              "phone": f"1390000000{i}"}).status_code
             for i in range(4)]
    assert codes == [404, 404, 404, 429]
    r = client.post("/api/v1/public/cases/rating", json={"ticket": "202611160000009", "phone": "13900000009",
                                                          "satisfaction": "satisfied"})
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "rate_limited" and r.headers["Retry-After"] == "20"  # 3 per 60 s: one every 20 s
    assert _report(client, "13700000001").status_code == 429
    clock.advance(dt.timedelta(seconds=19))
    assert client.post("/api/v1/public/cases/track", json={"ticket": "202611160000001", "phone": "13900000001"}).status_code == 429
    clock.advance(dt.timedelta(seconds=1))
    assert _report(client, "13700000001").status_code == 201
    assert _report(client, "13700000002").status_code == 429


def test_citizen_endpoints_are_limited_per_phone(client, limits):
    configure(get_settings().model_copy(update={"cases_public_ip_limit": 100}))
    first = _report(client, "13700000001")
    assert first.status_code == 201
    ticket = first.json()["ticket"]
    track = client.post("/api/v1/public/cases/track", json={"ticket": ticket, "phone": "13700000001"})
    assert track.status_code == 200
    r = client.post("/api/v1/public/cases/track", json={"ticket": ticket, "phone": "13700000001"})
    assert r.status_code == 429 and r.headers["Retry-After"] == "1800"
    assert _report(client, "137 0000 0001").status_code == 422  # not a phone number: refused by validation
    assert _report(client, "13700000002").status_code == 201  # another phone is not affected
    clock.advance(dt.timedelta(minutes=30))
    assert client.post("/api/v1/public/cases/track", json={"ticket": ticket, "phone": "13700000001"}).status_code == 200


def test_batch_intake_audits_every_case_by_id(client, cdb, as_role):
    op = as_role("operator")
    items = [{"source": "api", "title": f"外部工单 {i}", "category_code": "06010", "lon": 113.5, "lat": 22.75,
              "grid_code": GRID, "external_ref": f"aud-{i}"} for i in range(3)]
    out = client.post("/api/v1/cases/batch", json={"items": items}, headers=op).json()["items"]
    auditor = as_role("auditor")
    for x in out:
        r = client.get(f"/api/v1/audit?target_type=case&target_id={x['id']}", headers=auditor).json()
        assert r["total"] == 1, r
        rec = r["items"][0]
        assert rec["action"] == "case.report" and rec["actor"] == "user:operator"
        after = rec["summary"]["after"]
        assert after["ticket"] == x["ticket"] and after["steps"] == ["report", "file", "dispatch"]
        assert after["status"] == "dispatched" and after["external_ref"].startswith("aud-")
    assert client.get("/api/v1/audit/verify", headers=auditor).json()["ok"] is True
    with cdb.read() as s:
        seqs = list(s.scalars(select(AuditRecord.seq).order_by(AuditRecord.seq)))
    assert seqs == list(range(1, len(seqs) + 1))


def test_citizen_limits_hold_across_worker_processes(client, limits):
    """Each worker process has its own application; the buckets are in the database, so a second application
    (another worker of `serve --workers 2`) refuses the request that goes over the limit."""
    from fastapi.testclient import TestClient

    from citybrain.app import create_app

    def track(c, i):  # a different phone each time: only the per-IP limit (3 a minute) applies
        return c.post("/api/v1/public/cases/track", json={"ticket": "202611160000001", "phone": f"1390000000{i}"})

    with TestClient(create_app(background=False), raise_server_exceptions=False) as other:
        assert [track(c, i).status_code for i, c in enumerate((client, other, client))] == [404, 404, 404]
        r = track(other, 3)
        assert r.status_code == 429 and r.headers["Retry-After"] == "20"
        clock.advance(dt.timedelta(seconds=20))
        assert track(other, 4).status_code == 404
