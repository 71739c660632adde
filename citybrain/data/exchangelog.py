"""The exchange log writer (group commit) and the per-key rate limiter.

Every exchange call is logged before its data leaves: the caller hands its entry to the writer and waits
until the entry is committed. The writer commits whatever entries have queued up meanwhile in one
transaction (log rows + daily statistics upserts), so logging costs one commit per batch of concurrent
calls, not one per call, and no answered call is ever missing from the log.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from citybrain.data.models import ExchangeDaily, ExchangeLog
from citybrain.db import Database
from citybrain.errors import Problem, TooManyRequests

log = logging.getLogger("citybrain.data.exchange")

LOG_TABLE = ExchangeLog.__table__
DAILY_TABLE = ExchangeDaily.__table__


def local_day(at: dt.datetime) -> dt.date:
    """The calendar day in China Standard Time (UTC+8) of a UTC timestamp."""
    return (at + dt.timedelta(hours=8)).date()


def write_entries(session: Session, entries: list[dict[str, Any]]) -> None:
    """Insert log rows and add them to the daily statistics (in the caller's transaction)."""
    if not entries:
        return
    session.execute(insert(LOG_TABLE), entries)
    sums: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for e in entries:
        k = (local_day(e["at"]), e["consumer_org_id"] or 0, e["resource_id"])
        s = sums[k]
        s[0] += 1
        s[1] += e["records"]
        s[2] = e["provider_org_id"] or 0
    rows = [{"day": k[0], "consumer_org_id": k[1], "resource_id": k[2], "provider_org_id": v[2],
             "calls": v[0], "records": v[1]} for k, v in sums.items()]
    ins = (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(DAILY_TABLE)
    stmt = ins.on_conflict_do_update(
        index_elements=["day", "consumer_org_id", "resource_id"],
        set_={"calls": DAILY_TABLE.c.calls + ins.excluded.calls,
              "records": DAILY_TABLE.c.records + ins.excluded.records},
    )
    # sorted keys: concurrent writers lock statistics rows in the same order (no deadlocks on PostgreSQL)
    for r in sorted(rows, key=lambda r: (r["day"], r["consumer_org_id"], r["resource_id"])):
        session.execute(stmt, r)


class _Pending:
    __slots__ = ("db", "entry", "done", "error")

    def __init__(self, db: Database, entry: dict[str, Any]):
        self.db, self.entry, self.done, self.error = db, entry, False, None


class LogWriter:
    """Group commit without a writer thread: the first waiting caller becomes the leader and commits every
    entry queued so far in one transaction; callers arriving meanwhile wait for the next leader. No thread
    hand-off (which costs a GIL switch interval under load) and no call returns before its entry is stored."""

    MAX_BATCH = 2000

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.pending: list[_Pending] = []
        self.flushing = False

    def submit(self, db: Database, entry: dict[str, Any], timeout: float = 15.0) -> None:
        """Log one call durably; raise 503 if it could not be written (then no data may be sent)."""
        p = _Pending(db, entry)
        deadline = time.monotonic() + timeout
        with self.cond:
            self.pending.append(p)
        while True:
            with self.cond:
                if p.done:
                    break
                if self.flushing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.cond.wait(min(left, 0.5))
                    continue
                self.flushing = True
                batch, self.pending = self.pending[: self.MAX_BATCH], self.pending[self.MAX_BATCH:]
            try:
                self._write_all(batch)
            finally:
                with self.cond:
                    self.flushing = False
                    self.cond.notify_all()
        if not p.done or p.error is not None:
            raise Problem("交换日志写入失败，本次调用未返回数据，请重试",
                          "The exchange log could not be written; no data was sent. Please retry",
                          status=503, code="exchange_log_unavailable")

    def _write_all(self, batch: list[_Pending]) -> None:
        by_db: dict[int, list[_Pending]] = defaultdict(list)
        for p in batch:
            by_db[id(p.db)].append(p)
        for group in by_db.values():
            self._write(group)

    @staticmethod
    def _write(group: list[_Pending]) -> None:
        db = group[0].db
        for attempt in range(3):
            try:
                with db.write() as s:
                    write_entries(s, [p.entry for p in group])
                    s.commit()
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


WRITER = LogWriter()


class RateLimiter:
    """A token bucket per caller: `rate` calls per second with bursts of `burst`."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def hit(self, who: str) -> None:
        """Take one token for `who` or raise 429 with Retry-After."""
        now = time.monotonic()
        with self.lock:
            b = self.buckets.get(who)
            if b is None:
                b = self.buckets[who] = [self.burst, now]
            tokens = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
            if tokens < 1:
                b[0] = tokens
                wait = max(1, int((1 - tokens) / self.rate + 0.999))
                raise TooManyRequests(f"调用过于频繁：每个凭证每秒最多 {self.rate:g} 次",
                                      f"Rate limit: at most {self.rate:g} calls per second per key",
                                      headers={"Retry-After": str(wait)})
            b[0] = tokens - 1

    def reset(self) -> None:
        """Forget every bucket."""
        with self.lock:
            self.buckets.clear()


_rate = float(os.environ.get("CITYBRAIN_DATA_RATE_PER_S", "200"))
LIMITER = RateLimiter(_rate, float(os.environ.get("CITYBRAIN_DATA_RATE_BURST", str(_rate * 2))))
