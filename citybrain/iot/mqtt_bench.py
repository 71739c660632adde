"""MQTT part of `citybrain bench ingest`: single-reading messages and gateway batches through Mosquitto into a
real server, against a bare subscriber that does nothing with the same publisher."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citybrain.iot import bench
from citybrain.iot.mqtt import RECEIVE_MAXIMUM, publisher


def _publish(topic_payloads: list[tuple[str, bytes]]) -> float:
    """Publish at QoS 1 as fast as the broker takes them; return seconds until all are acknowledged."""
    pub = publisher()
    t0 = time.perf_counter()
    infos = [pub.publish(t, p, qos=1) for t, p in topic_payloads]
    for i in infos:
        i.wait_for_publish(timeout=120)
    secs = time.perf_counter() - t0
    pub.disconnect()
    pub.loop_stop()
    return secs


def bare_rate(messages: list[tuple[str, bytes]], prefix: str) -> float:
    """Messages/s received by a subscriber that does nothing (QoS 1, auto-ack)."""
    got = [0]
    done = threading.Event()
    n = len(messages)
    first: list[float] = []

    def on_message(c: Any, u: Any, m: Any) -> None:
        if not first:
            first.append(time.perf_counter())
        got[0] += 1
        if got[0] >= n:
            done.set()

    ready = threading.Event()
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"cb-bare-{uuid.uuid4().hex[:8]}",
                    protocol=paho.MQTTv5)
    c.on_message = on_message
    c.on_connect = lambda cl, u, f, r, p=None: (cl.subscribe(f"{prefix}/#", qos=1), ready.set())
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = RECEIVE_MAXIMUM  # the same flow-control window as the server's subscriber
    c.connect("127.0.0.1", 1883, properties=props)
    c.loop_start()
    ready.wait(10)
    time.sleep(0.5)
    t0 = time.perf_counter()
    _publish([(t.replace("PREFIX", prefix), p) for t, p in messages])
    done.wait(120)
    secs = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return got[0] / secs


def _count(db_path: Path) -> int:
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        return conn.execute("SELECT count(*) FROM iot_reading").fetchone()[0]
    finally:
        conn.close()


def server_rate(db_path: Path, messages: list[tuple[str, bytes]], prefix: str, readings: int) -> float:
    """Readings/s stored by the server for these messages (time from first publish to the last commit)."""
    before = _count(db_path)
    t0 = time.perf_counter()
    _publish([(t.replace("PREFIX", prefix), p) for t, p in messages])
    deadline = time.monotonic() + 300
    while _count(db_path) < before + readings and time.monotonic() < deadline:
        time.sleep(0.1)
    secs = time.perf_counter() - t0
    return (_count(db_path) - before) / secs


def run(tmp: Path, port: int, n_messages: int = 100_000) -> dict[str, Any]:
    """Start a server subscribed to Mosquitto and measure both kinds of traffic."""
    tmp.mkdir(parents=True, exist_ok=True)
    seeded = bench._seed(tmp, 2000)
    tag = uuid.uuid4().hex[:8]
    prefix = f"cbbench/{tag}"
    server = bench.Server(tmp, port, extra_env={"CITYBRAIN_MQTT_URL":
                                                f"mqtt://127.0.0.1:1883/{prefix}?client_id=cbbench-{tag}"})
    try:
        time.sleep(2.0)
        devices, secrets = seeded["devices"], seeded["secrets"]
        start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
        singles = []
        for i in range(n_messages):
            d = devices[i % len(devices)]
            ts = (start + dt.timedelta(milliseconds=i)).isoformat()
            singles.append((f"PREFIX/devices/{d}/telemetry",
                            orjson.dumps({"secret": secrets[d], "ts": ts, "values": {"pm25": 20.0 + i % 30}})))
        batches = []
        per = bench.BATCH // 4
        rounds = max(1, n_messages * 2 // len(devices) // 4)
        for r in range(rounds):
            ts = (start + dt.timedelta(hours=1, seconds=r)).isoformat()
            for i in range(0, len(devices), per):
                items = [{"device": c, "ts": ts, "values": {"pm25": 30.0, "pm10": 50.0, "o3": 60.0, "no2": 20.0}}
                         for c in devices[i:i + per]]
                batches.append(("PREFIX/gateways/bench/telemetry", orjson.dumps({"key": seeded["gateway"],
                                                                                  "readings": items})))
        batch_readings = rounds * len(devices) * 4
        db_path = tmp / "citybrain.db"
        single_rate = server_rate(db_path, singles, prefix, n_messages)
        batch_rate = server_rate(db_path, batches, prefix, batch_readings)
    finally:
        server.stop()
    bare_single = bare_rate(singles, f"cbbare/{tag}")
    bare_batch = bare_rate(batches, f"cbbare2/{tag}") * (bench.BATCH)
    return {
        "mqtt_messages_per_s": round(single_rate),
        "mqtt_bare_messages_per_s": round(bare_single),
        "mqtt_ratio": round(single_rate / bare_single, 3) if bare_single else None,
        "mqtt_readings_per_s": round(batch_rate),
        "mqtt_bare_batch_readings_per_s": round(bare_batch),
        "mqtt_batch_ratio": round(batch_rate / bare_batch, 3) if bare_batch else None,
    }
