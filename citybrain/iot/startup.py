"""IoT background work started with the server: default rules, the status/no-data checker, retention purge, MQTT.

The checker only runs while the bus dispatcher runs (a served app with background work on), so tests that
build the app with `background=False` drive `service.check_status` themselves with a fake clock.
"""

from __future__ import annotations

import logging
import threading

from citybrain import bus
from citybrain.config import get_settings
from citybrain.db import Database, get_db, utcnow
from citybrain.iot import service

log = logging.getLogger("citybrain.iot")

CHECK_EVERY_S = 5.0
PURGE_EVERY_S = 6 * 3600.0

_stop = threading.Event()
_thread: threading.Thread | None = None
_mqtt = None


def _background_on() -> bool:
    d = bus._dispatcher
    return d is not None and d._thread is not None


def _loop() -> None:
    last_purge = None
    while not _stop.wait(CHECK_EVERY_S):
        if not _background_on():
            continue
        try:
            db = get_db()
            with db.write() as s:
                service.check_status(s)
            now = utcnow()
            if last_purge is None or (now - last_purge).total_seconds() > PURGE_EVERY_S:
                with db.write() as s:
                    service.purge(s)
                last_purge = now
        except Exception:
            log.exception("iot status check failed")


def start(db: Database) -> None:
    """Create default rules; start the checker thread and, if CITYBRAIN_MQTT_URL is set, the MQTT subscriber."""
    global _thread, _mqtt
    service.reset_state()
    with db.write() as s:
        service.ensure_default_rules(s)
    with db.write() as s:
        service.ensure_partitions(s)
    _stop.clear()
    if _thread is None or not _thread.is_alive():
        _thread = threading.Thread(target=_loop, name="citybrain-iot-status", daemon=True)
        _thread.start()
    url = get_settings().mqtt_url
    if url and _mqtt is None:
        from citybrain.iot import mqtt

        try:
            _mqtt = mqtt.Subscriber(db, url)
            _mqtt.start()
        except Exception:
            log.exception("could not connect to the MQTT broker at %s", url)
            _mqtt = None


def stop(db: Database) -> None:
    """Stop the background work."""
    global _thread, _mqtt
    _stop.set()
    if _mqtt is not None:
        _mqtt.stop()
        _mqtt = None
    _thread = None
