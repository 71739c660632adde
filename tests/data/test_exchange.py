import datetime as dt

import pytest
from sqlalchemy import func, select

from citybrain import served
from citybrain.audit import service as audit
from citybrain.context import SYSTEM
from citybrain.data import demo, exchangelog, service
from citybrain.data.models import ExchangeDaily, ExchangeLog, Resource
from citybrain.errors import TooManyRequests
from tests.data.conftest import ENT, HEALTH, POP


def _person():
    return next(demo.population_rows(1, seed=7))


def test_masking_per_rule_and_per_grant(client, hub, consumer_key):
    p = _person()
    yx = consumer_key("D-YXZX")  # the demo grant names phone in clear
    r = client.get(f"/api/v1/data/exchange/{POP}/records/{p['id_number']}", headers=yx)
    assert r.status_code == 200, r.text
    rec = r.json()["records"][0]
    assert rec["id_number"] == p["id_number"][:6] + "********" + p["id_number"][-4:]
    assert rec["name"] == p["name"][0] + "*" * (len(p["name"]) - 1)
    assert rec["residence_address"].endswith("****") and rec["residence_address"] != p["residence_address"]
    assert rec["phone"] == p["phone"]  # granted unmasked
    assert rec["gender"] == p["gender"]
    assert set(r.json()["masked"]) == {"id_number", "name", "residence_address"}
    # the audit trail of the approval names the field granted in clear
    with hub.read() as s:
        _n, recs = audit.search(s, action="data.request.approve")
        assert any(x.summary["after"].get("unmasked_fields") == ["phone"] for x in recs)
        log = s.scalars(select(ExchangeLog).order_by(ExchangeLog.id.desc())).first()
    assert log.unmasked == "phone" and log.records == 1 and log.op == "get"
    # fields outside the grant are refused
    r = client.get(f"/api/v1/data/exchange/{POP}/records/{p['id_number']}", params={"fields": "birth_date"},
                   headers=yx)
    assert r.status_code == 403 and r.json()["code"] == "field_not_granted"


def test_grant_without_clear_fields_sees_masks(client, hub, dept_user, consumer_key):
    h = dept_user("D-JTJ")
    req = client.post("/api/v1/data/requests", json={
        "resource_code": POP, "fields": ["id_number", "phone"], "purpose": "网约车驾驶员核验",
        "legal_basis": "《网络预约出租汽车经营服务管理暂行办法》"}, headers=h).json()
    assert client.post(f"/api/v1/data/requests/{req['id']}/decision", json={"approve": True},
                       headers=dept_user("D-GAJ")).status_code == 200
    p = _person()
    r = client.get(f"/api/v1/data/exchange/{POP}/records/{p['id_number']}", headers=consumer_key("D-JTJ"))
    rec = r.json()["records"][0]
    assert rec == {"id_number": p["id_number"][:6] + "********" + p["id_number"][-4:],
                   "phone": p["phone"][:3] + "****" + p["phone"][-4:]}
    # no grant at all
    r = client.get(f"/api/v1/data/exchange/{POP}/records/{p['id_number']}", headers=consumer_key("D-WJJ"))
    assert r.status_code == 403 and r.json()["code"] == "no_grant"


def test_query_with_filters_and_paging(client, hub, consumer_key):
    yx = consumer_key("D-YXZX")
    r1 = client.post(f"/api/v1/data/exchange/{POP}/query", json={"filters": {"area_code": "440115"},
                                                                "page_size": 10}, headers=yx).json()
    r2 = client.post(f"/api/v1/data/exchange/{POP}/query", json={"filters": {"area_code": "440115"},
                                                                "page_size": 10, "page": 2}, headers=yx).json()
    assert r1["count"] == 10 and r2["count"] == 10
    assert all(x["area_code"] == "440115" for x in r1["records"] + r2["records"])
    assert not {x["phone"] for x in r1["records"]} & {x["phone"] for x in r2["records"]}
    r = client.get(f"/api/v1/data/exchange/{POP}/records", params={"gender": "女", "page_size": 5}, headers=yx)
    assert r.status_code == 200 and {x["gender"] for x in r.json()["records"]} == {"女"}
    # `limit` (the change feed's name) is the page size here too, not a filter
    r = client.get(f"/api/v1/data/exchange/{POP}/records", params={"gender": "女", "limit": 3}, headers=yx)
    assert r.status_code == 200 and r.json()["count"] == 3
    r = client.post(f"/api/v1/data/exchange/{POP}/query", json={"filters": {"phone": "13800000000"}}, headers=yx)
    assert r.status_code == 422
    # departmental (JSON) records filter the same way
    r = client.post(f"/api/v1/data/exchange/{HEALTH}/query", json={"filters": {"kind": "诊所"}}, headers=yx)
    assert r.status_code == 200 and r.json()["count"] == 6 and {x["kind"] for x in r.json()["records"]} == {"诊所"}


def test_incremental_pull_with_cursor(client, hub, consumer_key):
    yx = consumer_key("D-YXZX")
    seen, cursor = [], "0"
    while True:
        r = client.get(f"/api/v1/data/exchange/{ENT}/changes", params={"cursor": cursor, "limit": 50},
                       headers=yx).json()
        seen += [x["credit_code"] for x in r["records"]]
        cursor = r["next_cursor"]
        if not r["has_more"]:
            break
    assert len(seen) == len(set(seen)) == 120
    r = client.get(f"/api/v1/data/exchange/{ENT}/changes", params={"cursor": cursor}, headers=yx).json()
    assert r["count"] == 0 and r["next_cursor"] == cursor
    changed = list(demo.entity_rows(120))[5:7]
    for c in changed:
        c["status"] = "注销"
    with hub.write() as s:
        service.load_records(s, principal=SYSTEM, code=ENT, rows=changed)
    r = client.get(f"/api/v1/data/exchange/{ENT}/changes", params={"cursor": cursor}, headers=yx).json()
    assert [x["credit_code"] for x in r["records"]] == [c["credit_code"] for c in changed]
    assert {x["status"] for x in r["records"]} == {"注销"}
    assert client.get(f"/api/v1/data/exchange/{ENT}/changes", params={"cursor": "abc"},
                      headers=yx).status_code == 422


def test_deletions_reach_the_change_feed(client, hub, consumer_key, dept_user):
    yx = consumer_key("D-YXZX")
    cursor = client.get(f"/api/v1/data/exchange/{ENT}/changes", params={"cursor": 0, "limit": 1000},
                        headers=yx).json()["next_cursor"]
    rows = list(demo.entity_rows(120))
    gone = sorted([rows[3]["credit_code"], rows[9]["credit_code"]])  # deleted in key order
    provider = dept_user("D-SCJG", "handler")
    body = {"keys": gone + ["91440115MA00000000"], "reason": "企业注销后依法删除"}
    assert client.post(f"/api/v1/data/resources/{ENT}/records/delete", json={"keys": gone},
                       headers=provider).status_code == 422  # a reason is required
    assert client.post(f"/api/v1/data/resources/{ENT}/records/delete", json=body,
                       headers=dept_user("D-GAJ", "handler")).status_code == 403  # not the provider
    r = client.post(f"/api/v1/data/resources/{ENT}/records/delete", json=body, headers=provider)
    assert r.status_code == 200 and r.json() == {"deleted": 2, "not_found": ["91440115MA00000000"]}
    changed = dict(rows[20], status="注销")
    with hub.write() as s:
        service.load_records(s, principal=SYSTEM, code=ENT, rows=[changed])
    feed = client.get(f"/api/v1/data/exchange/{ENT}/changes", params={"cursor": cursor}, headers=yx).json()
    assert [(x["credit_code"], x.get("_deleted", False)) for x in feed["records"]] == [
        (gone[0], True), (gone[1], True), (changed["credit_code"], False)]  # in change order
    assert int(feed["next_cursor"]) > int(cursor) and not feed["has_more"]
    page = client.get(f"/api/v1/data/exchange/{ENT}/changes", params={"cursor": cursor, "limit": 1},
                      headers=yx).json()
    assert page["records"] == [{"credit_code": gone[0], "_deleted": True}] and page["has_more"]
    assert client.get(f"/api/v1/data/exchange/{ENT}/records/{gone[0]}", headers=yx).status_code == 404
    one = rows[30]["credit_code"]
    assert client.delete(f"/api/v1/data/resources/{ENT}/records/{one}", params={"reason": "重复登记"},
                         headers=provider).status_code == 200
    last = client.get(f"/api/v1/data/exchange/{ENT}/changes", params={"cursor": feed["next_cursor"]},
                      headers=yx).json()
    assert last["records"] == [{"credit_code": one, "_deleted": True}]
    # a masked key field stays masked in its tombstone
    cur = client.get(f"/api/v1/data/exchange/{POP}/changes", params={"cursor": 0, "limit": 1000},
                     headers=yx).json()["next_cursor"]
    person = next(demo.population_rows(1))["id_number"]
    assert client.post(f"/api/v1/data/resources/{POP}/records/delete", json={"keys": [person], "reason": "死亡注销"},
                       headers=dept_user("D-GAJ", "handler")).json()["deleted"] == 1
    tomb = client.get(f"/api/v1/data/exchange/{POP}/changes", params={"cursor": cur}, headers=yx).json()["records"]
    assert tomb == [{"id_number": person[:6] + "********" + person[-4:], "_deleted": True}]
    with hub.read() as s:
        n, recs = audit.search(s, action="data.records.delete", target_id=ENT)
    assert n == 2 and {r.summary["after"]["deleted"] for r in recs} == {2, 1}


def test_every_call_is_logged_and_summed(client, hub, consumer_key):
    yx = consumer_key("D-YXZX")
    with hub.read() as s:
        rid = s.scalar(select(Resource.id).where(Resource.code == ENT))
        before = s.execute(select(func.coalesce(func.sum(ExchangeDaily.calls), 0),
                                  func.coalesce(func.sum(ExchangeDaily.records), 0))
                           .where(ExchangeDaily.resource_id == rid)).one()
    total = 0
    for size in (3, 7, 11):
        total += client.post(f"/api/v1/data/exchange/{ENT}/query", json={"page_size": size},
                             headers=yx).json()["count"]
    with hub.read() as s:
        after = s.execute(select(func.sum(ExchangeDaily.calls), func.sum(ExchangeDaily.records))
                          .where(ExchangeDaily.resource_id == rid)).one()
        logs = s.scalars(select(ExchangeLog).where(ExchangeLog.resource_id == rid, ExchangeLog.key_id.is_not(None))
                         .order_by(ExchangeLog.id)).all()
    assert (after[0] - before[0], after[1] - before[1]) == (3, total) == (3, 21)
    assert [x.records for x in logs] == [3, 7, 11]
    assert logs[0].fields.split(",")[0] == "credit_code"
    stats = client.get("/api/v1/data/stats/exchange", headers=consumer_key("D-YXZX")).status_code
    assert stats == 403  # exchange keys do not read statistics


def test_rate_limit_per_key(client, hub, consumer_key, monkeypatch):
    monkeypatch.setattr(exchangelog, "LIMITER", exchangelog.RateLimit(0.01, 3))
    yx, other = consumer_key("D-YXZX"), consumer_key("D-YXZX")
    codes = [client.post(f"/api/v1/data/exchange/{ENT}/query", json={"page_size": 1}, headers=yx).status_code
             for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = client.post(f"/api/v1/data/exchange/{ENT}/query", json={"page_size": 1}, headers=yx)
    assert r.headers["retry-after"] and r.headers["content-type"].startswith("application/problem+json")
    assert client.post(f"/api/v1/data/exchange/{ENT}/query", json={"page_size": 1}, headers=other).status_code == 200
    with hub.read() as s:
        n = s.scalar(select(func.count()).select_from(ExchangeLog).where(ExchangeLog.key_id.is_not(None)))
    assert n == 4  # refused calls send nothing and are not counted as exchange


def test_ioc_summary(client, hub, as_role):
    r = client.get("/api/v1/data/ioc", headers=as_role("leader"))
    assert r.status_code == 200
    d = r.json()
    assert set(d) == {"exchange_today", "exchange_calls_today", "exchange_7d", "resources_total", "sharing_rate",
                      "open_resources", "pending_requests", "overdue_requests"}
    assert len(d["exchange_7d"]) == 7 and sum(x["calls"] for x in d["exchange_7d"]) > 200
    assert d["resources_total"] == 8 and d["pending_requests"] == 3 and d["overdue_requests"] == 1
    s = client.get("/api/v1/data/stats/exchange", params={"days": 3}, headers=as_role("leader")).json()
    assert len(s["days"]) == 3 and s["by_consumer"] and s["by_resource"]


def test_rate_limit_is_shared_by_server_processes(hub, monkeypatch):
    """Two server processes (own engines, own limiter state) on one database share each key's bucket; time
    comes from the fake clock."""
    from citybrain import clock
    from citybrain.db import Database

    t0 = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)
    clock.freeze(t0)
    other = Database(hub.settings)  # the second process's engines and pool
    limits = {hub: exchangelog.RateLimit(1.0, 3), other: exchangelog.RateLimit(1.0, 3)}
    with hub.read() as s:
        rid = s.scalar(select(Resource.id).where(Resource.code == ENT))

    def call(db, subject="apikey:901") -> int:
        monkeypatch.setattr(exchangelog, "LIMITER", limits[db])
        entry = {"at": clock.now(), "consumer_org_id": 1, "provider_org_id": 2, "resource_id": rid,
                 "actor": subject, "key_id": int(subject[7:]), "op": "query", "fields": "credit_code", "unmasked": "",
                 "records": 1, "request_id": "t", "subject": subject}
        try:
            exchangelog.LIMITER.check(subject, clock.now().timestamp())
            exchangelog.WRITER.submit(db, entry)
        except TooManyRequests as exc:
            assert int(exc.headers["Retry-After"]) >= 1
            return 429
        return 200

    try:
        assert [call(hub), call(other), call(hub), call(other)] == [200, 200, 200, 429]
        assert call(hub) == 429  # the first process learns it from the shared bucket
        assert call(hub, "apikey:902") == 200  # another key has its own bucket
        clock.advance(dt.timedelta(seconds=1))
        assert [call(other), call(hub)] == [200, 429]  # one token per second across both
        clock.advance(dt.timedelta(seconds=10))
        assert [call(hub), call(other), call(hub), call(other)] == [200, 200, 200, 429]  # burst refilled
        with hub.read() as s:
            logged = s.scalar(select(func.count()).select_from(ExchangeLog).where(ExchangeLog.key_id == 901))
        assert logged == 7  # refused calls are not logged
    finally:
        other.dispose()
        clock.reset()


def test_rate_limit_holds_across_worker_processes(db, hub, tmp_path):
    """`citybrain serve` with two worker processes: a key's burst is shared, whichever worker answers."""
    import concurrent.futures

    import httpx
    import pytest

    from citybrain.identity import service as identity
    from tests.data.conftest import running_server

    if not db.is_sqlite:
        pytest.skip("the subprocess test runs once, on the embedded database")
    with hub.write() as s:
        org = identity.org_by_code(s, code="D-YXZX")
        key, _k = identity.create_api_key(s, name="w", scopes=["data.exchange"], kind="consumer", org_id=org.id)
    db.dispose()
    with running_server(tmp_path, served.free_port(), CITYBRAIN_WORKERS="2", CITYBRAIN_DATA_RATE_PER_S="0.001",
                        CITYBRAIN_DATA_RATE_BURST="5") as base:
        def call(_i: int) -> int:
            with httpx.Client(base_url=base, headers={"X-API-Key": key}) as c:  # a new connection each time
                return c.post(f"/api/v1/data/exchange/{ENT}/query", json={"page_size": 1}).status_code

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(call, range(16)))
    assert sorted(codes) == [200] * 5 + [429] * 11
    assert (tmp_path / "background.lock").exists()


def test_fast_path_answers_like_the_route(client, hub, consumer_key, monkeypatch):
    """`POST .../query` through the pure-ASGI fast path gives the route's answers byte for byte (records,
    problems, rate-limit refusals), and whatever it cannot serve exactly (a credential not seen yet, no
    credential, a body the route's model would coerce or refuse) reaches the route unchanged."""
    from fastapi.testclient import TestClient

    from citybrain.app import create_app
    from citybrain.data import api as data_api

    served = []
    real_serve = data_api.ExchangeFastPath._serve

    async def counting_serve(self, *a, **kw):
        served.append(1)
        await real_serve(self, *a, **kw)

    monkeypatch.setattr(data_api.ExchangeFastPath, "_serve", counting_serve)
    monkeypatch.setattr(data_api, "outer_middleware", [])  # an app answering only through the route
    route_app = create_app(background=False)
    yx, wj = consumer_key("D-YXZX"), consumer_key("D-WJJ")  # WJJ holds no grant on the population

    def both(body, headers, *, content=None, code=POP):
        h = {**headers, "X-Request-Id": "same-id"}
        if content is not None:
            h["content-type"] = "application/json"
        kw = {"content": content} if content is not None else {"json": body}
        a = route.post(f"/api/v1/data/exchange/{code}/query", headers=h, **kw)
        b = client.post(f"/api/v1/data/exchange/{code}/query", headers=h, **kw)
        assert (b.status_code, b.headers["content-type"], b.headers["x-request-id"]) == (
            a.status_code, a.headers["content-type"], "same-id"), (a.text[:300], b.text[:300])
        if a.status_code == 200:
            assert b.content == a.content
        else:
            assert b.json() == a.json()
        return b

    with TestClient(route_app, raise_server_exceptions=False) as route:
        # first sight of a credential: the route answers (and caches the caller)
        assert client.post(f"/api/v1/data/exchange/{POP}/query", json={}, headers=yx).status_code == 200
        assert client.post(f"/api/v1/data/exchange/{POP}/query", json={}, headers=wj).status_code == 403
        assert served == []
        q = {"filters": {"area_code": "440115"}, "page": 2, "page_size": 7}
        r = both(q, yx)
        assert r.json()["count"] == 7 and r.json()["masked"] == ["id_number", "name", "residence_address"]
        assert both({**q, "fields": ["id_number", "gender"]}, yx).json()["fields"] == ["id_number", "gender"]
        assert both({"fields": ["birth_date"]}, yx).json()["code"] == "field_not_granted"
        assert both({"filters": {"phone": "1"}}, yx).status_code == 422
        assert both({"filters": {"birth_date": "x"}}, yx).status_code == 422
        assert both({}, yx, code="nope").status_code == 404
        assert both({}, wj).json()["code"] == "no_grant"
        assert len(served) == 7
        # what the route's model coerces or refuses is the route's to answer
        assert both({"page": "2", "page_size": 7, "filters": {"area_code": "440115"}}, yx).json() == r.json()
        assert both({"page_size": 0}, yx).status_code == 422
        assert both({"filters": {"area_code": 440115}}, yx).status_code == 422
        assert both({"extra": 1}, yx).status_code == 422
        assert both({"filters": {"area_code": "440115\u0000"}}, yx).json()["errors"][0]["field"] == "filters.area_code"
        assert both(None, yx, content=b"{not json").status_code == 422
        assert both({}, {}).status_code == 401
        assert both({}, {"X-API-Key": "cbk_nope_nope"}).status_code == 401
        assert len(served) == 7
        # a rate-limit refusal: the same 429 problem, refused before any data, not logged
        monkeypatch.setattr(exchangelog, "LIMITER", exchangelog.RateLimit(0.01, 2))
        with hub.read() as s:
            logged = s.scalar(select(func.count()).select_from(ExchangeLog))
        codes = [client.post(f"/api/v1/data/exchange/{POP}/query", json={}, headers=yx).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 429]
        r = both({}, yx)
        assert r.status_code == 429 and r.headers["retry-after"] and r.json()["code"] == "rate_limited"
        with hub.read() as s:
            assert s.scalar(select(func.count()).select_from(ExchangeLog)) == logged + 2


def test_log_entries_are_group_committed_before_any_answer(hub, monkeypatch):
    """Calls made while the log cannot be written all wait (none returns data), then the writer commits the
    entries that queued up meanwhile in one transaction, and every call is logged."""
    import threading
    import time

    from sqlalchemy import text

    from citybrain.context import Principal
    from citybrain.identity import service as identity

    with hub.read() as s:
        org = identity.org_by_code(s, code="D-YXZX")
        rid = s.scalar(select(Resource.id).where(Resource.code == POP))
    who = Principal(kind="apikey", id=77, name="group", org_id=org.id, permissions=frozenset({"data.exchange"}),
                    org_scope=frozenset({org.id}))
    done: list[int] = []
    groups: list[int] = []
    real_commit = exchangelog._commit_group

    def recording_commit(db, group, limit):
        groups.append(len(group))
        real_commit(db, group, limit)

    monkeypatch.setattr(exchangelog, "_commit_group", recording_commit)

    def call(i: int) -> None:
        with hub.read() as s:
            r = service.exchange(s, principal=who, code=POP, filters={"area_code": "440115"}, page=i + 1,
                                 page_size=5)
        done.append(r["count"])

    def wait_for(cond) -> None:
        deadline = time.monotonic() + 30
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cond()

    blocker = hub.write_factory()  # holds the write lock the log transaction needs
    if hub.is_sqlite:
        blocker.execute(text("UPDATE data_exchange_daily SET calls = calls WHERE 1 = 0"))  # BEGIN IMMEDIATE
    else:
        blocker.execute(text("LOCK TABLE data_exchange_daily IN EXCLUSIVE MODE"))
    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    try:
        threads[0].start()
        wait_for(lambda: groups == [1])  # the writer is in the first call's transaction, waiting for the lock
        for t in threads[1:]:
            t.start()
        wait_for(lambda: exchangelog.WRITER.q.qsize() == 7)
        assert done == []  # nobody has its data while its entry is not stored
    finally:
        blocker.rollback()
        blocker.close()
    for t in threads:
        t.join(30)
    assert done == [5] * 8
    assert groups == [1, 7]  # the seven calls that queued meanwhile: one transaction
    with hub.read() as s:
        assert s.scalar(select(func.count()).select_from(ExchangeLog).where(
            ExchangeLog.key_id == 77, ExchangeLog.resource_id == rid)) == 8


def test_an_event_loop_commits_its_calls_entries_itself_and_waits_for_a_held_lock_without_blocking(hub,
                                                                                                monkeypatch):
    """On SQLite the event loop commits the entries of its calls itself (no writer thread) when the write lock
    is free; while another writer holds it, no call has its data, the loop keeps running, and once the
    entries have waited `LOOP_WAIT_S` the writer thread waits for the lock and commits them together."""
    import asyncio
    import time

    from sqlalchemy import text

    from citybrain.context import Principal
    from citybrain.data import api
    from citybrain.identity import service as identity

    if not hub.is_sqlite:
        pytest.skip("the event loop commits the log itself only on the embedded database")
    with hub.read() as s:
        org = identity.org_by_code(s, code="D-YXZX")
    who = Principal(kind="apikey", id=78, name="loop", org_id=org.id, permissions=frozenset({"data.exchange"}),
                    org_scope=frozenset({org.id}))
    to_thread: list[int] = []
    real_enqueue = exchangelog.WRITER._enqueue
    monkeypatch.setattr(exchangelog.WRITER, "_enqueue", lambda p: (to_thread.append(1), real_enqueue(p)))

    def logged() -> int:
        with hub.read() as s:
            return s.scalar(select(func.count()).select_from(ExchangeLog).where(ExchangeLog.key_id == 78))

    async def calls(n: int) -> list[bytes]:
        return await asyncio.gather(*(api.exchange_answer(who, POP, op="query", filters={"area_code": "440115"},
                                                          page=i + 1, page_size=5) for i in range(n)))

    assert all(b'"count":5' in b for b in asyncio.run(calls(4)))
    assert logged() == 4 and to_thread == []  # committed on the loop

    blocker = hub.write_factory()  # holds the write lock the log transaction needs
    blocker.execute(text("UPDATE data_exchange_daily SET calls = calls WHERE 1 = 0"))  # BEGIN IMMEDIATE
    answered: list[bytes] = []
    ticks = 0

    async def held() -> None:
        nonlocal ticks
        task = asyncio.ensure_future(calls(6))
        task.add_done_callback(lambda t: answered.extend(t.result()))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.3:  # the loop runs on while the entries wait for the lock
            await asyncio.sleep(0.005)
            ticks += 1
        assert answered == [] and len(to_thread) == 6  # handed to the thread after LOOP_WAIT_S
        blocker.rollback()
        blocker.close()
        await task

    try:
        asyncio.run(held())
    finally:
        blocker.close()
    assert ticks > 20 and len(answered) == 6 and logged() == 10


def test_keyset_paging_walks_a_filtered_result(client, hub, consumer_key):
    """`after` (the `next_after` of the previous page) walks a filtered result page by page without OFFSET:
    the same records in the same order as numbered pages, for base tables and departmental JSON records."""
    yx = consumer_key("D-YXZX")
    for code, filters, size in ((POP, {"gender": "女"}, 40), (HEALTH, {"kind": "诊所"}, 4)):
        numbered, page = [], 1
        while True:
            r = client.post(f"/api/v1/data/exchange/{code}/query", json={"filters": filters, "page": page,
                                                                         "page_size": size}, headers=yx).json()
            numbered += r["records"]
            if r["count"] < size:
                break
            page += 1
        walked, after, pages = [], None, 0
        while True:
            body = {"filters": filters, "page_size": size, **({"after": after} if after else {})}
            r = client.post(f"/api/v1/data/exchange/{code}/query", json=body, headers=yx)
            assert r.status_code == 200, r.text
            walked += r.json()["records"]
            pages += 1
            after = r.json()["next_after"]
            if after is None:
                break
        assert walked == numbered and len(walked) > size and pages >= 2
        assert pages == len(walked) // size + 1  # a full last page is followed by an empty one
    # the GET form takes the cursor too, and a cursor is digits only
    first = client.get(f"/api/v1/data/exchange/{POP}/records", params={"gender": "女", "page_size": 5},
                       headers=yx).json()
    second = client.get(f"/api/v1/data/exchange/{POP}/records",
                        params={"gender": "女", "page_size": 5, "after": first["next_after"]}, headers=yx).json()
    assert second["records"] == client.post(f"/api/v1/data/exchange/{POP}/query", json={
        "filters": {"gender": "女"}, "page": 2, "page_size": 5}, headers=yx).json()["records"]
    for bad in ("x1", "-1", "1" * 30):
        r = client.post(f"/api/v1/data/exchange/{POP}/query", json={"after": bad}, headers=yx)
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
