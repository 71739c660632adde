"""`citybrain demo`: simulated devices report over HTTP and alarms fire within a minute of the server starting."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from citybrain import served
from tests.conftest import DEMO_PASSWORD

pytestmark = pytest.mark.slow


def test_demo_devices_report_and_alarms_fire_within_a_minute(tmp_path):
    port = served.free_port()
    env = dict(os.environ, CITYBRAIN_SECRET_KEY="demo-test-secret", CITYBRAIN_DEMO_PASSWORD=DEMO_PASSWORD)
    env.pop("CITYBRAIN_DATABASE_URL", None)
    env.pop("CITYBRAIN_MQTT_URL", None)
    log = open(tmp_path / "demo.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-c", "from citybrain.cli import main; main()", "demo", "--port",
                             str(port), "--data-dir", str(tmp_path / "data")], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # seeding every module's demo data comes first
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
        up = time.monotonic()
        r = httpx.post(f"{base}/api/v1/auth/token", data={"username": "operator", "password": DEMO_PASSWORD})
        h = {"Authorization": f"Bearer {r.json()['access_token']}"}
        summary, severities = {}, set()
        while time.monotonic() - up < 60:
            summary = httpx.get(f"{base}/api/v1/iot/summary", headers=h).json()
            alarms = httpx.get(f"{base}/api/v1/iot/alarms", params={"status": "open", "limit": 200}, headers=h).json()
            severities = {a["severity"] for a in alarms["items"]}
            if summary["devices_online"] >= 2000 and len(alarms["items"]) >= 5 and 3 in severities:
                break
            time.sleep(2)
        assert summary["devices_total"] >= 3000
        assert summary["devices_online"] >= 2000, summary
        assert summary["readings_today"] > 5000, summary
        assert 3 in severities and sum(summary["alarms_active_by_severity"].values()) >= 5, summary
        gj = httpx.get(f"{base}/api/v1/iot/alarms.geojson", headers=h).json()
        assert gj["features"] and all(f["geometry"]["coordinates"][0] > 113 for f in gj["features"])
    finally:
        served.terminate(proc, 20)
        log.close()
