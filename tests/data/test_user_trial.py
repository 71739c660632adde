"""What a consumer department's data officer and a citizen ran into on a first try (session 6 user trial)."""

from __future__ import annotations

from tests.data.conftest import ENT, HEALTH, POP, SECRET


def _req(client, h, code=POP, **kw):
    body = {"resource_code": code, "fields": ["id_number", "name"], "purpose": "核实", **kw}
    return client.post("/api/v1/data/requests", json=body, headers=h)


def test_request_errors_say_what_is_wrong_in_english_too(client, hub, dept_user):
    r = _req(client, dept_user("D-JTJ"), fields=["id_number", "salary"])
    assert r.status_code == 422
    body = r.json()
    assert "salary" in body["message_zh"] and "the resource has no field salary" in body["message_en"]
    assert "legal basis" in body["message_en"]  # a conditional resource needs one
    assert {e["field"] for e in body["errors"]} == {"fields", "legal_basis"}
    assert all(e["message"] and e["message_en"] for e in body["errors"])


def test_not_shared_names_its_legal_basis_in_english_too(client, hub, dept_user):
    r = _req(client, dept_user("D-JTJ"), code=SECRET, fields=["id_number"])
    assert r.status_code == 403 and r.json()["code"] == "not_shareable"
    assert "legal basis" in r.json()["message_en"]


def test_open_key_decision_names_the_dataset_and_collecting_twice_is_explained(client, hub, dept_user):
    r = client.post(f"/api/v1/open/resources/{HEALTH}/keys",
                    json={"applicant": "张三科技", "contact": "13800000000", "purpose": "就医地图"})
    app_id, ticket = r.json()["application_id"], r.json()["ticket"]
    r = client.post(f"/api/v1/data/open-applications/{app_id}/decision", json={"approve": True},
                    headers=dept_user("D-WJJ", "handler"))
    assert r.status_code == 200 and r.json()["resource"] == HEALTH
    url = f"/api/v1/open/applications/{app_id}/key"
    assert client.post(url, json={"ticket": ticket}).status_code == 201
    r = client.post(url, json={"ticket": ticket})
    assert r.status_code == 409 and r.json()["code"] == "application_issued"
    assert "already collected" in r.json()["message_en"]


def test_ckan_package_show_without_id_is_a_validation_error(client, hub):
    r = client.get("/api/3/action/package_show")
    assert r.status_code == 422
    body = r.json()
    assert body["success"] is False and body["error"]["__type"] == "Validation Error"
    assert "id" in body["error"]["message"] and "id" in body["message_zh"]


def test_ckan_post_with_broken_json_is_a_bad_request(client, hub):
    r = client.post("/api/3/action/package_show", content=b"{bad",
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["error"]["__type"] == "Bad Request" and "JSON" in r.json()["message_zh"]
    # a form post still works
    r = client.post("/api/3/action/package_show", data={"id": ENT.lower()})
    assert r.status_code == 200 and r.json()["result"]["id"] == ENT


def test_every_catalogue_item_shows_its_sensitivity_grade(client, hub, dept_user):
    """An item catalogued without a grade is treated as internal: the catalogue says so instead of leaving it out."""
    h = dept_user("D-JTJ")
    codes = [r["code"] for r in client.get("/api/v1/data/resources", params={"limit": 100}, headers=h).json()["items"]]
    assert len(codes) >= 5
    for code in codes:
        items = client.get(f"/api/v1/data/resources/{code}", headers=h).json()["items"]
        assert items and all(it["grade"] in ("public", "internal", "sensitive") for it in items), code
