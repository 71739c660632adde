"""`citybrain bench exchange`: loading population rows under every quality rule, and masked exchange queries
(pages of 100) with logging, each against a baseline measured in the same process."""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from citybrain import codes, context, served
from citybrain.config import Settings, configure
from citybrain.context import SYSTEM
from citybrain.db import Database, set_db

POP = "440115-1-01-001-0001"
PORT = 8152


def _people(n: int) -> tuple[list[str], Any]:
    """Distinct valid ID numbers and a generator of full rows over them (values from small pools)."""
    from citybrain.data import demo

    pool = list(demo.population_rows(5000, seed=41))
    base = dt.date(1940, 1, 1).toordinal()
    span = dt.date(2020, 12, 31).toordinal() - base
    ids, births = [], []
    for i in range(n):
        born = dt.date.fromordinal(base + (i * 7919) % span)
        ids.append(codes.make_id_number("440115", born, (i // span) % 1000))
        births.append(born.isoformat())

    def rows():
        for i, idn in enumerate(ids):
            p = pool[i % 5000]
            yield {"id_number": idn, "name": p["name"], "gender": codes.id_gender(idn), "birth_date": births[i],
                   "ethnicity": p["ethnicity"], "household_address": p["household_address"],
                   "residence_address": p["residence_address"], "phone": p["phone"], "area_code": "440115"}

    return ids, rows


def _baseline_sqlite(rows, path: Path) -> float:
    """Rows per second of raw sqlite3 executemany into the same columns (no validation, no upsert)."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA cache_size=-262144")  # the same page cache the loader uses
    con.execute("CREATE TABLE p (id INTEGER PRIMARY KEY, id_number TEXT UNIQUE, name TEXT, gender TEXT, "
                "birth_date TEXT, ethnicity TEXT, household_address TEXT, residence_address TEXT, phone TEXT, "
                "area_code TEXT)")
    t0 = time.perf_counter()
    n = 0
    batch = []
    for r in rows():
        batch.append(tuple(r.values()))
        if len(batch) == 5000:
            con.executemany("INSERT INTO p (id_number, name, gender, birth_date, ethnicity, household_address, "
                            "residence_address, phone, area_code) VALUES (?,?,?,?,?,?,?,?,?)", batch)
            con.commit()
            n += len(batch)
            batch = []
    if batch:
        con.executemany("INSERT INTO p (id_number, name, gender, birth_date, ethnicity, household_address, "
                        "residence_address, phone, area_code) VALUES (?,?,?,?,?,?,?,?,?)", batch)
        con.commit()
        n += len(batch)
    el = time.perf_counter() - t0
    con.close()
    return n / el


def _hammer(fn, threads: int, seconds: float) -> tuple[float, float, int]:
    """Call fn from `threads` threads for `seconds`; returns (calls/s, p99 ms, errors)."""
    lat: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        rng = random.Random(i)
        out = lat[i]
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                fn(rng)
            except Exception:  # noqa: BLE001 - counted
                errors[i] += 1
            out.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    el = time.perf_counter() - t0
    all_lat = sorted(x for lst in lat for x in lst)
    p99 = all_lat[int(len(all_lat) * 0.99) - 1] * 1000 if all_lat else 0.0
    return len(all_lat) / el, p99, sum(errors)


def bench_exchange(quick: bool = False) -> dict[str, Any]:
    """Load population rows with all quality rules; masked, logged exchange queries vs. the raw query."""
    from citybrain import modules
    from citybrain.app import startup
    from citybrain.data import demo, exchangelog, service
    from citybrain.identity import service as identity

    n_rows = 100_000 if quick else 1_000_000
    seconds = 4.0 if quick else 12.0
    threads = 4
    tmp = Path(tempfile.mkdtemp(prefix="cb-bench-data-"))
    settings = Settings(data_dir=tmp, secret_key="bench-secret-" + "x" * 20)
    db = Database(configure(settings))
    set_db(db)
    startup(db)
    context.set_principal(SYSTEM)
    modules.part("identity", "demo").seed(db)
    demo.seed(db, people=200, entities=200, history_days=1, calls_per_day=10)
    result: dict[str, Any] = {"rows": n_rows, "backend": "sqlite", "threads": threads}

    ids, rows = _people(n_rows)
    result["baseline_sqlite_rows_per_s"] = round(_baseline_sqlite(rows, tmp / "baseline.db"))
    t0, c0 = time.perf_counter(), time.process_time()
    with db.write() as s:
        load = service.load_records(s, principal=SYSTEM, code=POP, rows=rows(), source="bench", batch_size=5000)
    el = time.perf_counter() - t0
    result["load_rows_per_s"] = round(load.total / el)
    # CPU of both load threads per row: comparable between runs on a shared machine, unlike the rate
    result["load_cpu_us_per_row"] = round((time.process_time() - c0) / load.total * 1e6, 2)
    result["load_seconds"] = round(el, 2)
    result["load_accepted"] = load.inserted + load.updated
    result["load_vs_raw_sqlite"] = round(result["load_rows_per_s"] / result["baseline_sqlite_rows_per_s"], 3)

    # exchange: the demo consumer (city operations centre) holds a grant on the population resource
    exchangelog.LIMITER = exchangelog.RateLimit(1e9, 1e9)
    with db.read() as s:
        org = identity.org_by_code(s, code="D-YXZX")
    who = context.Principal(kind="apikey", id=1, name="bench", org_id=org.id, permissions=frozenset({"data.exchange"}),
                            org_scope=frozenset({org.id}))

    def call(masked: bool):
        def fn(rng: random.Random) -> None:
            with db.read() as s:
                r = service.exchange(s, principal=who, code=POP, op="query", filters={"area_code": "440115"},
                                     page=rng.randint(1, 50), page_size=100, masked=masked, log=masked)
            assert r["count"] == 100

        return fn

    _hammer(call(True), threads, 1.0)  # warm up
    rps, p99, err = _hammer(call(True), threads, seconds)
    prps, pp99, perr = _hammer(call(False), threads, seconds)
    result.update(requests_per_s=round(rps), p99_ms=round(p99, 2), errors=err + perr,
                  plain_requests_per_s=round(prps), plain_p99_ms=round(pp99, 2),
                  unmasked_ratio=round(rps / prps, 3) if prps else None)
    with db.read() as s:
        from sqlalchemy import func, select

        from citybrain.data.models import ExchangeLog

        result["logged_calls"] = s.scalar(select(func.count()).select_from(ExchangeLog)
                                          .where(ExchangeLog.actor == "apikey:bench"))
    # the same query through HTTP against a real server (auth, JSON, logging included), 1 and 2 workers
    with db.write() as s:
        key, _k = identity.create_api_key(s, name="bench", scopes=["data.exchange"], kind="consumer", org_id=org.id)
    db.dispose()
    set_db(None)
    try:
        by_workers = {w: _http(tmp, key, 3.0 if quick else 10.0, w) for w in (1, 2)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = max(by_workers.values(), key=lambda r: r["requests_per_s"])
    result.update(http_by_workers=by_workers, http_client=best["client"], http_workers=best["workers"],
                  http_requests_per_s=best["requests_per_s"], http_p99_ms=best["p99_ms"],
                  http_server_cpu_us_per_request=best["server_cpu_us_per_request"],
                  http_errors=sum(r["errors"] for r in by_workers.values()))
    # the headline is what a consumer gets: over HTTP; the in-process numbers stay alongside
    result["inprocess_requests_per_s"], result["inprocess_p99_ms"] = result["requests_per_s"], result["p99_ms"]
    result["requests_per_s"], result["p99_ms"] = best["requests_per_s"], best["p99_ms"]
    result["http_vs_inprocess_plain"] = round(best["requests_per_s"] / prps, 3) if prps else None
    return result


_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("CB_BENCH_KEY")
request = function()
  return wrk.format(nil, "/api/v1/data/exchange/%s/query", nil,
    '{"filters":{"area_code":"440115"},"page":' .. math.random(1, 50) .. ',"page_size":100}')
end
"""


def _wrk_ms(text: str) -> float:
    """`12.34ms` / `850.00us` / `1.02s` -> milliseconds."""
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * f
    return float(text)


def _run_wrk(wrk: str, url: str, key: str, seconds: float, conns: int,
             script: Path | None) -> tuple[float, float, int]:
    args = [wrk, "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency"]
    args += ["-s", str(script)] if script else []
    out = subprocess.run([*args, url], env={**os.environ, "CB_BENCH_KEY": key}, capture_output=True, text=True,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
    p99 = _wrk_ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return rps, p99, (int(bad.group(1)) if bad else 0) + (sum(map(int, errs.groups())) if errs else 0)


def _connection_split(port: int) -> list[int] | None:
    """The established connections to `port` per server process, largest first (from `ss`), if `ss` runs."""
    ss = shutil.which("ss")
    if not ss:
        return None
    out = subprocess.run([ss, "-tnpH", "state", "established", f"( sport = :{port} )"], capture_output=True,
                         text=True).stdout
    per: dict[str, int] = {}
    for pid in re.findall(r"pid=(\d+)", out):
        per[pid] = per.get(pid, 0) + 1
    return sorted(per.values(), reverse=True) or None


def _http(data_dir: Path, key: str, seconds: float, workers: int) -> dict[str, Any]:
    """Masked, logged queries through a real `citybrain serve` with `workers` processes: `wrk` (C, one
    thread: it leaves the cores to the server) when installed, else Python client threads."""
    import httpx

    server = served.Server(data_dir, PORT, secret="bench-secret-" + "x" * 20,
                           env={"CITYBRAIN_DATA_RATE_PER_S": "1000000", "CITYBRAIN_WORKERS": str(workers)})
    base = server.base
    conns = 8
    try:
        time.sleep(0.5 * workers)  # the other workers finish starting
        wrk = shutil.which("wrk")
        if wrk:
            script = data_dir / "bench-query.lua"
            script.write_text(_LUA % POP)
            _run_wrk(wrk, base, key, 1, conns, script)  # warm up (every worker's caches and connections)
            seen: list[list[int]] = []
            sampler = threading.Timer(min(1.0, seconds / 2), lambda: seen.append(_connection_split(PORT)))
            sampler.start()
            cpu0, t0 = server.cpu_seconds(), time.perf_counter()
            rps, p99, err = _run_wrk(wrk, base, key, seconds, conns, script)
            cpu, wall = server.cpu_seconds() - cpu0, time.perf_counter() - t0
            sampler.join()
            split = seen[0] if seen else None
            client = "wrk"
            # the floor of the HTTP stack on this machine now: the smallest request touching the database
            floor = round(_run_wrk(wrk, f"{base}/healthz", key, min(seconds, 3.0), conns, None)[0])
        else:
            local = threading.local()

            def fn(rng: random.Random) -> None:
                c = getattr(local, "c", None)
                if c is None:
                    c = local.c = httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=10)
                r = c.post(f"/api/v1/data/exchange/{POP}/query",
                           json={"filters": {"area_code": "440115"}, "page": rng.randint(1, 50), "page_size": 100})
                assert r.status_code == 200, r.text

            _hammer(fn, 4, 0.5)
            cpu0, t0 = server.cpu_seconds(), time.perf_counter()
            rps, p99, err = _hammer(fn, 4, seconds)
            cpu, wall = server.cpu_seconds() - cpu0, time.perf_counter() - t0
            client, conns, floor, split = "python-threads", 4, None, None
        return {"workers": workers, "client": client, "connections": conns, "requests_per_s": round(rps),
                "p99_ms": round(p99, 2), "errors": err, "healthz_requests_per_s": floor,
                # server CPU (all its processes) per request: comparable between runs on a shared machine
                "server_cpu_us_per_request": round(cpu / (rps * wall) * 1e6) if rps else None,
                "connections_per_process": split}
    finally:
        server.stop()


BENCHES = {"exchange": bench_exchange}
