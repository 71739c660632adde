"""Simulated IoT devices for the demo: they report over HTTP with their own credentials, as real devices do.

Most devices report through their department's gateway (batches); every 20th device reports by itself with
its device secret. Values follow daily patterns (tides, rush-hour noise and parking, lamps at night,
PM2.5 episodes) and a few injected faults fire alarms on the first report: a displaced manhole cover, a
flooding gauge, a gas leak, H2S in a utility tunnel, a PM2.5 spike, an over-voltage lamp pole, low hydrant
pressure. One gauge goes silent (offline after 5 minutes, no-data alarm after 10), and a few readings are
out of range on purpose (dead letters).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import random
import threading
import time
import zlib
from collections import defaultdict
from pathlib import Path

import httpx

from citybrain.config import get_settings

log = logging.getLogger("citybrain.sim.devices")
logging.getLogger("httpx").setLevel(logging.WARNING)

CST = dt.timezone(dt.timedelta(hours=8))
TICK_S = 5.0
INTERVAL_S = {"water_level": 60, "manhole": 300, "hydrant": 300, "air": 60, "noise": 60, "lamp": 300,
              "parking": 120, "gas": 60, "tunnel": 60, "tilt": 300}


def _rush(h: float) -> float:
    """0..1: how much of a rush hour it is (peaks 08:00 and 18:00 China time)."""
    return max(math.exp(-((h - 8.0) ** 2) / 1.5), math.exp(-((h - 18.0) ** 2) / 2.0))


class Fleet:
    """The simulated devices and their injected faults."""

    def __init__(self, devices: list[dict], seed: int = 7):
        self.rnd = random.Random(seed)
        self.devices = devices
        by_model: dict[str, list[dict]] = defaultdict(list)
        for d in devices:
            by_model[d["model"]].append(d)
        self.faults: dict[str, str] = {}
        for model, fault in (("manhole", "displaced"), ("water_level", "flood"), ("gas", "leak"),
                             ("tunnel", "h2s"), ("air", "pm_spike"), ("lamp", "overvolt"), ("hydrant", "low"),
                             ("noise", "construction"), ("tilt", "tilt"), ("parking", "battery")):
            if by_model.get(model):
                self.faults[by_model[model][0]["code"]] = fault
        if len(by_model.get("water_level", [])) > 1:
            self.faults[by_model["water_level"][1]["code"]] = "silent"
        if len(by_model.get("air", [])) > 1:
            self.faults[by_model["air"][1]["code"]] = "bad_sensor"
        self.phase = {d["code"]: self.rnd.random() for d in devices}
        self.next_due = {d["code"]: 0.0 for d in devices}  # everyone reports on the first tick
        self.started = time.monotonic()

    def values(self, d: dict, now: dt.datetime) -> dict | None:
        code, model = d["code"], d["model"]
        fault = self.faults.get(code)
        ph = self.phase[code]
        r = self.rnd
        local = now.astimezone(CST)
        h = local.hour + local.minute / 60
        hours = now.timestamp() / 3600
        up = time.monotonic() - self.started
        if fault == "silent" and up > 30:
            return None
        if model == "water_level":
            tide = 0.9 * math.sin(2 * math.pi * (hours / 12.42 + ph))
            level = 0.9 + tide + r.gauss(0, 0.004)
            if fault == "flood":
                level = min(3.2, 2.1 + up / 120)  # above the warning level at once, danger level after ~50 s
            return {"water_level": round(level, 3), "battery": round(95 - ph * 30, 1)}
        if model == "manhole":
            if fault == "displaced":
                return {"tilt": 38.0, "displaced": True, "water_high": False, "battery": 77}
            return {"tilt": round(abs(r.gauss(0.8, 0.3)), 2), "displaced": False,
                    "water_high": False, "battery": round(90 - ph * 40, 1)}
        if model == "hydrant":
            p = 0.08 if fault == "low" else 0.32 + r.gauss(0, 0.015) - 0.03 * _rush(h)
            return {"pressure": round(p, 3), "battery": round(88 - ph * 20, 1)}
        if model == "air":
            base = 22 + 18 * _rush(h) + 10 * math.sin(2 * math.pi * (hours / 72 + ph))
            pm25 = 275.0 if fault == "pm_spike" else max(3.0, base + r.gauss(0, 4))
            vals = {"pm25": round(pm25, 1), "pm10": round(pm25 * 1.6 + r.gauss(0, 5), 1),
                    "o3": round(max(5, 40 + 80 * math.exp(-((h - 15) ** 2) / 8) + r.gauss(0, 6)), 1),
                    "no2": round(max(2, 18 + 30 * _rush(h) + r.gauss(0, 3)), 1)}
            if fault == "bad_sensor" and r.random() < 0.5:
                vals["pm25"] = -12.0  # a broken sensor: out of the physical range -> dead letter
            vals["pm10"] = max(vals["pm10"], 1.0)
            return vals
        if model == "noise":
            night = 1.0 if (h >= 22 or h < 6) else 0.0
            laeq = 78.0 if fault == "construction" else 52 + 14 * _rush(h) - 10 * night + r.gauss(0, 2)
            return {"laeq": round(max(25, laeq), 1)}
        if model == "lamp":
            on = h >= 18 or h < 6.5
            volt = 268.0 if fault == "overvolt" else 221 + r.gauss(0, 3)
            return {"lamp_on": on, "power": round((148 if on else 6) + r.gauss(0, 3), 1), "voltage": round(volt, 1),
                    "tilt": round(abs(r.gauss(0.3, 0.1)), 2)}
        if model == "parking":
            p_occ = 0.25 + 0.5 * _rush(h) + (0.2 if 9 <= h <= 17 else 0.0)
            return {"occupied": r.random() < p_occ, "battery": 7.0 if fault == "battery" else round(96 - ph * 50, 1)}
        if model == "gas":
            return {"lel": 34.0 if fault == "leak" else round(abs(r.gauss(0.5, 0.4)), 2), "battery": 90}
        if model == "tunnel":
            return {"temperature": round(26 + 3 * math.sin(2 * math.pi * (h - 9) / 24) + r.gauss(0, 0.3), 2),
                    "humidity": round(72 + r.gauss(0, 2), 1), "o2": round(20.8 + r.gauss(0, 0.05), 2),
                    "h2s": 16.0 if fault == "h2s" else round(abs(r.gauss(0.4, 0.2)), 2),
                    "settlement": round(r.gauss(0, 1.5), 2)}
        if model == "tilt":
            x = 1.6 if fault == "tilt" else r.gauss(0, 0.15)
            return {"tilt_x": round(x, 3), "tilt_y": round(r.gauss(0, 0.15), 3), "battery": 85}
        return None

    def due(self, now_mono: float) -> list[dict]:
        out = []
        for d in self.devices:
            if self.next_due[d["code"]] <= now_mono:
                out.append(d)
                interval = INTERVAL_S.get(d["model"], 300)
                if self.faults.get(d["code"]) in ("flood", "construction"):
                    interval = 30  # the interesting ones report faster
                if self.next_due[d["code"]] == 0.0:
                    self.next_due[d["code"]] = now_mono + interval * self.phase[d["code"]]
                else:
                    self.next_due[d["code"]] = now_mono + interval
        return out


def _post(client: httpx.Client, url: str, body: dict, headers: dict) -> None:
    try:
        r = client.post(url, json=body, headers=headers)
        if r.status_code >= 500:
            log.warning("telemetry refused: %s %s", r.status_code, r.text[:200])
    except httpx.HTTPError as exc:
        log.warning("telemetry not delivered: %s", exc)


def run(base_url: str, stop: threading.Event, credentials: Path | None = None) -> None:
    """Report as the demo's devices until `stop` is set."""
    from citybrain.iot.demo import credentials_path

    path = credentials or credentials_path()
    if not path.exists():
        log.warning("no IoT demo credentials at %s; device simulator not started", path)
        return
    doc = json.loads(path.read_text())
    fleet = Fleet(doc["devices"])
    gateways: dict[str, str] = doc["gateways"]
    url = f"{base_url}/api/v1/iot/telemetry"
    log.info("device simulator: %d devices, %d gateways, data dir %s", len(fleet.devices), len(gateways),
             get_settings().data_dir)
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            now = dt.datetime.now(dt.UTC)
            ts = now.astimezone(CST).isoformat(timespec="seconds")
            batches: dict[str, list[dict]] = defaultdict(list)
            for d in fleet.due(started):
                vals = fleet.values(d, now)
                if vals is None:
                    continue
                if zlib.crc32(d["code"].encode()) % 20 == 0:
                    _post(client, url, {"ts": ts, "values": vals},
                          {"X-Device-Code": d["code"], "X-Device-Secret": d["secret"]})
                else:
                    batches[d["dept"]].append({"device": d["code"], "ts": ts, "values": vals})
            for dept, items in batches.items():
                key = gateways.get(dept)
                for j in range(0, len(items), 500):
                    _post(client, url, {"readings": items[j:j + 500]}, {"X-API-Key": key})
            stop.wait(max(0.5, TICK_S - (time.monotonic() - started)))
