"""`citybrain bench ingest`: HTTP gateway batches into a real server, rules on, against raw sqlite3 executemany.

The server runs as a subprocess (`citybrain serve`) on a fresh data folder; the bench process registers the
devices beforehand, pre-serialises every batch (so the client costs little), posts them from a few threads
with keep-alive, and meanwhile a probe sends alarm-triggering readings and times them until the alarm event
arrives on the core live SSE stream (`/api/v1/live`).
The ceiling is a raw `sqlite3.executemany` of the same rows, in batches of the same size, into a table of
the same shape, in the same run.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from citybrain import served

BATCH = 500
PORT = 8131
SECRET = "bench-secret-not-for-production"


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _seed(data_dir: Path, n_devices: int, database_url: str | None = None) -> dict[str, Any]:
    """Create the database, the district's organisations and map, the bench devices and keys."""
    from citybrain import context, modules
    from citybrain import demo_district as dd
    from citybrain.app import startup
    from citybrain.config import Settings, configure
    from citybrain.db import Database, set_db
    from citybrain.identity import service as identity
    from citybrain.iot import service

    settings = configure(Settings(data_dir=data_dir, secret_key=SECRET, database_url=database_url))
    db = Database(settings)
    set_db(db)
    startup(db)
    for name in ("identity", "geo"):
        mod = modules.part(name, "demo")
        if mod is not None:
            mod.seed(db)
    context.set_principal(context.SYSTEM)
    lo_lon, lo_lat, hi_lon, hi_lat = dd.BBOX
    import random

    rnd = random.Random(1)
    with db.write() as s:
        org = identity.org_by_code(s, code=dd.department("生态环境").code).id
    devices = []
    with db.write() as s:
        specs = [{"name": f"bench-air-{i}", "model": "air", "org_id": org,
                  "lon": rnd.uniform(lo_lon, hi_lon), "lat": rnd.uniform(lo_lat, hi_lat)} for i in range(n_devices)]
        specs.append({"name": "bench-probe", "model": "gas", "org_id": org, "lon": 113.55, "lat": 22.78})
        secrets_ = service.bulk_register(s, devices=specs, note="bench")
    with db.read() as s:
        codes = list(service.iter_codes(s, model="air"))
        probe = list(service.iter_codes(s, model="gas"))[0]
    devices = codes
    with db.write() as s:
        gw, _ = service.create_gateway_key(s, name="bench-gateway", org_id=org, principal=context.SYSTEM)
    with db.write() as s:
        reader, _ = identity.create_api_key(s, name="bench-reader", scopes=["iot.read"], org_id=org)
    grid = None
    with db.read() as s:
        from sqlalchemy import func, select

        from citybrain.iot.models import Device

        grid = s.execute(select(Device.grid_code, func.count()).where(Device.grid_code.is_not(None))
                         .group_by(Device.grid_code).order_by(func.count().desc()).limit(1)).first()
    db.dispose()
    set_db(None)
    configure(None)
    return {"devices": devices, "probe": probe, "gateway": gw, "reader": reader, "grid": grid[0] if grid else None,
            "secrets": dict(zip(codes, secrets_[:len(codes)], strict=True))}


class Server(served.Server):
    """`citybrain serve` in a subprocess with the bench's secret."""

    def __init__(self, data_dir: Path, port: int, database_url: str | None = None, extra_env: dict | None = None):
        super().__init__(data_dir, port, secret=SECRET, database_url=database_url,
                         env={"CITYBRAIN_PORT": str(port), **(extra_env or {})}, timeout_s=60)


def make_batches(devices: list[str], rounds: int, start: dt.datetime) -> list[bytes]:
    """Pre-serialised gateway batches: every device reports its 4 air properties once per round."""
    import random

    rnd = random.Random(2)
    per = BATCH // 4
    out = []
    for r in range(rounds):
        ts = (start + dt.timedelta(seconds=r)).isoformat()
        for i in range(0, len(devices), per):
            items = [{"device": c, "ts": ts, "values": {"pm25": round(rnd.uniform(5, 120), 1),
                                                        "pm10": round(rnd.uniform(10, 200), 1),
                                                        "o3": round(rnd.uniform(10, 160), 1),
                                                        "no2": round(rnd.uniform(5, 80), 1)}}
                     for c in devices[i:i + per]]
            out.append(orjson.dumps({"readings": items}))
    return out


def _post_all(base: str, key: str, bodies: list[bytes], threads: int) -> tuple[float, int]:
    """Post every body from `threads` keep-alive clients; return (seconds, readings accepted)."""
    accepted = [0] * threads
    errors: list[str] = []

    def worker(k: int) -> None:
        import http.client
        from urllib.parse import urlparse

        u = urlparse(base)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        headers = {"X-API-Key": key, "Content-Type": "application/json"}
        try:
            for body in bodies[k::threads]:
                conn.request("POST", "/api/v1/iot/telemetry", body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                if r.status != 200:
                    errors.append(data[:300].decode(errors="replace"))
                    return
                accepted[k] += orjson.loads(data)["stored"]
        finally:
            conn.close()

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError(f"telemetry failed: {errors[0]}")
    return time.perf_counter() - t0, sum(accepted)


class AlarmProbe:
    """Sends a reading that raises (then clears) an alarm every `period` s; times it to the SSE event."""

    def __init__(self, base: str, key: str, reader: str, probe: str, period: float = 0.05):
        self.base, self.key, self.reader, self.probe, self.period = base, key, reader, probe, period
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.endpoint = "/api/v1/live"
        self._threads = [threading.Thread(target=self._listen, daemon=True),
                         threading.Thread(target=self._send, daemon=True)]

    def start(self) -> None:
        for t in self._threads:
            t.start()
        self.ready.wait(10)

    def _listen(self) -> None:
        headers = {"X-API-Key": self.reader, "Accept": "text/event-stream"}
        with httpx.Client(base_url=self.base, timeout=httpx.Timeout(5, read=None)) as c:
            for path in ("/api/v1/live",):
                with c.stream("GET", path, headers=headers) as r:
                    if r.status_code != 200:
                        continue
                    self.endpoint = path
                    self.ready.set()
                    for line in r.iter_lines():
                        if self.stop.is_set():
                            return
                        if not line.startswith("data:"):
                            continue
                        doc = orjson.loads(line[5:])
                        payload = doc.get("payload", doc) if "topic" in doc else doc
                        if payload.get("device_code") != self.probe:
                            continue
                        mark = f"{payload.get('status')}:{payload.get('value')}"
                        t0 = self.sent.pop(mark, None)
                        if t0 is not None:
                            self.latencies.append(time.perf_counter() - t0)
                    return

    def _send(self) -> None:
        self.ready.wait(10)
        with httpx.Client(base_url=self.base, timeout=30, headers={"X-API-Key": self.key}) as c:
            high = True
            n = 0
            while not self.stop.is_set():
                n += 1
                value = 30.0 + (n % 7) / 10 if high else 0.0 + (n % 7) / 100
                mark = f"active:{value}" if high else f"cleared:{value}"
                ts = dt.datetime.now(dt.UTC).isoformat()
                self.sent[mark] = time.perf_counter()
                c.post("/api/v1/iot/telemetry",
                       json={"readings": [{"device": self.probe, "ts": ts, "values": {"lel": value}}]})
                high = not high
                self.stop.wait(self.period)

    def close(self) -> None:
        self.stop.set()


def _raw_rows(bodies: list[bytes], devices: list[str]) -> list[list[tuple[int, int, dict[str, Any]]]]:
    ids = {c: i + 1 for i, c in enumerate(devices)}
    batches = []
    for body in bodies:
        batches.append([(ids[item["device"]], int(dt.datetime.fromisoformat(item["ts"]).timestamp() * 1000),
                         item["values"]) for item in orjson.loads(body)["readings"]])
    return batches


def _raw_db(tmp: Path, name: str, ddl: str) -> sqlite3.Connection:
    path = tmp / name
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")  # as the server's connections
    conn.execute(ddl)
    return conn


def raw_ceiling(bodies: list[bytes], devices: list[str], tmp: Path) -> float:
    """Readings/s of a raw sqlite3 executemany of the same readings, ONE ROW EACH (device_id, prop, ts), in the
    same 500-reading batches with a commit each: the issue's ceiling (the layout before iot_0004)."""
    batches = _raw_rows(bodies, devices)
    conn = _raw_db(tmp, "raw.db", "CREATE TABLE r (device_id INTEGER NOT NULL, prop VARCHAR(40) NOT NULL, "
                   "ts BIGINT NOT NULL, value FLOAT, text VARCHAR(200), PRIMARY KEY (device_id, prop, ts)) "
                   "WITHOUT ROWID")
    n = 0
    t0 = time.perf_counter()
    for msgs in batches:
        rows = [(d, k, ts, v, None) for d, ts, vals in msgs for k, v in vals.items()]
        conn.execute("BEGIN")
        conn.executemany("INSERT OR IGNORE INTO r VALUES (?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        n += len(rows)
    secs = time.perf_counter() - t0
    conn.close()
    return n / secs


def raw_layout_ceiling(bodies: list[bytes], devices: list[str], tmp: Path) -> float:
    """Readings/s of a raw sqlite3 executemany into the server's own layout (one row per device message,
    (ts, device_id) key plus a (device_id, ts) index, the values as a JSON object serialised in the loop, the
    same upsert), same batches."""
    batches = _raw_rows(bodies, devices)
    conn = _raw_db(tmp, "raw-layout.db", "CREATE TABLE r (device_id INTEGER NOT NULL, ts BIGINT NOT NULL, "
                   "vals JSON NOT NULL, PRIMARY KEY (ts, device_id)) WITHOUT ROWID")
    conn.execute("CREATE INDEX r_device_ts ON r (device_id, ts)")
    n = 0
    t0 = time.perf_counter()
    for msgs in batches:
        rows = [(d, ts, orjson.dumps(vals).decode()) for d, ts, vals in msgs]
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO r VALUES (?, ?, ?) ON CONFLICT (device_id, ts) DO UPDATE "
                         "SET vals = json_patch(excluded.vals, r.vals)", rows)
        conn.execute("COMMIT")
        n += sum(len(vals) for _d, _ts, vals in msgs)
    secs = time.perf_counter() - t0
    conn.close()
    return n / secs


def pg_raw_copy(url: str, bodies: list[bytes], devices: list[str]) -> float:
    """Readings/s of a raw psycopg COPY of the same readings in the same batches (a commit each) into a
    table of the server's PostgreSQL layout (partitioned by ts, (device_id, ts) key, json values)."""
    import psycopg

    batches = _raw_rows(bodies, devices)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE bench_raw (device_id integer NOT NULL, ts bigint NOT NULL, vals json NOT NULL, "
                      "PRIMARY KEY (device_id, ts)) PARTITION BY RANGE (ts)")
        conn.execute("CREATE TABLE bench_raw_default PARTITION OF bench_raw DEFAULT")
        conn.commit()
        n = 0
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            for msgs in batches:
                with cur.copy("COPY bench_raw (device_id, ts, vals) FROM STDIN") as cp:
                    for d, ts, vals in msgs:
                        cp.write_row((d, ts, orjson.dumps(vals).decode()))
                conn.commit()
                n += sum(len(vals) for _d, _ts, vals in msgs)
        secs = time.perf_counter() - t0
        conn.execute("DROP TABLE bench_raw")
        conn.commit()
    return n / secs


def _http_run(tmp: Path, n_devices: int, rounds: int, threads: int, database_url: str | None,
              port: int) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    seeded = _seed(tmp, n_devices, database_url)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    warm = make_batches(seeded["devices"], 1, start - dt.timedelta(minutes=5))
    bodies = make_batches(seeded["devices"], rounds, start)
    server = Server(tmp, port, database_url)
    try:
        _post_all(server.base, seeded["gateway"], warm, threads)  # devices come online (not timed)
        probe = AlarmProbe(server.base, seeded["gateway"], seeded["reader"], seeded["probe"])
        probe.start()
        cpu0, client0 = server.cpu_seconds(), time.process_time()
        secs, stored = _post_all(server.base, seeded["gateway"], bodies, threads)
        cpu = server.cpu_seconds() - cpu0
        client_cpu = time.process_time() - client0
        time.sleep(1.0)
        probe.close()
        lat = sorted(probe.latencies)
        grid_ms = None
        if seeded["grid"]:
            with httpx.Client(base_url=server.base, headers={"X-API-Key": seeded["reader"]}) as c:
                times = []
                for _ in range(30):
                    t0 = time.perf_counter()
                    c.get(f"/api/v1/iot/grids/{seeded['grid']}/latest").raise_for_status()
                    times.append((time.perf_counter() - t0) * 1000)
                grid_ms = round(statistics.median(times), 2)
        rss = server.rss_mb()
    finally:
        server.stop()
    return {"readings": stored, "seconds": secs, "rate": stored / secs, "bodies": bodies,
            "devices": seeded["devices"], "alarm_lat": lat, "endpoint": probe.endpoint, "grid_ms": grid_ms,
            "rss_mb": rss, "server_cpu_s": cpu, "client_cpu_s": client_cpu}


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(len(values) * 0.99))] * 1000, 1)


def bench_ingest(quick: bool = False) -> dict[str, Any]:
    """HTTP gateway batches of 500 readings into SQLite with rules on; ceiling = raw sqlite3 executemany."""
    import logging

    logging.disable(logging.WARNING)
    port = next((p for p in range(PORT, 8139) if _free(p)), PORT)
    n_devices = 2000 if quick else 10000
    rounds = 40 if quick else 60
    keep = os.environ.get("CITYBRAIN_BENCH_KEEP")  # a folder to keep the data and server logs in
    with tempfile.TemporaryDirectory(prefix="cb-bench-iot-") as t:
        tmp = Path(keep) if keep else Path(t)
        run = _http_run(tmp / "sqlite", n_devices, rounds, 3, None, port)
        ceiling = raw_ceiling(run["bodies"], run["devices"], tmp)
        layout = raw_layout_ceiling(run["bodies"], run["devices"], tmp)
        out: dict[str, Any] = {
            "readings_per_s": round(run["rate"]),
            "ceiling_ratio": round(run["rate"] / ceiling, 3),
            "alarm_p99_ms": _p99(run["alarm_lat"]),
            "alarm_p50_ms": round(statistics.median(run["alarm_lat"]) * 1000, 1) if run["alarm_lat"] else None,
            "alarm_samples": len(run["alarm_lat"]),
            "alarm_stream": run["endpoint"],
            "raw_executemany_rows_per_s": round(ceiling),  # same readings, one row each (narrow)
            "raw_layout_readings_per_s": round(layout),  # same readings in the server's layout (row per message)
            "layout_ceiling_ratio": round(run["rate"] / layout, 3),
            "readings": run["readings"],
            "seconds": round(run["seconds"], 2),
            "batch": BATCH,
            "devices": n_devices,
            "server_rss_mb": round(run["rss_mb"], 1),
            "grid_latest_ms": run["grid_ms"],
            # CPU per batch of the server and of this bench's client (the client's does the same work in every
            # run: its value shows how fast the shared machine is at the moment); cores = server CPU / wall time
            "server_cpu_ms_per_batch": round(run["server_cpu_s"] / len(run["bodies"]) * 1000, 3),
            "client_cpu_ms_per_batch": round(run["client_cpu_s"] / len(run["bodies"]) * 1000, 3),
            "server_cores": round(run["server_cpu_s"] / run["seconds"], 2),
        }
        if not quick:
            out.update(_extras(tmp, port))
    return out


def _extras(tmp: Path, port: int) -> dict[str, Any]:
    """Full runs only: PostgreSQL rate, 100k-device RSS and grid latency, MQTT (when the services are up)."""
    out: dict[str, Any] = {}
    pg = os.environ.get("CITYBRAIN_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        import psycopg

        name = f"cb_bench_iot_{os.getpid()}"
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = pg.rsplit("/", 1)[0] + f"/{name}"
        try:
            run = _http_run(tmp / "pg", 10000, 20, 3, url, port)
            out["pg_readings_per_s"] = round(run["rate"])
            out["pg_alarm_p99_ms"] = _p99(run["alarm_lat"])
            raw = pg_raw_copy(url, run["bodies"], run["devices"])
            out["pg_raw_copy_readings_per_s"] = round(raw)  # same readings, same layout, COPY + commit per batch
            out["pg_ceiling_ratio"] = round(run["rate"] / raw, 3)
        finally:
            with psycopg.connect(pg, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:  # PostgreSQL not reachable
        out["pg_error"] = str(exc)[:200]
    run = _http_run(tmp / "big", 100_000, 1, 3, None, port)
    out["rss_mb_100k_devices"] = round(run["rss_mb"], 1)
    out["grid_latest_ms"] = run["grid_ms"]
    try:
        from citybrain.iot import mqtt_bench

        out.update(mqtt_bench.run(tmp / "mqtt", port))
    except Exception as exc:
        out["mqtt_error"] = str(exc)[:200]
    return out


BENCHES = {"ingest": bench_ingest}
