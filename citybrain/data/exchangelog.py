"""The exchange log writer (group commit) and the per-key rate limit.

Every exchange call is logged before its data leaves: the caller hands its entry to the writer and waits
until the entry is committed. The writer commits whatever entries have queued up meanwhile in one
transaction (log rows + daily statistics upserts), so logging costs one commit per batch of concurrent
calls, not one per call, and no answered call is ever missing from the log.

The rate limit is a token bucket per key kept in the database (`data_rate_bucket`) and charged in that
same transaction, so it holds across every server process (and every instance on PostgreSQL): a call whose
bucket is empty is refused with 429 there, before its data leaves, and is not logged. A process that saw a
refusal then refuses that key at once until its Retry-After has passed, without querying.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import os
import queue
import threading
import time
from collections import defaultdict
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from citybrain.db import Database
from citybrain.errors import Problem, TooManyRequests

log = logging.getLogger("citybrain.data.exchange")

LOG_GROUPS = Counter("citybrain_data_exchange_log_groups_total", "Exchange log transactions (group commits)")
LOG_ENTRIES = Counter("citybrain_data_exchange_log_entries_total", "Exchange calls handed to the log writer")
LOG_COMMIT = Histogram("citybrain_data_exchange_log_commit_seconds", "One exchange log transaction, lock wait included",
                       buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))


def local_day(at: dt.datetime) -> dt.date:
    """The calendar day in China Standard Time (UTC+8) of a UTC timestamp."""
    return (at + dt.timedelta(hours=8)).date()


_LOG_COLS = ("at", "consumer_org_id", "provider_org_id", "resource_id", "actor", "key_id", "op", "fields",
             "unmasked", "records", "request_id")


def write_entries(conn: Connection | Session, entries: list[dict[str, Any]]) -> None:
    """Insert log rows and add them to the daily statistics, in the caller's transaction."""
    if isinstance(conn, Session):
        conn = conn.connection()
    _write_rows(conn.connection.dbapi_connection.cursor(), conn.dialect.name == "sqlite", entries)


def _write_rows(cur: Any, sqlite: bool, entries: list[dict[str, Any]]) -> None:
    """Log rows + daily statistics through a driver cursor (this runs once per group of exchange calls)."""
    if not entries:
        return
    ph = "?" if sqlite else "%s"

    def stamp(at: dt.datetime):
        return at.astimezone(dt.UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else at

    cur.executemany(
        f"INSERT INTO data_exchange_log ({', '.join(_LOG_COLS)}) VALUES ({', '.join([ph] * len(_LOG_COLS))})",
        [tuple(stamp(e["at"]) if c == "at" else e[c] for c in _LOG_COLS) for e in entries])
    sums: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for e in entries:
        k = (local_day(e["at"]), e["consumer_org_id"] or 0, e["resource_id"])
        acc = sums[k]
        acc[0] += 1
        acc[1] += e["records"]
        acc[2] = e["provider_org_id"] or 0
    sql = (f"INSERT INTO data_exchange_daily (day, consumer_org_id, resource_id, provider_org_id, calls, records) "
           f"VALUES ({', '.join([ph] * 6)}) ON CONFLICT (day, consumer_org_id, resource_id) DO UPDATE SET "
           f"calls = data_exchange_daily.calls + excluded.calls, "
           f"records = data_exchange_daily.records + excluded.records")
    # sorted keys: concurrent writers lock statistics rows in the same order (no deadlocks on PostgreSQL)
    cur.executemany(sql, [(k[0].isoformat() if sqlite else k[0], k[1], k[2], v[2], v[0], v[1])
                          for k, v in sorted(sums.items())])


class _Pending:
    __slots__ = ("db", "entry", "limit", "done", "error", "retry_after", "notify")

    def __init__(self, db: Database, entry: dict[str, Any], limit: RateLimit, notify: Any):
        self.db, self.entry, self.limit, self.notify = db, entry, limit, notify
        self.done, self.error = False, None
        self.retry_after: float | None = None  # set when the rate limit refused the call


def charge_buckets(cur: Any, sqlite: bool, pending: list[_Pending], limit: RateLimit) -> None:
    """Take one token per call from its caller's shared bucket (in the log transaction, through a driver
    cursor); calls finding the bucket empty get `retry_after` and are not logged."""
    subjects = sorted({p.entry["subject"] for p in pending if p.entry.get("subject")})
    if not subjects:
        return
    ph = "?" if sqlite else "%s"
    if not sqlite:  # PostgreSQL: make sure each row exists, then lock them (SQLite: BEGIN IMMEDIATE did)
        first = min(p.entry["at"] for p in pending).timestamp()
        cur.executemany("INSERT INTO data_rate_bucket (subject, tokens, at_s) VALUES (%s, %s, %s) "
                        "ON CONFLICT (subject) DO NOTHING", [(s, limit.burst, first) for s in subjects])
    cur.execute(f"SELECT subject, tokens, at_s FROM data_rate_bucket WHERE subject IN "
                f"({', '.join([ph] * len(subjects))}) ORDER BY subject{'' if sqlite else ' FOR UPDATE'}",
                tuple(subjects))
    state = {r[0]: [float(r[1]), float(r[2])] for r in cur.fetchall()}
    for p in pending:
        subject = p.entry.get("subject")
        if not subject:
            continue
        now = p.entry["at"].timestamp()
        b = state.setdefault(subject, [limit.burst, now])
        if now > b[1]:
            b[0] = min(limit.burst, b[0] + (now - b[1]) * limit.rate)
            b[1] = now
        if b[0] >= 1:
            b[0] -= 1
        else:
            p.retry_after = max(1.0, math.ceil((1 - b[0]) / limit.rate))
            limit.block(subject, now + p.retry_after)
    cur.executemany(f"INSERT INTO data_rate_bucket (subject, tokens, at_s) VALUES ({ph}, {ph}, {ph}) "
                    f"ON CONFLICT (subject) DO UPDATE SET tokens = excluded.tokens, at_s = excluded.at_s",
                    [(s, b[0], b[1]) for s, b in sorted(state.items())])


def _resolve(futures: list[asyncio.Future]) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_result(None)


class LogWriter:
    """The log writer of this process (group commit). Callers queue their entry and wait; the writer
    thread takes every entry queued meanwhile and commits them in one transaction, then answers each:
    logged, refused by the rate limit, or failed. Under load the entries of the calls served while a group
    commits form the next group, so the transaction's fixed cost (begin, buckets, daily sums, commit) is
    shared; alone, a call is written at once.

    On SQLite an event loop commits the entries of each of its turns itself, right after the turn, when the
    write lock is free at that moment (`SQLiteWriteConnection.try_begin_immediate`): a local file, no
    network wait, and no thread to wake, no GIL hand-offs and no cross-thread answer (together ~0.1-0.2 ms
    of CPU a call with two worker processes). While another writer (a thread, or another worker process)
    holds the lock, the loop tries again in its next turns, then every `RETRY_S`, entries of later turns
    joining the group, and hands the group to the thread (which waits for the lock) once it has waited
    `LOOP_WAIT_S`."""

    MAX_BATCH = 2000
    IDLE_EXIT_S = 30.0  # the thread ends after this long without work (the next call starts it again)
    RETRY_S = 0.001  # an event loop's next try for the write lock, after SPIN tries at once
    SPIN = 8  # tries in the loop's next turns (another process's log commit holds the lock ~0.1-0.2 ms)
    LOOP_WAIT_S = 0.02  # then its group goes to the thread, which waits for the lock

    def __init__(self) -> None:
        self.q: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.turns: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}  # entries of the loop's current turn
        # per event loop: entries waiting for the write lock, since when, tries so far
        self.waiting: dict[asyncio.AbstractEventLoop, tuple[list[_Pending], float, int]] = {}

    def _enqueue(self, p: _Pending) -> None:
        self.q.put(p)
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="citybrain-exchange-log", daemon=True)
                self.thread.start()

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        here = []
        for p in self.turns.pop(loop, ()):
            if p.db.is_sqlite:
                here.append(p)
            else:  # PostgreSQL: the thread (a commit waits on the network)
                self._enqueue(p)
        if not here:
            return
        waiting = self.waiting.get(loop)
        if waiting is not None:  # a try is scheduled: these join its group
            waiting[0].extend(here)
        else:
            self._commit_here(loop, here, time.monotonic())

    def _retry(self, loop: asyncio.AbstractEventLoop) -> None:
        pending, since, tries = self.waiting.pop(loop, ((), 0.0, 0))
        if pending:
            self._commit_here(loop, list(pending), since, tries)

    def _commit_here(self, loop: asyncio.AbstractEventLoop, pending: list[_Pending], since: float,
                     tries: int = 0) -> None:
        """Commit `pending` on the event loop if the write lock is free now; else try again shortly, or
        hand the entries to the thread once they have waited `LOOP_WAIT_S`. A failure other than a busy
        lock goes to the thread too, which retries it as any group."""
        groups: dict[tuple[int, int], list[_Pending]] = defaultdict(list)
        for p in pending:
            groups[(id(p.db), id(p.limit))].append(p)
        busy: list[_Pending] = []
        for group in groups.values():
            for p in group:
                p.retry_after = None
            try:
                t0 = time.perf_counter()
                if not _commit_group(group[0].db, group, group[0].limit, wait=False):
                    busy += group
                    continue
                LOG_COMMIT.observe(time.perf_counter() - t0)
            except Exception:  # noqa: BLE001 - the thread retries and, if need be, reports it
                log.warning("exchange log write on the event loop failed; retrying in the writer thread",
                            exc_info=True)
                for p in group:
                    self._enqueue(p)
                continue
            LOG_GROUPS.inc()
            LOG_ENTRIES.inc(len(group))
            for p in group:
                p.done = True
            _resolve([p.notify[1] for p in group])
        if not busy:
            return
        if time.monotonic() - since >= self.LOOP_WAIT_S:
            for p in busy:
                self._enqueue(p)
        else:  # the next turns first (the loop serves its other requests between tries), then every RETRY_S
            self.waiting[loop] = (busy, since, tries + 1)
            if tries < self.SPIN:
                loop.call_soon(self._retry, loop)
            else:
                loop.call_later(self.RETRY_S, self._retry, loop)

    def submit(self, db: Database, entry: dict[str, Any], timeout: float = 15.0) -> None:
        """Log one call durably, waiting for the commit; raise 429 if the shared rate limit refused it (then
        nothing was logged) or 503 if it could not be written (then no data may be sent)."""
        ev = threading.Event()
        p = _Pending(db, entry, LIMITER, ev.set)
        self._enqueue(p)
        ev.wait(timeout)
        _outcome(p)

    def post(self, db: Database, entry: dict[str, Any]) -> None:
        """Log a call whose data has already left (a streamed download) without waiting: it never blocks the
        caller, which may be any thread, even this writer's own; a failure goes to the server log."""
        p = _Pending(db, entry, LIMITER, None)
        p.notify = lambda: p.error is not None and log.error("exchange log entry lost: %s (%s)", entry, p.error)
        self._enqueue(p)

    async def submit_async(self, db: Database, entry: dict[str, Any], timeout: float = 15.0) -> None:
        """`submit` for the event loop: the loop serves other requests until the commit. The entries of
        one turn of the loop (the requests it had ready) reach the writer together, after that turn, so
        they share a transaction even though the writer is awake as soon as the loop lets go of the GIL."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        p = _Pending(db, entry, LIMITER, (loop, fut))
        turn = self.turns.get(loop)
        if turn is None:
            turn = self.turns[loop] = []
            loop.call_soon(self._hand_over, loop)
        turn.append(p)
        timer = loop.call_later(timeout, _resolve, [fut])
        try:
            await fut
        finally:
            timer.cancel()
        _outcome(p)

    def _run(self) -> None:
        while True:
            try:
                first = self.q.get(timeout=self.IDLE_EXIT_S)
            except queue.Empty:
                with self.lock:
                    if self.q.empty():
                        self.thread = None
                        return
                continue
            batch = [first]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self.q.get_nowait())
                except queue.Empty:
                    break
            try:
                groups: dict[tuple[int, int], list[_Pending]] = defaultdict(list)
                for p in batch:
                    groups[(id(p.db), id(p.limit))].append(p)
                for group in groups.values():
                    _write(group)
                LOG_GROUPS.inc(len(groups))
                LOG_ENTRIES.inc(len(batch))
            except BaseException as exc:  # noqa: BLE001 - never leave a caller unanswered
                log.exception("exchange log writer failed")
                for p in batch:
                    if not p.done:
                        p.error, p.done = exc, True
            _answer(batch)


def _outcome(p: _Pending) -> None:
    if p.done and p.error is None and p.retry_after is not None:
        raise p.limit.refusal(p.retry_after)
    if not p.done or p.error is not None:
        raise Problem("交换日志写入失败，本次调用未返回数据，请重试",
                      "The exchange log could not be written; no data was sent. Please retry",
                      status=503, code="exchange_log_unavailable")


def _answer(batch: list[_Pending]) -> None:
    """Wake every caller of a batch: threads at once, each event loop once with all its futures."""
    loops: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
    for p in batch:
        if isinstance(p.notify, tuple):
            loops.setdefault(p.notify[0], []).append(p.notify[1])
        else:
            p.notify()
    for loop, futures in loops.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_resolve, futures)


def _write(group: list[_Pending]) -> None:
    for attempt in range(3):
        try:
            for p in group:
                p.retry_after = None
            t0 = time.perf_counter()
            _commit_group(group[0].db, group, group[0].limit)
            LOG_COMMIT.observe(time.perf_counter() - t0)
            break
        except Exception as exc:  # noqa: BLE001 - report to every waiting caller
            if attempt == 2:
                log.exception("exchange log write failed for %d entries", len(group))
                for p in group:
                    p.error = exc
            else:
                time.sleep(0.05 * (attempt + 1))
    for p in group:
        p.done = True


def _commit_group(db: Database, group: list[_Pending], limit: RateLimit, wait: bool = True) -> bool:
    """One transaction on a pooled driver connection: rate buckets, log rows, daily statistics, commit.
    With `wait=False` (SQLite) nothing is done and False returned if the write lock is taken."""
    raw = db.write_engine.raw_connection()
    try:
        sqlite = db.is_sqlite
        if sqlite:  # the pool's SQLite connections run in autocommit mode: begin through the write gate
            if wait:
                raw.driver_connection.begin_immediate()
            elif not raw.driver_connection.try_begin_immediate():
                return False
        cur = raw.cursor()
        try:
            charge_buckets(cur, sqlite, group, limit)
            _write_rows(cur, sqlite, [p.entry for p in group if p.retry_after is None])
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
    finally:
        raw.close()  # back to the pool
    return True


WRITER = LogWriter()


class RateLimit:
    """The rate limit in force: `rate` calls per second per key with bursts of `burst` (the buckets live in
    the database); `blocked` remembers, per process, keys refused until a time (epoch seconds)."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.blocked: dict[str, float] = {}

    def refusal(self, retry_after: float) -> TooManyRequests:
        """The 429 problem of a refused call."""
        return TooManyRequests(f"调用过于频繁：每个凭证每秒最多 {self.rate:g} 次",
                               f"Rate limit: at most {self.rate:g} calls per second per key",
                               headers={"Retry-After": str(int(retry_after))})

    def block(self, subject: str, until: float) -> None:
        """Refuse `subject` in this process until `until` without asking the database."""
        if len(self.blocked) > 10_000:
            self.blocked.clear()
        self.blocked[subject] = max(until, self.blocked.get(subject, 0.0))

    def check(self, subject: str, now: float) -> None:
        """Raise 429 if this process already knows `subject` is over its limit at `now`."""
        until = self.blocked.get(subject)
        if until is not None:
            if now < until:
                raise self.refusal(math.ceil(until - now))
            self.blocked.pop(subject, None)

    def reset(self) -> None:
        """Forget the keys blocked in this process."""
        self.blocked.clear()


_rate = float(os.environ.get("CITYBRAIN_DATA_RATE_PER_S", "200"))
LIMITER = RateLimit(_rate, float(os.environ.get("CITYBRAIN_DATA_RATE_BURST", str(_rate * 2))))
