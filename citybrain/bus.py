"""The event bus: publish/subscribe backed by a persisted outbox.

`publish(session, topic, payload)` writes the event in the caller's transaction, so an event exists if
and only if the change that caused it was committed. A dispatcher delivers events to subscribers in
order, keeping one cursor per subscriber in the database: a subscriber that fails is retried with
backoff (at-least-once; handlers must be idempotent) and, after `MAX_ATTEMPTS`, the event is parked in
`bus_dead_letter` with the error and the cursor moves on. A crash loses nothing: delivery resumes from
the stored cursors. Topics are dot-separated (`iot.alarm.raised`); patterns use `*` for one token and
`>` for the rest, as NATS subjects do, so a JetStream relay can sit behind the same interface.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    Text,
    bindparam,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from citybrain.db import Base, Database, JSONType, UTCDateTime, get_db, utcnow

log = logging.getLogger("citybrain.bus")

MAX_ATTEMPTS = 5
BATCH = 500
CURSOR_FLUSH_S = 1.0  # the background dispatcher stores its cursors at least this often while busy (and when idle)
WRITE_LOCK_KEY = 7349201  # PostgreSQL advisory lock shared with the audit chain
_LOCK_FLAG = "citybrain_write_lock"


def write_lock(session: Session) -> None:
    """Serialise this transaction's outbox and audit appends with other writers until it ends.

    On PostgreSQL, event ids come from a sequence: without this lock a transaction that took id 10 could
    commit after one that took id 11, and a dispatcher that had already moved its cursor to 11 would skip
    event 10 for good. SQLite writers are serial already (BEGIN IMMEDIATE). Taking it again is free.
    """
    if not session.info.get(_LOCK_FLAG) and session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"))
        session.info[_LOCK_FLAG] = True


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
@event.listens_for(Session, "after_soft_rollback")
def _lock_released(session: Session, *_args: Any) -> None:
    session.info.pop(_LOCK_FLAG, None)


class BusEvent(Base):
    __tablename__ = "bus_event"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    topic: Mapped[str] = mapped_column(String(200), index=True)
    payload: Mapped[dict] = mapped_column(JSONType)
    created_at: Mapped[Any] = mapped_column(UTCDateTime, default=utcnow)


class BusCursor(Base):
    __tablename__ = "bus_cursor"
    subscriber: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[Any] = mapped_column(UTCDateTime, default=utcnow)


class BusDeadLetter(Base):
    __tablename__ = "bus_dead_letter"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber: Mapped[str] = mapped_column(String(100), index=True)
    event_id: Mapped[int] = mapped_column(BigInteger)
    topic: Mapped[str] = mapped_column(String(200))
    error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[Any] = mapped_column(UTCDateTime, default=utcnow)


_CURSORS = select(BusCursor.subscriber, BusCursor.last_id, BusCursor.attempts, BusCursor.updated_at)
_HEAD = select(func.max(BusEvent.id))
_EVENTS = (select(BusEvent.id, BusEvent.topic, BusEvent.payload, BusEvent.created_at)
           .where(BusEvent.id > bindparam("low"), BusEvent.id <= bindparam("head"))
           .order_by(BusEvent.id).limit(bindparam("n")))
_PUBLISH = insert(BusEvent.__table__)
_ADVANCE = (update(BusCursor).where(BusCursor.subscriber == bindparam("name"))
            .values(last_id=bindparam("last"), attempts=0, last_error=None, updated_at=bindparam("at")))


@dataclass(frozen=True)
class Event:
    """One delivered event."""

    id: int
    topic: str
    payload: dict
    created_at: Any


Handler = Callable[[Event], None]


def topic_matches(pattern: str, topic: str) -> bool:
    """True if a NATS-style pattern (`*` one token, `>` the rest) matches the topic."""
    p, t = pattern.split("."), topic.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(t) > i
        if i >= len(t) or (token != "*" and token != t[i]):
            return False
    return len(p) == len(t)


@dataclass
class Subscription:
    name: str
    patterns: tuple[str, ...]
    handler: Handler


_subscriptions: dict[str, Subscription] = {}
_listeners: list[Callable[[Event], None]] = []


def subscribe(name: str, patterns: str | tuple[str, ...], handler: Handler) -> None:
    """Register a durable subscriber (its cursor is stored under `name`)."""
    if isinstance(patterns, str):
        patterns = (patterns,)
    _subscriptions[name] = Subscription(name, tuple(patterns), handler)


def listen(callback: Callable[[Event], None]) -> Callable[[], None]:
    """Register a non-durable listener called, from the dispatcher's thread, for every event committed from
    now on (live push; no history is replayed, nothing is retried); returns an unsubscribe function."""
    d = dispatcher()
    if d._last_seen is None:
        d.prime_listeners()
    _listeners.append(callback)

    def unsubscribe() -> None:
        if callback in _listeners:
            _listeners.remove(callback)

    return unsubscribe


def publish(session: Session, topic: str, payload: dict[str, Any]) -> None:
    """Add an event to the caller's transaction; it is delivered after the commit."""
    write_lock(session)
    session.connection().execute(_PUBLISH, {"topic": topic, "payload": payload, "created_at": utcnow()})
    session.info["bus_published"] = True


def publish_many(session: Session, topic: str, payloads: list[dict[str, Any]]) -> None:
    """Add many events of one topic to the caller's transaction."""
    if payloads:
        write_lock(session)
        now = utcnow()
        session.execute(insert(BusEvent), [{"topic": topic, "payload": p, "created_at": now} for p in payloads])
        session.info["bus_published"] = True


class Dispatcher:
    """Delivers stored events to subscribers, in a background thread or on demand (`drain`)."""

    def __init__(self, db: Database):
        self.db = db
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_seen: int | None = None  # listeners' position; None until primed
        self.deliver = True  # False: only live listeners are fed (the other worker processes of a server)
        self._pos: dict[str, int] = {}  # subscriber -> last event handled (ahead of the stored cursor until flushed)
        self._dirty: dict[str, int] = {}  # cursors moved since the last flush
        self._known: set[str] = set()  # subscribers whose cursor row exists
        self._flushed_at = time.monotonic()
        self._moved = False

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="citybrain-bus", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if not self._lock.acquire(timeout=10):  # a round still running (a stuck handler): leave the cursors
            log.warning("bus dispatcher busy at stop; cursors not stored (events will be delivered again)")
            return
        try:
            self.flush()
        except Exception:
            log.exception("bus cursor flush failed")
        finally:
            self._lock.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.drain(max_rounds=50, flush=False)
            except Exception:  # keep the dispatcher alive; the error is logged
                log.exception("bus dispatch failed")
            if not self._wake.wait(timeout=0.5) or time.monotonic() - self._flushed_at >= CURSOR_FLUSH_S:
                try:  # idle, or the cursors have not been stored for a while
                    with self._lock:
                        self.flush()
                except Exception:
                    log.exception("bus cursor flush failed")
            self._wake.clear()

    def drain(self, max_rounds: int = 1000, flush: bool = True) -> int:
        """Deliver pending events until none are left (or max_rounds batches); return how many were handled.
        The cursors are stored at the end (`flush`); the background thread stores them at most every
        CURSOR_FLUSH_S while busy (a crash delivers those events again: at-least-once)."""
        handled = 0
        with self._lock:
            for _ in range(max_rounds):
                self._moved = False
                n = self._round()
                handled += n
                if n == 0 and not self._moved:
                    break
            if flush:
                self.flush()
        return handled

    def _round(self) -> int:
        """One delivery round: cursors, head and the pending events in ONE read (Core, no ORM objects); the
        live listeners and every subscriber are fed from those rows; cursors move in memory (`_flush`)."""
        handled = 0
        subs = list(_subscriptions.values()) if self.deliver else []
        listening = bool(_listeners) and self._last_seen is not None
        todo: list[tuple[Subscription, int, bool]] = []
        rows: list[Any] = []
        with self.db.read() as s:
            conn = s.connection()
            cursors = {r.subscriber: r for r in conn.execute(_CURSORS)} if subs else {}
            head = conn.execute(_HEAD).scalar() or 0
            missing = [sub.name for sub in subs if sub.name not in cursors and sub.name not in self._known]
            for sub in subs:
                cur = cursors.get(sub.name)
                last = max(cur.last_id if cur else 0, self._pos.get(sub.name, 0))
                if last >= head:
                    continue
                if cur is not None and cur.attempts and cur.updated_at and not self._due(cur):
                    continue
                todo.append((sub, last, bool(cur is not None and cur.attempts)))
            low = min([last for _sub, last, _retry in todo]
                      + ([self._last_seen] if listening and self._last_seen < head else []),  # type: ignore[list-item]
                      default=None)
            if low is not None:
                rows = conn.execute(_EVENTS, {"low": low, "head": head, "n": BATCH}).all()
        for name in missing:
            self._initial_cursor(name)
        end = (rows[-1].id if len(rows) == BATCH else head) if rows else head
        if listening and self._last_seen is not None and self._last_seen < head:
            if low is not None and low <= self._last_seen < end:  # the rows read cover the listeners' next events
                self._feed_listeners([r for r in rows if r.id > self._last_seen])
                self._last_seen = end
            if self._last_seen < head:
                self._notify_listeners(head)
            self._moved = True  # another round, for a subscriber whose events lay beyond the rows read
        for sub, last, retry in todo:
            handled += self._deliver(sub, [r for r in rows if r.id > last], end, retry)
        return handled

    def _initial_cursor(self, name: str) -> None:
        with self.db.write() as s:
            s.execute(insert(BusCursor).values(subscriber=name, last_id=0, attempts=0, updated_at=utcnow()))
            s.commit()
        self._known.add(name)

    @staticmethod
    def _due(cur: Any) -> bool:
        backoff = min(60.0, 0.2 * 2 ** (cur.attempts - 1))
        return (utcnow() - cur.updated_at).total_seconds() >= backoff

    def _deliver(self, sub: Subscription, rows: list[Any], end: int, retry: bool = False) -> int:
        """Hand the subscriber its events among `rows` (all events after its cursor up to `end`), in order;
        `retry`: its stored cursor counts failed attempts, stored again at once once the events went through."""
        delivered = 0
        for row in rows:
            if any(topic_matches(p, row.topic) for p in sub.patterns):
                try:
                    sub.handler(Event(row.id, row.topic, row.payload, row.created_at))
                except Exception as exc:
                    # a dead-lettered event is settled too: count it, so drain() carries on past it
                    self._dirty.pop(sub.name, None)
                    return delivered + (1 if self._failed(sub, row, exc) else 0)
                delivered += 1
            self._pos[sub.name] = row.id
            self._dirty[sub.name] = row.id
        if rows and end > self._pos.get(sub.name, 0):
            self._pos[sub.name] = self._dirty[sub.name] = end
        if rows:
            self._moved = True
            if retry:
                self.flush()
        return delivered

    def flush(self) -> None:
        """Store the cursors moved in memory since the last flush, in one write transaction."""
        dirty, self._dirty = self._dirty, {}
        self._flushed_at = time.monotonic()
        if not dirty:
            return
        with self.db.write() as s:
            s.connection().execute(_ADVANCE, [{"name": k, "last": v, "at": utcnow()} for k, v in dirty.items()])
            s.commit()

    def _failed(self, sub: Subscription, row: Any, exc: Exception) -> bool:
        """Record a failed delivery; True if the event went to the dead letters."""
        log.warning("subscriber %s failed on event %s (%s): %s", sub.name, row.id, row.topic, exc)
        with self.db.write() as s:
            cur = s.get(BusCursor, sub.name)
            attempts = (cur.attempts if cur else 0) + 1
            if attempts >= MAX_ATTEMPTS:
                s.add(BusDeadLetter(subscriber=sub.name, event_id=row.id, topic=row.topic, error=repr(exc)[:4000]))
                s.execute(
                    update(BusCursor)
                    .where(BusCursor.subscriber == sub.name)
                    .values(last_id=row.id, attempts=0, last_error=repr(exc)[:4000], updated_at=utcnow())
                )
            else:
                s.execute(
                    update(BusCursor)
                    .where(BusCursor.subscriber == sub.name)
                    .values(last_id=row.id - 1, attempts=attempts, last_error=repr(exc)[:4000], updated_at=utcnow())
                )
            s.commit()
        self._pos[sub.name] = row.id if attempts >= MAX_ATTEMPTS else row.id - 1
        return attempts >= MAX_ATTEMPTS

    def _notify_listeners(self, head: int) -> None:
        while self._last_seen is not None and self._last_seen < head:
            with self.db.read() as s:
                rows = s.execute(
                    select(BusEvent.id, BusEvent.topic, BusEvent.payload, BusEvent.created_at)
                    .where(BusEvent.id > self._last_seen, BusEvent.id <= head)
                    .order_by(BusEvent.id)
                    .limit(5000)
                ).all()
            self._feed_listeners(rows)
            self._last_seen = rows[-1].id if rows else head

    @staticmethod
    def _feed_listeners(rows: list[Any]) -> None:
        for row in rows:
            for cb in list(_listeners):
                try:
                    cb(Event(row.id, row.topic, row.payload, row.created_at))
                except Exception:
                    log.exception("bus listener failed")

    def prime_listeners(self) -> None:
        """Start live listeners from the current head (they do not replay history)."""
        with self.db.read() as s:
            self._last_seen = s.scalar(select(BusEvent.id).order_by(BusEvent.id.desc()).limit(1)) or 0

    def purge(self, older_than_days: int = 30) -> int:
        """Delete delivered events older than the given age; return how many."""
        import datetime as _dt

        with self.db.write() as s:
            low = s.scalar(select(BusCursor.last_id).order_by(BusCursor.last_id).limit(1))
            if low is None:
                return 0
            if self._last_seen is not None:
                low = min(low, self._last_seen)
            # the newest event always stays: SQLite would otherwise hand out its id again to the next event,
            # and every cursor already past it would skip that event
            newest = s.scalar(select(func.max(BusEvent.id))) or 0
            cutoff = utcnow() - _dt.timedelta(days=older_than_days)
            res = s.execute(
                delete(BusEvent).where(BusEvent.id <= low, BusEvent.id < newest, BusEvent.created_at < cutoff)
            )
            s.commit()
            return res.rowcount or 0


_dispatcher: Dispatcher | None = None
_background = threading.Event()


def set_background(on: bool) -> None:
    """Record whether this process serves with background work on (the app's lifespan sets it)."""
    if on:
        _background.set()
    else:
        _background.clear()


def background_on() -> bool:
    """True while a served app runs its background work (either bus backend); False in CLI jobs and tests."""
    return _background.is_set()


def dispatcher() -> Dispatcher:
    """The process's dispatcher for the current database."""
    global _dispatcher
    db = get_db()
    if _dispatcher is None or _dispatcher.db is not db:
        if _dispatcher is not None:
            _dispatcher.stop()
        _dispatcher = Dispatcher(db)
    return _dispatcher


def drain() -> int:
    """Deliver every pending event now, in this thread (tests, CLI jobs)."""
    return dispatcher().drain()


def reset() -> None:
    """Stop the dispatcher (tests switch databases)."""
    global _dispatcher
    if _dispatcher is not None:
        _dispatcher.stop()
    _dispatcher = None


def wait_idle(timeout: float = 5.0) -> None:
    """Wait until the running dispatcher has nothing pending (tests of the background thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dispatcher().drain(max_rounds=1) == 0:
            return


_wakers: list[Callable[[], None]] = []


def add_waker(fn: Callable[[], None]) -> Callable[[], None]:
    """Call `fn` after every commit that published events (the NATS relay uses this); returns a remover."""
    _wakers.append(fn)
    return lambda: _wakers.remove(fn) if fn in _wakers else None


@event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    if session.info.pop("bus_published", False):
        if _dispatcher is not None:
            _dispatcher.wake()
        for fn in list(_wakers):
            fn()
