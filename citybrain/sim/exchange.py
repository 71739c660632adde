"""Exchange traffic simulator: the city operations centre's exchange front-end (交换前置机) querying the hub
over HTTP with its consumer key, as a real consumer system would (started by `citybrain demo`)."""

from __future__ import annotations

import logging
import random
import threading

import httpx

log = logging.getLogger("citybrain.sim.exchange")

POP = "440115-1-01-001-0001"
ENT = "440115-1-02-001-0001"
PLACE = "440115-1-03-001-0001"
HEALTH = "440115-2-JKBZ-001"


def _key() -> str | None:
    from citybrain.config import get_settings
    from citybrain.data.demo import KEY_FILE

    path = get_settings().data_dir / KEY_FILE
    return path.read_text().strip() if path.exists() else None


def run(base_url: str, stop: threading.Event, *, interval: float = 1.5) -> None:
    """Query the hub a few times a second: lookups by key, filtered pages, incremental pulls."""
    key = _key()
    if not key:
        log.warning("no demo exchange key; exchange simulator not started")
        return
    rng = random.Random()
    cursors = {ENT: "0", PLACE: "0"}
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=10) as c:
        while not stop.is_set():
            try:
                kind = rng.random()
                if kind < 0.35:
                    r = c.post(f"/api/v1/data/exchange/{POP}/query",
                               json={"filters": {"area_code": "440115"}, "page": rng.randint(1, 50),
                                     "page_size": rng.choice((20, 50, 100))})
                elif kind < 0.55:
                    r = c.post(f"/api/v1/data/exchange/{ENT}/query",
                               json={"filters": {"status": rng.choice(("存续", "注销"))}, "page_size": 100,
                                     "page": rng.randint(1, 5)})
                elif kind < 0.8:
                    code = rng.choice((ENT, PLACE))
                    r = c.get(f"/api/v1/data/exchange/{code}/changes",
                              params={"cursor": cursors[code], "limit": 200})
                    if r.status_code == 200:
                        body = r.json()
                        cursors[code] = body["next_cursor"] if body["has_more"] else "0"
                else:
                    r = c.post(f"/api/v1/data/exchange/{HEALTH}/query", json={"page_size": 50})
                if r.status_code not in (200, 404, 429):
                    log.info("exchange call answered %s: %s", r.status_code, r.text[:200])
            except httpx.HTTPError as exc:
                log.debug("exchange simulator: %s", exc)
            stop.wait(interval * rng.uniform(0.5, 1.5))
