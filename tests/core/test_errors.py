"""Database and conversion errors caused by the input are problems (4xx), never 500s."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from citybrain.deps import ReadDB


def test_huge_ids_are_not_500(client, as_role):
    h = as_role("sysadmin")
    for url in ("/api/v1/orgs/99999999999999999999", "/api/v1/users/99999999999999999999"):
        r = client.get(url, headers=h)
        assert r.status_code in (404, 422), (url, r.status_code)
        assert r.headers["content-type"].startswith("application/problem+json")


def _nul_problem(r, *fields: str, where: str = "body") -> None:
    """A 422 problem+json naming exactly `fields` as holding a NUL character, in both languages."""
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), r.text
    p = r.json()
    assert p["code"] == "invalid" and [e["field"] for e in p["errors"]] == list(fields), p
    assert {(e["in"], e["type"], e["message_zh"]) for e in p["errors"]} == {(where, "string_nul", "不能包含空字符（U+0000）")}
    assert all("NUL" in e["message"] for e in p["errors"])
    assert f"{fields[0]} 不能包含空字符" in p["message_zh"] and f"{fields[0]}: Text must not contain NUL" in p["message_en"]


def test_nul_characters_are_refused_on_every_backend(client, as_role, db):
    """PostgreSQL cannot store a NUL (U+0000) in text; SQLite would, silently. Every backend refuses it up front
    with the same 422 naming the field, and nothing is stored."""
    from sqlalchemy import func, select

    from citybrain.identity.models import Org

    h = as_role("sysadmin")
    with db.read() as s:
        orgs = s.scalar(select(func.count()).select_from(Org))
    r = client.post("/api/v1/orgs", json={"code": "X\u0000", "name": "空\u0000字符", "type": "external"}, headers=h)
    _nul_problem(r, "code", "name")
    r = client.post("/api/v1/orgs", json={"code": "X1", "name": "n", "type": "external", "extra": {"k\u0000": 1}},
                    headers=h)
    _nul_problem(r, "extra.k\\u0000")  # a key: named with the NUL written out
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Org)) == orgs
    _nul_problem(client.post("/api/v1/auth/token", data={"username": "a\u0000b", "password": "x"}), "username")
    _nul_problem(client.post("/api/v1/auth/token", json={"username": "a", "password": "x\u0000"}), "password")
    _nul_problem(client.get("/api/v1/users", params={"q": "a\u0000b"}, headers=h), "q", where="query")
    _nul_problem(client.get("/api/v1/iot/devices/AB%00C", headers=h), "code", where="path")
    # the six characters \u0000 written as text (an escaped backslash in JSON) are no NUL: stored as sent
    r = client.post("/api/v1/orgs", json={"code": "X2", "name": "a\\u0000b", "type": "external"}, headers=h)
    assert r.status_code == 201 and r.json()["name"] == "a\\u0000b", r.text


def test_database_errors_map_to_problems(client):
    router = APIRouter()

    @router.get("/api/v1/_test/dup")
    def dup(db: ReadDB) -> dict:
        db.execute(text("CREATE TEMPORARY TABLE t_dup (x INTEGER PRIMARY KEY)"))
        db.execute(text("INSERT INTO t_dup VALUES (1)"))
        db.execute(text("INSERT INTO t_dup VALUES (1)"))
        return {}

    @router.get("/api/v1/_test/broken")
    def broken() -> dict:
        raise SQLAlchemyError("something else")

    client.app.include_router(router)
    r = client.get("/api/v1/_test/dup")
    assert r.status_code == 409 and r.json()["code"] == "integrity_conflict"
    r = client.get("/api/v1/_test/broken")
    assert r.status_code == 500 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "internal" and "something else" not in r.text


def test_validation_problems_say_what_is_wrong_in_both_languages(client):
    r = client.post("/api/v1/public/cases", json={"phone": "12345", "category_code": "01037",
                                                  "lon": 113.55, "lat": 22.78})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    p = r.json()
    by_field = {e["field"]: e for e in p["errors"]}
    assert by_field["phone"]["message_zh"] == "格式不正确" and by_field["title"]["message_zh"] == "必填"
    assert "phone 格式不正确" in p["message_zh"] and "title 必填" in p["message_zh"]
    assert "phone: String should match pattern" in p["message_en"]
    r = client.post("/api/v1/public/cases", content=b"not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["body"] and "不是有效的 JSON" in r.json()["message_zh"]
    r = client.post("/api/v1/public/cases", json={"phone": "13700000001", "title": "x" * 500, "category_code": "01037",
                                                  "lon": 113.55, "lat": 22.78})
    assert any("最多" in e["message_zh"] for e in r.json()["errors"]), r.json()
