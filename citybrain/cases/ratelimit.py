"""Rate limits of the citizen endpoints without login (report, track, rate): per client IP and per phone.

Token buckets in the database (`cases_rate_bucket`), so every worker process of `citybrain serve --workers N`
charges the same bucket and the limits hold whatever the number of workers. Each check is one short write
transaction of its own (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: the rows locked `FOR UPDATE`), before the
request's own work; a refused request takes no token. Time is the service clock (`citybrain.clock`, so tests
move time instead of sleeping); limits come from the settings `CITYBRAIN_CASES_PUBLIC_*`. Behind a reverse
proxy the client IP is the proxy's unless the ASGI server is told to trust its forwarded headers.
"""

from __future__ import annotations

import math

from sqlalchemy import delete, select

from citybrain import clock
from citybrain.cases.models import RateBucket
from citybrain.config import get_settings
from citybrain.db import get_db, upsert_insert
from citybrain.errors import TooManyRequests

PURGE_EVERY = 1000  # takes between two deletions of buckets that have refilled completely
_takes = 0


def _refill(tokens: float, at: float, now: float, limit: int, window_s: float) -> float:
    return min(float(limit), tokens + max(0.0, now - at) * limit / window_s)


def take(*, checks: list[tuple[str, int, float]]) -> None:
    """Take one token from each (key, limit, window_s) bucket, or none and raise 429 with Retry-After."""
    global _takes
    checks = sorted((c for c in checks if c[1] > 0), key=lambda c: c[0])
    if not checks:
        return
    now = clock.now().timestamp()
    t = RateBucket.__table__
    with get_db().write() as s:
        bind = s.get_bind()
        if bind.dialect.name == "postgresql":  # rows to lock, in key order (SQLite: BEGIN IMMEDIATE serialises)
            s.execute(upsert_insert(bind, t).values([{"key": k, "tokens": float(lim), "at_s": now}
                                                     for k, lim, _w in checks]).on_conflict_do_nothing())
        query = select(t.c.key, t.c.tokens, t.c.at_s).where(t.c.key.in_([c[0] for c in checks])).order_by(t.c.key)
        if bind.dialect.name == "postgresql":
            query = query.with_for_update()
        have = {k: (tok, at) for k, tok, at in s.execute(query)}
        left, wait = {}, 0.0
        for key, limit, window_s in checks:
            tokens, at = have.get(key, (float(limit), now))
            left[key] = _refill(tokens, at, now, limit, window_s)
            if left[key] < 1:
                wait = max(wait, (1 - left[key]) * window_s / limit)
        if wait > 0:
            s.rollback()
            retry = max(1, math.ceil(wait))
            raise TooManyRequests("请求过于频繁，请稍后再试", "Too many requests; try again later",
                                  headers={"Retry-After": str(retry)}, retry_after_s=retry)
        ins = upsert_insert(bind, t)
        s.execute(ins.on_conflict_do_update(index_elements=["key"], set_={"tokens": ins.excluded.tokens,
                                                                         "at_s": ins.excluded.at_s}),
                  [{"key": k, "tokens": v - 1, "at_s": now} for k, v in left.items()])
        _takes += 1
        if _takes % PURGE_EVERY == 0:  # a bucket untouched for its longest window is full: same as no row
            s.execute(delete(t).where(t.c.at_s < now - _longest_window()))
        s.commit()


def _longest_window() -> float:
    st = get_settings()
    return float(max(st.cases_public_ip_window_s, st.cases_public_phone_window_s))


def check(*, ip: str | None, phone: str | None) -> None:
    """Apply the per-IP and per-phone limits of the citizen endpoints (settings CITYBRAIN_CASES_PUBLIC_*)."""
    st = get_settings()
    checks = []
    if ip:
        checks.append((f"ip:{ip}", st.cases_public_ip_limit, float(st.cases_public_ip_window_s)))
    if phone:
        checks.append((f"phone:{''.join(phone.split())}", st.cases_public_phone_limit,
                       float(st.cases_public_phone_window_s)))
    take(checks=checks)
