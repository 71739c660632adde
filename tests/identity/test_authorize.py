"""authorize() from inside a service that already holds the write transaction."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import update

from citybrain import context
from citybrain.audit import service as audit
from citybrain.deps import CurrentUser, WriteDB
from citybrain.errors import Forbidden
from citybrain.identity import service
from citybrain.identity.models import Org


def test_a_denial_inside_a_write_transaction_neither_waits_nor_is_lost(client, db, as_role):
    router = APIRouter()

    @router.post("/api/v1/_test/orgs/{org_id}/touch")
    def touch(org_id: int, session: WriteDB, who: CurrentUser) -> dict:
        # a service that writes first (SQLite's write lock is now held) and checks the scope afterwards
        session.execute(update(Org).where(Org.id == org_id).values(active=True))
        service.authorize(who, "user.directory", org_id=org_id)
        session.commit()
        return {"ok": True}

    client.app.include_router(router)
    with db.read() as s:
        swj = service.org_by_code(s, code="D-SWJ").id
        cgj = service.org_by_code(s, code="D-CGJ").id
    h = {**as_role("handler"), "X-Request-ID": "scoped-1"}
    r = client.post(f"/api/v1/_test/orgs/{swj}/touch", headers=h)
    assert r.status_code == 403 and r.json()["code"] == "out_of_scope"
    with db.read() as s:
        [rec] = audit.search(s, request_id="scoped-1")[1]
    assert rec.outcome == "denied" and rec.actor == "user:handler" and f"org {swj}" in rec.summary["note"]
    assert client.post(f"/api/v1/_test/orgs/{cgj}/touch", headers=as_role("handler")).json() == {"ok": True}


def test_outside_a_request_the_denial_is_written_at_once(db):
    who = context.Principal(kind="user", id=None, name="worker", permissions=frozenset(), org_scope=frozenset())
    context.set_principal(context.SYSTEM)
    try:
        service.authorize(who, "case.dispatch")
    except Forbidden as exc:
        assert exc.code == "permission_denied"
    else:
        raise AssertionError("not refused")
    with db.read() as s:
        [rec] = audit.search(s, actor="user:worker")[1]
    assert rec.action == "case.dispatch" and rec.outcome == "denied"
