"""三权分立 (separation of duties) and data scope."""

from __future__ import annotations

import pytest
from sqlalchemy import Integer, column

from citybrain.context import Principal
from citybrain.identity import service
from citybrain.identity.permissions import ADMIN_PERMISSIONS, ADMIN_ROLES, ROLES
from tests.conftest import login


def _uid(client, headers, username):
    return client.get("/api/v1/users", params={"q": username}, headers=headers).json()["items"][0]["id"]


def test_the_three_administrators_hold_disjoint_permissions():
    sets = [ROLES[r].permissions - {"user.read"} for r in ADMIN_ROLES]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    for code, role in ROLES.items():
        if code not in ADMIN_ROLES:
            assert not role.permissions & ADMIN_PERMISSIONS, code


def test_sysadmin_cannot_assign_roles_or_read_audit(client, as_role):
    h = as_role("sysadmin")
    uid = _uid(client, h, "citizen")
    r = client.put(f"/api/v1/users/{uid}/roles", json={"roles": ["operator"]}, headers=h)
    assert r.status_code == 403 and r.json()["permission"] == "role.assign"
    assert client.get("/api/v1/audit", headers=h).status_code == 403
    assert client.get("/api/v1/audit/verify", headers=h).status_code == 403
    assert client.post("/api/v1/roles", json={"code": "x1", "name": "x", "name_en": "x"}, headers=h).status_code == 403


def test_secadmin_cannot_create_users_or_read_audit(client, as_role):
    h = as_role("secadmin")
    r = client.post("/api/v1/users", json={"username": "sneaky", "real_name": "x", "password": "Abcdef1!x"}, headers=h)
    assert r.status_code == 403 and r.json()["permission"] == "user.manage"
    assert client.get("/api/v1/audit", headers=h).status_code == 403
    assert client.post("/api/v1/orgs", json={"code": "Z", "name": "z", "type": "external"}, headers=h).status_code == 403


def test_auditor_can_only_read_the_audit_trail(client, as_role):
    h = as_role("auditor")
    assert client.get("/api/v1/audit", headers=h).status_code == 200
    assert client.get("/api/v1/audit/verify", headers=h).json()["ok"] is True
    me = client.get("/api/v1/me", headers=h).json()
    assert me["permissions"] == ["audit.read"]
    assert client.get("/api/v1/users", headers=h).status_code == 403
    assert client.get("/api/v1/apikeys", headers=h).status_code == 403


@pytest.mark.parametrize("roles", [["sysadmin", "auditor"], ["secadmin", "sysadmin"], ["auditor", "operator"],
                                   ["sysadmin", "handler"]])
def test_administrator_roles_cannot_be_combined(client, as_role, roles):
    h = as_role("secadmin")
    uid = _uid(client, h, "analyst")
    r = client.put(f"/api/v1/users/{uid}/roles", json={"roles": roles}, headers=h)
    assert r.status_code == 403 and r.json()["code"] == "separation_of_duties"
    assert client.get(f"/api/v1/users/{uid}", headers=h).json()["roles"] == ["analyst"]  # unchanged


def test_business_roles_combine(client, as_role):
    h = as_role("secadmin")
    uid = _uid(client, h, "analyst")
    r = client.put(f"/api/v1/users/{uid}/roles", json={"roles": ["analyst", "gridworker"]}, headers=h)
    assert r.status_code == 200 and r.json()["roles"] == ["analyst", "gridworker"]


def test_nobody_changes_their_own_roles(client, as_role):
    h = as_role("secadmin")
    me = client.get("/api/v1/me", headers=h).json()["id"]
    r = client.put(f"/api/v1/users/{me}/roles", json={"roles": ["sysadmin"]}, headers=h)
    assert r.status_code == 403 and r.json()["code"] == "separation_of_duties"


@pytest.mark.parametrize("perm", sorted(ADMIN_PERMISSIONS))
def test_admin_permissions_cannot_go_to_other_roles(client, as_role, perm):
    h = as_role("secadmin")
    r = client.put("/api/v1/roles/operator/permissions", json={"permissions": ["case.read", perm]}, headers=h)
    assert r.status_code == 403 and r.json()["code"] == "separation_of_duties"
    r = client.post("/api/v1/roles", json={"code": "sneaky", "name": "x", "name_en": "x", "permissions": [perm]},
                    headers=h)
    assert r.status_code == 403
    r = client.post("/api/v1/apikeys", json={"name": "k", "scopes": [perm]}, headers=h)
    assert r.status_code == 422


def test_the_administrator_roles_themselves_are_fixed(client, as_role):
    h = as_role("secadmin")
    for code in ADMIN_ROLES:
        r = client.put(f"/api/v1/roles/{code}/permissions", json={"permissions": []}, headers=h)
        assert r.status_code == 403 and r.json()["code"] == "separation_of_duties"


def test_sysadmin_cannot_take_over_the_other_administrators_by_password_reset(client, as_role):
    h = as_role("sysadmin")
    for name in ("secadmin", "auditor"):
        uid = _uid(client, h, name)
        r = client.post(f"/api/v1/users/{uid}/password", json={"password": "Taken#Over2026"}, headers=h)
        assert r.status_code == 403 and r.json()["code"] == "separation_of_duties"
    uid = _uid(client, h, "handler")
    assert client.post(f"/api/v1/users/{uid}/password", json={"password": "Reset#Pass2026"}, headers=h).status_code == 204


def test_unknown_permissions_and_roles_are_rejected(client, as_role):
    h = as_role("secadmin")
    r = client.put("/api/v1/roles/operator/permissions", json={"permissions": ["case.fly"]}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "permissions"
    uid = _uid(client, h, "analyst")
    assert client.put(f"/api/v1/users/{uid}/roles", json={"roles": ["pilot"]}, headers=h).status_code == 404


# --- data scope ----------------------------------------------------------------------------------------------


def _custom_scoped_reader(client, as_role):
    """A department account (water authority) that may read the staff directory."""
    sys = as_role("sysadmin")
    swj = next(o["id"] for o in client.get("/api/v1/orgs", headers=sys).json() if o["code"] == "D-SWJ")
    r = client.post("/api/v1/users", json={"username": "water1", "real_name": "钱水务", "password": "Water#2026x",
                                           "org_id": swj, "phone": "13712345678"}, headers=sys)
    assert r.status_code == 201
    uid = r.json()["id"]
    assert client.put(f"/api/v1/users/{uid}/roles", json={"roles": ["handler"]},
                      headers=as_role("secadmin")).status_code == 200
    return login(client, "water1", "Water#2026x"), swj


def test_a_department_sees_only_its_own_staff(client, as_role):
    water, swj = _custom_scoped_reader(client, as_role)
    page = client.get("/api/v1/users", headers=water).json()
    assert [u["username"] for u in page["items"]] == ["water1"] and page["total"] == 1
    assert page["items"][0]["phone"] == "137****5678"
    handler = as_role("handler")  # 城管局
    names = {u["username"] for u in client.get("/api/v1/users", headers=handler).json()["items"]}
    assert "handler" in names and "water1" not in names and "operator" not in names
    # another department's list and records are refused and the refusal is recorded
    r = client.get("/api/v1/users", params={"org_id": swj}, headers=handler)
    assert r.status_code == 403 and r.json()["code"] == "out_of_scope"
    water_id = client.get("/api/v1/me", headers=water).json()["id"]
    r = client.get(f"/api/v1/users/{water_id}", headers=handler)
    assert r.status_code == 403 and r.json()["code"] == "out_of_scope"
    assert client.get(f"/api/v1/users/{water_id}", headers=water).status_code == 200
    # city-wide roles see everyone
    assert client.get("/api/v1/users", params={"org_id": swj}, headers=as_role("operator")).json()["total"] == 1
    audit_page = client.get("/api/v1/audit", params={"actor": "handler", "outcome": "denied"},
                            headers=as_role("auditor")).json()
    assert audit_page["total"] == 2 and "outside scope" in audit_page["items"][0]["summary"]["note"]


def test_a_town_sees_its_communities(client, as_role, db):
    grid = as_role("gridworker")  # a community account
    items = client.get("/api/v1/users", headers=grid).json()["items"]
    assert [u["username"] for u in items] == ["gridworker"]


def test_citizens_and_analysts_have_no_directory(client, as_role):
    for role in ("citizen", "analyst"):
        assert client.get("/api/v1/users", headers=as_role(role)).status_code == 403


def test_scope_filter_helper():
    col = column("org_id", Integer)
    assert service.scope_filter(Principal(kind="user", id=1, name="a", org_scope=None), col) is None
    cond = service.scope_filter(Principal(kind="user", id=1, name="a", org_scope=frozenset({3, 1})), col)
    assert str(cond.compile(compile_kwargs={"literal_binds": True})) == "org_id IN (1, 3)"
    empty = service.scope_filter(Principal(kind="user", id=1, name="a", org_scope=frozenset()), col)
    assert str(empty.compile(compile_kwargs={"literal_binds": True})) in ("false", "0 = 1")


def test_scope_filter_in_a_query(db):
    from sqlalchemy import func, select

    from citybrain.identity.models import Org, User

    with db.read() as s:
        cgj = s.scalar(select(Org.id).where(Org.code == "D-CGJ"))
        p = Principal(kind="user", id=1, name="a", org_scope=service.org_subtree_ids(s, org_id=cgj))
        n = s.scalar(select(func.count()).select_from(User).where(service.scope_filter(p, User.org_id)))
        assert n == 1  # the demo handler
        nobody = Principal(kind="user", id=1, name="a", org_scope=frozenset())
        assert s.scalar(select(func.count()).select_from(User).where(service.scope_filter(nobody, User.org_id))) == 0
