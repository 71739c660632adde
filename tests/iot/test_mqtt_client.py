"""The server's MQTT client without a broker: PUBACKs only after the batch committed."""

from __future__ import annotations

import socket
import time

from citybrain.iot.mqtt import Subscriber


def test_pubacks_go_out_only_after_the_batch_committed():
    """A batch is acknowledged (its PUBACKs in one write) only once `process` returned, i.e. after its commit;
    a batch whose processing failed is not acknowledged until a later attempt succeeds."""
    ours, broker = socket.socketpair()
    broker.setblocking(False)
    sub = Subscriber(None, "mqtt://127.0.0.1:1/t", linger_s=0.01)  # type: ignore[arg-type]
    sub.sock, sub.gen = ours, 1
    seen: list[bytes] = []

    def process(batch):
        try:
            seen.append(broker.recv(100))  # anything acknowledged before this batch's commit?
        except BlockingIOError:
            seen.append(b"")
        if len(seen) == 1:
            raise RuntimeError("the commit failed")

    sub.process = process  # type: ignore[method-assign]
    sub.queue.extend([("t/devices/d1/telemetry", b"{}", 7, 1), ("t/devices/d2/telemetry", b"{}", 8, 1),
                      ("t/devices/d3/telemetry", b"{}", 9, 0)])  # an older connection's message: not acked here
    sub.worker.start()
    deadline = time.monotonic() + 10
    while sub.processed < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sub.processed == 3
    assert seen == [b"", b""]  # nothing was acknowledged during the failed attempt or before the commit
    assert broker.recv(100) == b"\x40\x02\x00\x07\x40\x02\x00\x08"  # both PUBACKs in one write, after it
    sub.stopping.set()
    sub.wake.set()
    sub.worker.join(5)
    ours.close()
    broker.close()
