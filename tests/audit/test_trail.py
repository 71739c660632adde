"""The audit trail: one record per state change, masking, tamper detection (SHA-256 and SM3), search."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from citybrain import clock, context
from citybrain.audit import service as audit
from citybrain.cli import app as cli_app
from citybrain.config import configure, get_settings
from tests.conftest import TEST_SECRET, login

runner = CliRunner()


def _records(db, **filters):
    with db.read() as s:
        return audit.search(s, limit=1000, **filters)


def _uid(client, headers, username):
    return client.get("/api/v1/users", params={"q": username}, headers=headers).json()["items"][0]["id"]


def _plain(h):
    return {k: v for k, v in h.items() if k != "X-Request-ID"}


# Each state change of the identity API, the role that does it, and the action it must record.
CHANGES = [
    ("sysadmin", "org.create", lambda c, h: c.post("/api/v1/orgs", headers=h, json={
        "code": "D-NEW", "name": "新区数据中心", "type": "department"})),
    ("sysadmin", "org.update", lambda c, h: c.patch("/api/v1/orgs/2", headers=h, json={"name_en": "Ops centre"})),
    ("sysadmin", "user.create", lambda c, h: c.post("/api/v1/users", headers=h, json={
        "username": "newbie", "real_name": "孙新", "password": "Fresh#Start2026", "phone": "13698765432"})),
    ("sysadmin", "user.disable", lambda c, h: c.patch(f"/api/v1/users/{_uid(c, h, 'analyst')}", headers=h,
                                                      json={"active": False})),
    ("sysadmin", "user.password.set", lambda c, h: c.post(f"/api/v1/users/{_uid(c, h, 'analyst')}/password",
                                                          headers=h, json={"password": "Reset#2026x"})),
    ("sysadmin", "user.unlock", lambda c, h: c.post(f"/api/v1/users/{_uid(c, h, 'analyst')}/unlock", headers=h)),
    ("secadmin", "user.roles.set", lambda c, h: c.put(f"/api/v1/users/{_uid(c, h, 'analyst')}/roles", headers=h,
                                                      json={"roles": ["analyst", "gridworker"]})),
    ("secadmin", "role.create", lambda c, h: c.post("/api/v1/roles", headers=h, json={
        "code": "inspector", "name": "巡查员", "name_en": "Inspector", "permissions": ["case.read"]})),
    ("secadmin", "role.permissions.set", lambda c, h: c.put("/api/v1/roles/citizen/permissions", headers=h,
                                                            json={"permissions": ["case.report", "case.read"]})),
    ("secadmin", "apikey.create", lambda c, h: c.post("/api/v1/apikeys", headers=h, json={
        "name": "k", "scopes": ["iot.ingest"]})),
    ("secadmin", "apikey.revoke", lambda c, h: c.delete(
        f"/api/v1/apikeys/{c.post('/api/v1/apikeys', headers=_plain(h), json={'name': 'k2', 'scopes': ['iot.read']}).json()['id']}",
        headers=h)),
    ("leader", "auth.logout", lambda c, h: c.post("/api/v1/auth/logout", headers=h)),
    ("gridworker", "user.password.set", lambda c, h: c.post("/api/v1/me/password", headers=h, json={
        "password": "Grid#Worker2026", "old_password": "CityBrain@2026"})),
]


@pytest.mark.parametrize("role,action,do", CHANGES, ids=[f"{a}-{r}" for r, a, _ in CHANGES])
def test_every_state_change_writes_exactly_one_record(client, db, role, action, do):
    h = login(client, role)
    me = client.get("/api/v1/me", headers=h).json()
    rid = f"req-{action}"
    r = do(client, {**h, "X-Request-ID": rid})
    assert r.status_code < 300, r.text
    total, recs = _records(db, request_id=rid)
    assert total == 1, [x.action for x in recs]
    rec = recs[0]
    assert rec.action == action and rec.outcome == "success"
    assert rec.actor == f"user:{role}" and rec.actor_id == me["id"] and rec.org_id == me["org_id"]
    assert rec.ip == "testclient" and rec.request_id == rid and rec.target_type and rec.target_id
    assert rec.at.tzinfo is not None and abs((rec.at - clock.now()).total_seconds()) < 60
    assert "CityBrain@2026" not in str(rec.summary) and "Grid#Worker2026" not in str(rec.summary)
    assert r.headers["x-request-id"] == rid


def test_failed_change_writes_no_success_record(client, db, as_role):
    h = {**as_role("sysadmin"), "X-Request-ID": "dup"}
    r = client.post("/api/v1/orgs", json={"code": "D-CGJ", "name": "重复", "type": "department"}, headers=h)
    assert r.status_code == 409
    assert _records(db, request_id="dup")[0] == 0


def test_phones_and_id_numbers_are_masked_and_secrets_removed(client, db, as_role):
    client.post("/api/v1/users", headers=as_role("sysadmin"), json={
        "username": "masked", "real_name": "钱多多", "password": "Hidden#2026x", "phone": "13698765432"}).raise_for_status()
    rec = _records(db, action="user.create")[1][0]
    assert rec.summary["after"]["phone"] == "136****5432" and "13698765432" not in str(rec.summary)
    context.set_principal(context.SYSTEM)
    with db.write() as s:
        audit.commit(s, action="test.mask", target_type="person", target_id=1,
                     before={"id_number": "440115199001011234", "note": "联系 13812345678"},
                     after={"password": "hunter2", "token": "cbt_abc", "nested": [{"secret": "s"}]})
    [rec] = _records(db, action="test.mask")[1]
    assert rec.summary["before"] == {"id_number": "440115********1234", "note": "联系 138****5678"}
    assert rec.summary["after"] == {"password": "[removed]", "token": "[removed]", "nested": [{"secret": "[removed]"}]}


# --- tamper detection -----------------------------------------------------------------------------------------


def _fill(db, n=6):
    context.set_principal(context.SYSTEM)
    with db.write() as s:
        for i in range(n):
            audit.commit(s, action="test.fill", target_type="thing", target_id=i, after={"i": i})
    with db.read() as s:
        return s.execute(text("SELECT max(seq) FROM audit_record")).scalar()


def _verify(db):
    result = runner.invoke(cli_app, ["audit", "verify", "--data-dir", str(db.settings.data_dir)])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def _sql(db, *statements, **params):
    with db.engine.begin() as conn:
        for st in statements:
            conn.execute(text(st), params)


def test_intact_chain_verifies(db):
    last = _fill(db)
    code, out = _verify(db)
    assert code == 0, out
    assert f"{last} records" in out


def test_edited_row_is_caught(db):
    _fill(db)
    _sql(db, "UPDATE audit_record SET actor = 'user:nobody' WHERE seq = 3")
    code, out = _verify(db)
    assert code == 1 and "seq=3" in out and "edited" in out


def test_edited_summary_is_caught(db):
    _fill(db)
    _sql(db, "UPDATE audit_record SET outcome = 'denied' WHERE seq = 5")
    code, out = _verify(db)
    assert code == 1 and "seq=5" in out


def test_deleted_row_is_caught(db):
    _fill(db)
    _sql(db, "DELETE FROM audit_record WHERE seq = 4")
    code, out = _verify(db)
    assert code == 1 and "seq=4" in out and "deleted" in out


def test_deleted_tail_is_caught(db):
    last = _fill(db)
    _sql(db, "DELETE FROM audit_record WHERE seq >= :s", s=last - 1)
    code, out = _verify(db)
    assert code == 1 and f"seq={last - 1}" in out


def test_inserted_row_is_caught(db):
    last = _fill(db)
    cols = "at, actor, actor_id, org_id, action, target_type, target_id, outcome, ip, request_id, summary, prev_hash, hash"
    # make room after seq 2 and slip a forged record in, linked to its neighbour
    _sql(db, "UPDATE audit_record SET seq = -seq WHERE seq > 2", "UPDATE audit_record SET seq = 1 - seq WHERE seq < 0")
    _sql(db, f"INSERT INTO audit_record (seq, {cols}) SELECT 3, {cols} FROM audit_record WHERE seq = 4")
    _sql(db, "UPDATE audit_record SET actor = 'user:forger', prev_hash = (SELECT hash FROM audit_record WHERE seq = 2) "
             "WHERE seq = 3")
    code, out = _verify(db)
    assert code == 1 and "seq=3" in out
    assert last


def test_appended_forgery_is_caught(db):
    last = _fill(db)
    cols = "at, actor, actor_id, org_id, action, target_type, target_id, outcome, ip, request_id, summary"
    _sql(db, f"INSERT INTO audit_record (seq, prev_hash, hash, {cols}) SELECT seq + 1, hash, hash, {cols} "
             "FROM audit_record WHERE seq = :s", s=last)
    code, out = _verify(db)
    assert code == 1 and f"seq={last + 1}" in out


def test_head_anchor_cannot_be_rolled_back(db):
    last = _fill(db)
    _sql(db, "DELETE FROM audit_record WHERE seq = :s", s=last)
    _sql(db, "UPDATE audit_head SET seq = :p, hash = (SELECT hash FROM audit_record WHERE seq = :p)", p=last - 1)
    code, out = _verify(db)
    assert code == 1 and "anchor" in out


def test_verify_over_http_for_the_auditor(client, db, as_role):
    _fill(db)
    assert client.get("/api/v1/audit/verify", headers=as_role("auditor")).json()["ok"] is True
    _sql(db, "DELETE FROM audit_record WHERE seq = 2")
    body = client.get("/api/v1/audit/verify", headers=as_role("auditor")).json()
    assert body["ok"] is False and body["first_bad_seq"] == 2


def test_sm3_chain(db):
    configure(get_settings().model_copy(update={"audit_hash": "sm3"}))
    _fill(db)
    code, out = _verify(db)
    assert code == 0, out
    with db.read() as s:
        last = s.execute(text("SELECT seq, hash FROM audit_record ORDER BY seq DESC LIMIT 1")).one()
    # the newest records are SM3 HMACs (not SHA-256 ones)
    configure(get_settings().model_copy(update={"audit_hash": "sha256"}))
    with db.read() as s:
        from citybrain.audit.models import AuditRecord

        rec = s.query(AuditRecord).filter_by(seq=last.seq).one()
        assert audit._digest(rec.prev_hash, audit._fields(rec), "sm3") == rec.hash
        assert audit._digest(rec.prev_hash, audit._fields(rec), "sha256") != rec.hash
    configure(get_settings().model_copy(update={"audit_hash": "sm3"}))
    _sql(db, "UPDATE audit_record SET target_id = 'x' WHERE seq = :s", s=last.seq - 1)
    code, out = _verify(db)
    assert code == 1 and f"seq={last.seq - 1}" in out


def test_real_cli_process(db):
    _fill(db, 3)
    env = {**os.environ, "CITYBRAIN_SECRET_KEY": TEST_SECRET}
    env.pop("CITYBRAIN_DATABASE_URL", None)
    if db.settings.database_url:
        env["CITYBRAIN_DATABASE_URL"] = db.settings.database_url
    exe = shutil.which("citybrain", path=str(Path(sys.executable).parent)) or shutil.which("citybrain")
    cmd = [exe, "audit", "verify", "--data-dir", str(db.settings.data_dir)]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "intact" in ok.stdout, ok.stderr
    _sql(db, "UPDATE audit_record SET summary = '{}' WHERE seq = 2")
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "seq=2" in bad.stderr


def test_a_chain_rebuilt_without_the_server_secret_fails(db):
    _fill(db, 2)
    configure(get_settings().model_copy(update={"secret_key": "someone-elses-secret"}))
    result = audit.verify(db)
    assert result["ok"] is False and result["first_bad_seq"] == 1


# --- search ---------------------------------------------------------------------------------------------------


def test_search_filters(client, db, as_role):
    t0 = dt.datetime(2027, 5, 1, 2, 0, tzinfo=dt.UTC)  # after the demo data's records
    clock.freeze(t0)
    sys_h, sec_h = login(client, "sysadmin"), login(client, "secadmin")
    client.post("/api/v1/orgs", headers=sys_h, json={"code": "D-A1", "name": "甲", "type": "external"})
    clock.advance(dt.timedelta(minutes=20))  # (under the idle timeout)
    client.post("/api/v1/orgs", headers=sys_h, json={"code": "D-A2", "name": "乙", "type": "external"})
    client.post("/api/v1/apikeys", headers=sec_h, json={"name": "k", "scopes": ["iot.read"]})
    clock.advance(dt.timedelta(minutes=20))
    aud = login(client, "auditor")

    def q(**params):
        r = client.get("/api/v1/audit", params=params, headers=aud)
        assert r.status_code == 200, r.text
        return r.json()

    assert q(actor="sysadmin", action="org.create")["total"] == 2
    assert q(actor="user:secadmin", action="apikey.*")["total"] == 1
    assert q(action="org.*", since=(t0 + dt.timedelta(minutes=10)).isoformat())["total"] == 1
    assert q(action="org.*", since=t0.isoformat(), until=(t0 + dt.timedelta(minutes=10)).isoformat())["total"] == 1
    page = q(action="auth.login", limit=2)
    assert page["total"] == 3 and len(page["items"]) == 2
    assert page["items"][0]["seq"] > page["items"][1]["seq"]  # newest first
    org = q(action="org.create", limit=1)["items"][0]
    assert q(target_type="org", target_id=org["target_id"])["total"] == 1
    assert q(action="org_create")["total"] == 0  # '_' is not a wildcard
    assert q(outcome="denied")["total"] == 0
    r = client.get("/api/v1/audit", params={"since": "2027-05-01T02:00:00"}, headers=aud)
    assert r.status_code == 422  # a time without its UTC offset is ambiguous


def test_only_the_auditor_searches(client, as_role):
    for role in ("sysadmin", "secadmin", "leader", "operator"):
        r = client.get("/api/v1/audit", headers=as_role(role))
        assert r.status_code == 403 and r.json()["code"] == "permission_denied"
