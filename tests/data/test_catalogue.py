from citybrain.audit import service as audit
from tests.data.conftest import ENT, POP

NEW = {
    "code": "440115-3-CGJ-001", "name": "占道经营案件台账", "classification": "department",
    "category": "3-CGJ 城管", "key_field": "case_no", "summary": "城管执法占道经营案件",
    "items": [{"name": "case_no", "label": "案件编号", "required": True},
              {"name": "street", "label": "街道", "grade": "public"}],
    "share_type": "unconditional", "open_type": "closed",
}


def test_not_shared_without_legal_basis_is_refused(client, hub, as_role):
    body = {**NEW, "share_type": "none"}
    r = client.post("/api/v1/data/resources", json=body, headers=as_role("handler"))
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "legal_basis" in {e["field"] for e in r.json()["errors"]}
    body = {**NEW, "share_type": "conditional", "share_condition": "执法使用"}
    r = client.post("/api/v1/data/resources", json=body, headers=as_role("handler"))
    assert r.status_code == 422 and "legal_basis" in {e["field"] for e in r.json()["errors"]}
    body["legal_basis"] = "《城市市容和环境卫生管理条例》"
    r = client.post("/api/v1/data/resources", json=body, headers=as_role("handler"))
    assert r.status_code == 201, r.text
    assert r.json()["provider_code"] == "D-CGJ" and r.json()["share_type_label"] == "有条件共享"


def test_invalid_metadata_names_fields(client, hub, as_role):
    body = {**NEW, "items": [{"name": "Case No"}], "key_field": "nope", "open_type": "public"}
    r = client.post("/api/v1/data/resources", json=body, headers=as_role("handler"))
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"items.0.name", "key_field", "open_type"} <= fields
    # secret data may be neither shared nor open
    r = client.post("/api/v1/data/resources", json={**NEW, "secret": True}, headers=as_role("handler"))
    assert r.status_code == 422 and "secret" in {e["field"] for e in r.json()["errors"]}


def test_only_own_department_may_catalogue(client, hub, as_role):
    r = client.post("/api/v1/data/resources", json={**NEW, "provider_code": "D-GAJ"}, headers=as_role("handler"))
    assert r.status_code == 403
    r = client.post("/api/v1/data/resources", json=NEW, headers=as_role("analyst"))
    assert r.status_code == 403


def test_update_makes_a_new_version(client, hub, as_role, dept_user):
    h = dept_user("D-SCJG")
    r = client.patch(f"/api/v1/data/resources/{ENT}", json={"summary": "更新后的摘要"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    versions = client.get(f"/api/v1/data/resources/{ENT}/versions", headers=h).json()
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[1]["snapshot"]["summary"] != "更新后的摘要"
    # a change that would drop the legal basis of a conditional share is refused
    r = client.patch(f"/api/v1/data/resources/{ENT}", json={"share_type": "conditional",
                                                          "share_condition": "x"}, headers=h)
    assert r.status_code == 422
    with hub.read() as s:
        _n, recs = audit.search(s, action="data.resource.update", target_id=ENT)
    assert recs and recs[0].summary["after"]["summary"] == "更新后的摘要"


def test_chinese_search_and_filters(client, hub, as_role):
    h = as_role("analyst")
    r = client.get("/api/v1/data/resources", params={"q": "人口"}, headers=h).json()
    assert r["items"][0]["code"] == POP
    r = client.get("/api/v1/data/resources", params={"q": "统一社会信用代码"}, headers=h).json()
    assert [i["code"] for i in r["items"]] == [ENT]
    r = client.get("/api/v1/data/resources", params={"share_type": "none"}, headers=h).json()
    assert r["total"] == 1 and r["items"][0]["share_type_label"] == "不予共享"
    r = client.get("/api/v1/data/resources", params={"q": "无此资源xyz"}, headers=h).json()
    assert r["total"] == 0
    stats = client.get("/api/v1/data/catalog/stats", headers=h).json()
    assert stats["resources_total"] == 8
    assert stats["sharing_rate"] == round(7 / 8, 4)
