"""`citybrain bench web`: IOC render time in headless Chromium, page weight, and map-layer API latency.

Full: 1,000,000 cases (5 % open) and 10,000 devices; `--quick`: 20,000 cases and 1,000 devices. The data is
bulk-loaded through the owning modules' functions (`cases.bench.load_history`: the cases bench's generator,
SQLAlchemy Core executemany; `iot.service.bulk_register` for devices), then a real `citybrain serve` runs on
127.0.0.1:8160-8169 and is measured over HTTP: one cases sweep (deadline marks and the hotspot clustering), the IOC
summary, every map layer as the map pages ask for it, and the IOC page in Chromium. The map-layer baseline is the
same open-case bounding-box query run with raw sqlite3 on the same database file.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import socket
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from citybrain import served

SECRET = "bench-secret-" + "w" * 32
PASSWORD = "CityBrain@2026"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
OPEN_SHARE = 0.05
MAX_POINTS = 1500  # layers.js MAX_POINTS


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else 0.0


def _port() -> int:
    for port in range(8160, 8170):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 8160-8169")


def _seed(tmp: Path, n_cases: int, n_devices: int) -> dict[str, Any]:
    """Demo organisations, users and map; bulk devices and a case history with a share of open cases."""
    from citybrain import context, modules
    from citybrain import demo_district as dd
    from citybrain.app import startup
    from citybrain.config import Settings, configure
    from citybrain.db import Database, set_db
    from citybrain.identity import service as identity

    db = Database(configure(Settings(data_dir=tmp, secret_key=SECRET, demo_password=PASSWORD)))
    set_db(db)
    context.set_principal(context.SYSTEM)
    startup(db)
    for name in ("startup",):
        for _m, part in modules.parts(name):
            stop = getattr(part, "stop", None)
            if stop:
                stop(db)
    for name in ("identity", "geo"):
        mod = modules.part(name, "demo")
        if mod is not None:
            mod.seed(db)
    info: dict[str, Any] = {"cases": 0, "devices": 0}
    rnd = random.Random(11)
    iot = modules.part("iot", "service")
    if iot is not None and hasattr(iot, "bulk_register"):
        t0 = time.perf_counter()
        with db.write() as s:
            orgs = [identity.org_by_code(s, code=dd.department(short).code).id for short in ("水务", "城管", "生态环境")]
        models = ("water_level", "manhole", "air", "noise", "lamp")
        done = 0
        while done < n_devices:
            n = min(2000, n_devices - done)
            specs = [{"name": f"bench-{done + i}", "model": models[(done + i) % len(models)],
                      "org_id": orgs[(done + i) % len(orgs)], "lon": rnd.uniform(dd.BBOX[0], dd.BBOX[2]),
                      "lat": rnd.uniform(dd.BBOX[1], dd.BBOX[3])} for i in range(n)]
            with db.write() as s:
                try:
                    iot.bulk_register(s, devices=specs, note="bench-web")
                except Exception:  # an unknown model code: fall back to the air sensor
                    for sp in specs:
                        sp["model"] = "air"
                    iot.bulk_register(s, devices=specs, note="bench-web")
            done += n
        info["devices"] = n_devices
        info["devices_load_s"] = round(time.perf_counter() - t0, 2)
    cases_bench = modules.part("cases", "bench")
    cases_demo = modules.part("cases", "demo")
    if cases_bench is not None and hasattr(cases_bench, "load_history") and cases_demo is not None:
        cases_demo.seed_config(db)
        loaded = cases_bench.load_history(db, n=n_cases, rnd=rnd, open_share=OPEN_SHARE)
        info["cases"] = n_cases
        info["cases_open"] = loaded["open"]
        info["cases_load_s"] = loaded["load_s"]
    db.dispose()
    set_db(None)
    configure(None)
    return info


def _Server(tmp: Path, port: int) -> served.Server:
    return served.Server(tmp, port, secret=SECRET, env={"CITYBRAIN_DEMO_PASSWORD": PASSWORD}, clean_env=True)


def _token(base: str, user: str) -> str:
    import httpx

    r = httpx.post(base + "/api/v1/auth/token", data={"username": user, "password": PASSWORD}, trust_env=False)
    r.raise_for_status()
    return r.json()["access_token"]


def _visible_boxes(n: int, rnd: random.Random) -> list[tuple[float, float, float, float]]:
    """Screen-sized areas (about a town at zoom 14) inside the district."""
    from citybrain import demo_district as dd

    w, h = 0.045, 0.03
    return [(x, y, x + w, y + h) for x, y in
            ((rnd.uniform(dd.BBOX[0], dd.BBOX[2] - w), rnd.uniform(dd.BBOX[1], dd.BBOX[3] - h)) for _ in range(n))]


def _layers(base: str, token: str, n: int) -> dict[str, Any]:
    """p50/p95 latency and size of each map layer for `n` random visible areas."""
    import httpx

    rnd = random.Random(5)
    boxes = _visible_boxes(n, rnd)
    week_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=7)).isoformat()
    page = {"status": "open", "max_points": MAX_POINTS}  # what the map pages ask (layers.js)
    layers = {"cases": ("/api/v1/cases.geojson", page),
              "cases_category": ("/api/v1/cases.geojson", {**page, "category_code": "06010"}),
              "cases_dept": ("/api/v1/cases.geojson", {**page}),
              "cases_7d": ("/api/v1/cases.geojson", {**page, "since": week_ago}),
              "cases_all_points": ("/api/v1/cases.geojson", {"status": "open"}),  # no clusters: every point
              "hotspots": ("/api/v1/cases/hotspots.geojson", {}),
              "devices": ("/api/v1/iot/devices.geojson", {"max_points": MAX_POINTS}),
              "alarms": ("/api/v1/iot/alarms.geojson", {"status": "active"}),
              "grids": ("/api/v1/geo/grids", {})}
    out: dict[str, Any] = {}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60,
                      trust_env=False) as c:
        depts = c.get("/api/v1/orgs", params={"type": "department"})
        items = depts.json() if depts.status_code == 200 else []
        items = items.get("items", []) if isinstance(items, dict) else items
        from citybrain import demo_district as dd

        cgj = [o["id"] for o in items if o.get("code") == dd.department("城管").code]
        if cgj:  # the map's department filter: the department with the most case categories
            layers["cases_dept"][1]["dept_org_id"] = cgj[0]
        else:
            del layers["cases_dept"]
        for name, (path, params) in layers.items():
            if c.get(path, params={**params, "bbox": "113.5,22.7,113.51,22.71"}).status_code == 404:
                out[name] = "not installed"
                continue
            times, sizes, feats, errors = [], [], [], {}
            for b in boxes:
                t0 = time.perf_counter()
                r = c.get(path, params={**params, "bbox": ",".join(f"{v:.5f}" for v in b)})
                times.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:  # counted, not hidden (e.g. 503 while SQLite is locked by a writer)
                    errors[r.status_code] = errors.get(r.status_code, 0) + 1
                    continue
                sizes.append(len(r.content))
                feats.append(len(r.json().get("features", [])))
            out[name] = {"p50_ms": round(_pct(times, 50), 1), "p95_ms": round(_pct(times, 95), 1),
                         "features_median": int(statistics.median(feats)) if feats else 0,
                         "kb_median": round(statistics.median(sizes) / 1024, 1) if sizes else 0,
                         "errors": errors}
    return out


def _baseline_cases(db_file: Path, n: int) -> dict[str, Any] | str:
    """The open-case bbox query with raw sqlite3 on the same file (no HTTP, no JSON): the floor."""
    con = sqlite3.connect(db_file)
    if not con.execute("SELECT 1 FROM sqlite_master WHERE name='cases_case'").fetchone():
        return "not installed"
    from citybrain import modules

    wf = modules.part("cases", "workflow")
    open_statuses = sorted(wf.OPEN) if wf is not None else ["reported", "filed", "dispatched", "in_progress"]
    marks = ",".join("?" * len(open_statuses))
    sql = ("SELECT id, ticket, title, status, category_code, category_name, source, overdue, urgent, "
           "supervision_level, dept_org_id, grid_code, reported_at, deadline_at, lon, lat FROM cases_case "
           f"WHERE lon IS NOT NULL AND lon >= ? AND lon <= ? AND lat >= ? AND lat <= ? AND status IN ({marks}) "
           "ORDER BY reported_at DESC LIMIT 5000")
    times = []
    for b in _visible_boxes(n, random.Random(5)):
        t0 = time.perf_counter()
        con.execute(sql, (b[0], b[2], b[1], b[3], *open_statuses)).fetchall()
        times.append((time.perf_counter() - t0) * 1000)
    con.close()
    return {"p50_ms": round(_pct(times, 50), 1), "p95_ms": round(_pct(times, 95), 1)}


def _ioc_render(base: str, runs: int) -> dict[str, Any]:
    """Time from navigation start until the IOC shows its indicators and map layers; the page's weight."""
    from urllib.parse import urlparse

    from playwright.sync_api import sync_playwright

    results, weights, outside = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        ctx = browser.new_context(viewport={"width": 1920, "height": 1080})
        ctx.on("request", lambda r: outside.append(r.url) if urlparse(r.url).hostname not in (None, "127.0.0.1")
               and not r.url.startswith(("data:", "blob:")) else None)
        page = ctx.new_page()
        page.goto(base + "/login")
        page.fill("#username", "leader")
        page.fill("#password", PASSWORD)
        page.press("#password", "Enter")
        page.wait_for_url(lambda u: "/login" not in u)
        for i in range(runs):
            if i == 0:  # cold: a fresh browser context with an empty cache
                cold = browser.new_context(viewport={"width": 1920, "height": 1080})
                pg = cold.new_page()
                pg.goto(base + "/login")
                pg.fill("#username", "leader")
                pg.fill("#password", PASSWORD)
                pg.press("#password", "Enter")
                pg.wait_for_url(lambda u: "/login" not in u)
            else:
                pg = page
            pg.goto(base + "/ioc")
            pg.wait_for_function("() => document.body.dataset.ready === '1'", timeout=120000)
            ready = pg.evaluate("window.CB_IOC_READY_AT")
            results.append(ready)
            if i == 0:
                weights.append(pg.evaluate(
                    "() => performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
                    ".reduce((n, e) => n + (e.decodedBodySize || 0), 0)"))
                cold.close()
        browser.close()
    return {"cold_ms": round(results[0]), "warm_median_ms": round(statistics.median(results[1:])) if runs > 1 else None,
            "warm_max_ms": round(max(results[1:])) if runs > 1 else None,
            "page_weight_kb": round(weights[0] / 1024) if weights else None, "requests_outside_127": len(outside)}


def _sweep(base: str, token: str) -> dict[str, Any]:
    """One run of the cases sweep (deadline marks and the hotspot clustering), so the hotspot layer has content."""
    import httpx

    t0 = time.perf_counter()
    r = httpx.post(base + "/api/v1/cases/sweep", headers={"Authorization": f"Bearer {token}"}, timeout=600,
                   trust_env=False)
    if r.status_code == 404:
        return {"not installed": True}
    r.raise_for_status()
    return {"ms": round((time.perf_counter() - t0) * 1000), **r.json()}


def _summary_latency(base: str, token: str, n: int) -> dict[str, Any]:
    """The first (uncomputed) IOC summary, then `n` served from the shared cache."""
    import httpx

    times = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=1800,
                      trust_env=False) as c:
        t0 = time.perf_counter()
        first = c.get("/api/v1/ioc/summary")
        first.raise_for_status()
        first_ms = (time.perf_counter() - t0) * 1000
        for _ in range(n):
            t0 = time.perf_counter()
            c.get("/api/v1/ioc/summary").raise_for_status()
            times.append((time.perf_counter() - t0) * 1000)
    return {"first_compute_ms": round(first_ms), "server_compute_ms": first.json().get("compute_ms"),
            "cached_p50_ms": round(_pct(times, 50), 1), "cached_max_ms": round(max(times), 1)}


def bench_web(quick: bool = False) -> dict[str, Any]:
    """IOC render time in headless Chromium, page weight, map-layer API p95, with many cases and devices."""
    n_cases = 20_000 if quick else 1_000_000
    n_devices = 1_000 if quick else 10_000
    n_req = 30 if quick else 100
    reuse = os.environ.get("CITYBRAIN_BENCH_WEB_REUSE")  # a data folder seeded by an earlier run
    t0 = time.perf_counter()
    if reuse and (Path(reuse) / "citybrain.db").exists():
        tmp = Path(reuse)
        seeded = {"cases": n_cases, "devices": n_devices, "reused": str(tmp)}
    else:
        tmp = Path(tempfile.mkdtemp(prefix="cb-bench-web-"))
        seeded = _seed(tmp, n_cases, n_devices)
    out: dict[str, Any] = {"bench": "web", "quick": quick, "cases": seeded["cases"], "devices": seeded["devices"],
                           "seed_s": round(time.perf_counter() - t0, 1), "machine": "2 cores, shared, noisy"}
    server = _Server(tmp, _port())
    try:
        leader = _token(server.base, "leader")
        operator = _token(server.base, "operator")
        steps = [("hotspot_sweep", lambda: _sweep(server.base, operator)),
                 ("ioc_summary_api", lambda: _summary_latency(server.base, leader, 5 if quick else 10)),
                 ("map_layers", lambda: _layers(server.base, operator, n_req)),
                 ("baseline_sqlite_cases_bbox", lambda: _baseline_cases(tmp / "citybrain.db", n_req)),
                 ("ioc_render", lambda: _ioc_render(server.base, 3 if quick else 5) if Path(CHROMIUM).exists()
                  else f"Chromium not installed at {CHROMIUM}")]
        for name, step in steps:
            try:
                out[name] = step()
            except Exception as exc:  # keep what was measured; say what failed
                if quick:
                    raise
                out[name] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
    finally:
        server.stop()
    out["total_s"] = round(time.perf_counter() - t0, 1)
    return out


BENCHES = {"web": bench_web}
