"""Bad input gets a clear error and never a 500 (product rule 4)."""

from tests.data.conftest import ENT, LOWINCOME, POP


def _ok_problem(r, *statuses):
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        ctype = r.headers["content-type"]
        assert ctype.startswith("application/problem+json") or r.request.url.path.startswith("/api/3/")
        body = r.json()
        assert body.get("message_zh") or body.get("error")


def test_odd_records_are_refused_row_by_row(client, hub, dept_user):
    h = dept_user("D-MZJ")
    rows = [1, "a", None, {"id_number": ["x"], "name": {"a": 1}, "persons": [1], "amount": "1e999x"},
            {"id_number": None}, {}]
    r = client.post(f"/api/v1/data/resources/{LOWINCOME}/records", json=rows, headers=h)
    _ok_problem(r, 201)
    assert r.json()["rejected"] == 6 and r.json()["inserted"] == 0
    for body in ({"records": "x"}, "text", 42):
        _ok_problem(client.post(f"/api/v1/data/resources/{LOWINCOME}/records", json=body, headers=h), 422)
    _ok_problem(client.post(f"/api/v1/data/resources/{LOWINCOME}/records", content=b"\xff\xfe{", headers=h), 422)
    _ok_problem(client.post(f"/api/v1/data/resources/{LOWINCOME}/upload", headers=h,
                            files={"file": ("x.xlsx", b"not a zip", "application/octet-stream")}), 422)
    _ok_problem(client.post(f"/api/v1/data/resources/{LOWINCOME}/upload", headers=h,
                            files={"file": ("x.csv", "身份证号\n".encode("utf-16"), "text/csv")}), 201, 422)


def test_records_with_nul_characters_are_refused_with_the_field_named(client, hub, dept_user):
    """A NUL (U+0000) in a pushed record is a 422 naming the record and field on every backend; nothing is loaded."""
    h = dept_user("D-MZJ")
    url = f"/api/v1/data/resources/{LOWINCOME}/records"
    loads = client.get(f"/api/v1/data/resources/{LOWINCOME}/loads", headers=h).json()
    rows = [{"id_number": "440115199001011234", "name": "张三"}, {"id_number": "440115199001011242", "name": "李\u0000四"}]
    r = client.post(url, json={"records": rows}, headers=h)
    _ok_problem(r, 422)
    assert [(e["field"], e["type"]) for e in r.json()["errors"]] == [("records.1.name", "string_nul")]
    assert "records.1.name 不能包含空字符" in r.json()["message_zh"]
    assert client.get(f"/api/v1/data/resources/{LOWINCOME}/loads", headers=h).json() == loads


def test_odd_queries(client, hub, consumer_key, as_role):
    k = consumer_key("D-YXZX")
    _ok_problem(client.post(f"/api/v1/data/exchange/{POP}/query", json={"filters": {"birth_date": "x"}},
                            headers=k), 422)
    _ok_problem(client.post(f"/api/v1/data/exchange/{POP}/query", json={"filters": {"area_code": "4" * 5000}},
                            headers=k), 200)
    _ok_problem(client.post(f"/api/v1/data/exchange/{POP}/query", json={"page_size": 0}, headers=k), 422)
    _ok_problem(client.post(f"/api/v1/data/exchange/{POP}/query", json={"filters": [1]}, headers=k), 422)
    _ok_problem(client.get(f"/api/v1/data/exchange/{POP}/changes", params={"cursor": "-5"}, headers=k), 200)
    _ok_problem(client.get(f"/api/v1/data/exchange/{POP}/changes", params={"cursor": "9" * 30}, headers=k), 422)
    _ok_problem(client.get(f"/api/v1/data/exchange/{POP}/records/%00%27", headers=k), 404, 422)
    _ok_problem(client.get("/api/v1/data/exchange/nope/records/1", headers=k), 404)
    _ok_problem(client.get(f"/api/v1/data/exchange/{ENT}/records", params={"fields": ",,,"}, headers=k), 200)
    h = as_role("handler")
    _ok_problem(client.post("/api/v1/data/requests/999999/decision", json={"approve": True}, headers=h), 404)
    _ok_problem(client.post("/api/v1/data/requests", json={"resource_code": POP, "fields": ["name"],
                                                          "purpose": "x", "valid_to": "2026-02-30"}, headers=h), 422)
    _ok_problem(client.post("/api/v1/data/resources", headers=h, json={
        "code": "X-1-2", "name": "n", "classification": "department", "category": "c", "key_field": "a",
        "items": [{"name": "a", "pattern": "(["}], "share_type": "unconditional"}), 422)


def test_odd_public_calls(client, hub):
    _ok_problem(client.post("/api/3/action/package_search", content=b"garbage",
                            headers={"content-type": "text/plain"}), 200)
    _ok_problem(client.get("/api/3/action/package_search", params={"rows": "abc"}), 422)
    _ok_problem(client.get("/api/3/action/package_search", params={"rows": "-1"}), 422)
    _ok_problem(client.get("/api/3/action/package_show"), 422)  # CKAN: Validation Error, id missing
    _ok_problem(client.get("/api/v1/open/resources/nope/download.csv"), 404)
    _ok_problem(client.get("/api/v1/open/resources", params={"q": "%_\\"}), 200)
    _ok_problem(client.get(f"/api/v1/open/resources/{ENT}/preview", params={"limit": 0}), 422)
