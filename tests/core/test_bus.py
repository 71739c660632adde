"""The outbox bus: delivery after commit, order, patterns, retries, dead letters, crash recovery, listeners."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import func, select

from citybrain import bus, clock
from citybrain.bus import BusCursor, BusDeadLetter, BusEvent, Dispatcher, topic_matches

T0 = dt.datetime(2026, 6, 1, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def subs():
    """Subscriptions registered by a test are removed afterwards."""
    before = dict(bus._subscriptions)
    yield
    bus._subscriptions.clear()
    bus._subscriptions.update(before)
    bus._listeners.clear()


def _publish(db, topic, **payload):
    with db.write() as s:
        bus.publish(s, topic, payload)
        s.commit()


@pytest.mark.parametrize("pattern,topic,ok", [
    ("iot.alarm.raised", "iot.alarm.raised", True),
    ("iot.alarm.*", "iot.alarm.raised", True),
    ("iot.*", "iot.alarm.raised", False),
    ("iot.>", "iot.alarm.raised", True),
    ("iot.>", "iot", False),
    (">", "cases.case.created", True),
    ("*.case.*", "cases.case.created", True),
    ("cases.case", "cases.case.created", False),
    ("cases.case.created.x", "cases.case.created", False),
    ("iot.alarm.raised", "iot.alarm.cleared", False),
])
def test_pattern_matching(pattern, topic, ok):
    assert topic_matches(pattern, topic) is ok


def test_events_are_delivered_after_commit_in_order(db, subs):
    got = []
    bus.subscribe("t.order", "t.>", lambda e: got.append((e.topic, e.payload["n"])))
    for n in range(5):
        _publish(db, "t.x" if n % 2 else "t.y", n=n)
    with db.write() as s:  # rolled back: never delivered
        bus.publish(s, "t.x", {"n": 99})
        s.rollback()
    _publish(db, "other.z", n=100)  # not matched
    assert bus.drain() == 5
    assert got == [("t.y", 0), ("t.x", 1), ("t.y", 2), ("t.x", 3), ("t.y", 4)]
    assert bus.drain() == 0  # delivered once


def test_publish_many_and_batches_beyond_one_round(db, subs, monkeypatch):
    monkeypatch.setattr(bus, "BATCH", 7)
    got = []
    bus.subscribe("t.many", "t.many", lambda e: got.append(e.payload["n"]))
    with db.write() as s:
        bus.publish_many(s, "t.many", [{"n": i} for i in range(30)])
        s.commit()
    bus.drain()
    assert got == list(range(30))


def test_a_failing_subscriber_is_retried_then_dead_lettered(db, subs):
    clock.freeze(T0)
    calls, good = [], []

    def flaky(e):
        calls.append(e.payload["n"])
        if e.payload["n"] == 1:
            raise RuntimeError("downstream unavailable")

    bus.subscribe("t.flaky", "t.>", flaky)
    bus.subscribe("t.good", "t.>", lambda e: good.append(e.payload["n"]))
    for n in range(3):
        _publish(db, "t.e", n=n)
    bus.drain()
    assert calls == [0, 1] and good == [0, 1, 2]  # one subscriber's failure does not hold up another
    bus.drain()
    assert calls == [0, 1]  # backing off: no retry before its time
    for _ in range(bus.MAX_ATTEMPTS - 1):
        clock.advance(dt.timedelta(seconds=61))
        bus.drain()
    assert calls == [0] + [1] * bus.MAX_ATTEMPTS + [2]  # after the last attempt the event is parked, the rest flows
    with db.read() as s:
        [dead] = s.scalars(select(BusDeadLetter)).all()
        cur = s.get(BusCursor, "t.flaky")
    assert dead.subscriber == "t.flaky" and dead.topic == "t.e" and "downstream unavailable" in dead.error
    assert cur.attempts == 0 and cur.last_id >= dead.event_id


def test_a_subscriber_that_recovers_gets_the_event(db, subs):
    clock.freeze(T0)
    state = {"fail": 2, "got": []}

    def recovering(e):
        if state["fail"]:
            state["fail"] -= 1
            raise ConnectionError("later")
        state["got"].append(e.payload["n"])

    bus.subscribe("t.rec", "t.>", recovering)
    _publish(db, "t.e", n=7)
    for _ in range(3):
        bus.drain()
        clock.advance(dt.timedelta(seconds=5))
    assert state["got"] == [7]
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(BusDeadLetter)) == 0


def test_a_crash_loses_nothing_delivery_resumes_from_the_cursor(db, subs):
    got = []
    bus.subscribe("t.crash", "t.>", lambda e: got.append(e.payload["n"]))
    for n in range(3):
        _publish(db, "t.e", n=n)
    Dispatcher(db).drain()
    assert got == [0, 1, 2]
    for n in range(3, 6):  # published while "down"
        _publish(db, "t.e", n=n)
    # the process dies: a new dispatcher (and a new registration) starts from the stored cursor
    bus.reset()
    bus._subscriptions.clear()
    bus.subscribe("t.crash", "t.>", lambda e: got.append(e.payload["n"]))
    Dispatcher(db).drain()
    assert got == [0, 1, 2, 3, 4, 5]


def test_a_crash_mid_batch_redelivers_only_unacknowledged_events(db, subs):
    got = []

    def dies_at_two(e):
        if e.payload["n"] == 2 and not got.count(2) and len(got) < 3:
            got.append("crash")
            raise SystemExit  # not an Exception: the process would die here
        got.append(e.payload["n"])

    bus.subscribe("t.die", "t.>", dies_at_two)
    for n in range(4):
        _publish(db, "t.e", n=n)
    with pytest.raises(SystemExit):
        Dispatcher(db).drain()
    Dispatcher(db).drain()  # restarted: at-least-once, from the last stored cursor
    # at-least-once: the batch in flight when the process died is delivered again (handlers are idempotent)
    assert got == [0, 1, "crash", 0, 1, 2, 3]


def test_background_thread_delivers(db, subs):
    got = []
    bus.subscribe("t.bg", "t.>", lambda e: got.append(e.payload["n"]))
    d = bus.dispatcher()
    d.start()
    try:
        _publish(db, "t.e", n=1)
        bus.wait_idle()
        deadline = dt.datetime.now() + dt.timedelta(seconds=5)
        while not got and dt.datetime.now() < deadline:
            bus.wait_idle(0.1)
    finally:
        d.stop()
    assert got == [1]


def test_listeners_get_only_new_events_and_never_history(db, subs):
    _publish(db, "iot.old", n=0)
    seen = []
    stop = bus.listen(lambda e: seen.append(e.payload["n"]))
    _publish(db, "iot.new", n=1)
    _publish(db, "cases.new", n=2)
    bus.drain()
    assert seen == [1, 2]
    stop()
    _publish(db, "iot.new", n=3)
    bus.drain()
    assert seen == [1, 2]


def test_a_failing_listener_does_not_stop_others(db, subs):
    seen = []
    bus.listen(lambda e: 1 / 0)
    bus.listen(lambda e: seen.append(e.id))
    _publish(db, "iot.x", n=1)
    bus.drain()
    assert len(seen) == 1


def test_purge_keeps_undelivered_and_the_newest_event(db, subs):
    clock.freeze(T0)
    got = []
    bus.subscribe("t.p", "t.>", lambda e: got.append(e.payload["n"]))
    for n in range(4):
        _publish(db, "t.e", n=n)
    bus.drain()
    clock.advance(dt.timedelta(days=31))
    d = bus.dispatcher()
    assert d.purge(older_than_days=30) == 3
    with db.read() as s:
        newest = s.scalar(select(func.max(BusEvent.id)))
    _publish(db, "t.e", n=4)  # must get a fresh id, above every cursor
    with db.read() as s:
        assert s.scalar(select(func.max(BusEvent.id))) == newest + 1
    bus.drain()
    assert got == [0, 1, 2, 3, 4]


def test_an_event_committed_late_is_not_skipped(db, subs):
    """Transaction A takes an event id, B takes a later one; B must not be delivered before A commits, or the
    cursor would pass A's id for good (PostgreSQL sequences; SQLite writers are serial anyway)."""
    import threading

    got = []
    bus.subscribe("t.late", "t.>", lambda e: got.append(e.payload["who"]))
    bus.drain()  # the cursor exists before A starts
    a = db.write_factory()
    bus.publish(a, "t.e", {"who": "A"})
    a.flush()
    b_done = threading.Event()

    def publish_b():
        _publish(db, "t.e", who="B")
        b_done.set()

    t = threading.Thread(target=publish_b)
    t.start()
    b_done.wait(0.5)  # B waits for A's transaction (returns at once if it does not, and the test then fails)
    bus.drain()
    a.commit()
    a.close()
    t.join(10)
    bus.drain()
    assert got == ["A", "B"]


def test_background_cursors_are_stored_when_idle_and_on_stop(db, subs):
    got = []
    bus.subscribe("t.lazy", "t.>", lambda e: got.append(e.payload["n"]))
    d = Dispatcher(db)
    for n in range(3):
        _publish(db, "t.e", n=n)
    d.drain(flush=False)  # as the background thread while busy: the cursor moves in memory only
    assert got == [0, 1, 2]
    with db.read() as s:
        stored = s.get(BusCursor, "t.lazy").last_id
        newest = s.scalar(select(func.max(BusEvent.id)))
    assert stored < newest
    d.drain()  # nothing new, but the explicit drain stores the cursor
    assert got == [0, 1, 2]
    with db.read() as s:
        assert s.get(BusCursor, "t.lazy").last_id == newest
    _publish(db, "t.e", n=3)
    d.start()
    try:
        deadline = dt.datetime.now() + dt.timedelta(seconds=5)
        while len(got) < 4 and dt.datetime.now() < deadline:
            d.wake()
            time.sleep(0.05)
    finally:
        d.stop()  # stores the cursor
    with db.read() as s:
        assert s.get(BusCursor, "t.lazy").last_id == s.scalar(select(func.max(BusEvent.id)))
    assert got == [0, 1, 2, 3]


def test_a_crash_before_the_cursor_is_stored_redelivers(db, subs):
    got = []
    bus.subscribe("t.unsaved", "t.>", lambda e: got.append(e.payload["n"]))
    for n in range(2):
        _publish(db, "t.e", n=n)
    Dispatcher(db).drain(flush=False)  # the process dies before the cursor was stored
    Dispatcher(db).drain()
    assert got == [0, 1, 0, 1]  # at-least-once: delivered again, nothing lost
    Dispatcher(db).drain()
    assert got == [0, 1, 0, 1]


def test_listeners_and_a_lagging_subscriber_share_one_read(db, subs, monkeypatch):
    monkeypatch.setattr(bus, "BATCH", 4)
    seen, got = [], []
    for n in range(10):  # published before the subscriber existed: it starts from the beginning
        _publish(db, "t.old", n=n)
    bus.listen(lambda e: seen.append(e.payload["n"]))  # listeners start at the head
    bus.subscribe("t.lag", "t.>", lambda e: got.append(e.payload["n"]))
    for n in range(10, 13):
        _publish(db, "t.new", n=n)
    bus.drain()
    assert got == list(range(13))
    assert seen == [10, 11, 12]
    _publish(db, "t.new", n=13)
    bus.drain()
    assert got == list(range(14)) and seen == [10, 11, 12, 13]
