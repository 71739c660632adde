"""Background work of the cases module: reference data on start, and the deadline sweep every minute.

The sweep (`service.sweep`) is also callable directly (tests drive it with the fake clock).
"""

from __future__ import annotations

import logging
import threading

from citybrain import bus, context
from citybrain import db as dbmod
from citybrain.cases import service
from citybrain.context import SYSTEM
from citybrain.db import Database

log = logging.getLogger("citybrain.cases")

INTERVAL_S = 60.0
_workers: dict[int, tuple[threading.Thread, threading.Event]] = {}


def _loop(db: Database, stop: threading.Event) -> None:
    context.set_principal(SYSTEM)
    while not stop.wait(INTERVAL_S):
        if dbmod._db is not db:  # the process moved to another database (tests): this worker is done
            return
        if not bus.background_on():  # CLI jobs and tests: reference data only, no sweeping
            continue
        try:
            with db.write() as s:
                service.sweep(s)
        except Exception:
            log.exception("case deadline sweep failed")


def start(db: Database) -> None:
    """Load the shipped dictionaries if missing and start the sweep worker."""
    context.set_principal(SYSTEM)
    with db.write() as s:
        service.load_reference(s)
    if id(db) in _workers:
        return
    stop = threading.Event()
    t = threading.Thread(target=_loop, args=(db, stop), name="cases-sweep", daemon=True)
    _workers[id(db)] = (t, stop)
    t.start()


def stop(db: Database) -> None:
    """Stop the sweep worker."""
    w = _workers.pop(id(db), None)
    if w is not None:
        w[1].set()
        w[0].join(timeout=5)
