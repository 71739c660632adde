"""MQTT ingestion: the server subscribes to the broker (CITYBRAIN_MQTT_URL) with QoS 1 and a persistent session.

Topics (prefix `citybrain/v1` unless the URL path gives another, e.g. `mqtt://host:1883/nansha/iot`):

- `<prefix>/devices/<device_code>/telemetry` — a device's own message:
  `{"secret": "cbd_...", "ts": ..., "values": {...}}` or `{"secret": ..., "readings": [{"ts", "values"}, ...]}`.
- `<prefix>/gateways/<gateway_name>/telemetry` — a gateway batch:
  `{"key": "cbk_...", "readings": [{"device": code, "ts": ..., "values": {...}}, ...]}`.

The server connects with MQTT 5 (clean start off, session expiry 7 days, Receive Maximum 65535 so the broker
may keep many messages in flight while a batch commits). Messages are acknowledged manually (PUBACK) only after the readings, dead letters and alarms they caused are
committed, so a crash before the commit makes the broker deliver them again (idempotent on device, property
and timestamp). Messages are ingested in batches (up to `batch_max`, or whatever arrived within `linger_s`).
A message with bad credentials is kept as a dead letter (reason `unauthenticated`, without the credential).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import insert

from citybrain.db import Database, utcnow
from citybrain.errors import Unauthorized
from citybrain.iot import service
from citybrain.iot.models import DeadLetter

log = logging.getLogger("citybrain.iot.mqtt")

DEFAULT_PREFIX = "citybrain/v1"
RECEIVE_MAXIMUM = 65535
SESSION_EXPIRY_S = 7 * 86400


def parse_url(url: str) -> tuple[str, int, str, str | None]:
    """(host, port, topic prefix, client id) from `mqtt://host:port[/prefix][?client_id=...]`."""
    u = urlparse(url)
    prefix = u.path.strip("/") or DEFAULT_PREFIX
    cid = (parse_qs(u.query).get("client_id") or [None])[0]
    return u.hostname or "127.0.0.1", u.port or 1883, prefix, cid


class Subscriber:
    """The server's MQTT subscriber: batches messages into `service.ingest` and acknowledges after commit."""

    def __init__(self, db: Database, url: str, *, prefix: str | None = None, client_id: str | None = None,
                 batch_max: int = 5000, linger_s: float = 0.02):
        self.db = db
        self.host, self.port, url_prefix, url_cid = parse_url(url)
        self.prefix = (prefix or url_prefix).strip("/")
        self.client_id = client_id or url_cid or "citybrain-iot-ingest"
        self.batch_max, self.linger_s = batch_max, linger_s
        self.queue: collections.deque[Any] = collections.deque()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.processed = 0
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5,
                                  manual_ack=True)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.worker = threading.Thread(target=self._work, name="citybrain-iot-mqtt", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Connect, subscribe and start the ingest worker."""
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = RECEIVE_MAXIMUM  # unacknowledged messages the broker may send us at once
        props.SessionExpiryInterval = SESSION_EXPIRY_S  # keep the subscription and queued messages while down
        self.client.connect(self.host, self.port, keepalive=30, clean_start=False, properties=props)
        self.client.loop_start()
        self.worker.start()
        if not self.connected.wait(timeout):
            raise ConnectionError(f"no CONNACK from the MQTT broker at {self.host}:{self.port}")

    def stop(self) -> None:
        """Process what is queued, then disconnect."""
        self.stopping.set()
        self.wake.set()
        self.worker.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.error("MQTT connection refused: %s", reason)
            return
        client.subscribe([(f"{self.prefix}/devices/+/telemetry", 1), (f"{self.prefix}/gateways/+/telemetry", 1)])
        self.connected.set()
        log.info("MQTT subscribed at %s:%s under %s/", self.host, self.port, self.prefix)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.queue.append(msg)
        if len(self.queue) >= self.batch_max:
            self.wake.set()

    def _work(self) -> None:
        while True:
            self.wake.wait(self.linger_s)
            self.wake.clear()
            if not self.queue:
                if self.stopping.is_set():
                    return
                continue
            batch = []
            while self.queue and len(batch) < self.batch_max:
                batch.append(self.queue.popleft())
            for attempt in range(1, 6):
                try:
                    self.process(batch)
                    break
                except Exception:
                    log.exception("MQTT batch of %d failed (attempt %d); not acknowledged", len(batch), attempt)
                    time.sleep(min(5.0, 0.2 * 2 ** attempt))
            else:
                continue  # unacknowledged: the broker delivers them again after a reconnect
            for msg in batch:
                if msg.qos > 0:
                    self.client.ack(msg.mid, msg.qos)
            self.processed += len(batch)

    def process(self, batch: list[Any]) -> service.IngestResult | None:
        """Authenticate, parse and ingest a batch of messages in one transaction (commits)."""
        items: list[Any] = []
        scopes: list[Any] = []
        senders: list[str | None] = []
        dead: list[dict[str, Any]] = []
        now = utcnow()
        plen = len(self.prefix) + 1
        with self.db.write() as s:
            st = service._state(s)
            with st.lock:
                registry = service._registry(s, st)
            for msg in batch:
                rest = msg.topic[plen:].split("/")
                kind, ident = (rest[0], rest[1]) if len(rest) == 3 else ("", "")
                raw = msg.payload
                try:
                    doc = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    doc = None
                if not isinstance(doc, dict) or kind not in ("devices", "gateways"):
                    dead.append(_dead(ident or None, raw, "malformed", "not a JSON object on a telemetry topic",
                                      msg.topic, now))
                    continue
                if kind == "devices":
                    info = registry.get(ident)
                    secret = doc.pop("secret", None)
                    if info is None or not isinstance(secret, str) or not service.secrets.compare_digest(
                            info.secret_hash, service._sha256(secret)):
                        dead.append(_dead(ident, b"", "unauthenticated", "wrong device code or secret", msg.topic, now))
                        continue
                    readings = doc["readings"] if isinstance(doc.get("readings"), list) else [doc]
                    for r in readings:
                        if isinstance(r, dict):
                            r["device"] = ident
                        items.append(r)
                        scopes.append(None)
                        senders.append(f"device:{ident}")
                else:
                    key = doc.pop("key", None)
                    try:
                        who = service.principal_from_key(s, key=key) if isinstance(key, str) else None
                    except Unauthorized:
                        who = None
                    if who is None or not who.can("iot.ingest"):
                        dead.append(_dead(None, b"", "unauthenticated", f"gateway {ident}: bad or unscoped key",
                                          msg.topic, now))
                        continue
                    readings = doc.get("readings")
                    if not isinstance(readings, list):
                        dead.append(_dead(None, raw, "malformed", "readings must be a list", msg.topic, now))
                        continue
                    for r in readings:
                        items.append(r)
                        scopes.append(who.org_scope)
                        senders.append(who.label)
            s.commit()  # end the credential lookups' transaction before the ingestion lock
            if dead:
                s.execute(insert(DeadLetter), dead)
                service._bump_daily(s, service.cst_day(now), 0, len(dead))
                s.commit()
            if items:
                return service.ingest(s, items=items, source="mqtt", item_scopes=scopes, item_senders=senders)
        return None


def _dead(code: str | None, raw: bytes, reason: str, detail: str, topic: str, now: dt.datetime) -> dict[str, Any]:
    return {"device_code": service.clean_text(code)[:80] if code else None, "device_id": None, "prop": None,
            "ts": None, "value": service.clean_text(raw[:4000].decode("utf-8", errors="replace")) if raw else None,
            "reason": reason, "detail": service.clean_text(detail)[:300], "source": "mqtt",
            "sender": service.clean_text(topic)[:120], "received_at": now}


def publisher(host: str = "127.0.0.1", port: int = 1883, client_id: str | None = None) -> paho.Client:
    """A connected MQTT client for devices, gateways, tests and the simulator."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or f"cb-pub-{uuid.uuid4().hex[:8]}")
    c.max_inflight_messages_set(1000)
    c.connect(host, port, keepalive=30)
    c.loop_start()
    return c
