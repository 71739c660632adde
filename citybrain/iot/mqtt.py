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
import contextlib
import datetime as dt
import logging
import secrets
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson
import paho.mqtt.client as paho
from sqlalchemy import insert
from sqlalchemy.orm import Session

from citybrain.db import Database, utcnow
from citybrain.errors import Unauthorized
from citybrain.iot import service
from citybrain.iot.models import DeadLetter

log = logging.getLogger("citybrain.iot.mqtt")

DEFAULT_PREFIX = "citybrain/v1"
RECEIVE_MAXIMUM = 65535
SESSION_EXPIRY_S = 7 * 86400
VERIFIED_MAX = 200_000  # remembered device secrets (one per device that reported)


def parse_url(url: str) -> tuple[str, int, str, str | None]:
    """(host, port, topic prefix, client id) from `mqtt://host:port[/prefix][?client_id=...]`."""
    u = urlparse(url)
    prefix = u.path.strip("/") or DEFAULT_PREFIX
    cid = (parse_qs(u.query).get("client_id") or [None])[0]
    return u.hostname or "127.0.0.1", u.port or 1883, prefix, cid


# A received PUBLISH: (topic, payload, packet id (0: QoS 0, nothing to acknowledge), connection generation).
# A plain tuple: one is made per message by the reader thread, which shares the GIL with the ingestion.
Msg = tuple[str, bytes, int, int]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _varint_at(buf: bytes, i: int, end: int) -> tuple[int, int]:
    """The MQTT variable byte integer at buf[i:end] and the index after it; (-1, end) if it is incomplete."""
    value = shift = 0
    while i < end:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7
        if shift > 21:
            raise ValueError("malformed MQTT variable byte integer")
    return -1, end


def _str(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("!H", len(raw)) + raw


class Subscriber:
    """The server's MQTT subscriber: batches messages into `service.ingest` and acknowledges after commit.

    A lean MQTT 5 client of its own (a socket, a reader thread, PUBLISH parsed without decoding properties):
    a general-purpose client spent most of its time building property objects for every message. It
    connects with clean start off, session expiry and Receive Maximum, subscribes at QoS 1, answers PUBACK
    only after the batch committed (all of a batch's PUBACKs in one write), pings, and reconnects with backoff
    (messages not acknowledged on a lost connection are delivered again by the broker: idempotent)."""

    def __init__(self, db: Database, url: str, *, prefix: str | None = None, client_id: str | None = None,
                 batch_max: int = 5000, linger_s: float = 0.02, keepalive: int = 30):
        self.db = db
        self.host, self.port, url_prefix, url_cid = parse_url(url)
        self.prefix = (prefix or url_prefix).strip("/")
        self.client_id = client_id or url_cid or "citybrain-iot-ingest"
        self.batch_max, self.linger_s, self.keepalive = batch_max, linger_s, keepalive
        self.queue: collections.deque[Msg] = collections.deque()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._pending = b""  # bytes read past the CONNACK, handed to the reader
        self.processed = 0
        self._conn: Any = None  # PostgreSQL: the subscriber's own connection (`_session`)
        self._verified: dict[str, tuple[int, str]] = {}  # device secret -> (device id, secret hash it matched)
        self.sock: socket.socket | None = None
        self.gen = 0  # connection generation: PUBACKs go only to the connection that delivered the message
        self.send_lock = threading.Lock()
        self.last_send = 0.0
        self.reader = threading.Thread(target=self._read_loop, name="citybrain-iot-mqtt-read", daemon=True)
        self.worker = threading.Thread(target=self._work, name="citybrain-iot-mqtt", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Connect, subscribe and start the reader and the ingest worker."""
        self._connect(timeout)
        self.reader.start()
        self.worker.start()

    def stop(self) -> None:
        """Process what is queued, then disconnect."""
        self.stopping.set()
        self.wake.set()
        self.worker.join(timeout=10)
        if not self.worker.is_alive():
            self._close_conn()
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError), self.send_lock:
                sock.sendall(b"\xe0\x00")  # DISCONNECT (normal): the session stays on the broker
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.reader.join(timeout=5)

    def _connect(self, timeout: float) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        props = (b"\x11" + struct.pack("!I", SESSION_EXPIRY_S)  # keep subscription and queue while we are down
                 + b"\x21" + struct.pack("!H", RECEIVE_MAXIMUM))  # unacknowledged messages the broker may send
        var = _str("MQTT") + bytes([5, 0x00]) + struct.pack("!H", self.keepalive) + _varint(len(props)) + props
        body = var + _str(self.client_id)
        sock.sendall(b"\x10" + _varint(len(body)) + body)
        first, pkt, rest = _read_packet(sock, b"")
        if first >> 4 != 2 or len(pkt) < 2 or pkt[1] >= 0x80:
            sock.close()
            raise ConnectionError(f"MQTT connection refused by {self.host}:{self.port} (reason {pkt[1:2].hex()})")
        topics = [f"{self.prefix}/devices/+/telemetry", f"{self.prefix}/gateways/+/telemetry"]
        sub = struct.pack("!H", 1) + b"\x00" + b"".join(_str(t) + b"\x01" for t in topics)
        sock.sendall(b"\x82" + _varint(len(sub)) + sub)
        sock.settimeout(self.keepalive / 4)
        self.last_send = time.monotonic()
        with self.send_lock:
            self.gen += 1
            self.sock = sock
        self._pending = rest
        log.info("MQTT subscribed at %s:%s under %s/", self.host, self.port, self.prefix)

    def _read_loop(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                self._read(self.sock, self.gen)  # type: ignore[arg-type]
            except (OSError, ConnectionError, ValueError) as exc:
                if self.stopping.is_set():
                    return
                log.warning("MQTT connection lost (%s); reconnecting", exc)
            while not self.stopping.is_set():
                time.sleep(backoff)
                try:
                    self._connect(10.0)
                    backoff = 0.5
                    break
                except OSError as exc:
                    backoff = min(30.0, backoff * 2)
                    log.warning("MQTT broker at %s:%s not reachable (%s)", self.host, self.port, exc)

    def _read(self, sock: socket.socket, gen: int) -> None:
        buf = self._pending  # bytes: a PUBLISH's topic and payload are each one slice (one copy)
        queue, wake, batch_max = self.queue, self.wake, self.batch_max
        append = queue.append
        while True:
            pos, n = 0, len(buf)
            while n - pos >= 2:  # parse every complete packet in the buffer
                length = buf[pos + 1]
                if length < 0x80:  # the usual one-byte lengths are read inline
                    i = pos + 2
                else:
                    length, i = _varint_at(buf, pos + 1, n)
                end = i + length
                if length < 0 or end > n:
                    break
                first = buf[pos]
                if first >> 4 == 3:  # PUBLISH: topic, packet id (QoS > 0), properties (skipped), payload
                    j = i + 2 + ((buf[i] << 8) | buf[i + 1])
                    topic = buf[i + 2:j].decode()
                    mid = 0
                    if first & 0x06:  # QoS 1 or 2: a packet id
                        mid = (buf[j] << 8) | buf[j + 1]
                        j += 2
                    if buf[j] == 0:  # no properties
                        j += 1
                    else:
                        plen, j = _varint_at(buf, j, end)
                        if plen < 0 or j + plen > end:
                            raise ValueError("malformed MQTT PUBLISH")
                        j += plen
                    append((topic, buf[j:end], mid, gen))
                    if len(queue) >= batch_max and not wake.is_set():
                        wake.set()
                elif first >> 4 == 14:  # DISCONNECT from the broker
                    raise ConnectionError("the broker closed the session")
                pos = end
            if pos:
                buf = buf[pos:]
            now = time.monotonic()
            if now - self.last_send > self.keepalive / 2:  # keep the session alive also under QoS 0 traffic
                with self.send_lock:
                    sock.sendall(b"\xc0\x00")  # PINGREQ
                    self.last_send = now
            try:
                data = sock.recv(1 << 18)
            except TimeoutError:
                continue
            if not data:
                raise ConnectionError("connection closed")
            buf = buf + data if buf else data

    def _ack(self, batch: list[Msg]) -> None:
        with self.send_lock:
            sock, gen = self.sock, self.gen
            mids = [0x40020000 | m[2] for m in batch if m[2] and m[3] == gen]  # PUBACK: 40 02 <id>
            acks = struct.pack(f"!{len(mids)}I", *mids)
            if acks and sock is not None:
                try:
                    sock.sendall(acks)
                    self.last_send = time.monotonic()
                except OSError as exc:  # the broker delivers them again after the reconnect
                    log.warning("MQTT PUBACKs not sent (%s)", exc)

    def _work(self) -> None:
        queue, wake = self.queue, self.wake
        while True:  # a batch is what arrived within `linger` after the last one (or `batch_max` messages)
            wake.wait(self.linger_s)
            wake.clear()
            if not queue:
                if self.stopping.is_set():
                    return
                continue
            batch = [queue.popleft() for _ in range(min(len(queue), self.batch_max))]
            for attempt in range(1, 6):
                try:
                    self.process(batch)
                    break
                except Exception:
                    log.exception("MQTT batch of %d failed (attempt %d); not acknowledged", len(batch), attempt)
                    time.sleep(min(5.0, 0.2 * 2 ** attempt))
            else:
                continue  # unacknowledged: the broker delivers them again after a reconnect
            self._ack(batch)
            self.processed += len(batch)

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        """A write session; PostgreSQL: on the subscriber's own connection, held between batches (the pool's
        pre-ping per checkout is a round trip per batch), replaced after an error."""
        if self.db.is_sqlite:
            with self.db.write() as s:
                yield s
            return
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            self._close_conn()
            conn = self._conn = self.db.write_engine.connect()
        try:
            with self.db.write_factory(bind=conn) as s:
                try:
                    yield s
                except BaseException:
                    s.rollback()
                    raise
        except BaseException:
            self._close_conn()
            raise

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _secret_ok(self, info: service.DevInfo, secret: Any) -> bool:
        """Whether `secret` is the device's secret. A secret that verified is remembered in memory (with the
        device and the hash it matched) so the device's next messages skip the SHA-256; after a rotation the
        device's hash differs, so the old secret is checked again, and refused. Failures are not remembered."""
        if not isinstance(secret, str):
            return False
        verified = self._verified
        hit = verified.get(secret)
        if hit is not None and hit[0] == info.id and hit[1] == info.secret_hash:
            return True
        if not secrets.compare_digest(info.secret_hash, service._sha256(secret)):
            return False
        if len(verified) >= VERIFIED_MAX:
            verified.clear()
        verified[secret] = (info.id, info.secret_hash)
        return True

    def process(self, batch: list[Msg]) -> service.IngestResult | None:
        """Authenticate, parse and ingest a batch of messages in one transaction (commits)."""
        items: list[Any] = []
        scopes: list[Any] | None = None  # organisation scope per item: only needed once a gateway message came
        senders: list[str | None] = []
        dead: list[dict[str, Any]] = []
        now = utcnow()
        plen = len(self.prefix) + 1
        with self._session() as s:
            st = service._state(s)
            with st.lock:
                registry = service._registry(s, st)
            for topic, raw, _mid, _gen in batch:
                rest = topic[plen:].split("/")
                kind, ident = (rest[0], rest[1]) if len(rest) == 3 else ("", "")
                try:
                    doc = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    doc = None
                if doc.__class__ is not dict or kind not in ("devices", "gateways"):
                    dead.append(_dead(ident or None, raw, "malformed", "not a JSON object on a telemetry topic",
                                      topic, now))
                    continue
                if kind == "devices":
                    info = registry.get(ident)
                    if info is None or not self._secret_ok(info, doc.pop("secret", None)):
                        dead.append(_dead(ident, b"", "unauthenticated", "wrong device code or secret", topic, now))
                        continue
                    label = f"device:{ident}"
                    readings = doc.get("readings")
                    if readings.__class__ is not list:  # one reading: the message itself
                        doc["device"] = ident
                        items.append(doc)
                        senders.append(label)
                        if scopes is not None:
                            scopes.append(None)
                        continue
                    for r in readings:
                        if isinstance(r, dict):
                            r["device"] = ident
                    items.extend(readings)
                    senders.extend([label] * len(readings))
                    if scopes is not None:
                        scopes.extend([None] * len(readings))
                else:
                    key = doc.pop("key", None)
                    try:
                        who = service.principal_from_key(s, key=key) if isinstance(key, str) else None
                    except Unauthorized:
                        who = None
                    if who is None or not who.can("iot.ingest"):
                        dead.append(_dead(None, b"", "unauthenticated", f"gateway {ident}: bad or unscoped key",
                                          topic, now))
                        continue
                    readings = doc.get("readings")
                    if not isinstance(readings, list):
                        dead.append(_dead(None, raw, "malformed", "readings must be a list", topic, now))
                        continue
                    if scopes is None:
                        scopes = [None] * len(items)
                    items.extend(readings)
                    scopes.extend([who.org_scope] * len(readings))
                    senders.extend([who.label] * len(readings))
            s.commit()  # end the credential lookups' transaction before the ingestion lock
            if dead:
                s.execute(insert(DeadLetter), dead)
                service._bump_daily(s, service.cst_day(now), 0, len(dead))
                s.commit()
            if items:
                return service.ingest(s, items=items, source="mqtt", item_scopes=scopes, item_senders=senders)
        return None


def _read_packet(sock: socket.socket, pending: bytes) -> tuple[int, bytes, bytes]:
    """One whole packet (first byte, body) read from the socket, and the bytes after it."""
    buf = pending
    while True:
        if len(buf) >= 2:
            length, i = _varint_at(buf, 1, len(buf))
            if length >= 0 and len(buf) >= i + length:
                return buf[0], buf[i:i + length], buf[i + length:]
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("connection closed during the handshake")
        buf += data


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
