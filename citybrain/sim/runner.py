"""Starts every simulator of the demo (`citybrain demo` runs this unless --no-sim)."""

from __future__ import annotations

import logging
import threading
import time

import httpx

from citybrain import modules

log = logging.getLogger("citybrain.sim")

# Each is a module citybrain.sim.<name> with run(base_url: str, stop: threading.Event) -> None.
WORKERS = ("devices", "cases", "exchange")


def wait_until_up(base_url: str, timeout: float = 60.0) -> bool:
    """Wait for the server's /healthz to answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def run(base_url: str, stop: threading.Event | None = None) -> None:
    """Start the simulators in threads once the server is up; return when they are started."""
    stop = stop or threading.Event()
    if not wait_until_up(base_url):
        log.error("server at %s did not come up; simulators not started", base_url)
        return
    for name in WORKERS:
        mod = modules.part("sim", name)
        if mod is not None:
            threading.Thread(target=mod.run, args=(base_url, stop), name=f"sim-{name}", daemon=True).start()
            log.info("simulator %s started", name)
