"""Group commit: several requests in one transaction keep their own results and their own errors."""

from __future__ import annotations

import datetime as dt
import threading

from citybrain.errors import Unauthorized
from citybrain.iot import service
from citybrain.iot.worker import IngestWorker


def test_parts_in_one_transaction_keep_their_own_counts(db, register, frozen):
    gas, _ = register("gas", "应急管理")
    air, _ = register("air", "生态环境")
    ts = (frozen - dt.timedelta(seconds=30)).isoformat()
    with db.read() as s:
        info_gas = service._registry(s, service._state(s))[gas]
    a = service.Part([{"device": gas, "ts": ts, "values": {"lel": 30.0, "battery": 90}}], device=info_gas)
    b = service.Part([{"device": gas, "ts": ts, "values": {"lel": 31.0}},  # same reading as a's: duplicate
                      {"device": air, "ts": ts, "values": {"pm25": 12.0, "pm10": 9999}}])  # pm10 out of range
    with db.write() as s:
        service.ingest_parts(s, [a, b])
    assert (a.result.accepted, a.result.duplicates, a.result.rejected, a.result.alarms_raised) == (2, 0, 0, 1)
    assert (b.result.accepted, b.result.duplicates, b.result.rejected, b.result.alarms_raised) == (2, 1, 1, 0)
    assert b.result.rejections[0]["reason"] == "out_of_range"
    with db.read() as s:
        assert service.count_readings(s) == 3


def test_a_request_that_fails_its_checks_fails_alone(db, register, frozen):
    code, _ = register("noise", "生态环境")
    with db.read() as s:
        info = service._registry(s, service._state(s))[code]
    answers: dict[str, object] = {}
    done = threading.Event()

    def answer(name):
        def _done(part, exc):
            answers[name] = exc if exc is not None else part.result
            if len(answers) == 3:
                done.set()
        return _done

    def bad(_s):
        raise Unauthorized("x", "x")

    w = IngestWorker(db)
    ts = (frozen - dt.timedelta(seconds=5)).isoformat()
    w.submit(lambda _s: service.Part([{"ts": ts, "values": {"laeq": 50.0}}], device=info), answer("ok1"), 10)
    w.submit(bad, answer("bad"), 10)
    w.submit(lambda _s: service.Part([{"ts": ts, "values": {"laeq": 51.0}}], device=info), answer("ok2"), 10)
    assert done.wait(10)
    assert isinstance(answers["bad"], Unauthorized)
    assert answers["ok1"].accepted == 1 and answers["ok2"].accepted == 1
    assert answers["ok1"].duplicates + answers["ok2"].duplicates == 1  # the same reading twice: stored once
    with db.read() as s:
        assert service.count_readings(s) == 1
