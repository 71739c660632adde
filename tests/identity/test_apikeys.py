"""Machine keys: shown once, hashed at rest, two header forms, scopes, revocation, expiry."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from citybrain import clock
from citybrain.identity.models import ApiKey

T0 = dt.datetime(2026, 4, 1, 8, 0, tzinfo=dt.UTC)


def _create(client, as_role, **body):
    body = {"name": "河涌水位网关", "kind": "gateway", "scopes": ["iot.ingest", "iot.read"], **body}
    r = client.post("/api/v1/apikeys", json=body, headers=as_role("secadmin"))
    assert r.status_code == 201, r.text
    return r.json()


def test_key_is_shown_once_and_stored_hashed(client, as_role, db):
    created = _create(client, as_role, subject="GW-001")
    key = created["key"]
    assert key.startswith(f"cbk_{created['prefix']}_") and len(key) > 40
    listed = client.get("/api/v1/apikeys", headers=as_role("secadmin")).json()
    assert [k["name"] for k in listed] == ["河涌水位网关"]
    assert "key" not in listed[0] and key not in str(listed)
    with db.read() as s:
        row = s.scalar(select(ApiKey))
    secret = key.split("_", 2)[2]
    assert secret not in (row.secret_hash, row.prefix) and len(row.secret_hash) == 64
    audit = client.get("/api/v1/audit", params={"action": "apikey.create"}, headers=as_role("auditor")).json()
    assert audit["total"] == 1 and secret not in str(audit) and audit["items"][0]["actor"] == "user:secadmin"


def test_both_header_forms_work_and_scopes_are_enforced(client, as_role):
    key = _create(client, as_role)["key"]
    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        me = client.get("/api/v1/me", headers=headers).json()
        assert me["kind"] == "apikey" and sorted(me["permissions"]) == ["iot.ingest", "iot.read"]
        r = client.get("/api/v1/apikeys", headers=headers)  # outside its scopes
        assert r.status_code == 403 and r.json()["code"] == "permission_denied"
        assert client.get("/api/v1/users", headers=headers).status_code == 403


def test_a_key_with_a_scope_can_use_it(client, as_role, db):
    from citybrain.context import SYSTEM, set_principal
    from citybrain.identity import service

    set_principal(SYSTEM)
    with db.write() as s:
        key, _ = service.create_api_key(s, name="directory sync", scopes=["user.directory"], org_id=None)
    r = client.get("/api/v1/users", headers={"X-API-Key": key})
    assert r.status_code == 200 and r.json()["total"] == 0  # no organisation: an empty scope sees nobody
    with db.write() as s:
        cgj = service.org_by_code(s, code="D-CGJ").id
        key2, _ = service.create_api_key(s, name="cgj sync", scopes=["user.directory"], org_id=cgj)
    names = [u["username"] for u in client.get("/api/v1/users", headers={"X-API-Key": key2}).json()["items"]]
    assert names == ["handler"]


def test_revoked_key_is_401_at_once(client, as_role, db):
    created = _create(client, as_role)
    h = {"X-API-Key": created["key"]}
    assert client.get("/api/v1/me", headers=h).status_code == 200
    assert client.delete(f"/api/v1/apikeys/{created['id']}", headers=as_role("secadmin")).status_code == 204
    r = client.get("/api/v1/me", headers=h)
    assert r.status_code == 401 and r.json()["code"] == "revoked_api_key"
    listed = client.get("/api/v1/apikeys", headers=as_role("secadmin")).json()
    assert listed[0]["revoked_at"] is not None
    assert client.delete("/api/v1/apikeys/999999", headers=as_role("secadmin")).status_code == 404


def test_key_expires(client, as_role):
    clock.freeze(T0)
    created = _create(client, as_role, expires_at=(T0 + dt.timedelta(days=30)).isoformat())
    h = {"Authorization": f"Bearer {created['key']}"}
    clock.advance(dt.timedelta(days=29, hours=23))
    assert client.get("/api/v1/me", headers=h).status_code == 200
    clock.advance(dt.timedelta(hours=1))
    assert client.get("/api/v1/me", headers=h).status_code == 401


def test_expiry_needs_a_timezone(client, as_role):
    r = client.post("/api/v1/apikeys", json={"name": "k", "scopes": ["iot.read"], "expires_at": "2030-01-01T00:00:00"},
                    headers=as_role("secadmin"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "expires_at"


def test_forged_and_malformed_keys_are_401(client, as_role):
    key = _create(client, as_role)["key"]
    prefix = key.split("_")[1]
    for bad in (f"cbk_{prefix}_" + "A" * 43, "cbk_nope", "cbk_" + "x" * 60, key[:-1]):
        r = client.get("/api/v1/me", headers={"X-API-Key": bad})
        assert r.status_code == 401, bad
        assert r.json()["code"] in ("invalid_api_key",)


def test_last_used_is_recorded(client, as_role, db):
    created = _create(client, as_role)
    client.get("/api/v1/me", headers={"X-API-Key": created["key"]})
    with db.read() as s:
        assert s.get(ApiKey, created["id"]).last_used_at is not None
