"""Rate limits of the citizen endpoints without login (report, track, rate): per client IP and per phone.

Token buckets read the service clock (`citybrain.clock`, so tests move time instead of sleeping); limits come
from the settings `CITYBRAIN_CASES_PUBLIC_*`. The buckets live in the process (one per application), so a
deployment with several worker processes multiplies the limits by the number of workers; behind a reverse
proxy the client IP is the proxy's unless the ASGI server is told to trust its forwarded headers.
"""

from __future__ import annotations

import math
import threading

from citybrain import clock
from citybrain.config import get_settings
from citybrain.errors import TooManyRequests


class Limiter:
    """Token buckets by key: `limit` requests per `window_s` seconds, refilled evenly, bursts up to `limit`."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at, as epoch seconds)

    def _tokens(self, key: str, limit: int, window_s: float, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(limit), now))
        return min(float(limit), tokens + max(0.0, now - at) * limit / window_s)

    def take(self, checks: list[tuple[str, int, float]]) -> None:
        """Take one token from each (key, limit, window_s) bucket, or none and raise 429 with Retry-After."""
        now = clock.now().timestamp()
        with self._lock:
            if len(self._buckets) > self.MAX_KEYS:
                self._buckets.clear()  # a flood of distinct keys: start over rather than grow without bound
            wait = 0.0
            for key, limit, window_s in checks:
                if limit <= 0:
                    continue
                t = self._tokens(key, limit, window_s, now)
                if t < 1:
                    wait = max(wait, (1 - t) * window_s / limit)
            if wait > 0:
                raise TooManyRequests("请求过于频繁，请稍后再试", "Too many requests; try again later",
                                      headers={"Retry-After": str(max(1, math.ceil(wait)))},
                                      retry_after_s=max(1, math.ceil(wait)))
            for key, limit, window_s in checks:
                if limit > 0:
                    self._buckets[key] = (self._tokens(key, limit, window_s, now) - 1, now)


def check(limiter: Limiter, *, ip: str | None, phone: str | None) -> None:
    """Apply the per-IP and per-phone limits of the citizen endpoints (settings CITYBRAIN_CASES_PUBLIC_*)."""
    s = get_settings()
    checks = []
    if ip:
        checks.append((f"ip:{ip}", s.cases_public_ip_limit, float(s.cases_public_ip_window_s)))
    if phone:
        checks.append((f"phone:{''.join(phone.split())}", s.cases_public_phone_limit,
                       float(s.cases_public_phone_window_s)))
    if checks:
        limiter.take(checks)
