"""Crash test: SIGKILL a real `citybrain serve` during an ingest run; every acknowledged reading survives."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import threading
import time

import httpx
import orjson
import pytest

from citybrain import served
from citybrain.iot import bench

pytestmark = pytest.mark.slow


def test_sigkill_during_ingest_loses_no_acknowledged_reading(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    seeded = bench._seed(data, 300)
    devices = seeded["devices"]
    port = served.free_port()
    server = bench.Server(data, port)
    acked: list[tuple[str, str]] = []  # (device, ts) of acknowledged batches
    lock = threading.Lock()
    stop = threading.Event()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)

    def client(k: int) -> None:
        n = 0
        with httpx.Client(base_url=server.base, timeout=10, headers={"X-API-Key": seeded["gateway"]}) as c:
            while not stop.is_set():
                n += 1
                ts = (start + dt.timedelta(milliseconds=n * 10 + k)).isoformat()
                items = [{"device": d, "ts": ts, "values": {"pm25": 10.0 + n % 50, "pm10": 20.0}} for d in devices]
                try:
                    r = c.post("/api/v1/iot/telemetry", content=orjson.dumps({"readings": items}),
                               headers={"content-type": "application/json"})
                except httpx.HTTPError:
                    return  # the server died: this batch was not acknowledged
                if r.status_code == 200:
                    with lock:
                        acked.extend((d, ts) for d in devices)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 300 * 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        stop.set()
        for t in threads:
            t.join(timeout=15)
    finally:
        stop.set()
        server.stop()
    assert len(acked) >= 300 * 20, "too few batches were acknowledged before the kill"

    restarted = bench.Server(data, port)  # recovery happens on open (WAL replay) and migrations run again
    try:
        assert httpx.get(f"{restarted.base}/healthz").status_code == 200
    finally:
        restarted.stop()
    conn = sqlite3.connect(data / "citybrain.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = dict(conn.execute("SELECT code, id FROM iot_device"))
        stored = set(conn.execute("SELECT device_id, ts FROM iot_reading WHERE json_extract(vals, '$.pm25') IS NOT NULL"))
    finally:
        conn.close()
    missing = [(d, ts) for d, ts in acked
               if (ids[d], int(dt.datetime.fromisoformat(ts).timestamp() * 1000)) not in stored]
    assert not missing, f"{len(missing)} acknowledged readings lost, e.g. {missing[:3]}"
