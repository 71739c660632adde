import datetime as dt

from citybrain import clock
from citybrain.audit import service as audit
from citybrain.workcal import WorkCalendar
from tests.conftest import login
from tests.data.conftest import ENT, POP, SECRET


def _req(client, h, code=POP, **kw):
    body = {"resource_code": code, "fields": ["id_number", "name", "phone"], "purpose": "案件当事人核实",
            "legal_basis": "《行政处罚法》", **kw}
    return client.post("/api/v1/data/requests", json=body, headers=h)


def test_conditional_request_waits_for_the_provider(client, hub, dept_user):
    cg = dept_user("D-JTJ")
    r = _req(client, cg)
    assert r.status_code == 201, r.text
    req = r.json()
    assert req["status"] == "pending" and not req["overdue"]
    today = dt.date.fromisoformat(req["created_at"][:10])
    due = dt.date.fromisoformat(req["due_on"])
    cal = WorkCalendar()
    worked = sum(cal.is_workday(today + dt.timedelta(days=d)) for d in range(1, (due - today).days + 1))
    assert worked in (10, 11)  # 10 working days after the (local) day
    # the provider's handler sees it among incoming requests
    gaj = dept_user("D-GAJ")
    inc = client.get("/api/v1/data/requests", params={"direction": "incoming", "status": "pending"},
                     headers=gaj).json()
    assert req["id"] in [x["id"] for x in inc["items"]]
    # another department's handler may not decide it, nor the requester
    r = client.post(f"/api/v1/data/requests/{req['id']}/decision", json={"approve": True}, headers=cg)
    assert r.status_code == 403
    r = client.post(f"/api/v1/data/requests/{req['id']}/decision", json={"approve": True},
                    headers=dept_user("D-SCJG"))
    assert r.status_code == 403
    r = client.post(f"/api/v1/data/requests/{req['id']}/decision", json={"approve": True, "fields": ["id_number"]},
                    headers=gaj)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    grants = client.get("/api/v1/data/grants", headers=cg).json()
    assert any(g["request_id"] == req["id"] and g["fields"] == ["id_number"] for g in grants)
    # the request shows what was asked and, beside it, what was granted
    for who in (cg, gaj):
        shown = client.get(f"/api/v1/data/requests/{req['id']}", headers=who).json()
        assert shown["fields"] == req["fields"] and shown["grant"]["fields"] == ["id_number"]
        listed = client.get("/api/v1/data/requests", headers=who).json()["items"]
        assert next(x for x in listed if x["id"] == req["id"])["grant"]["fields"] == ["id_number"]
    assert req["grant"] is None  # a pending request has none yet
    r = client.post(f"/api/v1/data/requests/{req['id']}/decision", json={"approve": False, "reason": "x"},
                    headers=gaj)
    assert r.status_code == 409


def test_refusal_needs_a_reason(client, hub, dept_user):
    req = _req(client, dept_user("D-JTJ")).json()
    gaj = dept_user("D-GAJ")
    r = client.post(f"/api/v1/data/requests/{req['id']}/decision", json={"approve": False}, headers=gaj)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason"
    r = client.post(f"/api/v1/data/requests/{req['id']}/decision",
                    json={"approve": False, "reason": "超出最小必要范围"}, headers=gaj)
    assert r.status_code == 200 and r.json()["status"] == "refused"
    assert r.json()["decision_reason"] == "超出最小必要范围"
    with hub.read() as s:
        _n, recs = audit.search(s, action="data.request.refuse", target_id=str(req["id"]))
    assert recs[0].summary["after"]["reason"] == "超出最小必要范围"


def test_unconditional_is_granted_at_once_and_not_shared_is_refused(client, hub, dept_user):
    h = dept_user("D-JTJ")
    r = _req(client, h, code=ENT, fields=["credit_code", "name"], legal_basis=None)
    assert r.status_code == 201 and r.json()["status"] == "approved"
    r = _req(client, h, code=SECRET, fields=["id_number"])
    assert r.status_code == 403 and r.json()["code"] == "not_shareable"
    # conditional without a stated basis, fields that do not exist
    r = _req(client, h, legal_basis="")
    assert r.status_code == 422
    r = _req(client, h, fields=["id_number", "salary"])
    assert r.status_code == 422 and "salary" in r.text
    # analysts may request, leaders may not
    r = client.post("/api/v1/data/requests", json={"resource_code": ENT, "fields": ["name"], "purpose": "x"},
                    headers=dept_user("D-YXZX", "leader"))
    assert r.status_code == 403


def test_overdue_requests_are_flagged(client, hub, dept_user):
    h = dept_user("D-JTJ")
    req = _req(client, h).json()
    clock.advance(dt.timedelta(days=20))
    h = login(client, "handler-d-jtj")  # the old session idled out
    r = client.get(f"/api/v1/data/requests/{req['id']}", headers=h).json()
    assert r["overdue"] is True
    over = client.get("/api/v1/data/requests", params={"overdue": True}, headers=dept_user("D-GAJ")).json()
    assert over["total"] >= 1 and all(x["overdue"] for x in over["items"])
    assert req["id"] in [x["id"] for x in over["items"]]


def test_grants_expire(client, hub, dept_user, consumer_key):
    h = dept_user("D-JTJ")
    today = clock.now().date()
    req = _req(client, h, code=ENT, fields=["credit_code", "name"], legal_basis=None,
               valid_to=(today + dt.timedelta(days=30)).isoformat()).json()
    key = consumer_key("D-JTJ")
    assert client.post(f"/api/v1/data/exchange/{ENT}/query", json={}, headers=key).status_code == 200
    clock.advance(dt.timedelta(days=40))
    h = login(client, "handler-d-jtj")
    r = client.post(f"/api/v1/data/exchange/{ENT}/query", json={}, headers=key)
    assert r.status_code == 403 and r.json()["code"] == "no_grant"
    from citybrain.data import service

    with hub.write() as s:
        assert service.expire_grants(s) >= 1
    grants = client.get("/api/v1/data/grants", params={"active_only": False}, headers=h).json()
    assert next(g for g in grants if g["request_id"] == req["id"])["status"] == "expired"


def test_provider_revokes_a_grant(client, hub, dept_user, consumer_key):
    h = dept_user("D-JTJ")
    _req(client, h, code=ENT, fields=["credit_code"], legal_basis=None)
    grant = next(g for g in client.get("/api/v1/data/grants", headers=h).json() if g["consumer_org_id"]
                 and g["fields"] == ["credit_code"])
    sc = dept_user("D-SCJG")
    assert client.post(f"/api/v1/data/grants/{grant['id']}/revoke", json={"reason": ""}, headers=sc).status_code == 422
    assert client.post(f"/api/v1/data/grants/{grant['id']}/revoke", json={"reason": "x"}, headers=h).status_code == 403
    assert client.post(f"/api/v1/data/grants/{grant['id']}/revoke", json={"reason": "停止合作"},
                       headers=sc).status_code == 200
    r = client.post(f"/api/v1/data/exchange/{ENT}/query", json={}, headers=consumer_key("D-JTJ"))
    assert r.status_code == 403
