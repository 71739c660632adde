import csv
import io

import httpx
import pytest

from citybrain import context, served
from citybrain.audit import service as audit
from tests.data.conftest import ENT, HEALTH, POP, running_server


def test_open_catalogue_is_public(client, hub):
    r = client.get("/api/v1/open/resources")
    assert r.status_code == 200
    codes = {x["code"] for x in r.json()["items"]}
    assert ENT in codes and HEALTH in codes and POP not in codes
    r = client.get("/api/v1/open/resources", params={"q": "法人"}).json()
    assert [x["code"] for x in r["items"]] == [ENT]
    assert client.get(f"/api/v1/open/resources/{POP}").status_code == 404
    d = client.get(f"/api/v1/open/resources/{ENT}").json()
    assert "legal_rep" not in {i["name"] for i in d["items"]}  # only public items are listed


def test_preview_and_download_show_public_fields_only(client, hub):
    r = client.get(f"/api/v1/open/resources/{ENT}/preview", params={"limit": 5}).json()
    assert len(r["records"]) == 5 and "legal_rep" not in r["fields"] and "credit_code" in r["fields"]
    r = client.get(f"/api/v1/open/resources/{ENT}/download.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert len(rows) == 120 and "legal_rep" not in rows[0]
    r = client.get(f"/api/v1/open/resources/{ENT}/download.json").json()
    assert len(r["records"]) == 120
    assert client.get(f"/api/v1/open/resources/{POP}/download.csv").status_code == 404
    assert client.get(f"/api/v1/open/resources/{ENT}/download.xml").status_code == 404
    ioc = client.get("/api/v1/data/stats/exchange", params={"days": 1}, headers={}).status_code
    assert ioc == 401


def _apply(client, applicant="某大学公共卫生学院"):
    r = client.post(f"/api/v1/open/resources/{HEALTH}/keys", json={
        "applicant": applicant, "contact": "lab@example.edu.cn", "purpose": "基层医疗资源可及性研究"})
    assert r.status_code == 201 and r.json()["status"] == "pending" and "key" not in r.json()
    return r.json()["application_id"], r.json()["ticket"]


def test_conditionally_open_key_needs_the_providers_approval(client, hub, dept_user, as_role):
    r = client.get(f"/api/v1/open/resources/{HEALTH}/download.json")
    assert r.status_code == 403 and r.json()["code"] == "open_key_required"
    r = client.post(f"/api/v1/open/resources/{HEALTH}/keys", json={"applicant": "某大学", "contact": "",
                                                                  "purpose": "研究"})
    assert r.status_code == 422
    app_id, ticket = _apply(client)
    url = f"/api/v1/open/applications/{app_id}"
    assert client.get(url, headers={"X-Application-Ticket": ticket}).json()["status"] == "pending"
    assert client.get(url, headers={"X-Application-Ticket": "cbo_wrong"}).status_code == 403
    r = client.post(f"{url}/key", json={"ticket": ticket})
    assert r.status_code == 409 and r.json()["code"] == "application_pending"  # no key before approval
    decide = f"/api/v1/data/open-applications/{app_id}/decision"
    # per role: only approvers of the provider department (卫健局) may decide
    assert client.post(decide, json={"approve": True}).status_code == 401
    for headers in (dept_user("D-GAJ", "handler"), as_role("analyst"), as_role("operator"), as_role("leader"),
                    as_role("secadmin")):
        assert client.post(decide, json={"approve": True}, headers=headers).status_code == 403
    provider = dept_user("D-WJJ", "handler")
    listed = client.get("/api/v1/data/open-applications", params={"status": "pending"}, headers=provider).json()
    assert listed[0]["id"] == app_id and {a["resource"] for a in listed} == {HEALTH}  # with the demo's
    assert client.get("/api/v1/data/open-applications", headers=dept_user("D-GAJ", "handler")).json() == []
    r = client.post(decide, json={"approve": True}, headers=provider)
    assert r.status_code == 200 and r.json()["status"] == "approved"
    assert client.post(decide, json={"approve": False, "reason": "x"}, headers=provider).status_code == 409
    r = client.post(f"{url}/key", json={"ticket": ticket})
    assert r.status_code == 201
    key = r.json()["key"]
    assert client.post(f"{url}/key", json={"ticket": ticket}).status_code == 409  # shown once
    r = client.get(f"/api/v1/open/resources/{HEALTH}/download.json", headers={"X-API-Key": key})
    assert r.status_code == 200 and len(r.json()["records"]) == 18
    # the key is for that dataset only and cannot query the exchange
    assert client.post(f"/api/v1/data/exchange/{ENT}/query", json={}, headers={"X-API-Key": key}).status_code == 403
    assert client.post(f"/api/v1/open/resources/{ENT}/keys", json={"applicant": "a", "contact": "b",
                                                                  "purpose": "c"}).status_code == 409
    with hub.read() as s:
        _n, applied = audit.search(s, action="data.open.apply", target_id=str(app_id))
        _n, approved = audit.search(s, action="data.open.approve", target_id=str(app_id))
        _n, issued = audit.search(s, action="data.open.key", target_id=str(app_id))
    assert applied and issued and approved[0].actor.startswith("user:handler-d-wjj")


def test_open_key_application_refused_with_a_reason(client, hub, dept_user):
    app_id, ticket = _apply(client, "某咨询公司")
    decide = f"/api/v1/data/open-applications/{app_id}/decision"
    provider = dept_user("D-WJJ", "handler")
    assert client.post(decide, json={"approve": False}, headers=provider).status_code == 422
    r = client.post(decide, json={"approve": False, "reason": "用途与开放范围不符"}, headers=provider)
    assert r.status_code == 200 and r.json()["status"] == "refused"
    st = client.get(f"/api/v1/open/applications/{app_id}", headers={"X-Application-Ticket": ticket}).json()
    assert st["status"] == "refused" and st["decision_reason"] == "用途与开放范围不符"
    r = client.post(f"/api/v1/open/applications/{app_id}/key", json={"ticket": ticket})
    assert r.status_code == 409 and r.json()["code"] == "application_refused"
    with hub.read() as s:
        _n, recs = audit.search(s, action="data.open.refuse", target_id=str(app_id))
    assert recs[0].summary["after"]["reason"] == "用途与开放范围不符"


def test_dcat_export_is_json_ld(client, hub):
    from pyld import jsonld

    r = client.get("/api/v1/open/catalog.jsonld")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/ld+json")
    expanded = jsonld.expand(r.json())
    types = [t for node in expanded for t in node.get("@type", [])]
    assert types.count("http://www.w3.org/ns/dcat#Dataset") == 4
    assert "http://www.w3.org/ns/dcat#Catalog" in types
    ds = next(n for n in expanded if n.get("http://purl.org/dc/terms/identifier", [{}])[0].get("@value") == ENT)
    dist = ds["http://www.w3.org/ns/dcat#distribution"]
    assert {d["http://purl.org/dc/terms/format"][0]["@value"] for d in dist} == {"CSV", "JSON"}
    assert ds["http://purl.org/dc/terms/accrualPeriodicity"] == [{"@id": "http://purl.org/cld/freq/daily"}]
    publisher = ds["http://purl.org/dc/terms/publisher"][0]
    assert publisher["http://purl.org/dc/terms/identifier"][0]["@value"].startswith("D-")
    # every link into this server that a harvester would follow answers
    links: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("@id"), str) and node["@id"].startswith("http://testserver/"):
                links.add(node["@id"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(expanded)
    assert len(links) >= 1 + 4 * 3  # the catalogue, and each dataset with its two downloads
    for link in sorted(links):  # the downloads of a conditionally open dataset need a key: 403, not 404
        r = client.get(link.removeprefix("http://testserver"))
        assert r.status_code == 200 or (r.status_code == 403 and "/download." in link), (link, r.text[:200])


def test_ckan_action_api_in_process(client, hub):
    r = client.get("/api/3/action/package_list").json()
    assert r["success"] and "440115-1-02-001-0001" in r["result"]
    r = client.post("/api/3/action/package_show", json={"id": "nope"})
    assert r.status_code == 404 and r.json()["success"] is False
    r = client.get("/api/3/action/no_such_action")
    assert r.status_code == 400
    for action, param in (("package_search", "rows"), ("package_search", "start"), ("package_list", "limit")):
        r = client.get(f"/api/3/action/{action}", params={param: -1})
        assert r.status_code == 422 and r.json()["success"] is False, (action, param, r.text)
    r = client.get("/api/3/action/package_search", params={"rows": 0}).json()  # CKAN: the count alone
    assert r["success"] and r["result"]["count"] >= 4 and r["result"]["results"] == []


@pytest.fixture
def server(db, hub, tmp_path):
    """A real `citybrain serve` on the test's SQLite database."""
    if not db.is_sqlite:
        pytest.skip("the subprocess test runs once, on the embedded database")
    db.dispose()
    with running_server(tmp_path, served.free_port()) as base:
        yield base


def test_ckanapi_client_against_a_running_server(server):
    import ckanapi

    ckan = ckanapi.RemoteCKAN(server, user_agent="citybrain-test/1.0")
    names = ckan.action.package_list()
    assert "440115-1-02-001-0001" in names and len(names) == 4
    pkg = ckan.action.package_show(id="440115-1-02-001-0001")
    assert pkg["title"] == "法人单位基础信息"
    assert pkg["organization"]["title"] == "区市场监督管理局"
    assert {r["format"] for r in pkg["resources"]} == {"CSV", "JSON"}
    found = ckan.action.package_search(q="地名")
    assert found["count"] == 1 and found["results"][0]["name"] == "440115-1-03-001-0001"
    orgs = ckan.action.organization_list(all_fields=True)
    assert {o["title"] for o in orgs} >= {"区市场监督管理局", "区政务服务数据管理局"}
    with pytest.raises(ckanapi.NotFound):
        ckan.action.package_show(id="no-such-dataset")
    # every answer's help link answers (help_show), an unknown action's help is a CKAN NotFound
    assert "metadata of a dataset" in ckan.action.help_show(name="package_show")
    assert httpx.get(f"{server}/api/3/action/help_show", params={"name": "package_list"}).json()["success"]
    with pytest.raises(ckanapi.NotFound):
        ckan.action.help_show(name="no_such_action")
    # the distribution URL really downloads
    csv_url = next(r["url"] for r in pkg["resources"] if r["format"] == "CSV")
    assert httpx.get(csv_url, timeout=10).status_code == 200


def test_a_download_cut_short_is_counted_and_blocks_nothing(db, hub, tmp_path):
    """A client that drops an open-data download midway: the server ends the download at once, counts the
    records it had produced, and goes on writing (before, the abandoned download could lock writes for 30 s)."""
    import socket
    import sqlite3
    import struct
    import time

    if not db.is_sqlite:
        pytest.skip("the subprocess test runs once, on the embedded database")
    from citybrain.data import demo, service

    with db.write() as s:  # megabytes of CSV: more than the sockets' buffers hold
        service.load_records(s, principal=context.SYSTEM, code=ENT, rows=demo.entity_rows(40000, seed=5),
                             source="test")
    path = db.engine.url.database
    db.dispose()
    with running_server(tmp_path, served.free_port()) as base:
        host, port = base.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /api/v1/open/resources/{ENT}/download.csv HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # reset: the client is gone
        deadline = time.monotonic() + 10
        logged = []
        while not logged and time.monotonic() < deadline:
            with sqlite3.connect(path) as conn:
                logged = conn.execute("SELECT records FROM data_exchange_log WHERE op = 'open'").fetchall()
            time.sleep(0.2)
        assert logged and 0 < logged[0][0] < 40000 + 120, logged
        # writes go on: a citizen report is answered at once
        r = httpx.post(f"{base}/api/v1/public/cases", timeout=5, json={
            "phone": "13700000001", "title": "路灯不亮", "category_code": "01037", "lon": 113.55, "lat": 22.78,
            "address": "南沙街道"})
        assert r.status_code == 201, r.text
        full = httpx.get(f"{base}/api/v1/open/resources/{ENT}/download.csv", timeout=30)
        assert full.status_code == 200 and full.text.count("\n") > 40000
