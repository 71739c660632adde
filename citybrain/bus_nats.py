"""The NATS JetStream backend of the bus (`CITYBRAIN_BUS_BACKEND=nats`), for several instances.

The outbox stays the source of truth: an event exists once its transaction committed. A relay copies the
outbox, in order, to the JetStream stream (subjects `<prefix>.<topic>`), using the event id as
`Nats-Msg-Id` so a relay that crashed between publishing and saving its cursor is de-duplicated by the
server. Each durable subscriber becomes a durable pull consumer shared by every instance (work is spread,
each event handled once per subscriber), with `max_ack_pending=1` to keep the order, explicit acks, and
redelivery with backoff; after `bus.MAX_ATTEMPTS` deliveries the event is parked in `bus_dead_letter`.
Live listeners (SSE) get every event through an ordered ephemeral consumer in each instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

import orjson
from sqlalchemy import insert, select, update

from citybrain import bus
from citybrain.bus import BusCursor, BusDeadLetter, BusEvent, Event
from citybrain.db import Database, utcnow

log = logging.getLogger("citybrain.bus.nats")

RELAY = "__nats_relay__"


def subject(prefix: str, topic: str) -> str:
    """The JetStream subject of a topic or pattern."""
    return f"{prefix}.{topic}"


class NatsBridge:
    """Relays the outbox into JetStream and runs this instance's consumers."""

    def __init__(self, db: Database, url: str, *, stream: str = "CITYBRAIN", prefix: str = "citybrain",
                 fetch_timeout: float = 1.0, delete_stream_on_stop: bool = False):
        self.db, self.url, self.stream, self.prefix = db, url, stream, prefix
        self.delete_stream_on_stop = delete_stream_on_stop
        self.fetch_timeout = fetch_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._wake: asyncio.Event | None = None
        self.error: BaseException | None = None

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Connect and start relaying and consuming in a background thread."""
        self._remove_waker = bus.add_waker(self.wake)
        self._thread = threading.Thread(target=self._run, name="citybrain-nats", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"NATS bridge did not start: {self.error!r}")
        if self.error:
            raise RuntimeError(f"NATS bridge failed: {self.error!r}")

    def stop(self) -> None:
        """Stop the background thread."""
        self._stop.set()
        self.wake()
        if getattr(self, "_remove_waker", None):
            self._remove_waker()
        if self._thread:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        """Tell the relay that new events were committed."""
        if self._loop and self._wake:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported through start() or the log
            self.error = exc
            self._ready.set()
            log.exception("NATS bridge stopped")
        finally:
            self._loop.close()

    async def _main(self) -> None:
        import nats
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig

        nc = await nats.connect(self.url, max_reconnect_attempts=-1, name="citybrain")
        js = nc.jetstream()
        config = StreamConfig(name=self.stream, subjects=[f"{self.prefix}.>"], storage=StorageType.FILE,
                              retention=RetentionPolicy.LIMITS, duplicate_window=3600.0, max_age=7 * 86400.0)
        try:
            await js.add_stream(config)
        except Exception:
            await js.update_stream(config)
        self._wake = asyncio.Event()
        tasks = [asyncio.create_task(self._relay(js))]
        for sub in list(bus._subscriptions.values()):
            for i, pattern in enumerate(sub.patterns):
                tasks.append(asyncio.create_task(self._consume(js, sub, pattern, i)))
        live = await self._listen(js)
        self._ready.set()
        while not self._stop.is_set():
            await asyncio.sleep(0.1)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await live.unsubscribe()
        if self.delete_stream_on_stop:
            await js.delete_stream(self.stream)
        await nc.drain()

    # --- relay: outbox -> JetStream ----------------------------------------------------------------------

    def _relay_cursor(self) -> int:
        with self.db.write() as s:
            cur = s.get(BusCursor, RELAY)
            if cur is None:
                s.execute(insert(BusCursor).values(subscriber=RELAY, last_id=0, attempts=0, updated_at=utcnow()))
                s.commit()
                return 0
            return cur.last_id

    def _pending(self, after: int) -> list[Any]:
        with self.db.read() as s:
            return s.execute(select(BusEvent.id, BusEvent.topic, BusEvent.payload, BusEvent.created_at)
                             .where(BusEvent.id > after).order_by(BusEvent.id).limit(500)).all()

    def _save_relay(self, last_id: int) -> None:
        with self.db.write() as s:
            s.execute(update(BusCursor).where(BusCursor.subscriber == RELAY)
                      .values(last_id=last_id, updated_at=utcnow()))
            s.commit()

    async def _relay(self, js: Any) -> None:
        loop = asyncio.get_running_loop()
        last = await loop.run_in_executor(None, self._relay_cursor)
        while True:
            rows = await loop.run_in_executor(None, self._pending, last)
            for row in rows:
                body = orjson.dumps({"id": row.id, "topic": row.topic, "payload": row.payload,
                                     "created_at": row.created_at.isoformat()}, default=str)
                await js.publish(subject(self.prefix, row.topic), body, headers={"Nats-Msg-Id": str(row.id)})
                last = row.id
            if rows:
                await loop.run_in_executor(None, self._save_relay, last)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.5)
            self._wake.clear()

    # --- consumers: JetStream -> handlers ------------------------------------------------------------------

    @staticmethod
    def _event(data: bytes) -> Event:
        d = orjson.loads(data)
        return Event(d["id"], d["topic"], d["payload"], d["created_at"])

    def _dead_letter(self, name: str, ev: Event, error: str) -> None:
        with self.db.write() as s:
            s.execute(insert(BusDeadLetter).values(subscriber=name, event_id=ev.id, topic=ev.topic, error=error[:4000],
                                                   created_at=utcnow()))
            s.commit()

    async def _consume(self, js: Any, sub: bus.Subscription, pattern: str, index: int) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        durable = f"{sub.name}_{index}".replace(".", "_")
        cfg = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1,
                             max_deliver=bus.MAX_ATTEMPTS + 1, ack_wait=60, deliver_policy=DeliverPolicy.ALL)
        psub = await js.pull_subscribe(subject(self.prefix, pattern), durable=durable, config=cfg)
        loop = asyncio.get_running_loop()
        while True:
            try:
                msgs = await psub.fetch(1, timeout=self.fetch_timeout)
            except NatsTimeout:
                continue
            for msg in msgs:
                ev = self._event(msg.data)
                try:
                    await loop.run_in_executor(None, sub.handler, ev)
                except Exception as exc:
                    attempts = msg.metadata.num_delivered
                    log.warning("subscriber %s failed on event %s (attempt %s): %s", sub.name, ev.id, attempts, exc)
                    if attempts >= bus.MAX_ATTEMPTS:
                        await loop.run_in_executor(None, self._dead_letter, sub.name, ev, repr(exc))
                        await msg.term()
                    else:
                        await msg.nak(delay=min(60.0, 0.2 * 2 ** (attempts - 1)))
                    continue
                await msg.ack()

    async def _listen(self, js: Any) -> Any:
        from nats.js.api import DeliverPolicy

        async def on_msg(msg: Any) -> None:
            ev = self._event(msg.data)
            for cb in list(bus._listeners):
                try:
                    cb(ev)
                except Exception:
                    log.exception("bus listener failed")

        return await js.subscribe(subject(self.prefix, ">"), cb=on_msg, ordered_consumer=True,
                                  deliver_policy=DeliverPolicy.NEW)
