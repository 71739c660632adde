"""IoT background work started with the server: default rules, partitions, the status/no-data checker, the
retention purge and the MQTT subscriber (when CITYBRAIN_MQTT_URL is set).

The checker and the MQTT subscriber only run while a served app runs its background work (`bus.background_on()`,
with either bus backend): CLI commands and tests that build the app with `background=False` call `startup` too, and must neither
consume broker messages nor move devices offline behind a test's fake clock.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from citybrain import bus
from citybrain.config import get_settings
from citybrain.db import Database, get_db, utcnow
from citybrain.iot import relay, service

log = logging.getLogger("citybrain.iot")

CHECK_EVERY_S = 5.0
PURGE_EVERY_S = 6 * 3600.0

_stop = threading.Event()
_thread: threading.Thread | None = None
_mqtt = None


def _start_mqtt(db: Database) -> None:
    global _mqtt
    url = get_settings().mqtt_url
    if not url or _mqtt is not None:
        return
    from citybrain.iot import mqtt

    sub = mqtt.Subscriber(db, url)
    try:
        sub.start()
        _mqtt = sub
    except Exception as exc:
        log.warning("MQTT broker at %s not reachable (%s); retrying", url, exc)
        with contextlib.suppress(Exception):
            sub.stop()


def _loop() -> None:
    last_purge = None
    first = True
    while not _stop.wait(0.5 if first else CHECK_EVERY_S):
        if not bus.background_on():
            continue
        first = False
        db = get_db()
        _start_mqtt(db)
        try:
            with db.write() as s:
                service.check_status(s)
            now = utcnow()
            if last_purge is None or (now - last_purge).total_seconds() > PURGE_EVERY_S:
                with db.write() as s:
                    service.ensure_partitions(s)
                with db.write() as s:
                    service.purge(s)
                last_purge = now
        except Exception:
            log.exception("iot status check failed")


def start(db: Database) -> None:
    """Create default rules and partitions; start the background thread (inert until the bus dispatcher runs)."""
    global _thread
    service.reset_state()
    with db.write() as s:
        service.ensure_default_rules(s)
    with db.write() as s:
        service.ensure_partitions(s)
    relay.start_server(db)  # the ingest process of `serve --workers N`: take the HTTP workers' telemetry
    _stop.clear()
    if _thread is None or not _thread.is_alive():
        _thread = threading.Thread(target=_loop, name="citybrain-iot-status", daemon=True)
        _thread.start()


def stop(db: Database) -> None:
    """Stop the background work and the MQTT subscriber."""
    global _thread, _mqtt
    relay.stop_server()
    _stop.set()
    if _mqtt is not None:
        _mqtt.stop()
        _mqtt = None
    _thread = None
