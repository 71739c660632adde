"""The NATS JetStream bus backend against the real nats-server (marked `nats`; CI runs it)."""

import time
import uuid

import pytest

from citybrain import bus
from citybrain.bus import BusCursor, BusDeadLetter
from citybrain.bus_nats import RELAY, NatsBridge

pytestmark = pytest.mark.nats


def _wait(cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def names():
    tag = uuid.uuid4().hex[:8]
    created = []
    yield tag, created
    for n in created:
        bus._subscriptions.pop(n, None)


def _bridge(db, url, tag, *, last=True):
    return NatsBridge(db, url, stream=f"CBTEST_{tag}", prefix=f"cbtest{tag}", fetch_timeout=0.2,
                      delete_stream_on_stop=last)


def _publish(db, topic, payloads):
    with db.write() as s:
        for p in payloads:
            bus.publish(s, topic, p)
        s.commit()


def test_events_reach_subscribers_in_order_through_jetstream(db, nats_url, names):
    tag, created = names
    got = []
    name = f"t_order_{tag}"
    bus.subscribe(name, "demo.thing.*", lambda ev: got.append(ev.payload["n"]))
    created.append(name)
    bridge = _bridge(db, nats_url, tag)
    bridge.start()
    try:
        _publish(db, "demo.thing.happened", [{"n": i} for i in range(5)])
        _publish(db, "other.topic", [{"n": 99}])
        assert _wait(lambda: len(got) >= 5)
        time.sleep(0.3)
        assert got == [0, 1, 2, 3, 4]
    finally:
        bridge.stop()


def test_failing_subscriber_is_retried_then_dead_lettered(db, nats_url, names):
    tag, created = names
    calls = []
    name = f"t_fail_{tag}"

    def boom(ev):
        calls.append(ev.id)
        raise RuntimeError("handler down")

    bus.subscribe(name, "demo.fail", boom)
    created.append(name)
    bridge = _bridge(db, nats_url, tag)
    bridge.start()
    try:
        _publish(db, "demo.fail", [{"x": 1}])

        def parked():
            with db.read() as s:
                return s.query(BusDeadLetter).filter_by(subscriber=name).count() == 1

        assert _wait(parked, timeout=30)
        assert len(calls) == bus.MAX_ATTEMPTS
    finally:
        bridge.stop()


def test_relay_restart_does_not_deliver_twice(db, nats_url, names):
    tag, created = names
    got = []
    name = f"t_dedupe_{tag}"
    bus.subscribe(name, "demo.once", lambda ev: got.append(ev.id))
    created.append(name)
    bridge = _bridge(db, nats_url, tag, last=False)
    bridge.start()
    _publish(db, "demo.once", [{"i": i} for i in range(3)])
    assert _wait(lambda: len(got) == 3)
    bridge.stop()
    # a crash before the relay saved its cursor: the next relay publishes the same events again
    with db.write() as s:
        s.get(BusCursor, RELAY).last_id = 0
        s.commit()
    bridge = _bridge(db, nats_url, tag)
    bridge.start()
    try:
        _publish(db, "demo.once", [{"i": 3}])
        assert _wait(lambda: len(got) == 4)
        time.sleep(0.5)
        assert len(got) == len(set(got)) == 4
    finally:
        bridge.stop()
