"""GET /api/v1/live: per-principal filtering of bus events, heartbeats, disconnects, logout, replay."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode

import pytest

from citybrain import bus, live
from tests.conftest import login


class Stream:
    """An SSE client driving the ASGI app directly (the test clients buffer whole responses)."""

    def __init__(self, app, headers: dict[str, str], params: dict | None = None):
        self.app, self.headers, self.params = app, headers, params or {}
        self.disconnect = asyncio.Event()
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.start: dict = {}
        self.buffer = ""
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> Stream:
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": "/api/v1/live", "raw_path": b"/api/v1/live",
            "query_string": urlencode(self.params).encode(), "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in self.headers.items()],
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
        }
        sent = False

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self.disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(msg):
            if msg["type"] == "http.response.start":
                self.start = msg
            elif msg["type"] == "http.response.body":
                await self.chunks.put(msg.get("body", b""))
                if not msg.get("more_body"):
                    await self.chunks.put(b"")  # end of stream

        self.task = asyncio.create_task(self.app(scope, receive, send))
        await self.read_text(lambda t: ": connected" in t)
        return self

    async def read_text(self, until, timeout: float = 20.0) -> str:
        async def go():
            while not until(self.buffer):
                chunk = await self.chunks.get()
                if chunk == b"" and self.task is not None and self.task.done():
                    break
                self.buffer += chunk.decode()
            return self.buffer

        return await asyncio.wait_for(go(), timeout)

    def messages(self) -> list[dict]:
        out = []
        for block in self.buffer.split("\n\n"):
            fields = {}
            for line in block.splitlines():
                if line and not line.startswith(":") and ": " in line:
                    k, v = line.split(": ", 1)
                    fields[k] = v
            if "event" in fields:
                out.append(fields)
        return out

    def events(self) -> list[tuple[str, dict]]:
        return [(m["event"], json.loads(m["data"])["payload"]) for m in self.messages()
                if m["event"] not in ("overflow", "logout")]

    async def __aexit__(self, *exc) -> None:
        self.disconnect.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 20)


def _publish(db, topic, **payload):
    with db.write() as s:
        bus.publish(s, topic, payload)
        s.commit()


def _org(client, h, code):
    return next(o["id"] for o in client.get("/api/v1/orgs", headers=h).json() if o["code"] == code)


@pytest.fixture(autouse=True)
def _clean_listeners():
    yield
    bus._listeners.clear()


def test_each_principal_sees_what_it_may(client, db):
    op, handler, citizen = login(client, "operator"), login(client, "handler"), login(client, "citizen")
    cgj, swj = _org(client, op, "D-CGJ"), _org(client, op, "D-SWJ")

    async def scenario():
        async with Stream(client.app, op) as s_op, Stream(client.app, handler) as s_h, \
                Stream(client.app, citizen) as s_c:
            assert s_op.start["status"] == 200
            assert dict(s_op.start["headers"])[b"content-type"].startswith(b"text/event-stream")
            _publish(db, "iot.alarm.raised", org_ids=[cgj], n=1)
            _publish(db, "cases.case.created", org_ids=[swj], n=2)
            _publish(db, "data.exchange.done", org_ids=[cgj], n=3)
            _publish(db, "geo.grid.changed", org_ids=[cgj], n=4)  # no live permission: never pushed
            _publish(db, "cases.case.transitioned", org_ids=[cgj, swj], n=5)
            _publish(db, "iot.device.status", n=6)  # no org_ids: city-wide eyes only
            bus.drain()
            await s_op.read_text(lambda t: '"n":6' in t)
            await s_h.read_text(lambda t: '"n":5' in t)
            await asyncio.sleep(0.05)
            return s_op.events(), s_h.events(), s_c.events(), s_op.messages()

    ev_op, ev_h, ev_c, msgs = asyncio.run(scenario())
    assert [p["n"] for _, p in ev_op] == [1, 2, 3, 5, 6]  # city-wide, iot.read + case.read + data.stats
    assert [p["n"] for _, p in ev_h] == [1, 5]  # 城管局: its own organisation's events, no data.stats
    assert ev_c == []  # a citizen holds none of the read permissions
    assert [t for t, _ in ev_op][:2] == ["iot.alarm.raised", "cases.case.created"]
    assert all(m["id"].isdigit() for m in msgs)
    assert [f for f in bus._listeners if f.__module__ == "citybrain.live"] == []  # every stream unsubscribed when its client went away


def test_topic_filter(client, db):
    op = login(client, "operator")

    async def scenario():
        async with Stream(client.app, op, {"topics": "iot.alarm.*,cases.>"}) as s:
            _publish(db, "iot.device.status", org_ids=[], n=1)
            _publish(db, "iot.alarm.raised", org_ids=[], n=2)
            _publish(db, "cases.case.created", org_ids=[], n=3)
            bus.drain()
            await s.read_text(lambda t: '"n":3' in t)
            return s.events()

    assert [p["n"] for _, p in asyncio.run(scenario())] == [2, 3]
    r = client.get("/api/v1/live", params={"topics": "iot..x"}, headers=op)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "topics"
    assert client.get("/api/v1/live", params={"topics": ">.iot"}, headers=op).status_code == 422


def test_heartbeats_keep_an_idle_stream_open(client, db, monkeypatch):
    monkeypatch.setattr(live, "HEARTBEAT_SECONDS", 0.05)
    h = login(client, "citizen")

    async def scenario():
        async with Stream(client.app, h) as s:
            return await s.read_text(lambda t: t.count(": heartbeat") >= 2)

    assert asyncio.run(scenario()).count(": heartbeat") >= 2
    assert [f for f in bus._listeners if f.__module__ == "citybrain.live"] == []


def test_logout_ends_the_stream(client, db, monkeypatch):
    monkeypatch.setattr(live, "HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(live, "RECHECK_SECONDS", 0.0)
    h = login(client, "leader")

    async def scenario():
        async with Stream(client.app, h) as s:
            assert client.post("/api/v1/auth/logout", headers=h).status_code == 204
            text = await s.read_text(lambda t: "event: logout" in t)
            await asyncio.wait_for(s.task, 20)  # the server closed the stream
            return text

    assert "event: logout" in asyncio.run(scenario())
    assert [f for f in bus._listeners if f.__module__ == "citybrain.live"] == []


def test_keys_are_scoped_and_a_revoked_key_ends_the_stream(client, db, as_role, monkeypatch):
    monkeypatch.setattr(live, "HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(live, "RECHECK_SECONDS", 0.0)
    sec = as_role("secadmin")
    cgj, swj = _org(client, sec, "D-CGJ"), _org(client, sec, "D-SWJ")
    created = client.post("/api/v1/apikeys", json={"name": "城管大屏", "scopes": ["iot.read"], "org_id": cgj},
                          headers=sec).json()

    async def scenario():
        async with Stream(client.app, {"X-API-Key": created["key"]}) as s:
            _publish(db, "iot.alarm.raised", org_ids=[swj], n=1)
            _publish(db, "iot.alarm.raised", org_ids=[cgj], n=2)
            bus.drain()
            await s.read_text(lambda t: '"n":2' in t)
            client.delete(f"/api/v1/apikeys/{created['id']}", headers=sec)
            await s.read_text(lambda t: "event: logout" in t)
            return s.events()

    assert [p["n"] for _, p in asyncio.run(scenario())] == [2]
    assert [f for f in bus._listeners if f.__module__ == "citybrain.live"] == []


def test_last_event_id_replays_what_was_missed(client, db):
    op = login(client, "operator")

    async def first():
        async with Stream(client.app, op) as s:
            _publish(db, "iot.alarm.raised", org_ids=[], n=1)
            bus.drain()
            await s.read_text(lambda t: '"n":1' in t)
            return s.messages()[-1]["id"]

    last_id = asyncio.run(first())
    _publish(db, "iot.alarm.raised", org_ids=[], n=2)  # while disconnected
    _publish(db, "cases.case.created", org_ids=[], n=3)
    bus.drain()

    async def second():
        async with Stream(client.app, {**op, "Last-Event-ID": last_id}) as s:
            _publish(db, "iot.alarm.raised", org_ids=[], n=4)
            bus.drain()
            await s.read_text(lambda t: '"n":4' in t)
            return s.events()

    assert [p["n"] for _, p in asyncio.run(second())] == [2, 3, 4]


def test_live_needs_a_login(client):
    r = client.get("/api/v1/live")
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")


def test_visible_rules():
    from citybrain.context import Principal

    city = Principal(kind="user", id=1, name="a", permissions=frozenset({"iot.read"}), org_scope=None)
    dept = Principal(kind="user", id=2, name="b", permissions=frozenset({"iot.read", "case.read"}),
                     org_scope=frozenset({5, 6}))
    assert live.visible(city, "iot.alarm.raised", {"org_ids": []})
    assert not live.visible(city, "cases.case.created", {"org_ids": [5]})
    assert live.visible(dept, "cases.case.created", {"org_ids": [9, 6]})
    assert not live.visible(dept, "cases.case.created", {"org_ids": [9]})
    assert not live.visible(dept, "iot.alarm.raised", {})
    assert not live.visible(dept, "iot.alarm.raised", {"org_ids": "5"})
    assert not live.visible(dept, "audit.x", {"org_ids": [5]})
