"""MQTT part of `citybrain bench ingest`: single-reading messages and gateway batches through Mosquitto into a
real server, against a bare subscriber that does nothing with the same publisher.

The bench runs its own Mosquitto (the machine's binary, a config of its own, a free port) so the system broker
is left alone: `max_queued_messages 0` and `max_inflight_messages 0`, as a deployment must configure the
broker for the CityBrain client (with the stock limit of 1,000 queued messages the broker DROPS QoS 1 messages
for a subscriber that is behind). The publisher writes pre-encoded MQTT 3.1.1 QoS 1 PUBLISH packets on a few
plain sockets and counts the PUBACKs (a device fleet, not a Python client, is the load): what it measures is
the broker and the subscriber.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import sqlite3
import struct
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citybrain import served
from citybrain.iot import bench
from citybrain.iot.mqtt import RECEIVE_MAXIMUM, Subscriber, _varint

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _varint(len(body)) + body


def _str(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


class Broker:
    """A Mosquitto of the bench's own, configured for a subscriber that must never lose a message."""

    def __init__(self, tmp: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = tmp / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\n"
                        f"log_dest file {tmp / 'mosquitto.log'}\n")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the bench's mosquitto did not start")

    def stop(self) -> None:
        served.terminate(self.proc, 5)


class Encoded(NamedTuple):
    blobs: list[bytes]  # one per connection
    counts: list[int]  # PUBLISH packets in each


def encode(messages: list[tuple[str, bytes]], prefix: str, conns: int = 2) -> Encoded:
    """The QoS 1 PUBLISH packets of `messages` (topic `PREFIX/...` under `prefix`), one blob per connection (a
    topic always on the same connection, so a device's messages keep their order). Done before the clock
    starts: a fleet's devices encode their own messages."""
    lanes: list[list[bytes]] = [[] for _ in range(conns)]
    for i, (topic, payload) in enumerate(messages):
        lane = hash(topic) % conns
        pid = i % 65535 + 1
        lanes[lane].append(_packet(0x32, _str(topic.replace("PREFIX", prefix).encode()) + struct.pack("!H", pid)
                                   + payload))
    return Encoded([b"".join(lane) for lane in lanes], [len(lane) for lane in lanes])


def publish(port: int, packets: Encoded) -> float:
    """Send pre-encoded QoS 1 PUBLISH packets (`encode`), one socket per lane, as fast as the broker takes them;
    return seconds until every PUBACK arrived."""
    socks = []
    for k in range(len(packets.blobs)):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = f"cb-benchpub-{uuid.uuid4().hex[:8]}-{k}".encode()
        s.sendall(_packet(0x10, _str(b"MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _str(cid)))
        ack = s.recv(4)
        if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
            raise ConnectionError(f"CONNACK refused: {ack!r}")
        socks.append(s)

    def lane_run(s: socket.socket, blob: bytes, expect: int) -> None:
        def reader() -> None:
            got = 0
            while got < expect * 4:
                data = s.recv(1 << 16)
                if not data:
                    return
                got += len(data)  # PUBACK (MQTT 3.1.1) is 4 bytes

        r = threading.Thread(target=reader)
        r.start()
        view = memoryview(blob)
        for i in range(0, len(blob), 1 << 18):
            s.sendall(view[i:i + (1 << 18)])
        r.join()

    threads = [threading.Thread(target=lane_run, args=(s, b, n))
               for s, b, n in zip(socks, packets.blobs, packets.counts, strict=True)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    for s in socks:
        s.sendall(b"\xe0\x00")  # DISCONNECT
        s.close()
    return secs


def bare_rate(port: int, messages: list[tuple[str, bytes]], prefix: str) -> float:
    """Messages/s received by a subscriber that does nothing (paho, QoS 1, auto-ack, MQTT 5 with the server's
    Receive Maximum), from the first publish to the last message."""
    n = len(messages)
    got = [0]
    last_t = [0.0]
    done = threading.Event()

    def on_message(c: Any, u: Any, m: Any) -> None:
        got[0] += 1
        last_t[0] = time.perf_counter()
        if got[0] >= n:
            done.set()

    ready = threading.Event()
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"cb-bare-{uuid.uuid4().hex[:8]}",
                    protocol=paho.MQTTv5)
    c.on_message = on_message
    c.on_subscribe = lambda *a, **k: ready.set()
    c.on_connect = lambda cl, u, f, r, p=None: cl.subscribe(f"{prefix}/#", qos=1)
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    c.connect("127.0.0.1", port, properties=props)
    c.loop_start()
    ready.wait(10)
    packets = encode(messages, prefix)
    t0 = time.perf_counter()
    publish(port, packets)
    last = -1
    while not done.wait(3):  # stop when nothing arrived for 3 s
        if got[0] == last:
            break
        last = got[0]
    c.disconnect()
    c.loop_stop()
    return got[0] / ((last_t[0] or time.perf_counter()) - t0)


class _Bare(Subscriber):
    """The server's own MQTT client, batching and acknowledging, doing nothing with the messages."""

    def process(self, batch: list[Any]) -> None:
        return None


def bare_lean_rate(port: int, messages: list[tuple[str, bytes]], prefix: str) -> float:
    """Messages/s through the server's MQTT client with no ingestion behind it (the ratio's baseline)."""
    sub = _Bare(None, f"mqtt://127.0.0.1:{port}/{prefix}", client_id=f"cb-bare-{uuid.uuid4().hex[:8]}")  # type: ignore[arg-type]
    sub.start()
    try:
        time.sleep(0.3)
        packets = encode(messages, prefix)
        t0 = time.perf_counter()
        publish(port, packets)
        last, last_change, t_last = 0, time.monotonic(), time.perf_counter()
        while last < len(messages) and time.monotonic() - last_change < 3:
            time.sleep(0.01)
            if sub.processed != last:
                last, last_change, t_last = sub.processed, time.monotonic(), time.perf_counter()
        return last / (t_last - t0)
    finally:
        sub.stop()


def _stored(db_path: Path) -> int:
    """Readings stored so far (the per-day counters, committed with every batch: a cheap read)."""
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        return conn.execute("SELECT coalesce(sum(accepted), 0) FROM iot_daily_count").fetchone()[0]
    finally:
        conn.close()


def server_rate(port: int, db_path: Path, messages: list[tuple[str, bytes]], prefix: str,
                readings: int) -> tuple[float, int]:
    """(readings/s stored by the server, readings missing): from the first publish to the last commit.
    Stops waiting when nothing new arrived for 5 s."""
    packets = encode(messages, prefix)
    before = _stored(db_path)
    t0 = time.perf_counter()
    publish(port, packets)
    last, last_change, t_last = before, time.monotonic(), time.perf_counter()
    while last < before + readings and time.monotonic() - last_change < 5:
        time.sleep(0.05)
        n = _stored(db_path)
        if n != last:
            last, last_change, t_last = n, time.monotonic(), time.perf_counter()
    stored = last - before
    return stored / (t_last - t0), readings - stored


def run(tmp: Path, port: int, n_messages: int = 60_000, n_devices: int = 2000) -> dict[str, Any]:
    """Start a broker of the bench's own and a server subscribed to it; measure both kinds of traffic."""
    tmp.mkdir(parents=True, exist_ok=True)
    broker = Broker(tmp)
    try:
        seeded = bench._seed(tmp, n_devices)
        tag = uuid.uuid4().hex[:8]
        prefix = f"cbbench/{tag}"
        server = bench.Server(tmp, port, extra_env={
            "CITYBRAIN_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}/{prefix}?client_id=cbbench-{tag}"})
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
            rounds = max(1, n_messages * 4 // len(devices) // 4)
            for r in range(rounds):
                ts = (start + dt.timedelta(hours=1, seconds=r)).isoformat()
                for i in range(0, len(devices), per):
                    items = [{"device": c, "ts": ts, "values": {"pm25": 30.0, "pm10": 50.0, "o3": 60.0, "no2": 20.0}}
                             for c in devices[i:i + per]]
                    batches.append((f"PREFIX/gateways/bench{i // per % 4}/telemetry",
                                    orjson.dumps({"key": seeded["gateway"], "readings": items})))
            batch_readings = rounds * len(devices) * 4
            db_path = tmp / "citybrain.db"
            single_rate, single_missing = server_rate(broker.port, db_path, singles, prefix, n_messages)
            batch_rate, batch_missing = server_rate(broker.port, db_path, batches, prefix, batch_readings)
        finally:
            server.stop()
        bare_single = bare_lean_rate(broker.port, singles, f"cbbare/{tag}")
        bare_batch = bare_lean_rate(broker.port, batches, f"cbbare2/{tag}") * bench.BATCH
        paho_single = bare_rate(broker.port, singles, f"cbpaho/{tag}")
    finally:
        broker.stop()
    return {
        "mqtt_messages_per_s": round(single_rate),
        "mqtt_bare_messages_per_s": round(bare_single),  # the server's MQTT client doing nothing
        "mqtt_bare_paho_messages_per_s": round(paho_single),  # a paho subscriber doing nothing (reference)
        "mqtt_ratio": round(single_rate / bare_single, 3) if bare_single else None,
        "mqtt_readings_per_s": round(batch_rate),
        "mqtt_bare_batch_readings_per_s": round(bare_batch),
        "mqtt_batch_ratio": round(batch_rate / bare_batch, 3) if bare_batch else None,
        "mqtt_messages": n_messages,
        "mqtt_batch_readings": batch_readings,
        "mqtt_missing": single_missing + batch_missing,  # 0 expected: the bench broker queues without limit
    }
