"""MQTT end to end against the real Mosquitto: device and gateway topics, credentials, persistent session."""

from __future__ import annotations

import time
import uuid

import orjson
import paho.mqtt.client as paho
import pytest
from sqlalchemy import func, select

from citybrain import clock
from citybrain.iot import service
from citybrain.iot.models import Alarm, DeadLetter
from citybrain.iot.mqtt import Subscriber, publisher

pytestmark = pytest.mark.mqtt


def _readings(db):
    with db.read() as s:
        return service.count_readings(s)


def _wait(pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _count(db, model, **where):
    with db.read() as s:
        q = select(func.count()).select_from(model)
        for k, v in where.items():
            q = q.where(getattr(model, k) == v)
        return s.scalar(q)


@pytest.fixture
def mqtt_names(mosquitto):
    tag = uuid.uuid4().hex[:10]
    names = {"url": mosquitto, "prefix": f"cbtest/{tag}", "client_id": f"cb-test-{tag}"}
    yield names
    # forget the persistent session this test left on the broker
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=names["client_id"], protocol=paho.MQTTv5)
    c.connect("127.0.0.1", 1883, clean_start=True)
    c.loop_start()
    time.sleep(0.2)
    c.disconnect()
    c.loop_stop()


def test_device_and_gateway_messages_end_to_end(db, register, gateway, mqtt_names):
    clock.reset()
    code, secret = register("gas", "应急管理")
    other, _ = register("water_level", "水务")
    key = gateway("应急管理")
    sub = Subscriber(db, mqtt_names["url"], prefix=mqtt_names["prefix"], client_id=mqtt_names["client_id"])
    sub.start()
    pub = publisher()
    p = mqtt_names["prefix"]
    try:
        now = clock.now().isoformat()
        pub.publish(f"{p}/devices/{code}/telemetry", orjson.dumps({"secret": secret, "ts": now,
                                                                    "values": {"lel": 1.5}}), qos=1).wait_for_publish()
        pub.publish(f"{p}/devices/{code}/telemetry", orjson.dumps({"secret": "cbd_wrong", "ts": now,
                                                                    "values": {"lel": 99}}), qos=1).wait_for_publish()
        pub.publish(f"{p}/devices/{code}/telemetry", b"\x00garbage", qos=1).wait_for_publish()
        batch = {"key": key, "readings": [
            {"device": code, "ts": clock.now().timestamp() + 1, "values": {"lel": 60, "battery": 70}},
            {"device": other, "ts": now, "values": {"water_level": 1.0}},  # 水务 device: not this gateway's
        ]}
        pub.publish(f"{p}/gateways/gw1/telemetry", orjson.dumps(batch), qos=1).wait_for_publish()
        assert _wait(lambda: _readings(db) == 3 and _count(db, DeadLetter) == 3), (
            _readings(db), _count(db, DeadLetter))
        assert _count(db, DeadLetter, reason="unauthenticated") == 1
        assert _count(db, DeadLetter, reason="malformed") == 1
        assert _count(db, DeadLetter, reason="not_permitted") == 1
        assert _count(db, Alarm, device_code=code) == 2  # lel 60: both gas alarm levels
        with db.read() as s:
            assert "cbd_wrong" not in (s.scalar(select(DeadLetter.value).where(DeadLetter.reason == "unauthenticated"))
                                       or "")
    finally:
        sub.stop()
        pub.disconnect()
        pub.loop_stop()


def test_messages_sent_while_the_server_is_down_arrive_after_restart(db, register, mqtt_names):
    clock.reset()
    code, secret = register("noise", "生态环境")
    sub = Subscriber(db, mqtt_names["url"], prefix=mqtt_names["prefix"], client_id=mqtt_names["client_id"])
    sub.start()
    sub.stop()  # the persistent session (QoS 1 subscription) stays on the broker
    pub = publisher()
    base = clock.now().timestamp() - 100
    try:
        for i in range(50):
            pub.publish(f"{mqtt_names['prefix']}/devices/{code}/telemetry",
                        orjson.dumps({"secret": secret, "ts": base + i, "values": {"laeq": 50 + i / 10}}),
                        qos=1).wait_for_publish()
        sub2 = Subscriber(db, mqtt_names["url"], prefix=mqtt_names["prefix"], client_id=mqtt_names["client_id"])
        sub2.start()
        try:
            assert _wait(lambda: _readings(db) == 50), _readings(db)
        finally:
            sub2.stop()
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_a_rotated_secret_is_refused_at_once_and_a_disabled_device_kept_out(db, register, mqtt_names):
    """The subscriber remembers verified device secrets; rotation and disabling must still take effect at once."""
    from citybrain import context

    clock.reset()
    code, secret = register("noise", "生态环境")
    sub = Subscriber(db, mqtt_names["url"], prefix=mqtt_names["prefix"], client_id=mqtt_names["client_id"])
    sub.start()
    pub = publisher()
    topic = f"{mqtt_names['prefix']}/devices/{code}/telemetry"
    base = clock.now().timestamp() - 100

    def send(i, sec):
        pub.publish(topic, orjson.dumps({"secret": sec, "ts": base + i, "values": {"laeq": 50.0 + i}}),
                    qos=1).wait_for_publish()

    try:
        send(0, secret)
        send(1, secret)  # the second message is checked against the remembered secret
        assert _wait(lambda: _readings(db) == 2), _readings(db)
        context.set_principal(context.SYSTEM)
        with db.write() as s:
            new_secret = service.rotate_secret(s, code=code, principal=context.SYSTEM)
        send(2, secret)  # the old secret: refused although it was remembered
        send(3, new_secret)
        assert _wait(lambda: _readings(db) == 3 and _count(db, DeadLetter, reason="unauthenticated") == 1), (
            _readings(db), _count(db, DeadLetter, reason="unauthenticated"))
        with db.write() as s:
            service.update_device(s, code=code, principal=context.SYSTEM, enabled=False)
        send(4, new_secret)  # remembered, but the device is disabled: a dead letter, not a reading
        assert _wait(lambda: _count(db, DeadLetter, reason="device_disabled") == 1)
        assert _readings(db) == 3
    finally:
        sub.stop()
        pub.disconnect()
        pub.loop_stop()
