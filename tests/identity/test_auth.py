"""Logins, lockout, idle timeout, logout, disabled accounts and the password policy."""

from __future__ import annotations

import datetime as dt

import pytest

from citybrain import clock
from citybrain.audit import service as audit
from citybrain.errors import Invalid
from citybrain.identity import service
from tests.conftest import DEMO_PASSWORD, login

TOKEN = "/api/v1/auth/token"
T0 = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC)


def _try(client, username, password):
    return client.post(TOKEN, data={"username": username, "password": password})


def _audit(db, **filters):
    with db.read() as s:
        return audit.search(s, limit=100, **filters)[1]


def test_login_success_gives_a_working_token_and_cookie(client, db):
    r = _try(client, "handler", DEMO_PASSWORD)
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["access_token"].startswith("cbt_")
    assert body["idle_timeout"] == 30 * 60 and body["expires_in"] == 12 * 3600
    assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"}).json()
    assert me["username"] == "handler" and me["city_wide"] is False and me["org_name"]
    client.cookies.clear()
    # the token is stored only as a hash
    with db.read() as s:
        from sqlalchemy import select

        from citybrain.identity.models import AuthSession

        hashes = list(s.scalars(select(AuthSession.token_hash)))
    assert body["access_token"] not in hashes and len(hashes) == 1
    [rec] = _audit(db, action="auth.login")
    assert (rec.actor, rec.outcome, rec.target_id) == ("user:handler", "success", str(me["id"]))


def test_cookie_alone_authenticates_the_web_pages(client):
    r = _try(client, "operator", DEMO_PASSWORD)
    assert r.status_code == 200
    assert client.get("/api/v1/me").json()["username"] == "operator"  # cb_session cookie
    client.cookies.clear()
    assert client.get("/api/v1/me").status_code == 401


def test_login_failure_is_401_problem_and_audited(client, db):
    for n, (username, password) in enumerate([("handler", "wrong-password"), ("nobody", DEMO_PASSWORD)], 1):
        r = _try(client, username, password)
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "bad_credentials"  # the same answer for unknown users and wrong passwords
        recs = _audit(db, action="auth.login")
        assert len(recs) == n
        assert recs[0].outcome == "failure" and recs[0].actor == "anonymous:anonymous"
        assert DEMO_PASSWORD not in str(recs[0].summary) and "wrong-password" not in str(recs[0].summary)


def test_five_failures_lock_for_fifteen_minutes_then_it_lifts(client, db):
    clock.freeze(T0)
    for i in range(4):
        assert _try(client, "handler", f"bad{i}").status_code == 401
    assert _try(client, "handler", "bad4").status_code == 401  # the fifth failure locks
    r = _try(client, "handler", DEMO_PASSWORD)  # even the right password is refused now
    assert r.status_code == 423 and r.json()["code"] == "locked"
    assert r.json()["locked_until"].startswith("2026-03-02T01:15")
    clock.advance(dt.timedelta(minutes=14, seconds=59))
    assert _try(client, "handler", DEMO_PASSWORD).status_code == 423
    clock.advance(dt.timedelta(seconds=2))
    assert _try(client, "handler", DEMO_PASSWORD).status_code == 200
    outcomes = [r.outcome for r in reversed(_audit(db, action="auth.login"))]
    assert outcomes == ["failure"] * 5 + ["denied", "denied", "success"]
    assert "locked for 15 minutes" in _audit(db, action="auth.login", outcome="failure")[0].summary["note"]


def test_success_resets_the_failure_count(client):
    for i in range(4):
        _try(client, "handler", f"bad{i}")
    assert _try(client, "handler", DEMO_PASSWORD).status_code == 200
    for i in range(4):
        assert _try(client, "handler", f"bad{i}").status_code == 401
    assert _try(client, "handler", DEMO_PASSWORD).status_code == 200


def test_unlock_by_sysadmin(client, as_role, db):
    for i in range(5):
        _try(client, "gridworker", f"bad{i}")
    assert _try(client, "gridworker", DEMO_PASSWORD).status_code == 423
    gid = client.get("/api/v1/users", params={"q": "gridworker"}, headers=as_role("sysadmin")).json()["items"][0]["id"]
    assert client.post(f"/api/v1/users/{gid}/unlock", headers=as_role("sysadmin")).status_code == 200
    assert _try(client, "gridworker", DEMO_PASSWORD).status_code == 200


def test_idle_timeout_after_thirty_minutes(client, db):
    clock.freeze(T0)
    h = login(client, "operator")
    clock.advance(dt.timedelta(minutes=29))
    assert client.get("/api/v1/me", headers=h).status_code == 200  # activity renews the session
    clock.advance(dt.timedelta(minutes=29))
    assert client.get("/api/v1/me", headers=h).status_code == 200
    clock.advance(dt.timedelta(minutes=30, seconds=1))
    r = client.get("/api/v1/me", headers=h)
    assert r.status_code == 401 and r.json()["code"] == "session_idle"
    clock.advance(dt.timedelta(seconds=1))
    assert client.get("/api/v1/me", headers=h).json()["code"] == "invalid_token"  # ended for good
    assert len(_audit(db, action="auth.idle_timeout")) == 1


def test_absolute_expiry_after_twelve_hours(client):
    clock.freeze(T0)
    h = login(client, "operator")
    for _ in range(25):  # active every 29 minutes for 12 h 5 min
        clock.advance(dt.timedelta(minutes=29))
        r = client.get("/api/v1/me", headers=h)
    assert r.status_code == 401 and r.json()["code"] == "session_expired"


def test_logout_revokes_the_token(client, db):
    h = login(client, "leader")
    assert client.post("/api/v1/auth/logout", headers=h).status_code == 204
    r = client.get("/api/v1/me", headers=h)
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    assert client.post("/api/v1/auth/logout", headers=h).status_code == 401
    [rec] = _audit(db, action="auth.logout")
    assert rec.actor == "user:leader" and rec.target_type == "session"


def test_other_sessions_survive_one_logout(client):
    a, b = login(client, "leader"), login(client, "leader")
    client.post("/api/v1/auth/logout", headers=a)
    assert client.get("/api/v1/me", headers=b).status_code == 200


def test_disabled_user_cannot_log_in_and_loses_open_sessions(client, as_role, db):
    h = login(client, "handler")
    uid = client.get("/api/v1/me", headers=h).json()["id"]
    r = client.patch(f"/api/v1/users/{uid}", json={"active": False}, headers=as_role("sysadmin"))
    assert r.status_code == 200 and r.json()["active"] is False
    assert client.get("/api/v1/me", headers=h).status_code == 401
    r = _try(client, "handler", DEMO_PASSWORD)
    assert r.status_code == 403 and r.json()["code"] == "account_disabled"
    assert _try(client, "handler", "wrong").status_code == 401  # no hint without the right password
    [rec] = _audit(db, action="user.disable")
    assert rec.actor == "user:sysadmin" and rec.summary["before"]["active"] is True
    assert rec.summary["after"]["active"] is False
    client.patch(f"/api/v1/users/{uid}", json={"active": True}, headers=as_role("sysadmin"))
    assert _try(client, "handler", DEMO_PASSWORD).status_code == 200


def test_role_change_takes_effect_at_once(client, as_role):
    h = login(client, "analyst")
    uid = client.get("/api/v1/me", headers=h).json()["id"]
    r = client.put(f"/api/v1/users/{uid}/roles", json={"roles": ["leader"]}, headers=as_role("secadmin"))
    assert r.status_code == 200 and r.json()["roles"] == ["leader"]
    assert client.get("/api/v1/me", headers=h).status_code == 401  # sessions end with a role change
    assert "ioc.view" in client.get("/api/v1/me", headers=login(client, "analyst")).json()["permissions"]


@pytest.mark.parametrize("password,ok", [
    ("Abcdef1!", True), ("abcdef12!", True), ("ABCDEF12", False), ("Ab1!", False), ("abcdefgh", False),
    ("12345678", False), ("密码很强Ab1!", True), ("Handler#2026", False),
])
def test_password_policy(password, ok):
    if ok:
        service.check_password_policy(password=password, username="handler")
    else:
        with pytest.raises(Invalid) as e:
            service.check_password_policy(password=password, username="handler")
        assert e.value.code == "weak_password" and e.value.errors[0]["field"] == "password"


def test_password_policy_over_http_and_own_change(client, as_role):
    r = client.post("/api/v1/users", json={"username": "weak1", "real_name": "弱", "password": "password"},
                    headers=as_role("sysadmin"))
    assert r.status_code == 422 and r.json()["code"] == "weak_password"
    assert "至少" in r.json()["message_zh"] and "at least" in r.json()["message_en"]
    h = login(client, "gridworker")
    r = client.post("/api/v1/me/password", json={"password": "New#Pass2026", "old_password": "wrong"}, headers=h)
    assert r.status_code == 403 and r.json()["code"] == "wrong_password"
    r = client.post("/api/v1/me/password", json={"password": "New#Pass2026", "old_password": DEMO_PASSWORD},
                    headers=h)
    assert r.status_code == 204
    assert client.get("/api/v1/me", headers=h).status_code == 401  # the change ends sessions
    assert _try(client, "gridworker", "New#Pass2026").status_code == 200


def test_password_policy_is_configurable(db):
    from citybrain.config import configure, get_settings

    configure(get_settings().model_copy(update={"password_min_length": 12, "password_min_classes": 4}))
    with pytest.raises(Invalid):
        service.check_password_policy(password="Abcdefg1!", username=None)
    service.check_password_policy(password="Abcdefgh12!x", username=None)


def test_argon2id_hashes():
    h = service.hash_password(password="Abcdef1!")
    assert h.startswith("$argon2id$")
    assert service.verify_password(password_hash=h, password="Abcdef1!")
    assert not service.verify_password(password_hash=h, password="Abcdef1?")
    assert not service.verify_password(password_hash="not-a-hash", password="x")


def test_login_takes_json_as_well_as_the_form(client):
    r = client.post(TOKEN, json={"username": "handler", "password": DEMO_PASSWORD})
    assert r.status_code == 200 and r.json()["access_token"].startswith("cbt_")
    r = client.post(TOKEN, json={"username": "handler"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in r.json()["errors"]] == ["password"]
    r = client.post(TOKEN, content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == "bad_json"
    assert client.post(TOKEN, json={"username": "handler", "password": "wrong"}).status_code == 401
    doc = client.get("/openapi.json").json()["paths"][TOKEN]["post"]["requestBody"]["content"]
    assert set(doc) == {"application/x-www-form-urlencoded", "application/json"}


def test_a_credential_of_neither_kind_says_what_is_expected(client):
    r = client.get("/api/v1/me", headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_credential"
    assert "cbk_" in r.json()["message_zh"]
