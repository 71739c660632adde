"""`citybrain bench cases`: intake + auto-dispatch rate, evaluation time and list latency over a large history.

Full: 1,000,000 closed cases pre-loaded into SQLite with a bulk generator (SQLAlchemy Core executemany);
`--quick`: 20,000. A baseline in the same process inserts the same rows with raw sqlite3 executemany.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from citybrain import clock, context
from citybrain import demo_district as dd
from citybrain.context import SYSTEM

CATS = [("06010", "暴露垃圾", "城管"), ("07001", "非法小广告", "城管"), ("09009", "机动车乱停放", "交通"),
        ("06036", "乱堆杂物", "城管"), ("01002", "污水井盖异常", "水务"), ("06028", "噪声扰民", "生态环境"),
        ("08004", "工地扬尘", "住建"), ("01037", "路灯异常", "城管"), ("06013", "道路破损", "城管"),
        ("09015", "无证餐饮", "市场监管")]
SOURCES = ["patrol"] * 6 + ["hotline"] * 3 + ["web", "iot"]


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def _rows(n: int, orgs: dict[str, int], now: dt.datetime, rnd: random.Random, start_id: int = 1):
    """Closed cases spread over the two years before `now`, as dicts for executemany."""
    span = 730 * 86400
    communities = dd.COMMUNITIES
    for i in range(start_id, start_id + n):
        c = communities[rnd.randrange(len(communities))]
        code, name, dept = CATS[rnd.randrange(len(CATS))]
        rep = now - dt.timedelta(seconds=rnd.randrange(span) + 86400 * 3)
        disp = rep + dt.timedelta(minutes=rnd.randint(1, 90))
        deadline = disp + dt.timedelta(hours=rnd.choice((4, 8, 24, 72)))
        handled = disp + dt.timedelta(minutes=rnd.randint(30, 5000))
        closed = handled + dt.timedelta(minutes=rnd.randint(10, 600))
        src = SOURCES[rnd.randrange(len(SOURCES))]
        rating = rnd.choice((None, None, "satisfied", "satisfied", "basic", "dissatisfied")) \
            if src in ("hotline", "web") else None
        yield {
            "id": i, "ticket": f"B{i:010d}", "source": src, "title": name, "description": "",
            "dictionary_code": "gbt47678.5-2026", "category_kind": "event", "category_code": code,
            "category_name": name, "urgent": False, "lon": round(rnd.uniform(dd.BBOX[0], dd.BBOX[2]), 6),
            "lat": round(rnd.uniform(dd.BBOX[1], dd.BBOX[3]), 6), "grid_code": f"{c.code}{rnd.randint(1, 4):03d}",
            "community_code": c.code, "town_code": c.town_code, "community_org_id": orgs.get(c.code),
            "town_org_id": orgs.get(c.town_code), "status": "closed", "dept_org_id": orgs.get(dept),
            "limit_value": 1.0, "limit_unit": "work_days", "reported_at": rep, "filed_at": rep,
            "dispatched_at": disp, "deadline_at": deadline, "handled_at": handled, "verified_at": closed,
            "closed_at": closed, "dispatched_on_time": disp - rep < dt.timedelta(minutes=60),
            "handled_on_time": handled <= deadline, "overdue": handled > deadline, "warned": True,
            "supervision_level": 0, "rework_count": 1 if rnd.random() < 0.06 else 0,
            "return_count": 1 if rnd.random() < 0.03 else 0, "extension_count": 0, "reopen_count": 0,
            "repeat_count": 0, "rating": rating, "rating_contacted": True if rating else None,
            "rating_resolved": (rating != "dissatisfied") if rating else None, "rated_at": closed if rating else None,
            "reporter_phone": "13900000000" if src in ("hotline", "web") else None, "updated_at": closed,
        }


def _open(tmp: Path):
    """A fresh (or existing) data folder with the demo organisations, users and case configuration."""
    from citybrain import modules
    from citybrain.app import startup
    from citybrain.cases import demo
    from citybrain.cases import startup as cases_startup
    from citybrain.config import Settings, configure
    from citybrain.db import Database, set_db
    from citybrain.identity import service as identity

    db = Database(configure(Settings(data_dir=tmp, secret_key="bench-secret-" + "x" * 32)))
    set_db(db)
    context.set_principal(SYSTEM)
    startup(db)
    cases_startup.stop(db)  # no background sweep during the measurement
    modules.part("identity", "demo").seed(db)
    demo.seed_config(db)
    with db.read() as s:
        orgs = {o.code: o.id for o in identity.list_orgs(s)}
        for d in dd.DEPARTMENTS:
            orgs[d.short] = orgs.get(d.code)
        operator = identity.principal_for_user(s, user=identity.user_by_username(s, username="operator"))
    return db, orgs, operator


def _preload(db: Any, n_pre: int, orgs: dict[str, int], now: dt.datetime, rnd: random.Random) -> float:
    """Bulk-load closed cases with `load_history` (indexes dropped and rebuilt); returns the seconds taken."""
    t0 = time.perf_counter()
    load_history(db, n=n_pre, now=now, rnd=rnd, orgs=orgs)
    return time.perf_counter() - t0


def _baseline(tmp: Path, n_base: int, orgs: dict[str, int], now: dt.datetime) -> float:
    """Raw sqlite3 executemany of the same rows into a copy of the table (same indexes); rows per second."""
    raw = sqlite3.connect(tmp / "baseline.db")
    src = sqlite3.connect(tmp / "citybrain.db")
    for (sql,) in src.execute("SELECT sql FROM sqlite_master WHERE tbl_name='cases_case' AND sql IS NOT NULL"):
        raw.execute(sql)
    src.close()
    rows = list(_rows(n_base, orgs, now, random.Random(8)))
    cols = list(rows[0])
    sql = f"INSERT INTO cases_case ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"

    def conv(v):
        return v.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ") if isinstance(v, dt.datetime) else v

    t0 = time.perf_counter()
    raw.executemany(sql, ([conv(r[c]) for c in cols] for r in rows))
    raw.commit()
    base_s = time.perf_counter() - t0
    raw.close()
    (tmp / "baseline.db").unlink(missing_ok=True)
    return n_base / base_s


CODES = [c[0] for c in CATS]


def _item(i: int, tag: str = "bench") -> dict[str, Any]:
    c = dd.COMMUNITIES[i % len(dd.COMMUNITIES)]
    return {"source": "api", "title": "压测案件", "category_code": CODES[i % len(CODES)],
            "lon": 113.5 + (i % 100) * 0.001, "lat": 22.75 + (i % 70) * 0.001, "grid_code": f"{c.code}001",
            "external_ref": f"{tag}-{i}"}


def _intake_batch(db: Any, operator: Any, n_new: int, batch_size: int, tag: str = "bench"
                  ) -> tuple[list[float], float]:
    """Create + auto-dispatch through the batch intake, one request (transaction) per `batch_size` cases."""
    from citybrain.cases import service

    lat: list[float] = []
    t_all = time.perf_counter()
    for b in range(n_new // batch_size):
        items = [_item(b * batch_size + k, tag) for k in range(batch_size)]
        t = time.perf_counter()
        with db.write() as s:
            service.report_batch(s, principal=operator, items=items)
        lat.append((time.perf_counter() - t) * 1000)
    return lat, time.perf_counter() - t_all


def _intake_single(db: Any, operator: Any, n_single: int) -> tuple[list[float], float]:
    """One case per transaction (interactive intake: report -> file -> dispatch, each step audited)."""
    from citybrain.cases import service

    single_lat: list[float] = []
    t_single = time.perf_counter()
    for i in range(n_single):
        c = dd.COMMUNITIES[i % len(dd.COMMUNITIES)]
        t = time.perf_counter()
        with db.write() as s:
            service.report(s, principal=operator, source="superior", title="压测案件",
                           category_code=CODES[i % len(CODES)], lon=113.5 + (i % 100) * 0.001,
                           lat=22.75 + (i % 70) * 0.001, grid_code=f"{c.code}001")
        single_lat.append((time.perf_counter() - t) * 1000)
    return single_lat, time.perf_counter() - t_single


def _list_filters(orgs: dict[str, int]) -> list[dict[str, Any]]:
    depts = [orgs[d.code] for d in dd.DEPARTMENTS[1:6]]
    filters: list[dict[str, Any]] = []
    for k in range(20):
        comm = dd.COMMUNITIES[k * 3 % len(dd.COMMUNITIES)]
        filters += [{"status": ["closed"]}, {"status": ["dispatched"]}, {"dept_org_id": depts[k % len(depts)]},
                    {"grid_code": f"{comm.code}00{1 + k % 4}"}, {"category_code": CODES[k % len(CODES)]},
                    {"overdue": True}, {"status": ["closed"], "dept_org_id": depts[k % len(depts)]},
                    {"category_code": CODES[k % len(CODES)], "overdue": True}]
    return filters


def _lists(db: Any, operator: Any, orgs: dict[str, int]) -> list[float]:
    """Filtered lists (status, department, grid, category, overdue), 50 per page with the capped count."""
    from citybrain.cases import service

    list_lat: list[float] = []
    with db.read() as s:
        for f in _list_filters(orgs):
            t = time.perf_counter()
            service.list_cases(s, principal=operator, limit=50, **f)
            list_lat.append((time.perf_counter() - t) * 1000)
    return list_lat


def bench_cases(quick: bool = False) -> dict[str, Any]:
    """Case intake + auto-dispatch over a large closed-case history; evaluation and list latency."""
    from citybrain.cases import analytics
    from citybrain.config import configure
    from citybrain.db import set_db

    n_pre = 20_000 if quick else 1_000_000
    n_new = 1000 if quick else 10_000
    n_single = 200 if quick else 1000
    tmp = Path(tempfile.mkdtemp(prefix="cb-bench-cases-"))
    db, orgs, operator = _open(tmp)
    now = clock.now()

    # 1. bulk load, and the raw sqlite3 baseline in the same process
    load_s = _preload(db, n_pre, orgs, now, random.Random(7))
    n_base = min(n_pre, 100_000)
    base_rate = _baseline(tmp, n_base, orgs, now)

    # 2a. create + auto-dispatch through the batch intake; 2b. the interactive path, one case per transaction
    batch_size = 20
    lat, total_s = _intake_batch(db, operator, n_new, batch_size)
    single_lat, single_s = _intake_single(db, operator, n_single)

    # 3. one month's evaluation of all departments (and of all towns)
    month_start = now - dt.timedelta(days=30)
    t0 = time.perf_counter()
    with db.read() as s:
        res = analytics.evaluate(s, principal=SYSTEM, group_by="dept", start=month_start, end=now)
    report_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with db.read() as s:
        analytics.evaluate(s, principal=SYSTEM, group_by="town", start=month_start, end=now)
    report_town_s = time.perf_counter() - t0

    # 4. filtered lists
    list_lat = _lists(db, operator, orgs)
    db.dispose()
    set_db(None)
    configure(None)
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "cases_per_s": round(n_new / total_s, 1),
        "p99_ms": round(_pct(lat, 99), 2),
        "p50_ms": round(_pct(lat, 50), 2),
        "batch_size": batch_size,
        "single_cases_per_s": round(n_single / single_s, 1),
        "single_p99_ms": round(_pct(single_lat, 99), 2),
        "single_p50_ms": round(_pct(single_lat, 50), 2),
        "report_s": round(report_s, 3),
        "report_town_s": round(report_town_s, 3),
        "list_p95_ms": round(_pct(list_lat, 95), 2),
        "list_p50_ms": round(statistics.median(list_lat), 2),
        "preloaded_cases": n_pre,
        "new_cases": n_new,
        "departments_evaluated": len([r for r in res["rows"] if r["key"] is not None]),
        "bulk_load_s": round(load_s, 1),
        "bulk_load_rows_per_s": round(n_pre / load_s),
        "baseline_sqlite3_rows_per_s": round(base_rate),
        "backend": "sqlite",
    }


OPEN_STATUSES = ("dispatched", "in_progress", "in_progress", "handled", "filed", "reported")


def load_history(db: Any, *, n: int, now: dt.datetime | None = None, rnd: random.Random | None = None,
                 orgs: dict[str, int] | None = None, open_share: float = 0.0, batch: int = 20_000) -> dict[str, Any]:
    """Bulk-load `n` cases of history for benchmarks and large demos (the cases module's own tables only).

    Closed cases spread over two years (`_rows`); with `open_share`, that share is left open instead: reported in
    the last ten days, one of the open statuses, a fifth of them overdue. SQLAlchemy Core executemany in batches of
    `batch` rows, one transaction each; on SQLite the secondary indexes are dropped for the load and rebuilt after
    it (as any bulk loader does), then ANALYZE. No audit records: this is generated history, not case work.
    """
    from sqlalchemy import insert, text

    from citybrain.cases.models import Case
    from citybrain.identity import service as identity

    now = now or clock.now()
    rnd = rnd or random.Random(7)
    if orgs is None:
        with db.read() as s:
            orgs = {o.code: o.id for o in identity.list_orgs(s)}
        for d in dd.DEPARTMENTS:
            orgs[d.short] = orgs.get(d.code)
    sqlite = db.write_engine.dialect.name == "sqlite"
    t0 = time.perf_counter()
    idx_sql: list[str] = []
    if sqlite:
        with db.write_engine.begin() as conn:
            found = list(conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type='index' "
                                           "AND tbl_name='cases_case' AND name LIKE 'ix_%' AND sql IS NOT NULL")))
            for name, sql in found:
                conn.execute(text(f'DROP INDEX "{name}"'))
                idx_sql.append(sql)
    with db.write_engine.connect() as conn:
        start_id = int(conn.execute(text("SELECT coalesce(max(id), 0) FROM cases_case")).scalar() or 0) + 1
    stmt = insert(Case.__table__)
    rows: list[dict] = []
    n_open = 0

    def flush() -> None:
        with db.write_engine.begin() as conn:
            conn.execute(stmt, rows)
        rows.clear()

    for row in _rows(n, orgs, now, rnd, start_id=start_id):
        if open_share and rnd.random() < open_share:
            status = OPEN_STATUSES[rnd.randrange(len(OPEN_STATUSES))]
            rep = now - dt.timedelta(hours=rnd.randint(1, 240))
            disp = rep + dt.timedelta(minutes=rnd.randint(1, 90)) if status not in ("reported", "filed") else None
            row.update(status=status, reported_at=rep, filed_at=rep if status != "reported" else None,
                       dispatched_at=disp, dispatched_on_time=(disp - rep < dt.timedelta(minutes=60)) if disp else None,
                       handled_at=min(now, disp + dt.timedelta(minutes=rnd.randint(30, 600))) if status == "handled"
                       else None, deadline_at=None,
                       closed_at=None, verified_at=None, rating=None, rating_contacted=None, rating_resolved=None,
                       rated_at=None, overdue=False, supervision_level=0, updated_at=rep)
            if disp:  # a fifth is overdue by a few hours (already 催办 by the sweep), the rest still in time
                late = rnd.random() < 0.2
                row["deadline_at"] = now + dt.timedelta(hours=-rnd.randint(1, 3) if late else rnd.randint(1, 72))
                row.update(overdue=late, supervision_level=1 if late else 0)
            row["handled_on_time"] = (row["handled_at"] <= row["deadline_at"]) if row["handled_at"] else None
            n_open += 1
        rows.append(row)
        if len(rows) >= batch:
            flush()
    if rows:
        flush()
    with db.write_engine.begin() as conn:
        for sql in idx_sql:
            conn.execute(text(sql))
        conn.execute(text("ANALYZE cases_case"))
    return {"cases": n, "open": n_open, "load_s": round(time.perf_counter() - t0, 2)}


BENCHES = {"cases": bench_cases}
