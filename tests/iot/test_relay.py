"""`citybrain serve --workers 2`: HTTP workers relay telemetry to the one ingest process (citybrain/iot/relay.py)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from citybrain import errors, served
from citybrain.iot import bench, relay

pytestmark = pytest.mark.slow


def _manager_key(data: Path) -> str:
    """A machine key that may manage devices and rules, in the bench database at `data`."""
    from citybrain import demo_district as dd
    from citybrain.config import Settings, configure
    from citybrain.db import Database, set_db
    from citybrain.identity import service as identity

    db = Database(configure(Settings(data_dir=data, secret_key=bench.SECRET)))
    set_db(db)
    try:
        with db.write() as s:
            org = identity.org_by_code(s, code=dd.department("生态环境").code).id  # the bench devices' owner
            key, _ = identity.create_api_key(s, name="relay-test-manager", org_id=org, scopes=[
                "iot.read", "iot.device.manage", "iot.rule.manage", "iot.ingest"])
        return key
    finally:
        db.dispose()
        set_db(None)
        configure(None)


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if ppid == pid and b"resource_tracker" not in cmd:
            out.append(int(d.name))
    return sorted(out)


def _ingest_pid(server: served.Server) -> int:
    """The ingest process: the child that holds the relay socket, not a TCP one."""
    for pid in _children(server.proc.pid):
        env = Path(f"/proc/{pid}/environ").read_bytes()
        if f"{relay.RELAY_ENV}=".encode() in env:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:"):
                    inode = link[8:-1]
                    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
                        f = line.split()
                        if f[6] == inode and len(f) > 7 and f[7].startswith("@citybrain-ingest") and f[5] == "01":
                            return pid
    raise AssertionError("no ingest process found")


@pytest.fixture(scope="module")
def relayed(tmp_path_factory):
    data = tmp_path_factory.mktemp("relay")
    seeded = bench._seed(data, 40)
    seeded["manager"] = _manager_key(data)
    server = served.Server(data, served.free_port(), secret=bench.SECRET, env={"CITYBRAIN_WORKERS": "2"})
    try:
        yield server, seeded, data
    finally:
        server.stop()


def _post(base: str, body: dict | bytes, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(f"{base}/api/v1/iot/telemetry", content=content, timeout=30,
                      headers={"content-type": "application/json", **headers})


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def test_telemetry_through_the_http_workers_is_stored_and_answered_as_with_one_process(relayed):
    server, seeded, _data = relayed
    assert len(_children(server.proc.pid)) == 3  # two HTTP workers and the ingest process
    ts = _now()
    items = [{"device": d, "ts": ts, "values": {"pm25": 31.5, "pm10": 60.0}} for d in seeded["devices"][:20]]
    r = _post(server.base, {"readings": items + [{"device": "NO-SUCH", "ts": ts, "values": {"pm25": 1}}]},
              **{"X-API-Key": seeded["gateway"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["accepted"], out["rejected"], out["stored"]) == (40, 1, 40)
    assert out["rejections"][0]["reason"] == "unknown_device"
    again = _post(server.base, {"readings": items}, **{"X-API-Key": seeded["gateway"]}).json()
    assert (again["duplicates"], again["stored"]) == (40, 0)  # idempotent repeats, as with one process
    latest = httpx.get(f"{server.base}/api/v1/iot/devices/{seeded['devices'][0]}/latest",
                       headers={"X-API-Key": seeded["reader"]}).json()
    assert latest["values"]["pm25"]["value"] == 31.5


@pytest.mark.parametrize(("headers", "body", "status", "code", "title"), [
    ({"X-API-Key": "cbk_nope_nope"}, {"readings": []}, 401, "invalid_api_key", "未登录或凭证无效"),
    ({}, {"readings": []}, 401, "not_authenticated", "未登录或凭证无效"),
    ("gateway", b"{not json", 422, "malformed_payload", "数据校验未通过"),
    ("gateway", {"readings": [{"device": "NO-SUCH", "ts": "now", "values": {}}]}, 422, "readings_rejected",
     "数据校验未通过"),
])
def test_problems_come_back_from_the_ingest_process_unchanged(relayed, headers, body, status, code, title):
    server, seeded, _data = relayed
    if headers == "gateway":
        headers = {"X-API-Key": seeded["gateway"]}
    r = _post(server.base, body, **headers)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert (doc["code"], doc["title"], doc["status"]) == (code, title, status)
    assert doc["message_zh"] and doc["message_en"] and doc["request_id"]
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"
    if code == "readings_rejected":
        assert (doc["accepted"], doc["rejected"]) == (0, 1) and doc["rejections"][0]["index"] == 0


def test_device_and_rule_changes_made_in_an_http_worker_reach_the_ingest_process(relayed):
    server, seeded, _data = relayed
    code = seeded["devices"][-1]
    manager = {"X-API-Key": seeded["manager"]}
    device_auth = {"X-Device-Code": code, "X-Device-Secret": seeded["secrets"][code]}
    assert _post(server.base, {"ts": _now(), "values": {"pm25": 12.0}}, **device_auth).status_code == 200
    # a rule added through the API fires on the next reading
    rule = httpx.post(f"{server.base}/api/v1/iot/rules", headers=manager, json={
        "name": "中继测试 NO2", "model": "air", "property": "no2", "kind": "threshold", "op": ">",
        "threshold": 390, "severity": 2}).json()
    out = _post(server.base, {"ts": _now(), "values": {"no2": 395.0}}, **device_auth).json()
    assert out["alarms_raised"] >= 1
    alarms = httpx.get(f"{server.base}/api/v1/iot/alarms", headers={"X-API-Key": seeded["reader"]},
                       params={"device": code}).json()
    assert any(a["rule_id"] == rule["id"] for a in alarms["items"])
    # a rotated secret stops working at once; a disabled device is refused (its readings kept as dead letters)
    rotated = httpx.post(f"{server.base}/api/v1/iot/devices/{code}/secret", headers=manager)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert _post(server.base, {"ts": _now(), "values": {"pm25": 1.0}}, **device_auth).status_code == 401
    device_auth["X-Device-Secret"] = new_secret
    assert _post(server.base, {"ts": _now(), "values": {"pm25": 1.0}}, **device_auth).status_code == 200
    r = httpx.patch(f"{server.base}/api/v1/iot/devices/{code}", headers=manager, json={"enabled": False})
    assert r.status_code == 200 and r.json()["status"] == "disabled"
    refused = _post(server.base, {"ts": _now(), "values": {"pm25": 2.0}}, **device_auth)
    assert refused.status_code == 403 and refused.json()["code"] == "device_disabled"


def test_a_killed_ingest_process_loses_no_acknowledged_reading_and_is_replaced(relayed):
    server, seeded, data = relayed
    devices = seeded["devices"][:30]
    acked: list[tuple[str, str]] = []
    statuses: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)

    def client(k: int) -> None:
        n = 0
        with httpx.Client(base_url=server.base, timeout=60, headers={"X-API-Key": seeded["gateway"]}) as c:
            while not stop.is_set():
                n += 1
                ts = (start + dt.timedelta(milliseconds=n * 10 + k)).isoformat()
                items = [{"device": d, "ts": ts, "values": {"o3": 10.0 + n % 50}} for d in devices]
                r = c.post("/api/v1/iot/telemetry", content=orjson.dumps({"readings": items}),
                           headers={"content-type": "application/json"})
                with lock:
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        acked.extend((d, ts) for d in devices)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    victim = _ingest_pid(server)
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 30 * 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(victim, signal.SIGKILL)
        kill_at = len(statuses)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the parent starts another; telemetry is accepted again
            time.sleep(0.2)
            with lock:
                if statuses[kill_at:].count(200) >= 20:
                    break
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=70)
    after = statuses[kill_at:]
    assert after.count(200) >= 20, f"telemetry did not resume after the ingest process was killed: {after[-5:]}"
    assert set(after) <= {200, 503}, set(after)  # while it restarts: 503 with Retry-After, never a 500
    assert _ingest_pid(server) != victim
    conn = sqlite3.connect(data / "citybrain.db")
    try:
        ids = dict(conn.execute("SELECT code, id FROM iot_device"))
        stored = set(conn.execute("SELECT device_id, ts FROM iot_reading WHERE json_extract(vals, '$.o3') IS NOT NULL"))
    finally:
        conn.close()
    missing = [(d, ts) for d, ts in acked
               if (ids[d], int(dt.datetime.fromisoformat(ts).timestamp() * 1000)) not in stored]
    assert not missing, f"{len(missing)} acknowledged readings lost, e.g. {missing[:3]}"


def test_problems_cross_the_socket_with_their_class_fields_and_extras():
    for p in (errors.Unauthorized("密钥错误", "Wrong key", code="invalid_api_key"),
              errors.Invalid("全部被拒收", "All rejected", code="readings_rejected", accepted=0, rejected=2,
                             rejections=[{"index": 0, "reason": "unknown_device"}]),
              errors.Forbidden("设备已停用", "Device disabled", code="device_disabled")):
        back = relay.problem_from(orjson.loads(orjson.dumps(relay.problem_doc(p))))
        assert type(back) is type(p)
        assert back.body("zh-CN") == p.body("zh-CN") and back.body("en") == p.body("en")
        assert back.headers == p.headers
    internal = relay.problem_from(relay.problem_doc(RuntimeError("boom")))
    assert (internal.status, internal.code, internal.title_en) == (500, "internal", "Internal server error")
