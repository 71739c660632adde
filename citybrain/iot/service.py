"""IoT service: devices, credentials, ingestion with validation and dead letters, rules, alarms, status, queries.

Other modules use: `ioc_summary`, `list_devices`, `get_device`, `list_alarms`, `devices_geojson`,
`alarms_geojson`, `grid_latest`, `device_latest`.

Hot path: `ingest` validates a batch against the device models, writes accepted readings with one
executemany (SQLite) or one INSERT ... unnest sent with the COMMIT in one pipeline (PostgreSQL), upserts the latest values,
evaluates the rules in memory, and commits readings, status changes, alarms, their bus events and audit
records in ONE transaction before the caller acknowledges. A per-database lock serialises ingestion so the
in-memory rule state is consistent; that state is applied only after a successful commit.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import functools
import hashlib
import io
import itertools
import logging
import math
import operator
import re
import secrets
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson
from sqlalchemy import bindparam, case, delete, event, func, insert, or_, select, text, update
from sqlalchemy.orm import Session

from citybrain import bus, context, demo_district
from citybrain.audit import service as audit
from citybrain.config import get_settings
from citybrain.context import Principal
from citybrain.db import upsert_insert, utcnow
from citybrain.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from citybrain.iot import catalog, relay
from citybrain.iot.models import Alarm, DailyCount, DeadLetter, Device, Reading, Rule, RuleState

log = logging.getLogger("citybrain.iot")

try:
    from psycopg.errors import UniqueViolation
except ImportError:  # a SQLite-only installation (psycopg is the `postgres` extra)
    class UniqueViolation(Exception):  # type: ignore[no-redef]
        """Never raised without PostgreSQL."""

CST = dt.timezone(dt.timedelta(hours=8))
FUTURE_TOLERANCE_MS = 300_000  # a reading may be at most 5 minutes ahead of the server clock
MAX_BATCH_READINGS = 50_000
RATE_WINDOW_MS = 60_000  # rate-of-change rules compare readings at least a minute apart
FLUSH_MS = 10_000  # a device row's last_seen_at/latest are rewritten at most this often (memory is first)
CODE_RE = re.compile(r"^[0-9A-Za-z_-]{4,40}$")
STATUSES = ("online", "offline", "disabled")
RULE_KINDS = ("threshold", "duration", "rate", "nodata")
RULE_OPS = (">", "<", "between", "outside")
ALARM_STATUSES = ("active", "acknowledged", "cleared")

REASONS: dict[str, tuple[str, str]] = {
    "malformed": ("数据格式错误", "Malformed reading"),
    "unknown_device": ("设备未注册", "Unknown device"),
    "device_disabled": ("设备已停用", "Device disabled"),
    "not_permitted": ("无权上报该设备数据", "Sender may not report for this device"),
    "bad_timestamp": ("时间戳无法解析", "Unreadable timestamp"),
    "ts_future": ("时间戳超前", "Timestamp too far in the future"),
    "ts_past": ("时间戳过旧", "Timestamp too far in the past"),
    "unknown_property": ("物模型中无此属性", "Property not in the device model"),
    "wrong_type": ("数据类型错误", "Wrong value type"),
    "out_of_range": ("超出物理量程", "Outside the physical range"),
    "unauthenticated": ("凭证错误，未接收", "Bad credentials; not accepted"),
}


def clean_text(value: str) -> str:
    """Text safe for every backend: NUL characters (refused by PostgreSQL) are written as \\u0000."""
    return value.replace("\x00", "\\u0000") if "\x00" in value else value


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def _from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def cst_day(t: dt.datetime) -> str:
    """The calendar day (China Standard Time) of a moment, YYYY-MM-DD."""
    return t.astimezone(CST).strftime("%Y-%m-%d")


# --- in-memory state per database -------------------------------------------------------------------------------


@dataclass(slots=True)
class DevInfo:
    id: int
    code: str
    name: str
    model: catalog.DeviceModel
    org_id: int | None
    status: str
    secret_hash: str
    lon: float | None
    lat: float | None
    grid_code: str | None


@dataclass(slots=True)
class RuleInfo:
    id: int
    name: str
    name_en: str
    model_code: str
    device_id: int | None
    prop: str
    kind: str
    op: str
    t1: float | None
    t2: float | None
    duration_ms: int
    hyst: float
    severity: int
    category_hint: str | None


@dataclass
class _State:
    lock: threading.RLock = field(default_factory=threading.RLock)
    devices: dict[str, DevInfo] | None = None
    by_id: dict[int, DevInfo] = field(default_factory=dict)
    rules: dict[tuple[str, str], list[RuleInfo]] | None = None  # (model_code, prop) -> rules
    device_rules: dict[tuple[int, str], list[RuleInfo]] = field(default_factory=dict)
    nodata_rules: list[RuleInfo] = field(default_factory=list)
    model_rules: dict[str, dict[str, list[RuleInfo]]] = field(default_factory=dict)  # model -> prop -> rules
    dev_rules: dict[int, dict[str, list[RuleInfo]]] = field(default_factory=dict)  # device -> prop -> rules
    nodata_props: dict[str, set[str]] = field(default_factory=dict)  # model -> props watched by no-data rules
    open_alarms: dict[tuple[int, int], int] | None = None  # (rule_id, device_id) -> alarm id
    since: dict[tuple[int, int], int] | None = None  # duration rules: condition holds since (ms)
    docs: dict[int, dict[str, tuple[int, Any]]] = field(default_factory=dict)  # device -> prop -> (ts, value)
    rate_ref: dict[tuple[int, int], tuple[int, float]] = field(default_factory=dict)  # rate rules' reference
    flushed: dict[int, int] = field(default_factory=dict)  # device -> when its row was last written (ms)
    newest: dict[int, int] = field(default_factory=dict)  # device -> newest stored message ts (exact, see docs)
    keys: dict[str, tuple[Principal, float]] = field(default_factory=dict)  # gateway key cache


_states: dict[str, _State] = {}
_states_lock = threading.Lock()


def _state(session: Session) -> _State:
    url = session.get_bind().engine.url.render_as_string(hide_password=True)
    with _states_lock:
        st = _states.get(url)
        if st is None:
            st = _states[url] = _State()
        return st


def reset_state() -> None:
    """Forget every cached registry, rule and alarm state (tests that switch databases, restarts)."""
    with _states_lock:
        _states.clear()


def _dev_info(d: Any) -> DevInfo | None:
    model = catalog.get(d.model_code)
    if model is None:
        return None
    return DevInfo(d.id, d.code, d.name, model, d.org_id, d.status, d.secret_hash, d.lon, d.lat, d.grid_code)


_DEV_COLS = (Device.id, Device.code, Device.name, Device.model_code, Device.org_id, Device.status,
             Device.secret_hash, Device.lon, Device.lat, Device.grid_code)


def _registry(session: Session, st: _State) -> dict[str, DevInfo]:
    if st.devices is None:
        devices: dict[str, DevInfo] = {}
        by_id: dict[int, DevInfo] = {}
        for row in session.execute(select(*_DEV_COLS)):
            info = _dev_info(row)
            if info:
                devices[info.code] = info
                by_id[info.id] = info
        st.devices, st.by_id = devices, by_id
    return st.devices


def _refresh_device(session: Session, device_id: int, *, tell: bool = True) -> None:
    st = _state(session)
    if tell:
        relay.notify("device", device_id)
    with st.lock:
        if st.devices is None:
            return
        row = session.execute(select(*_DEV_COLS).where(Device.id == device_id)).first()
        old = st.by_id.pop(device_id, None)
        if old is not None:
            st.devices.pop(old.code, None)
        if row is not None:
            info = _dev_info(row)
            if info:
                st.devices[info.code] = info
                st.by_id[info.id] = info
        st.keys.clear()


def _rule_info(r: Rule) -> RuleInfo:
    return RuleInfo(r.id, r.name, r.name_en, r.model_code, r.device_id, r.property, r.kind, r.op, r.threshold,
                    r.threshold2, int(r.duration_s or 0) * 1000, float(r.hysteresis or 0.0), r.severity,
                    r.category_hint)


def _load_rules(session: Session, st: _State) -> None:
    if st.rules is not None:
        return
    rules: dict[tuple[str, str], list[RuleInfo]] = defaultdict(list)
    device_rules: dict[tuple[int, str], list[RuleInfo]] = defaultdict(list)
    nodata: list[RuleInfo] = []
    for r in session.scalars(select(Rule).where(Rule.enabled.is_(True)).order_by(Rule.id)):
        info = _rule_info(r)
        if info.kind == "nodata":
            nodata.append(info)
        elif info.device_id is not None:
            device_rules[(info.device_id, info.prop)].append(info)
        else:
            rules[(info.model_code, info.prop)].append(info)
    st.rules, st.device_rules, st.nodata_rules = dict(rules), dict(device_rules), nodata
    model_rules: dict[str, dict[str, list[RuleInfo]]] = defaultdict(dict)
    for (m, prop), rl in rules.items():
        model_rules[m][prop] = rl
    dev_rules: dict[int, dict[str, list[RuleInfo]]] = defaultdict(dict)
    for (did, prop), rl in device_rules.items():
        dev_rules[did][prop] = rl
    nodata_props: dict[str, set[str]] = defaultdict(set)
    for r in nodata:
        nodata_props[r.model_code].add(r.prop)
    st.model_rules, st.dev_rules, st.nodata_props = dict(model_rules), dict(dev_rules), dict(nodata_props)


def _load_alarm_state(session: Session, st: _State) -> None:
    if st.open_alarms is None:
        st.open_alarms = {
            (r.rule_id, r.device_id): r.id
            for r in session.execute(select(Alarm.id, Alarm.rule_id, Alarm.device_id).where(Alarm.open_key.is_not(None)))
        }
    if st.since is None:
        st.since = {(r.rule_id, r.device_id): r.since_ts
                    for r in session.execute(select(RuleState).where(RuleState.since_ts.is_not(None))).scalars()}


def _invalidate_rules(session: Session, *, tell: bool = True) -> None:
    st = _state(session)
    if tell:
        relay.notify("rules")
    with st.lock:
        st.rules = None


def _forget_devices(session: Session, *, tell: bool = True) -> None:
    st = _state(session)
    if tell:
        relay.notify("devices")
    with st.lock:
        st.devices = None


def _forget_alarms(session: Session, *, tell: bool = True) -> None:
    st = _state(session)
    if tell:
        relay.notify("alarms")
    with st.lock:
        st.open_alarms = st.since = None


def apply_notice(session: Session, *, kind: str, ref: Any = None) -> None:
    """In the ingest process: another process changed something held in memory here (`iot.relay.notify`)."""
    if kind == "device" and isinstance(ref, int):
        _refresh_device(session, ref, tell=False)
    elif kind == "devices":
        _forget_devices(session, tell=False)
    elif kind == "rules":
        _invalidate_rules(session, tell=False)
    elif kind == "alarms":
        _forget_alarms(session, tell=False)
    else:
        reset_state()


# --- grid resolution (geo module) -------------------------------------------------------------------------------


def _locate(session: Session, lon: float | None, lat: float | None) -> dict[str, Any] | None:
    if lon is None or lat is None:
        return None
    try:
        from citybrain.geo import service as geo
    except ImportError:
        return None
    return geo.locate(session, lon=lon, lat=lat)


def _locate_many(session: Session, points: list[tuple[float | None, float | None]]) -> list[dict[str, Any] | None]:
    """The grid of each (lon, lat); None for a point without coordinates (a device registered without a place)."""
    out: list[dict[str, Any] | None] = [None] * len(points)
    located = [i for i, (lon, lat) in enumerate(points) if lon is not None and lat is not None]
    try:
        from citybrain.geo import service as geo
    except ImportError:
        return out
    fn = getattr(geo, "locate_many", None)
    found = (list(fn(session, points=[points[i] for i in located])) if fn is not None
             else [geo.locate(session, lon=points[i][0], lat=points[i][1]) for i in located])
    for i, place in zip(located, found, strict=True):
        out[i] = place
    return out


# --- devices ----------------------------------------------------------------------------------------------------


def device_dict(d: Device, *, open_alarms: int | None = None) -> dict[str, Any]:
    """A device as the API shows it (never its secret)."""
    model = catalog.get(d.model_code)
    return {
        "code": d.code, "name": d.name, "model": d.model_code, "model_name": model.name if model else d.model_code,
        "model_name_en": model.name_en if model else d.model_code, "org_id": d.org_id, "lon": d.lon, "lat": d.lat,
        "address": d.address, "grid_code": d.grid_code, "community_code": d.community_code,
        "town_code": d.town_code, "district_code": d.district_code, "status": d.status,
        "last_seen_at": d.last_seen_at, "status_changed_at": d.status_changed_at,
        "rejected_count": d.rejected_count,
        "secret_rotated_at": d.secret_rotated_at, "installed_at": d.installed_at, "created_at": d.created_at,
        **({"open_alarms": open_alarms} if open_alarms is not None else {}),
    }


def _model_or_422(model_code: str) -> catalog.DeviceModel:
    model = catalog.get(model_code)
    if model is None:
        known = ", ".join(m.code for m in catalog.MODELS)
        raise Invalid(f"未知的物模型：{model_code}（可选：{known}）", f"Unknown device model: {model_code} (known: {known})",
                      errors=[{"field": "model", "message": f"one of {known}"}])
    return model


def _check_point(lon: float | None, lat: float | None) -> list[dict[str, str]]:
    errs = []
    if lon is not None and not (isinstance(lon, int | float) and math.isfinite(lon) and 73 <= lon <= 136):
        errs.append({"field": "lon", "message": "经度应在 73–136 之间 / longitude must lie in 73–136 (China)"})
    if lat is not None and not (isinstance(lat, int | float) and math.isfinite(lat) and 3 <= lat <= 54):
        errs.append({"field": "lat", "message": "纬度应在 3–54 之间 / latitude must lie in 3–54 (China)"})
    if (lon is None) != (lat is None):
        errs.append({"field": "lon", "message": "经纬度须同时提供 / give both lon and lat"})
    return errs


class _Serials:
    """Next serial numbers per code prefix (area + class + model), read once per prefix."""

    def __init__(self, session: Session):
        self.session = session
        self.next: dict[str, int] = {}

    def code(self, prefix: str) -> str:
        if prefix not in self.next:
            top = self.session.scalar(select(func.max(Device.code)).where(Device.code.like(f"{prefix}%"),
                                                                          func.length(Device.code) == 19))
            self.next[prefix] = int(top[-6:]) + 1 if top and top[-6:].isdigit() else 1
        n = self.next[prefix]
        self.next[prefix] = n + 1
        return f"{prefix}{n:06d}"


def device_code_prefix(model: catalog.DeviceModel, area_code: str | None) -> str:
    """The first 13 digits of a unified device code: area (6) + component class (5) + model number (2)."""
    return f"{(area_code or demo_district.DISTRICT_CODE)[:6]}{model.component_class}{model.number}"


def _new_secret() -> str:
    return "cbd_" + secrets.token_urlsafe(24)


def _prepare_device(session: Session, *, code: str | None, name: str, model_code: str, org_id: int | None,
                    lon: float | None, lat: float | None, address: str | None, serials: _Serials,
                    place: dict[str, Any] | None, installed_at: dt.datetime | None = None,
                    secret: str | None = None) -> tuple[dict[str, Any], str]:
    model = _model_or_422(model_code)
    if code is None:
        code = serials.code(device_code_prefix(model, (place or {}).get("district_code")))
    elif not CODE_RE.match(code):
        raise Invalid(f"设备编码格式不正确：{code}", f"Bad device code: {code}",
                      errors=[{"field": "code", "message": "4–40 letters, digits, '-' or '_'"}])
    secret = secret or _new_secret()
    now = utcnow()
    row = {
        "code": code, "name": name, "model_code": model.code, "org_id": org_id, "lon": lon, "lat": lat,
        "address": address, "grid_code": (place or {}).get("grid_code"),
        "community_code": (place or {}).get("community_code"), "town_code": (place or {}).get("town_code"),
        "district_code": (place or {}).get("district_code"), "status": "offline", "last_seen_at": None,
        "status_changed_at": now, "secret_hash": _sha256(secret), "secret_rotated_at": now,
        "rejected_count": 0, "installed_at": installed_at, "created_at": now,
    }
    return row, secret


def _check_org(session: Session, principal: Principal | None, org_id: int | None) -> None:
    from citybrain.identity import service as identity

    if org_id is not None:
        identity.get_org(session, org_id=org_id)
    if principal is not None and principal.kind != "system" and not principal.sees_org(org_id):
        raise Forbidden("只能登记本单位的设备", "You may only register devices of your own organisation",
                        code="out_of_scope")


def create_device(session: Session, *, name: str, model: str, org_id: int | None, lon: float | None = None,
                  lat: float | None = None, address: str | None = None, code: str | None = None,
                  principal: Principal | None = None) -> tuple[Device, str]:
    """Register one device; its grid is resolved from the location. Returns the device and its secret (shown once)."""
    errs = _check_point(lon, lat)
    if errs:
        raise Invalid("设备位置不正确", "Bad device location", errors=errs)
    _check_org(session, principal, org_id)
    if code and session.scalar(select(Device.id).where(Device.code == code)):
        raise Conflict(f"设备编码已存在：{code}", f"Device code already registered: {code}", code="device_exists")
    place = _locate(session, lon, lat)
    row, secret = _prepare_device(session, code=code, name=name, model_code=model, org_id=org_id, lon=lon, lat=lat,
                                  address=address, serials=_Serials(session), place=place)
    dev = Device(**row)
    session.add(dev)
    session.flush()
    audit.commit(session, action="iot.device.create", target_type="iot_device", target_id=dev.code,
                 after={k: v for k, v in row.items() if k != "secret_hash"})
    _refresh_device(session, dev.id)
    return dev, secret


def bulk_register(session: Session, *, devices: list[dict[str, Any]], note: str = "bulk registration") -> list[str]:
    """Register many devices at once (demo, import): one audit record; returns their secrets in order."""
    serials = _Serials(session)
    places = _locate_many(session, [(d.get("lon"), d.get("lat")) for d in devices]) if devices else []
    rows, out = [], []
    for d, place in zip(devices, places, strict=True):
        row, secret = _prepare_device(session, code=d.get("code"), name=d["name"], model_code=d["model"],
                                      org_id=d.get("org_id"), lon=d.get("lon"), lat=d.get("lat"),
                                      address=d.get("address"), serials=serials, place=place,
                                      installed_at=d.get("installed_at"), secret=d.get("secret"))
        rows.append(row)
        out.append(secret)
    if rows:
        for i in range(0, len(rows), 2000):
            session.execute(insert(Device), rows[i:i + 2000])
    audit.commit(session, action="iot.device.import", target_type="iot_device", target_id=f"{len(rows)} devices",
                 after={"count": len(rows), "first": rows[0]["code"] if rows else None,
                        "last": rows[-1]["code"] if rows else None}, note=note)
    _forget_devices(session)
    return out


CSV_COLUMNS = ("code", "name", "model", "org", "lon", "lat", "address", "installed_at")


def import_csv(session: Session, *, data: bytes, principal: Principal, dry_run: bool = False) -> dict[str, Any]:
    """Import devices from CSV (columns: code,name,model,org,lon,lat,address,installed_at); per-row report."""
    from citybrain.identity import service as identity

    try:
        textdata = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            textdata = data.decode("gb18030")
        except UnicodeDecodeError as exc:
            raise Invalid("文件编码无法识别（请用 UTF-8）", "Unreadable file encoding (use UTF-8)") from exc
    reader = csv.DictReader(io.StringIO(textdata))
    if not reader.fieldnames:
        raise Invalid("文件为空：第一行须为列名（name、model 等）", "The file is empty: its first line must name the "
                      "columns (name, model, …)", code="empty_file")
    cols = [c.strip() for c in reader.fieldnames]
    missing = [c for c in ("name", "model") if c not in cols]
    if missing:
        raise Invalid(f"CSV 缺少列：{'、'.join(missing)}", f"CSV lacks columns: {', '.join(missing)}",
                      errors=[{"field": c, "message": "required column"} for c in missing])
    existing = set(session.scalars(select(Device.code)))
    orgs: dict[str, int | None] = {}
    report: list[dict[str, Any]] = []
    good: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k}
        code = row.get("code") or None
        nul = [k for k, v in row.items() if "\x00" in k or "\x00" in v]
        if nul:  # PostgreSQL cannot store it (nor look it up): refused here on every backend
            report.append({"row": n, "code": clean_text(code) if code else None, "status": "error", "errors": [
                {"field": clean_text(k), "message": "不能包含空字符 / no NUL characters"} for k in nul]})
            continue
        errs: list[dict[str, str]] = []
        if code and (code in existing or code in seen):
            errs.append({"field": "code", "message": "编码已存在 / code already registered"})
        elif code and not CODE_RE.match(code):
            errs.append({"field": "code", "message": "编码格式不正确 / bad code"})
        if not row.get("name"):
            errs.append({"field": "name", "message": "必填 / required"})
        if catalog.get(row.get("model", "")) is None:
            errs.append({"field": "model", "message": f"未知物模型 / unknown model {row.get('model')!r}"})
        org_code = row.get("org") or ""
        org_id = principal.org_id
        if org_code:
            if org_code not in orgs:
                org = identity.org_by_code(session, code=org_code)
                orgs[org_code] = org.id if org else None
            org_id = orgs[org_code]
            if org_id is None:
                errs.append({"field": "org", "message": f"单位不存在 / unknown organisation {org_code}"})
        if org_id is not None and not principal.sees_org(org_id):
            errs.append({"field": "org", "message": "不在本单位管辖范围 / outside your organisation"})
        lon = lat = None
        try:
            lon = float(row["lon"]) if row.get("lon") else None
            lat = float(row["lat"]) if row.get("lat") else None
            errs.extend(_check_point(lon, lat))
        except ValueError:
            errs.append({"field": "lon", "message": "经纬度应为数字 / lon/lat must be numbers"})
        installed = None
        if row.get("installed_at"):
            try:
                installed = dt.datetime.fromisoformat(row["installed_at"])
                if installed.tzinfo is None:
                    installed = installed.replace(tzinfo=CST)
            except ValueError:
                errs.append({"field": "installed_at", "message": "日期格式应为 YYYY-MM-DD / date YYYY-MM-DD"})
        if errs:
            report.append({"row": n, "code": code, "status": "error", "errors": errs})
            continue
        if code:
            seen.add(code)
        report.append({"row": n, "code": code, "status": "ok", "errors": []})
        good.append({"code": code, "name": row["name"], "model": row["model"], "org_id": org_id, "lon": lon,
                     "lat": lat, "address": row.get("address") or None, "installed_at": installed, "_report": report[-1]})
    created = 0
    if good and not dry_run:
        secrets_ = bulk_register(session, devices=good, note=f"CSV import by {principal.label}")
        codes = session.execute(select(Device.code).order_by(Device.id.desc()).limit(len(good))).scalars().all()
        for g, secret, code in zip(good, secrets_, reversed(codes), strict=True):
            g["_report"].update(code=code, status="created", secret=secret)
        created = len(good)
    return {"rows": len(report), "created": created, "errors": sum(1 for r in report if r["status"] == "error"),
            "dry_run": dry_run, "report": report}


def _device_or_404(session: Session, code: str) -> Device:
    dev = session.scalar(select(Device).where(Device.code == code))
    if dev is None:
        raise NotFound(f"设备 {code} 不存在", f"Device {code} does not exist", code="device_not_found")
    return dev


def get_device(session: Session, *, code: str, principal: Principal) -> Device:
    """One device, if the principal's organisation scope covers its owner."""
    dev = _device_or_404(session, code)
    if not principal.sees_org(dev.org_id):
        raise NotFound(f"设备 {code} 不存在", f"Device {code} does not exist", code="device_not_found")
    return dev


def _scope(q: Any, principal: Principal, col: Any) -> Any:
    if principal.org_scope is None:
        return q
    return q.where(col.in_(list(principal.org_scope)))


def _bbox(bbox: str | None) -> tuple[float, float, float, float] | None:
    from citybrain.geo import service as geo

    return geo.parse_bbox(bbox)


def list_devices(session: Session, *, principal: Principal, model: str | None = None, status: str | None = None,
                 org_id: int | None = None, grid_code: str | None = None, q: str | None = None,
                 bbox: str | None = None, limit: int = 50, offset: int = 0) -> tuple[int, list[Device]]:
    """Devices in the principal's scope matching the filters, with the total."""
    _check_device_status(status)
    query = _scope(select(Device), principal, Device.org_id)
    if model:
        query = query.where(Device.model_code == model)
    if status:
        query = query.where(Device.status == status)
    if org_id is not None:
        query = query.where(Device.org_id == org_id)
    if grid_code:
        query = query.where(Device.grid_code == grid_code)
    if q:
        like = f"%{q}%"
        query = query.where(or_(Device.code.like(like), Device.name.like(like), Device.address.like(like)))
    box = _bbox(bbox)
    if box:
        query = query.where(Device.lon.between(box[0], box[2]), Device.lat.between(box[1], box[3]))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Device.id).limit(limit).offset(offset)).all()
    return total, list(rows)


def update_device(session: Session, *, code: str, principal: Principal, name: str | None = None,
                  lon: float | None = None, lat: float | None = None, address: str | None = None,
                  enabled: bool | None = None, org_id: int | None = None) -> Device:
    """Change a device's name, location (grid re-resolved), owner, or enable/disable it."""
    dev = get_device(session, code=code, principal=principal)
    before = device_dict(dev)
    if lon is not None or lat is not None:
        lon2 = lon if lon is not None else dev.lon
        lat2 = lat if lat is not None else dev.lat
        errs = _check_point(lon2, lat2)
        if errs:
            raise Invalid("设备位置不正确", "Bad device location", errors=errs)
        place = _locate(session, lon2, lat2) or {}
        dev.lon, dev.lat = lon2, lat2
        dev.grid_code, dev.community_code = place.get("grid_code"), place.get("community_code")
        dev.town_code, dev.district_code = place.get("town_code"), place.get("district_code")
    if name is not None:
        dev.name = name
    if address is not None:
        dev.address = address
    if org_id is not None and org_id != dev.org_id:
        _check_org(session, principal, org_id)
        dev.org_id = org_id
    now = utcnow()
    if enabled is False and dev.status != "disabled":
        dev.status, dev.status_changed_at = "disabled", now
        _publish_status(session, [(dev.code, "disabled", dev.org_id)], now)
    elif enabled is True and dev.status == "disabled":
        dev.status, dev.status_changed_at = "offline", now
        _publish_status(session, [(dev.code, "offline", dev.org_id)], now)
    session.flush()
    audit.commit(session, action="iot.device.update", target_type="iot_device", target_id=dev.code, before=before,
                 after=device_dict(dev))
    _refresh_device(session, dev.id)
    return dev


def rotate_secret(session: Session, *, code: str, principal: Principal) -> str:
    """Give a device a new secret (the old one stops working at once); returns it, shown once."""
    dev = get_device(session, code=code, principal=principal)
    secret = _new_secret()
    dev.secret_hash, dev.secret_rotated_at = _sha256(secret), utcnow()
    audit.commit(session, action="iot.device.rotate_secret", target_type="iot_device", target_id=dev.code)
    _refresh_device(session, dev.id)
    return secret


def create_gateway_key(session: Session, *, name: str, org_id: int | None, principal: Principal) -> tuple[str, int]:
    """Issue a gateway key (identity machine key, kind gateway, scope iot.ingest) for one organisation's devices."""
    from citybrain.identity import service as identity

    if org_id is None:
        raise Invalid("网关必须属于一个单位", "A gateway must belong to an organisation",
                      errors=[{"field": "org_id", "message": "required"}])
    _check_org(session, principal, org_id)
    key, row = identity.create_api_key(session, name=name, scopes=["iot.ingest"], kind="gateway", org_id=org_id,
                                       subject=f"gateway:{name}", created_by=principal.label)
    return key, row.id


# --- authentication of senders ----------------------------------------------------------------------------------


def authenticate_device(session: Session, *, code: str, secret: str) -> DevInfo:
    """The device behind a code and secret: 401 if unknown or wrong, 403 if disabled."""
    st = _state(session)
    with st.lock:
        info = _registry(session, st).get(code)
    if info is None or not secrets.compare_digest(info.secret_hash, _sha256(secret or "")):
        raise Unauthorized("设备编码或密钥错误", "Wrong device code or secret", code="bad_device_credentials",
                           headers={"WWW-Authenticate": "Device"})
    if info.status == "disabled":
        raise Forbidden("设备已停用，拒绝接收数据", "The device is disabled; its data is refused",
                        code="device_disabled")
    return info


def device_principal(info: DevInfo) -> Principal:
    """The actor a device is in the audit trail."""
    return Principal(kind="device", id=info.id, name=info.code, org_id=info.org_id,
                     permissions=frozenset({"iot.ingest"}), org_scope=frozenset({info.org_id} if info.org_id else ()))


def principal_from_key(session: Session, *, key: str) -> Principal:
    """A gateway/machine key's principal, cached for 5 s (revocation reaches ingestion within 5 s)."""
    import time

    from citybrain.identity import service as identity

    st = _state(session)
    hit = st.keys.get(key)
    now = time.monotonic()
    if hit and hit[1] > now:
        return hit[0]
    principal = identity.principal_from_api_key(session, key=key)
    if len(st.keys) > 10_000:
        st.keys.clear()
    st.keys[key] = (principal, now + 5.0)
    return principal


# --- ingestion --------------------------------------------------------------------------------------------------


def _parse_ts(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        if not math.isfinite(v):
            return None
        return int(v) if v > 1e11 else int(v * 1000)
    if isinstance(v, str):
        try:
            t = dt.datetime.fromisoformat(v)
        except ValueError:
            return None
        if t.tzinfo is None:
            t = t.replace(tzinfo=CST)  # devices in China report local time unless they say otherwise
        return int(t.timestamp() * 1000)
    return None


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)
    alarms_raised: int = 0
    alarms_cleared: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected,
                "stored": self.accepted - self.duplicates, "rejections": self.rejections,
                "alarms_raised": self.alarms_raised, "alarms_cleared": self.alarms_cleared}


MAX_REPORTED_REJECTIONS = 100


@dataclass
class Part:
    """One request's or message batch's readings; ingested with others in one transaction (group commit)."""

    items: Any
    source: str = "http"
    sender: Principal | None = None
    device: DevInfo | None = None
    item_scopes: list[frozenset[int] | None] | None = None
    item_senders: list[str | None] | None = None
    result: IngestResult = field(default_factory=IngestResult)
    refuse: BaseException | None = None  # answer with this error after storing (a disabled device's dead letters)


def ingest(session: Session, *, items: Any, source: str = "http", sender: Principal | None = None,
           device: DevInfo | None = None, item_scopes: list[frozenset[int] | None] | None = None,
           item_senders: list[str | None] | None = None) -> IngestResult:
    """Validate, store and evaluate readings; commit before returning (the caller acknowledges after this).

    `items` is a list of `{"device": code, "ts": ISO-8601 | epoch s/ms, "values": {prop: value}}`; with `device`
    (a device reporting for itself) the `device` field may be left out and must match if given. A gateway
    (`sender` with an organisation scope) may report only for devices of its organisation. MQTT batches of
    many senders pass `item_scopes` (the organisation scope per item, None = unrestricted; the caller has
    authenticated each item's sender) and `item_senders` (labels for dead letters).
    """
    part = Part(items, source, sender, device, item_scopes, item_senders)
    ingest_parts(session, [part])
    return part.result


def ingest_parts(session: Session, parts: list[Part]) -> None:
    """Ingest several requests' readings in ONE transaction (group commit); each part gets its own result
    (accepted, duplicates, rejections, alarms of its readings). Commits before returning; on an error nothing
    of any part is stored."""
    store_checked(session, check_parts(session, parts))


@dataclass
class Checked:
    """Parts validated against the registry and the device models (`check_parts`), ready to be stored."""

    parts: list[Part]
    now: dt.datetime
    wide: dict[tuple[int, int], dict[str, Any]]  # (device id, ts) -> {prop: value}: one row per message
    multi: bool
    owner: dict[tuple[int, int], int]  # several parts: which part a row (and its properties) came from
    extra_owner: dict[tuple[int, int, str], int]
    dead: list[dict[str, Any]]
    seen: dict[int, list[int]]  # device id -> [accepted, rejected]


def check_parts(session: Session, parts: list[Part]) -> Checked:
    """Validate the parts' readings (the first half of `ingest_parts`): no writes and no rule or alarm state, so
    the ingest thread may check the next group while the previous one is being written."""
    st = _state(session)
    registry = st.devices
    if registry is None:
        with st.lock:
            registry = _registry(session, st)
    now = utcnow()
    now_ms = _ms(now)
    max_ms = now_ms + FUTURE_TOLERANCE_MS
    min_ms = now_ms - get_settings().telemetry_retention_days * 86_400_000
    c = Checked(parts, now, {}, len(parts) > 1, {}, {}, [], {})
    ts_cache: dict[Any, int | None] = {}
    for pi, part in enumerate(parts):
        part.result = IngestResult()
        _validate(part, pi, registry, now, max_ms, min_ms, c.wide, c.multi, c.owner, c.extra_owner, c.dead, c.seen,
                  ts_cache)
    return c


def store_checked(session: Session, checked: Checked) -> None:
    """Store checked parts in ONE transaction, update latest values, evaluate the rules and commit (the second
    half of `ingest_parts`); on an error nothing of any part is stored."""
    st = _state(session)
    with st.lock:
        try:
            try:
                _store_locked(session, st, checked, safe=False)
            except Exception as exc:  # PostgreSQL: a new message's row existed after all: again, merging on conflict
                if not isinstance(getattr(exc, "orig", exc), UniqueViolation):
                    raise
                log.warning("telemetry INSERT met stored rows; writing the batch with ON CONFLICT instead")
                _pg_abort(session)
                session.rollback()
                _store_locked(session, st, check_parts(session, checked.parts), safe=True)
        except BaseException:
            _pg_abort(session)
            session.rollback()
            raise


def _store_locked(session: Session, st: _State, c: Checked, safe: bool) -> None:
    _load_rules(session, st)
    _load_alarm_state(session, st)
    _store_and_evaluate(session, st, c.parts, c.now, c.wide, c.multi, c.owner, c.extra_owner, c.dead, c.seen, safe)


def _validate(part: Part, pi: int, registry: dict[str, DevInfo], now: dt.datetime, max_ms: int, min_ms: int,
              wide: dict[tuple[int, int], dict[str, Any]], multi: bool, owner: dict[tuple[int, int], int],
              extra_owner: dict[tuple[int, int, str], int], dead: list[dict[str, Any]], seen: dict[int, list[int]],
              ts_cache: dict[Any, int | None]) -> None:
    """Check one part's readings against the device models; accepted ones go into `wide`, rejected into `dead`."""
    items, source, sender, self_dev = part.items, part.source, part.sender, part.device
    item_scopes, item_senders = part.item_scopes, part.item_senders
    res = part.result
    scope = None if sender is None else sender.org_scope
    sender_label = (sender.label if sender else f"device:{self_dev.code}" if self_dev else None)
    rejections = res.rejections
    dead_before = len(dead)

    def reject(idx: int, code: Any, dev_id: int | None, prop: Any, ts: Any, value: Any, reason: str,
               detail: str | None = None, detail_zh: str | None = None) -> None:
        dead.append({"device_code": None if code is None else clean_text(str(code))[:80], "device_id": dev_id,
                     "prop": None if prop is None else clean_text(str(prop))[:80],
                     "ts": None if ts is None else clean_text(str(ts))[:64],
                     "value": clean_text(orjson.dumps(value, default=str).decode()[:4000]), "reason": reason,
                     "detail": clean_text(detail or "")[:300] or None, "source": source,
                     "sender": item_senders[idx] if item_senders is not None else sender_label,
                     "received_at": now})
        if dev_id is not None:
            seen.setdefault(dev_id, [0, 0])[1] += 1
        if len(rejections) < MAX_REPORTED_REJECTIONS:
            zh, en = REASONS[reason]
            rejections.append({"index": idx, "device": code, "property": prop, "reason": reason,
                               "message_zh": zh + (f"：{detail_zh or detail}" if detail else ""),
                               "message_en": en + (f": {detail}" if detail else "")})

    if not isinstance(items, list):
        items = [items]
    accepted = 0
    for idx, item in enumerate(items):
        if not isinstance(item, dict):
            reject(idx, None, None, None, None, item, "malformed", "reading must be an object", "每条数据须为 JSON 对象")
            continue
        code = item.get("device")
        if self_dev is not None:
            if code is not None and code != self_dev.code:
                reject(idx, code, self_dev.id, None, item.get("ts"), item.get("values"), "not_permitted",
                       f"authenticated as {self_dev.code}", f"已认证为设备 {self_dev.code}")
                continue
            info = self_dev
            code = info.code
        else:
            info = registry.get(code) if isinstance(code, str) else None
            if info is None:
                reject(idx, code, None, None, item.get("ts"), item.get("values"), "unknown_device")
                continue
            sc = item_scopes[idx] if item_scopes is not None else scope
            if sc is not None and info.org_id not in sc:
                reject(idx, code, info.id, None, item.get("ts"), item.get("values"), "not_permitted",
                       "device belongs to another organisation", "设备属于其他单位")
                continue
        values = item.get("values")
        if not isinstance(values, dict) or not values:
            reject(idx, code, info.id, None, item.get("ts"), values, "malformed", "values must be a non-empty object",
                   "values 须为非空对象")
            continue
        if info.status == "disabled":
            for prop, v in values.items():
                reject(idx, code, info.id, prop, item.get("ts"), v, "device_disabled")
            continue
        raw_ts = item.get("ts")
        if raw_ts.__class__ is str:  # a batch's readings usually share their timestamp text
            ts = ts_cache.get(raw_ts, -1)
            if ts == -1:
                ts = ts_cache[raw_ts] = _parse_ts(raw_ts)
        else:
            ts = _parse_ts(raw_ts)
        if ts is None:
            why = (("ts is missing (send ISO 8601 or epoch seconds/ms)", "缺少 ts（须为 ISO 8601 时间或纪元秒/毫秒）")
                   if raw_ts is None else ("ISO 8601 or epoch seconds/ms", "须为 ISO 8601 时间或纪元秒/毫秒"))
            for prop, v in values.items():
                reject(idx, code, info.id, prop, raw_ts, v, "bad_timestamp", *why)
            continue
        if ts > max_ms or ts < min_ms:
            reason = "ts_future" if ts > max_ms else "ts_past"
            for prop, v in values.items():
                reject(idx, code, info.id, prop, raw_ts, v, reason)
            continue
        model = info.model
        dev_id = info.id
        if dev_id not in seen:
            seen[dev_id] = [0, 0]
        acc = model.check(values)  # type: ignore[attr-defined]
        if acc is None:  # not every property known and valid: property by property, with the reasons
            acc = _check_each(model, values, idx, code, dev_id, raw_ts, reject)
            if not acc:
                continue
        accepted += len(acc)
        key = (dev_id, ts)
        w = wide.get(key)
        if w is None:
            wide[key] = acc
            if multi:
                owner[key] = pi
            continue
        # the same device and timestamp twice in one batch: merge into a copy (`acc` may be the caller's own
        # values), the first value of a property wins
        w = wide[key] = dict(w)
        for prop, v in acc.items():
            if prop in w:
                res.duplicates += 1
            else:
                w[prop] = v
                if multi:
                    extra_owner[(dev_id, ts, prop)] = pi
    res.accepted += accepted
    res.rejected = len(dead) - dead_before


def _check_each(model: catalog.DeviceModel, values: dict[str, Any], idx: int, code: Any, dev_id: int, raw_ts: Any,
                reject: Callable[..., None]) -> dict[str, Any]:
    """A reading's values property by property (the model's compiled `check` refused them as a whole): the
    accepted ones, as floats where numeric; each other property is rejected with its reason."""
    by_key = model.by_key  # type: ignore[attr-defined]
    acc: dict[str, Any] = {}
    for prop, v in values.items():
        p = by_key.get(prop)
        if p is None:
            reject(idx, code, dev_id, prop, raw_ts, v, "unknown_property", f"{model.code} has no {prop!r}",
                   f"{model.code} 没有属性 {prop!r}")
            continue
        ptype = p.type
        if ptype == "number":
            if v.__class__ is float or v.__class__ is int:
                if p.lo <= v <= p.hi:  # finite bounds: also refuses NaN and infinities
                    acc[prop] = v if v.__class__ is float else float(v)
                elif v != v or v in (math.inf, -math.inf):
                    reject(idx, code, dev_id, prop, raw_ts, v, "wrong_type", "not a finite number", "不是有限数值")
                else:
                    reject(idx, code, dev_id, prop, raw_ts, v, "out_of_range", f"{p.min}..{p.max} {p.unit}")
            else:
                reject(idx, code, dev_id, prop, raw_ts, v, "wrong_type", "expected a number", "应为数值")
        elif ptype == "bool":
            if v is True or v is False or (v.__class__ is int and v in (0, 1)):
                acc[prop] = 1.0 if v else 0.0
            else:
                reject(idx, code, dev_id, prop, raw_ts, v, "wrong_type", "expected true/false", "应为 true/false")
        elif ptype == "enum":
            if isinstance(v, str) and v in p.values:
                acc[prop] = v
            else:
                reject(idx, code, dev_id, prop, raw_ts, v, "wrong_type", f"one of {', '.join(p.values)}",
                       f"应为以下之一：{'、'.join(p.values)}")
        elif isinstance(v, str) and len(v) <= 200 and "\x00" not in v:
            acc[prop] = v
        else:
            reject(idx, code, dev_id, prop, raw_ts, v, "wrong_type", "expected a string (<= 200 chars, no NUL)",
                       "应为字符串（不超过 200 个字符，不含 NUL）")
    return acc


def _store_and_evaluate(session: Session, st: _State, parts: list[Part], now: dt.datetime,
                        wide: dict[tuple[int, int], dict[str, Any]], multi: bool, owner: dict[tuple[int, int], int],
                        extra_owner: dict[tuple[int, int, str], int], dead: list[dict[str, Any]],
                        seen: dict[int, list[int]], safe: bool) -> None:
    """Write the readings and dead letters, update latest values, evaluate the rules, commit, apply state."""

    def own(did: int, ts: int, prop: str) -> int:
        return extra_owner.get((did, ts, prop), owner[(did, ts)])

    pending = _Pending()
    if wide:
        _load_docs(session, st, wide, pending)
        for did, ts, prop in _write_readings(session, st, pending, wide, safe):  # already stored: duplicates
            parts[own(did, ts, prop) if multi else 0].result.duplicates += 1
    if dead:
        session.execute(insert(DeadLetter), dead)
    # device bookkeeping: last seen, counters, offline -> online
    if wide:
        _latest_and_rules(session, st, wide, pending, now, [p.result for p in parts], own if multi else None)
    came_online: list[DevInfo] = []
    if seen:
        for did in seen:
            info = st.by_id.get(did)
            if info is not None and info.status == "offline":
                came_online.append(info)
        _touch_devices(session, st, seen, now, pending.docs, pending, {i.id for i in came_online})
        if came_online:
            session.execute(update(Device).where(Device.id.in_([i.id for i in came_online]),
                                                 Device.status == "offline")
                            .values(status="online", status_changed_at=now))
            _publish_status(session, [(i.code, "online", i.org_id) for i in came_online], now)
    day = cst_day(now)
    _bump_daily(session, day, sum(p.result.accepted - p.result.duplicates for p in parts), len(dead), pending)
    if came_online:
        audit.record(session, action="iot.device.online", target_type="iot_device",
                     target_id=came_online[0].code if len(came_online) == 1 else f"{len(came_online)} devices",
                     after={"status": "online", "devices": [i.code for i in came_online[:200]],
                            "count": len(came_online)})
    _commit(session, pending)
    # apply the committed changes to the in-memory state
    for info in came_online:
        info.status = "online"
    pending.apply(st)


def _touch_devices(session: Session, st: _State, seen: dict[int, list[int]], now: dt.datetime,
                   docs: dict[int, dict[str, tuple[int, Any]]], pending: _Pending, force: set[int]) -> None:
    """Write last_seen_at and the latest values to the device rows, at most every FLUSH_MS per device
    (the in-memory copy is what readers see first; the readings are always committed)."""
    conn = session.connection()
    pg = conn.dialect.name == "postgresql"
    ph = "%s" if pg else "?"
    at: Any = now if pg else now.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    now_ms = _ms(now)
    last = st.flushed.get
    cutoff = now_ms - FLUSH_MS
    due = [did for did in seen if last(did, 0) <= cutoff or did in force]
    for did in due:
        pending.flushed[did] = now_ms
    if pg:  # sent with the readings and the COMMIT in one round trip (_commit)
        writes = pending.pg_writes
        changed_ids = [did for did in due if did in docs]
        if changed_ids:
            writes.append((_PG_TOUCH_LATEST, (at, _pg_array(changed_ids), _pg_array(
                [orjson.dumps(docs[did] or st.docs.get(did) or {}).decode() for did in changed_ids]))))
        ids = [did for did in due if did not in docs]
        if ids:
            writes.append((_PG_TOUCH, (at, _pg_array(ids))))
        rejected_ids = [did for did, (_a, r) in seen.items() if r]
        if rejected_ids:
            writes.append((_PG_REJECTED, (_pg_array(rejected_ids), _pg_array([seen[did][1] for did in rejected_ids]))))
        return
    changed = [(at, orjson.dumps(docs[did] or st.docs.get(did) or {}).decode(), did) for did in due if did in docs]
    if changed:
        conn.exec_driver_sql("UPDATE iot_device SET last_seen_at = ?, latest = ? WHERE id = ?", changed)
    ids = [did for did in due if did not in docs]
    for k in range(0, len(ids), 900):
        chunk = ids[k:k + 900]
        conn.exec_driver_sql(f"UPDATE iot_device SET last_seen_at = {ph} WHERE id IN ({', '.join(map(str, chunk))})",
                             (at,))
    rejected = [(r, did) for did, (_a, r) in seen.items() if r]
    if rejected:
        conn.exec_driver_sql(f"UPDATE iot_device SET rejected_count = rejected_count + {ph} WHERE id = {ph}", rejected)


_DAILY = ("INSERT INTO iot_daily_count (day, accepted, rejected) VALUES ({ph}, {ph}, {ph}) ON CONFLICT (day) DO UPDATE "
          "SET accepted = iot_daily_count.accepted + excluded.accepted, "
          "rejected = iot_daily_count.rejected + excluded.rejected")
_PG_DAILY = _DAILY.format(ph="%s")
# PostgreSQL statements of a telemetry transaction, sent together with its COMMIT (`_commit`); arrays as literals
_PG_INSERT = ("INSERT INTO iot_reading (device_id, ts, vals) SELECT d, t, v::json "
              "FROM unnest(%s::int4[], %s::int8[], %s::text[]) AS u(d, t, v)")
_PG_INSERT_MERGE = (_PG_INSERT + " ON CONFLICT (device_id, ts) DO UPDATE SET "
                    "vals = (excluded.vals::jsonb || iot_reading.vals::jsonb)::json")
_PG_TOUCH_LATEST = ("UPDATE iot_device AS d SET last_seen_at = %s, latest = v.latest::json "
                    "FROM unnest(%s::int4[], %s::text[]) AS v(id, latest) WHERE d.id = v.id")
_PG_TOUCH = "UPDATE iot_device SET last_seen_at = %s WHERE id = ANY(%s::int4[])"
_PG_REJECTED = ("UPDATE iot_device AS d SET rejected_count = d.rejected_count + v.n "
                "FROM unnest(%s::int4[], %s::int4[]) AS v(id, n) WHERE d.id = v.id")


def _pg_array(values: list[Any]) -> str:
    """A PostgreSQL array literal of integers or of JSON texts, made by orjson in one call (a driver's array
    adapter loops in Python per element): JSON quotes strings with the escapes an array literal reads (\\" and
    \\\\). Only for strings without control characters, which orjson's JSON texts never contain raw."""
    return "{" + orjson.dumps(values).decode()[1:-1] + "}"


def _bump_daily(session: Session, day: str, accepted: int, rejected: int, pending: _Pending | None = None) -> None:
    """Add to the day's counters (PostgreSQL with `pending`: sent with the transaction's COMMIT)."""
    if not accepted and not rejected:
        return
    pg = session.get_bind().dialect.name == "postgresql"
    if pg and pending is not None:
        pending.pg_writes.append((_PG_DAILY, (day, accepted, rejected)))
        return
    session.connection().exec_driver_sql(_DAILY.format(ph="%s" if pg else "?"), (day, accepted, rejected))


def _commit(session: Session, pending: _Pending) -> None:
    """Commit a telemetry transaction. PostgreSQL: its deferred writes (device rows, counters) and the COMMIT go
    in ONE pipeline with the readings' INSERT sent earlier (`_pg_send`), one round trip; an error there (e.g. a
    unique violation of the readings) leaves nothing committed and is raised as usual."""
    writes = pending.pg_writes
    if not writes and not pending.pg_sent:
        session.commit()
        return
    session.flush()  # ORM objects first: nothing may be written after this transaction's COMMIT
    early = _pg_pipeline(session.connection())
    try:
        cur = early.cur
        for sql, params in writes:
            cur.execute(sql, params)
        cur.execute("COMMIT")
        pipe, early.pipe = early.pipe, None
        pipe.__exit__(None, None, None)
    except BaseException:
        _pg_abort(session)
        raise
    _pg_done(session.connection().info)
    session.commit()  # the session's bookkeeping; the database transaction is already committed


# PostgreSQL: a telemetry transaction's statements go in one pipeline opened when its readings are written, so the
# server executes the INSERT while Python evaluates the rules; the rest and the COMMIT join it (`_commit`). Any
# other statement of the transaction (alarms, audit, bus: rare) first waits for what was sent (`_pg_barrier`).
_EARLY = "citybrain_iot_pipeline"


class _Early:
    __slots__ = ("raw", "pipe", "cur", "auto")

    def __init__(self, raw: Any, pipe: Any, cur: Any, auto: bool):
        self.raw, self.pipe, self.cur, self.auto = raw, pipe, cur, auto


def _pg_open(conn: Any) -> _Early:
    raw = conn.connection.dbapi_connection
    auto = raw.pgconn.transaction_status == 0  # IDLE: nothing sent yet in this transaction
    if auto:  # BEGIN goes in the pipeline too (psycopg would wait for its own BEGIN)
        raw.autocommit = True
    pipe = raw.pipeline()
    pipe.__enter__()
    early = conn.info[_EARLY] = _Early(raw, pipe, raw.cursor(), auto)
    if auto:
        early.cur.execute("BEGIN")
    engine = conn.engine
    if not event.contains(engine, "before_cursor_execute", _pg_barrier):
        event.listen(engine, "before_cursor_execute", _pg_barrier)
    return early


def _pg_pipeline(conn: Any) -> _Early:
    """The connection's open telemetry pipeline: opened now, or again after another statement of the
    transaction closed it (`_pg_barrier`)."""
    early = conn.info.get(_EARLY)
    if early is None:
        return _pg_open(conn)
    if early.pipe is None:
        early.pipe = early.raw.pipeline()
        early.pipe.__enter__()
    return early


def _pg_send(session: Session, sql: str, params: tuple) -> None:
    """Send one statement of the telemetry transaction without waiting for it (PostgreSQL)."""
    _pg_pipeline(session.connection()).cur.execute(sql, params)


def _pg_barrier(conn: Any, *_args: Any) -> None:
    """Before any other statement on a connection with an open telemetry pipeline: wait for what it sent."""
    early = conn.info.get(_EARLY)
    if early is not None and early.pipe is not None:
        pipe, early.pipe = early.pipe, None
        pipe.__exit__(None, None, None)  # raises the pipeline's error, if any


def _pg_done(info: dict) -> None:
    early = info.pop(_EARLY, None)
    if early is not None:
        with contextlib.suppress(Exception):
            early.cur.close()
        if early.auto:
            early.raw.autocommit = False


def _pg_abort(session: Session) -> None:
    """After an error: drop an open telemetry pipeline, roll its transaction back (the caller's rollback then
    has nothing left to do) and give the connection its usual transaction mode back."""
    if not session.in_transaction():
        return
    with contextlib.suppress(Exception):
        info = session.connection().info
        early = info.get(_EARLY)
        if early is None:
            return
        if early.pipe is not None:
            pipe, early.pipe = early.pipe, None
            with contextlib.suppress(Exception):
                err = RuntimeError("telemetry transaction aborted")
                pipe.__exit__(RuntimeError, err, None)
        with contextlib.suppress(Exception):
            early.raw.rollback()
        _pg_done(info)


def _write_readings(session: Session, st: _State, pending: _Pending, wide: dict[tuple[int, int], dict[str, Any]],
                    safe: bool = False) -> list[tuple[int, int, str]]:
    """Store one row per (device, ts) message; return the readings (device, ts, prop) that were already stored.

    A message newer than everything stored for its device (the in-memory latest values are exact, loaded from
    the readings on a device's first report) cannot exist yet: those rows go in one executemany (SQLite, still
    merging on conflict) or one COPY straight into the partitioned table (PostgreSQL; should a row exist after
    all, the unique violation makes `ingest_parts` redo the batch with `safe`, merging on conflict). Older (late
    or repeated) messages are merged property by property with the stored row, the stored value wins."""
    conn = session.connection()
    known, pnewest = st.newest, pending.newest  # the newest stored ts per device (neither changes in this loop)
    newest: dict[int, int] = {}  # the batch's newest new message per device
    fast: list[tuple[int, int, str]] = []
    slow: list[tuple[int, int, dict[str, Any]]] = []
    dumps = orjson.dumps
    for (did, ts), vals in wide.items():
        top = known.get(did)
        if top is None:
            top = pnewest.get(did, -1)
        if ts > top:
            fast.append((did, ts, dumps(vals).decode()))
            if ts > newest.get(did, -1):
                newest[did] = ts
        else:
            slow.append((did, ts, vals))
    pnewest.update(newest)
    pg = conn.dialect.name == "postgresql"
    if fast and not pg:
        _sqlite_insert(conn, fast)
    dups = _merge_late(conn, pg, slow) if slow else []
    if fast and pg:  # three arrays in one INSERT, sent now in the transaction's pipeline (`_pg_send`); safe: merging
        pending.pg_sent = True
        _pg_send(session, _PG_INSERT_MERGE if safe else _PG_INSERT,
                 (_pg_array([r[0] for r in fast]), _pg_array([r[1] for r in fast]), _pg_array([r[2] for r in fast])))
    return dups


SQLITE_CHUNKS = (256, 64, 16, 4, 1)  # rows per INSERT statement: a few fixed texts, each prepared once


@functools.cache
def _sqlite_insert_sql(rows: int) -> str:
    return ("INSERT INTO iot_reading (device_id, ts, vals) VALUES " + ", ".join(["(?, ?, ?)"] * rows)
            + " ON CONFLICT (device_id, ts) DO UPDATE SET vals = json_patch(excluded.vals, iot_reading.vals)")


def _sqlite_insert(conn: Any, rows: list[tuple[int, int, str]]) -> None:
    """Insert rows with multi-row INSERTs of SQLITE_CHUNKS rows: SQLite inserts a whole statement's rows in one
    step without Python's GIL (an executemany takes it back after every row, so the thread that checks the next
    group held it most of the time and the writer waited row by row)."""
    cur = conn.connection.driver_connection.cursor()
    i, n = 0, len(rows)
    for size in SQLITE_CHUNKS:
        sql = _sqlite_insert_sql(size)
        while n - i >= size:
            cur.execute(sql, [x for row in rows[i:i + size] for x in row])
            i += size
    cur.close()


def _merge_late(conn: Any, pg: bool, slow: list[tuple[int, int, dict[str, Any]]]) -> list[tuple[int, int, str]]:
    """Late or repeated messages: read the stored rows of those (device, ts) keys in one query, add only the
    properties not stored yet (the stored value wins); return the readings that were already stored."""
    dups: list[tuple[int, int, str]] = []
    for k in range(0, len(slow), 400):
        chunk = slow[k:k + 400]
        if pg:
            got = conn.exec_driver_sql(
                "SELECT r.device_id, r.ts, r.vals FROM iot_reading r JOIN unnest(%s::int[], %s::bigint[]) AS k(d, t) "
                "ON r.device_id = k.d AND r.ts = k.t", ([c[0] for c in chunk], [c[1] for c in chunk])).all()
        else:
            # a join, not `(device_id, ts) IN (VALUES ...)`: SQLite plans that as a scan of the whole table
            got = conn.exec_driver_sql(
                "SELECT r.device_id, r.ts, r.vals FROM (VALUES " + ", ".join("(?, ?)" for _ in chunk)
                + ") AS k JOIN iot_reading r ON r.ts = k.column1 AND r.device_id = k.column2",
                tuple(x for c in chunk for x in (c[1], c[0]))).all()
        stored = {(d, t): (orjson.loads(v) if isinstance(v, str | bytes) else v) for d, t, v in got}
        inserts, updates = [], []
        for did, ts, vals in chunk:
            old = stored.get((did, ts))
            if old is None:
                inserts.append((did, ts, orjson.dumps(vals).decode()))
                continue
            add = {p: v for p, v in vals.items() if p not in old}
            dups.extend((did, ts, p) for p in vals if p in old)
            if add:
                updates.append((orjson.dumps(old | add).decode(), did, ts))
        ph = "%s" if pg else "?"
        if inserts:
            conn.exec_driver_sql(f"INSERT INTO iot_reading (device_id, ts, vals) VALUES ({ph}, {ph}, {ph})", inserts)
        if updates:
            conn.exec_driver_sql(f"UPDATE iot_reading SET vals = {ph} WHERE device_id = {ph} AND ts = {ph}", updates)
    return dups


# --- rules ------------------------------------------------------------------------------------------------------


@dataclass
class _Pending:
    raised: list[tuple[tuple[int, int], int]] = field(default_factory=list)
    cleared: list[tuple[int, int]] = field(default_factory=list)
    since: dict[tuple[int, int], int | None] = field(default_factory=dict)
    docs: dict[int, dict[str, tuple[int, Any]]] = field(default_factory=dict)  # changed latest values
    loaded: dict[int, dict[str, tuple[int, Any]]] = field(default_factory=dict)  # read from the database
    open_now: dict[tuple[int, int], int | None] = field(default_factory=dict)  # staged open-alarm changes
    bumps: dict[int, tuple[int, float | None]] = field(default_factory=dict)  # alarm id -> (count+, last value)
    rate_ref: dict[tuple[int, int], tuple[int, float]] = field(default_factory=dict)
    flushed: dict[int, int] = field(default_factory=dict)
    newest: dict[int, int] = field(default_factory=dict)
    pg_writes: list[tuple[str, tuple]] = field(default_factory=list)  # PostgreSQL: sent with the COMMIT
    pg_sent: bool = False  # PostgreSQL: statements already sent in the transaction's pipeline (`_pg_send`)
    cur: tuple | None = None  # the reading being evaluated, and which readings raised / cleared alarms
    raised_by: list[tuple] = field(default_factory=list)
    cleared_by: list[tuple] = field(default_factory=list)

    def apply(self, st: _State) -> None:
        assert st.open_alarms is not None and st.since is not None
        for key, aid in self.open_now.items():
            if aid is None:
                st.open_alarms.pop(key, None)
            else:
                st.open_alarms[key] = aid
        for key, since in self.since.items():
            if since is None:
                st.since.pop(key, None)
            else:
                st.since[key] = since
        st.docs.update(self.loaded)
        st.docs.update(self.docs)
        st.newest.update(self.newest)
        st.rate_ref.update(self.rate_ref)
        st.flushed.update(self.flushed)


def _cond(r: RuleInfo, v: float) -> bool:
    op = r.op
    if op == ">":
        return v > r.t1
    if op == "<":
        return v < r.t1
    if op == "between":
        return r.t1 <= v <= r.t2
    return v < r.t1 or v > r.t2  # outside


def _normal(r: RuleInfo, v: float) -> bool:
    op, h = r.op, r.hyst
    if op == ">":
        return v <= r.t1 - h
    if op == "<":
        return v >= r.t1 + h
    if op == "between":
        return v < r.t1 - h or v > r.t2 + h
    return r.t1 + h <= v <= r.t2 - h


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}".rstrip("0").rstrip(".")


def _qty(v: float | None, unit: str) -> str:
    """A value with its unit, spaced as written (`275 µg/m³`, `2.1 m`; `85%` and `5°` stay joined)."""
    return f"{_fmt(v)}{unit}" if not unit or unit in ("%", "°") else f"{_fmt(v)} {unit}"


def _describe(r: RuleInfo, info: DevInfo, v: float | None) -> tuple[str, str]:
    p = info.model.prop(r.prop)
    unit = p.unit if p else ""
    pname, pname_en = (p.name, p.name_en) if p else (r.prop, r.prop)
    sev_zh, sev_en = catalog.SEVERITIES.get(r.severity, ("", ""))
    if r.kind == "nodata":
        return (f"【{sev_zh}】{info.name}（{info.code}）{r.name}：超过{r.duration_ms // 60000}分钟未上报{pname}",
                f"[{sev_en}] {info.code}: {r.name_en}: no {pname_en} for {r.duration_ms // 60000} min")
    if r.op in ("between", "outside"):
        limit = f"{_fmt(r.t1)}–{_qty(r.t2, unit)}"
    else:
        limit = f"{r.op}{_qty(r.t1, unit)}"
    if r.kind == "rate":
        limit += "/分钟"
    dur_zh = f"持续{r.duration_ms // 60000}分钟" if r.kind == "duration" else ""
    dur_en = f" for {r.duration_ms // 60000} min" if r.kind == "duration" else ""
    return (f"【{sev_zh}】{info.name}（{info.code}）{r.name}：{pname} {_qty(v, unit)}（阈值{limit}{dur_zh}）",
            f"[{sev_en}] {info.code}: {r.name_en}: {pname_en} {_qty(v, unit)} (limit {limit.replace('/分钟', '/min')}"
            f"{dur_en})")


def _alarm_payload(a: Alarm | SimpleNamespace, info: DevInfo | None, at: dt.datetime) -> dict[str, Any]:
    return {"alarm_id": a.id, "device_code": a.device_code, "model_code": a.model_code, "rule_id": a.rule_id,
            "rule_name": a.rule_name, "severity": a.severity, "property": a.property,
            "value": a.last_value if a.status == "cleared" and a.clear_value is None else
            (a.clear_value if a.status == "cleared" else a.value),
            "lon": a.lon, "lat": a.lat, "grid_code": a.grid_code, "message_zh": a.message_zh,
            "message_en": a.message_en, "status": a.status, "at": at.isoformat(),
            "org_ids": [a.org_id] if a.org_id is not None else [], "category_hint": a.category_hint}


_INSERT_ALARM = insert(Alarm.__table__).returning(Alarm.__table__.c.id)
_ALARM_ROW = select(Alarm.__table__).where(Alarm.__table__.c.id == bindparam("aid"))
_CLEAR_ALARM = (update(Alarm.__table__).where(Alarm.__table__.c.id == bindparam("aid"))
                .values(status="cleared", cleared_at=bindparam("at"), cleared_by=bindparam("by"),
                        clear_value=bindparam("v"), open_key=None))


def _raise_alarm(session: Session, pending: _Pending, r: RuleInfo, info: DevInfo, v: float | None, ts: int,
                 now: dt.datetime) -> None:
    zh, en = _describe(r, info, v)
    row = {"open_key": f"{r.id}:{info.id}", "rule_id": r.id, "device_id": info.id, "device_code": info.code,
           "model_code": info.model.code, "rule_name": r.name, "rule_name_en": r.name_en, "severity": r.severity,
           "status": "active", "property": r.prop, "value": v, "last_value": v, "count": 1, "org_id": info.org_id,
           "grid_code": info.grid_code, "lon": info.lon, "lat": info.lat, "message_zh": zh, "message_en": en,
           "category_hint": r.category_hint or info.model.category_hint, "raised_at": now, "reading_ts": ts}
    # Core, not an ORM object and a flush: this runs inside the telemetry transaction
    a = SimpleNamespace(id=session.connection().execute(_INSERT_ALARM, row).scalar_one(), clear_value=None, **row)
    bus.publish(session, "iot.alarm.raised", _alarm_payload(a, info, now))
    audit.record(session, action="iot.alarm.raise", target_type="iot_alarm", target_id=a.id,
                 after={"device": info.code, "rule": r.name, "severity": r.severity, "value": v},
                 actor=context.SYSTEM)
    key = (r.id, info.id)
    pending.open_now[key] = a.id
    pending.raised.append((key, a.id))
    if pending.cur is not None:
        pending.raised_by.append(pending.cur)


def _clear_alarm(session: Session, pending: _Pending, alarm_id: int, key: tuple[int, int], v: float | None,
                 now: dt.datetime, by: str = "system:auto", note: str | None = None) -> None:
    pending.open_now[key] = None
    before: str
    loaded = session.identity_map.get(session.identity_key(Alarm, alarm_id))
    if loaded is None:  # the telemetry path: Core statements, no ORM object and flush
        conn = session.connection()
        row = conn.execute(_ALARM_ROW, {"aid": alarm_id}).mappings().first()
        if row is None or row["status"] == "cleared":
            return
        before = row["status"]
        conn.execute(_CLEAR_ALARM, {"aid": alarm_id, "at": now, "by": by, "v": v})
        a: Any = SimpleNamespace(**{**row, "status": "cleared", "cleared_at": now, "cleared_by": by,
                                    "clear_value": v, "open_key": None})
    else:  # an alarm this session has loaded (closing by hand): through the ORM, so the object stays current
        a = loaded
        if a.status == "cleared":
            return
        before = a.status
        a.status, a.cleared_at, a.cleared_by, a.clear_value, a.open_key = "cleared", now, by, v, None
        session.flush([a])
    bus.publish(session, "iot.alarm.cleared", _alarm_payload(a, None, now))
    audit.record(session, action="iot.alarm.clear", target_type="iot_alarm", target_id=a.id,
                 before={"status": before}, after={"status": "cleared", "value": v, "by": by}, note=note,
                 actor=context.SYSTEM if by == "system:auto" else None)
    pending.cleared.append(key)
    if pending.cur is not None:
        pending.cleared_by.append(pending.cur)


LOAD_ROWS = 16  # newest messages read for a device's latest values; older properties come from its checkpoint


def _load_docs(session: Session, st: _State, wide: dict[tuple[int, int], dict[str, Any]], pending: _Pending) -> None:
    """Newest stored value per property of devices first seen since start, read BEFORE this batch is written:
    the newest LOAD_ROWS messages (so the newest timestamp is exact), then the device row's checkpoint for
    properties not among them."""
    docs = st.docs
    need = list({did for did, _ts in wide if did not in docs})
    if not need:
        return
    conn = session.connection()
    ph = "%s" if conn.dialect.name == "postgresql" else "?"
    sql = f"SELECT ts, vals FROM iot_reading WHERE device_id = {ph} ORDER BY ts DESC LIMIT {LOAD_ROWS}"
    for did in need:
        doc: dict[str, tuple[int, Any]] = {}
        nprops = len(st.by_id[did].model.props)
        n = 0
        pending.newest[did] = -1
        for ts, vals in conn.exec_driver_sql(sql, (did,)).all():
            if n == 0:
                pending.newest[did] = ts
            n += 1
            if isinstance(vals, str | bytes):
                vals = orjson.loads(vals)
            for k, v in vals.items():
                if k not in doc:
                    doc[k] = (ts, v)
        if n == LOAD_ROWS and len(doc) < nprops:
            cp = conn.exec_driver_sql(f"SELECT latest FROM iot_device WHERE id = {ph}", (did,)).scalar()
            if isinstance(cp, str | bytes):
                cp = orjson.loads(cp)
            for k, tv in (cp or {}).items():
                if k not in doc and isinstance(tv, list) and len(tv) == 2:
                    doc[k] = (int(tv[0]), tv[1])
        pending.loaded[did] = doc


def _latest_and_rules(session: Session, st: _State, wide: dict[tuple[int, int], dict[str, Any]], pending: _Pending,
                      now: dt.datetime, results: list[IngestResult], own: Any = None) -> None:
    """Newest values per device and property, and the rules, message by message in time order (per device).
    Alarms raised and cleared are counted on the result of the part a reading came from (`own`: several parts)."""
    docs = st.docs
    items = list(wide.items())
    tss = [k[1] for k in wide]
    if any(map(operator.gt, tss, itertools.islice(tss, 1, None))):
        items.sort(key=lambda kv: kv[0][1])  # stable: a device's messages in time order
    model_rules, dev_rules, nodata_props = st.model_rules, st.dev_rules, st.nodata_props
    open_alarms = st.open_alarms or {}
    since_map = st.since or {}
    by_id = st.by_id
    pdocs, loaded = pending.docs, pending.loaded
    open_now, psince = pending.open_now, pending.since
    for (did, ts), vals in items:
        doc = pdocs.get(did)
        if doc is None:
            base = docs.get(did)
            doc = pdocs[did] = dict(base if base is not None else loaded.get(did) or {})
        info = by_id[did]
        mcode = info.model.code
        mrules = model_rules.get(mcode)
        drules = dev_rules.get(did) if dev_rules else None
        ndp = nodata_props.get(mcode) if nodata_props else None
        for prop, v in vals.items():
            prev = doc.get(prop)
            if prev is not None and ts <= prev[0]:
                continue  # late or repeated reading: stored, not evaluated
            doc[prop] = (ts, v)
            if v.__class__ is not float:
                continue
            rlist = mrules.get(prop) if mrules is not None else None
            if drules is not None:
                drl = drules.get(prop)
                if drl:
                    rlist = (rlist or []) + drl
            if ndp is not None and prop in ndp:
                for r in st.nodata_rules:
                    if r.model_code == mcode and r.prop == prop and (r.device_id in (None, did)):
                        akey = (r.id, did)
                        aid = open_now[akey] if akey in open_now else open_alarms.get(akey)
                        if aid:
                            pending.cur = (did, prop, ts)
                            _clear_alarm(session, pending, aid, akey, v, now)
            if not rlist:
                continue
            for r in rlist:
                akey = (r.id, did)
                aid = open_now[akey] if open_now and akey in open_now else open_alarms.get(akey)
                kind = r.kind
                if kind == "rate":  # change per minute, measured over at least RATE_WINDOW_MS
                    ref = pending.rate_ref.get(akey) or st.rate_ref.get(akey)
                    if ref is None:
                        ref = (prev[0], prev[1]) if prev is not None and isinstance(prev[1], float) else (ts, v)
                        pending.rate_ref[akey] = ref
                    if ts - ref[0] < RATE_WINDOW_MS:
                        continue
                    x = (v - ref[1]) / ((ts - ref[0]) / 60000.0)
                    pending.rate_ref[akey] = (ts, v)
                else:
                    x = v
                hit = x > r.t1 if r.op == ">" else _cond(r, x)
                if kind == "duration":
                    s = psince[akey] if psince and akey in psince else since_map.get(akey)
                    if hit:
                        if s is None:
                            s = ts
                            psince[akey] = ts
                            _save_since(session, r.id, did, ts)
                        if aid is None and ts - s >= r.duration_ms:
                            pending.cur = (did, prop, ts)
                            _raise_alarm(session, pending, r, info, x, ts, now)
                        elif aid is not None:
                            _bump(pending, aid, x)
                        continue
                    if s is not None:
                        psince[akey] = None
                        _save_since(session, r.id, did, None)
                elif hit:
                    if aid is None:
                        pending.cur = (did, prop, ts)
                        _raise_alarm(session, pending, r, info, x, ts, now)
                    else:
                        _bump(pending, aid, x)
                    continue
                if aid is not None and _normal(r, x):
                    pending.cur = (did, prop, ts)
                    _clear_alarm(session, pending, aid, akey, x, now)
    for aid, (n, lv) in pending.bumps.items():
        session.execute(update(Alarm).where(Alarm.id == aid, Alarm.status != "cleared")
                        .values(count=Alarm.count + n, last_value=lv))
    if own is None:
        results[0].alarms_raised += len(pending.raised)
        results[0].alarms_cleared += len(pending.cleared)
        return
    for r in pending.raised_by:
        results[own(r[0], r[2], r[1])].alarms_raised += 1
    for r in pending.cleared_by:
        results[own(r[0], r[2], r[1])].alarms_cleared += 1


def _bump(pending: _Pending, aid: int, v: float) -> None:
    n, _ = pending.bumps.get(aid, (0, None))
    pending.bumps[aid] = (n + 1, v)


def _save_since(session: Session, rule_id: int, device_id: int, since: int | None) -> None:
    stmt = upsert_insert(session.get_bind(), RuleState).values(rule_id=rule_id, device_id=device_id, since_ts=since)
    session.execute(stmt.on_conflict_do_update(index_elements=["rule_id", "device_id"],
                                               set_={"since_ts": stmt.excluded.since_ts}))


def _publish_status(session: Session, changes: list[tuple[str, str, int | None]], at: dt.datetime) -> None:
    bus.publish_many(session, "iot.device.status", [
        {"device_code": code, "status": status, "at": at.isoformat(), "org_ids": [org] if org is not None else []}
        for code, status, org in changes])


# --- status: offline detection and no-data rules ------------------------------------------------------------------


def check_status(session: Session) -> dict[str, int]:
    """Mark devices offline after N missed intervals (per model) and raise no-data alarms; commit."""
    st = _state(session)
    with st.lock:
        try:
            return _check_status_locked(session, st)
        except BaseException:
            session.rollback()
            raise


def _check_status_locked(session: Session, st: _State) -> dict[str, int]:
    _registry(session, st)
    _load_rules(session, st)
    _load_alarm_state(session, st)
    now = utcnow()
    offline: list[Any] = []
    for model in catalog.MODELS:
        cutoff = now - dt.timedelta(seconds=model.report_interval_s * model.offline_after_missed)
        offline.extend(session.execute(
            select(Device.id, Device.code, Device.org_id).where(
                Device.model_code == model.code, Device.status == "online", Device.last_seen_at < cutoff)).all())
    if offline:
        ids = [r.id for r in offline]
        for i in range(0, len(ids), 900):
            session.execute(update(Device).where(Device.id.in_(ids[i:i + 900]), Device.status == "online")
                            .values(status="offline", status_changed_at=now))
        _publish_status(session, [(r.code, "offline", r.org_id) for r in offline], now)
        audit.record(session, action="iot.device.offline", target_type="iot_device",
                     target_id=offline[0].code if len(offline) == 1 else f"{len(offline)} devices",
                     after={"status": "offline", "devices": [r.code for r in offline[:200]], "count": len(offline)},
                     actor=context.SYSTEM)
    pending = _Pending()
    now_ms = _ms(now)
    open_alarms = st.open_alarms or {}
    for r in st.nodata_rules:
        cutoff_ms = now_ms - r.duration_ms
        q = select(Device.id, Device.latest).where(Device.model_code == r.model_code, Device.status != "disabled",
                                                   Device.latest.is_not(None))
        if r.device_id is not None:
            q = q.where(Device.id == r.device_id)
        for did, latest in session.execute(q):
            entry = (st.docs.get(did) or latest or {}).get(r.prop)
            if entry is None or entry[0] >= cutoff_ms:
                continue
            if (r.id, did) in open_alarms or (r.id, did) in pending.open_now:
                continue
            info = st.by_id.get(did)
            if info is not None:
                _raise_alarm(session, pending, r, info, None, entry[0], now)
    session.commit()
    for r in offline:
        info = st.by_id.get(r.id)
        if info is not None and info.status == "online":
            info.status = "offline"
    pending.apply(st)
    return {"offline": len(offline), "nodata_alarms": len(pending.raised)}


# --- rules management -------------------------------------------------------------------------------------------


def rule_dict(r: Rule) -> dict[str, Any]:
    """A rule as the API shows it."""
    return {"id": r.id, "key": r.key, "name": r.name, "name_en": r.name_en, "model": r.model_code,
            "device_id": r.device_id, "property": r.property, "kind": r.kind, "op": r.op, "threshold": r.threshold,
            "threshold2": r.threshold2, "duration_s": r.duration_s, "hysteresis": r.hysteresis,
            "severity": r.severity, "category_hint": r.category_hint, "org_id": r.org_id, "enabled": r.enabled,
            "created_at": r.created_at, "updated_at": r.updated_at}


def _validate_rule(model_code: str, prop: str, kind: str, op: str, threshold: float | None,
                   threshold2: float | None, duration_s: int, hysteresis: float, severity: int) -> None:
    errs = []
    model = catalog.get(model_code)
    if model is None:
        errs.append({"field": "model", "message": "未知物模型 / unknown model"})
    elif model.prop(prop) is None or model.prop(prop).type not in ("number", "bool"):
        errs.append({"field": "property", "message": "物模型中无此数值属性 / no such numeric property"})
    if kind not in RULE_KINDS:
        errs.append({"field": "kind", "message": f"one of {', '.join(RULE_KINDS)}"})
    if kind != "nodata":
        if op not in RULE_OPS:
            errs.append({"field": "op", "message": f"one of {', '.join(RULE_OPS)}"})
        if threshold is None:
            errs.append({"field": "threshold", "message": "必填 / required"})
        if op in ("between", "outside") and (threshold2 is None or threshold is None or threshold2 < threshold):
            errs.append({"field": "threshold2", "message": "需 ≥ threshold / must be >= threshold"})
    if kind in ("duration", "nodata") and duration_s <= 0:
        errs.append({"field": "duration_s", "message": "需大于 0 / must be > 0"})
    if hysteresis < 0:
        errs.append({"field": "hysteresis", "message": "不能为负 / must be >= 0"})
    if severity not in (1, 2, 3, 4):
        errs.append({"field": "severity", "message": "1–4 (一般/较重/严重/特别严重)"})
    if errs:
        raise Invalid("告警规则不正确", "Invalid alarm rule", errors=errs)


def create_rule(session: Session, *, name: str, name_en: str | None, model: str, property: str, kind: str,
                op: str = ">", threshold: float | None = None, threshold2: float | None = None,
                duration_s: int = 0, hysteresis: float = 0.0, severity: int = 1, category_hint: str | None = None,
                device_code: str | None = None, principal: Principal, key: str | None = None) -> Rule:
    """Add an alarm rule for every device of a model (or for one device)."""
    _validate_rule(model, property, kind, op, threshold, threshold2, duration_s, hysteresis, severity)
    device_id = None
    if device_code:
        dev = get_device(session, code=device_code, principal=principal)
        if dev.model_code != model:
            raise Invalid("设备与物模型不符", "The device is of another model",
                          errors=[{"field": "device_code", "message": f"device model is {dev.model_code}"}])
        device_id = dev.id
    now = utcnow()
    r = Rule(key=key, name=name, name_en=name_en or name, model_code=model, device_id=device_id, property=property,
             kind=kind, op=op, threshold=threshold, threshold2=threshold2, duration_s=duration_s,
             hysteresis=hysteresis, severity=severity, category_hint=category_hint,
             org_id=principal.org_id if principal.kind != "system" else None, enabled=True, created_at=now,
             updated_at=now)
    session.add(r)
    session.flush()
    audit.commit(session, action="iot.rule.create", target_type="iot_rule", target_id=r.id, after=rule_dict(r))
    _invalidate_rules(session)
    return r


def update_rule(session: Session, *, rule_id: int, principal: Principal, **changes: Any) -> Rule:
    """Change a rule (thresholds, duration, hysteresis, severity, enabled)."""
    r = session.get(Rule, rule_id)
    if r is None:
        raise NotFound(f"规则 {rule_id} 不存在", f"Rule {rule_id} does not exist", code="rule_not_found")
    if r.org_id is not None and not principal.sees_org(r.org_id):
        raise Forbidden("该规则不在您的管辖范围内", "That rule is outside your scope", code="out_of_scope")
    before = rule_dict(r)
    for k, v in changes.items():
        if v is not None and k in ("name", "name_en", "op", "threshold", "threshold2", "duration_s", "hysteresis",
                                   "severity", "category_hint", "enabled"):
            setattr(r, k, v)
    _validate_rule(r.model_code, r.property, r.kind, r.op, r.threshold, r.threshold2, r.duration_s, r.hysteresis,
                   r.severity)
    r.updated_at = utcnow()
    session.flush()
    audit.commit(session, action="iot.rule.update", target_type="iot_rule", target_id=r.id, before=before,
                 after=rule_dict(r))
    _invalidate_rules(session)
    return r


def list_rules(session: Session, *, model: str | None = None) -> list[Rule]:
    """Every alarm rule, optionally of one model."""
    q = select(Rule).order_by(Rule.id)
    if model:
        q = q.where(Rule.model_code == model)
    return list(session.scalars(q))


def ensure_default_rules(session: Session) -> int:
    """Create each model's default rules once (key `<model>.<rule>`); returns how many were added."""
    have = set(session.scalars(select(Rule.key).where(Rule.key.is_not(None))))
    added = 0
    now = utcnow()
    for m in catalog.MODELS:
        for d in m.rules:
            key = f"{m.code}.{d.key}"
            if key in have:
                continue
            session.add(Rule(key=key, name=d.name, name_en=d.name_en, model_code=m.code, property=d.property,
                             kind=d.kind, op=d.op, threshold=d.threshold, threshold2=d.threshold2,
                             duration_s=d.duration_s, hysteresis=d.hysteresis, severity=d.severity,
                             category_hint=d.category_hint, enabled=True, created_at=now, updated_at=now))
            added += 1
    if added:
        session.flush()
        audit.commit(session, action="iot.rule.defaults", target_type="iot_rule", target_id=f"{added} rules",
                     after={"added": added}, actor=context.SYSTEM)
        _invalidate_rules(session)
    else:
        session.rollback()
    return added


# --- alarms -----------------------------------------------------------------------------------------------------


def alarm_dict(a: Alarm) -> dict[str, Any]:
    """An alarm as the API shows it."""
    zh, en = catalog.SEVERITIES.get(a.severity, ("", ""))
    return {"id": a.id, "device_code": a.device_code, "model": a.model_code, "rule_id": a.rule_id,
            "rule_name": a.rule_name, "rule_name_en": a.rule_name_en, "severity": a.severity,
            "severity_name": zh, "severity_name_en": en, "status": a.status, "property": a.property,
            "value": a.value, "last_value": a.last_value, "count": a.count, "org_id": a.org_id,
            "grid_code": a.grid_code, "lon": a.lon, "lat": a.lat, "message_zh": a.message_zh,
            "message_en": a.message_en, "category_hint": a.category_hint, "raised_at": a.raised_at,
            "acked_at": a.acked_at, "acked_by": a.acked_by, "ack_note": a.ack_note, "cleared_at": a.cleared_at,
            "cleared_by": a.cleared_by, "clear_value": a.clear_value}


def _check_device_status(status: str | None) -> None:
    """422 for a device status filter that no device can have (instead of an empty answer)."""
    if status and status not in STATUSES:
        raise Invalid("设备状态应为 online、offline 或 disabled", "status must be online, offline or disabled",
                      errors=[{"field": "status", "message": "online|offline|disabled"}])


def _alarm_status_filter(q: Any, status: str | None) -> Any:
    if status == "open":
        return q.where(Alarm.status != "cleared")
    if status:
        if status not in ALARM_STATUSES:
            raise Invalid("告警状态应为 active、acknowledged、cleared 或 open",
                          "status must be active, acknowledged, cleared or open",
                          errors=[{"field": "status", "message": "active|acknowledged|cleared|open"}])
        return q.where(Alarm.status == status)
    return q


def list_alarms(session: Session, *, principal: Principal, status: str | None = None, severity: int | None = None,
                device_code: str | None = None, grid_code: str | None = None, limit: int = 50,
                offset: int = 0) -> tuple[int, list[Alarm]]:
    """Alarms in the principal's scope, newest first, with the total."""
    q = _alarm_status_filter(_scope(select(Alarm), principal, Alarm.org_id), status)
    if severity:
        q = q.where(Alarm.severity == severity)
    if device_code:
        q = q.where(Alarm.device_code == device_code)
    if grid_code:
        q = q.where(Alarm.grid_code == grid_code)
    total = session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = session.scalars(q.order_by(Alarm.id.desc()).limit(limit).offset(offset)).all()
    return total, list(rows)


def get_alarm(session: Session, *, alarm_id: int, principal: Principal) -> Alarm:
    """One alarm in the principal's scope."""
    a = session.get(Alarm, alarm_id)
    if a is None or not principal.sees_org(a.org_id):
        raise NotFound(f"告警 {alarm_id} 不存在", f"Alarm {alarm_id} does not exist", code="alarm_not_found")
    return a


def acknowledge_alarm(session: Session, *, alarm_id: int, principal: Principal, note: str | None = None) -> Alarm:
    """Acknowledge an active alarm (it still clears by itself when the value is back to normal)."""
    st = _state(session)
    with st.lock:
        a = get_alarm(session, alarm_id=alarm_id, principal=principal)
        if a.status != "active":
            raise Conflict(f"告警已是{'已确认' if a.status == 'acknowledged' else '已解除'}状态",
                           f"The alarm is already {a.status}", code="alarm_not_active")
        now = utcnow()
        a.status, a.acked_at, a.acked_by, a.ack_note = "acknowledged", now, principal.label, note
        session.flush()
        bus.publish(session, "iot.alarm.acknowledged", _alarm_payload(a, None, now))
        audit.commit(session, action="iot.alarm.acknowledge", target_type="iot_alarm", target_id=a.id,
                     before={"status": "active"}, after={"status": "acknowledged", "note": note})
        return a


def close_alarm(session: Session, *, alarm_id: int, principal: Principal, note: str) -> Alarm:
    """Clear an open alarm by hand (device removed, false alarm); a reason is required."""
    if not note or not note.strip():
        raise Invalid("请填写解除原因", "A reason is required", errors=[{"field": "note", "message": "required"}])
    st = _state(session)
    with st.lock:
        _load_alarm_state(session, st)
        a = get_alarm(session, alarm_id=alarm_id, principal=principal)
        if a.status == "cleared":
            raise Conflict("告警已解除", "The alarm is already cleared", code="alarm_cleared")
        pending = _Pending()
        key = (a.rule_id, a.device_id)
        _clear_alarm(session, pending, a.id, key, None, utcnow(), by=principal.label, note=note)
        session.commit()
        pending.apply(st)
    relay.notify("alarms")
    return a


# --- queries ----------------------------------------------------------------------------------------------------


def _value_out(model: catalog.DeviceModel | None, prop: str, value: float | None, txt: str | None) -> Any:
    if txt is not None:
        return txt
    p = model.prop(prop) if model else None
    if p is not None and p.type == "bool" and value is not None:
        return value >= 0.5
    return value


def latest_in_memory(db: Any, ids: list[int]) -> dict[int, dict[str, list[Any]]]:
    """The ingesting process's latest values of these devices (those it holds), for the other processes."""
    with db.read() as s:
        docs = _state(s).docs
    return {i: {k: [tv[0], tv[1]] for k, tv in doc.items()} for i in ids if (doc := docs.get(i)) is not None}


def _latest_docs(session: Session, ids: list[int]) -> dict[int, dict[str, tuple[int, Any]]]:
    """Latest values held in memory by the process that ingests (this one, or the ingest process of `serve
    --workers N`); devices missing here are read from their rows' checkpoint by the caller."""
    remote = relay.latest(ids)
    if remote is not None:
        return {i: {k: (tv[0], tv[1]) for k, tv in doc.items()} for i, doc in remote.items()}
    docs = _state(session).docs
    return {i: doc for i in ids if (doc := docs.get(i)) is not None}


def device_latest(session: Session, *, code: str, principal: Principal) -> dict[str, Any]:
    """The newest value of each property of one device."""
    dev = get_device(session, code=code, principal=principal)
    model = catalog.get(dev.model_code)
    out = {}
    mem = _latest_docs(session, [dev.id]).get(dev.id)
    for prop, (ts, value) in (mem if mem is not None else dev.latest or {}).items():
        p = model.prop(prop) if model else None
        out[prop] = {"value": _value_out(model, prop, value if isinstance(value, float | int) else None,
                                         value if isinstance(value, str) else None),
                     "ts": _from_ms(ts), "unit": p.unit if p else "", "name": p.name if p else prop}
    return {"device": dev.code, "values": out}


def _num(session: Session, prop: str, *, checked: bool = True) -> Any:
    """SQL for the numeric value of one property in `iot_reading.vals` (NULL when the message lacks it).
    `checked=False` when the property is known to be numeric; otherwise non-numbers give NULL too."""
    if not checked:
        return Reading.vals[prop].as_float()
    if session.get_bind().dialect.name == "postgresql":
        return case((func.json_typeof(Reading.vals[prop]) == "number", Reading.vals[prop].as_float()))
    path = f'$."{prop}"'
    return case((func.json_type(Reading.vals, path).in_(("real", "integer")), func.json_extract(Reading.vals, path)))


def readings(session: Session, *, code: str, prop: str, principal: Principal, since: dt.datetime | None = None,
             until: dt.datetime | None = None, interval_s: int | None = None, limit: int = 1000) -> dict[str, Any]:
    """Raw readings of one property in a time range, or avg/min/max/count per interval when `interval_s` is given."""
    dev = get_device(session, code=code, principal=principal)
    model = catalog.get(dev.model_code)
    if model is None or model.prop(prop) is None:
        raise Invalid(f"物模型中无此属性：{prop}", f"No property {prop} in the model",
                      errors=[{"field": "property", "message": "unknown property"}])
    until = until or utcnow()
    since = since or until - dt.timedelta(hours=24)
    lo, hi = _ms(since), _ms(until)
    numeric = model.prop(prop).type in ("number", "bool")
    num = _num(session, prop, checked=False)
    base = (Reading.device_id == dev.id, Reading.ts >= lo, Reading.ts < hi)
    if interval_s:
        if interval_s < 1:
            raise Invalid("聚合间隔需大于 0 秒", "interval_s must be > 0",
                          errors=[{"field": "interval_s", "message": "> 0"}])
        if not numeric:
            raise Invalid(f"{prop} 不是数值属性，无法按间隔聚合", f"{prop} is not numeric; it cannot be downsampled",
                          errors=[{"field": "interval_s", "message": "numeric properties only"}])
        step = interval_s * 1000
        bucket = (Reading.ts - Reading.ts % step).label("bucket")
        q = (select(bucket, func.avg(num), func.min(num), func.max(num), func.count(num))
             .where(*base, num.is_not(None)).group_by(bucket).order_by(bucket).limit(limit))
        points = [{"ts": _from_ms(int(b)), "avg": avg, "min": mn, "max": mx, "count": n}
                  for b, avg, mn, mx, n in session.execute(q)]
        return {"device": dev.code, "property": prop, "interval_s": interval_s, "points": points}
    val = num if numeric else Reading.vals[prop].as_string()
    q = select(Reading.ts, val).where(*base, val.is_not(None)).order_by(Reading.ts).limit(limit)
    points = [{"ts": _from_ms(ts), "value": _value_out(model, prop, v if numeric else None, None if numeric else v)}
              for ts, v in session.execute(q)]
    return {"device": dev.code, "property": prop, "points": points}


def count_readings(session: Session, *, device_id: int | None = None, prop: str | None = None) -> int:
    """How many readings (property values) are stored, optionally of one device and/or one property."""
    each = "json_each"  # SQLite and PostgreSQL alike
    where, params = [], {}
    if device_id is not None:
        where.append("r.device_id = :d")
        params["d"] = device_id
    if prop is not None:
        where.append("e.key = :p")
        params["p"] = prop
    sql = f"SELECT count(*) FROM iot_reading r, {each}(r.vals) e" + (" WHERE " + " AND ".join(where) if where else "")
    return int(session.execute(text(sql), params).scalar() or 0)


def grid_latest(session: Session, *, grid_code: str, principal: Principal) -> list[dict[str, Any]]:
    """Latest values of every device in one grid (in the principal's scope)."""
    # the grid index is the selective one: apply the organisation scope in Python (the planner cannot tell)
    q = select(Device.id, Device.code, Device.name, Device.model_code, Device.status, Device.lon, Device.lat,
               Device.latest, Device.org_id).where(Device.grid_code == grid_code)
    out = []
    rows = [r for r in session.execute(q.order_by(Device.id)) if principal.sees_org(r.org_id)]
    docs = _latest_docs(session, [r.id for r in rows])
    for r in rows:
        mem = docs.get(r.id)
        model = catalog.get(r.model_code)
        values = {prop: {"value": _value_out(model, prop, v if isinstance(v, float | int) else None,
                                             v if isinstance(v, str) else None), "ts": _from_ms(ts)}
                  for prop, (ts, v) in (mem if mem is not None else r.latest or {}).items()}
        out.append({"code": r.code, "name": r.name, "model": r.model_code, "status": r.status, "lon": r.lon,
                    "lat": r.lat, "values": values})
    return out


AREA_LEVELS = {"grid": Device.grid_code, "community": Device.community_code, "town": Device.town_code}


def aggregate(session: Session, *, prop: str, principal: Principal, level: str = "grid", model: str | None = None,
              since: dt.datetime | None = None, until: dt.datetime | None = None) -> list[dict[str, Any]]:
    """avg/min/max/count of one property per grid, community or town over a time range."""
    col = AREA_LEVELS.get(level)
    if col is None:
        raise Invalid("level 应为 grid、community 或 town", "level must be grid, community or town",
                      errors=[{"field": "level", "message": "grid|community|town"}])
    until = until or utcnow()
    since = since or until - dt.timedelta(hours=1)
    num = _num(session, prop)
    q = (select(col.label("area"), func.avg(num), func.min(num), func.max(num), func.count(num),
                func.count(func.distinct(Device.id)))
         .select_from(Device).join(Reading, Reading.device_id == Device.id)
         .where(Reading.ts >= _ms(since), Reading.ts < _ms(until), num.is_not(None)).group_by(col).order_by(col))
    if model:
        q = q.where(Device.model_code == model)
    q = _scope(q, principal, Device.org_id)
    return [{"area": area, "avg": avg, "min": mn, "max": mx, "count": n, "devices": nd}
            for area, avg, mn, mx, n, nd in session.execute(q)]


def dead_letters(session: Session, *, principal: Principal, device_code: str | None = None,
                 reason: str | None = None, limit: int = 50, offset: int = 0) -> tuple[int, list[DeadLetter]]:
    """Rejected readings with their reasons, newest first (owners see their devices' rejects)."""
    if reason and reason not in REASONS:
        raise Invalid(f"未知的拒收原因：{reason}", f"Unknown rejection reason: {reason}",
                      errors=[{"field": "reason", "message": "|".join(REASONS)}])
    q = select(DeadLetter)
    if principal.org_scope is not None:
        q = q.where(DeadLetter.device_id.in_(_scope(select(Device.id), principal, Device.org_id)))
    if device_code:
        q = q.where(DeadLetter.device_code == device_code)
    if reason:
        q = q.where(DeadLetter.reason == reason)
    total = session.scalar(select(func.count()).select_from(q.subquery())) or 0
    return total, list(session.scalars(q.order_by(DeadLetter.id.desc()).limit(limit).offset(offset)))


def dead_letter_counts(session: Session, *, principal: Principal, device_code: str | None = None) -> list[dict]:
    """How many readings were rejected, per device and reason."""
    q = select(DeadLetter.device_code, DeadLetter.reason, func.count()).group_by(DeadLetter.device_code,
                                                                                  DeadLetter.reason)
    if principal.org_scope is not None:
        q = q.where(DeadLetter.device_id.in_(_scope(select(Device.id), principal, Device.org_id)))
    if device_code:
        q = q.where(DeadLetter.device_code == device_code)
    return [{"device_code": c, "reason": r, "count": n} for c, r, n in session.execute(q.order_by(DeadLetter.device_code))]


def purge(session: Session, *, days: int | None = None) -> dict[str, int]:
    """Delete readings and dead letters older than the retention (CITYBRAIN_TELEMETRY_RETENTION_DAYS); commit."""
    days = days if days is not None else get_settings().telemetry_retention_days
    if days < 1:
        raise Invalid("保留天数至少为 1", "Retention must be at least 1 day", errors=[{"field": "days", "message": ">= 1"}])
    cutoff = utcnow() - dt.timedelta(days=days)
    dropped = _drop_old_partitions(session, _ms(cutoff))
    n_read = session.execute(delete(Reading).where(Reading.ts < _ms(cutoff))).rowcount or 0
    n_dead = session.execute(delete(DeadLetter).where(DeadLetter.received_at < cutoff)).rowcount or 0
    audit.commit(session, action="iot.telemetry.purge", target_type="iot_reading", target_id=f"< {cutoff.isoformat()}",
                 after={"readings": n_read, "dead_letters": n_dead, "days": days, "partitions_dropped": dropped},
                 actor=context.SYSTEM)
    return {"readings": n_read, "dead_letters": n_dead, "partitions_dropped": len(dropped)}


def _month_start(t: dt.datetime, add: int = 0) -> dt.datetime:
    m = t.year * 12 + (t.month - 1) + add
    return dt.datetime(m // 12, m % 12 + 1, 1, tzinfo=dt.UTC)


def ensure_partitions(session: Session, *, months_ahead: int = 2) -> list[str]:
    """PostgreSQL: create the monthly partitions of iot_reading for this month and the next ones; commit."""
    if session.get_bind().dialect.name != "postgresql":
        return []
    created = []
    now = utcnow()
    for i in range(months_ahead + 1):
        lo, hi = _month_start(now, i), _month_start(now, i + 1)
        name = f"iot_reading_{lo:%Y%m}"
        if session.scalar(text("SELECT to_regclass(:n)"), {"n": name}) is not None:
            continue
        try:
            with session.begin_nested():
                session.execute(text(f"CREATE TABLE {name} PARTITION OF iot_reading "
                                     f"FOR VALUES FROM ({_ms(lo)}) TO ({_ms(hi)})"))
            created.append(name)
        except Exception as exc:  # rows for that month already sit in the default partition
            log.warning("could not create partition %s: %s", name, exc)
    session.commit()
    return created


def _drop_old_partitions(session: Session, cutoff_ms: int) -> list[str]:
    if session.get_bind().dialect.name != "postgresql":
        return []
    dropped = []
    rows = session.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'iot_reading'")).scalars().all()
    for name in rows:
        m = re.fullmatch(r"iot_reading_(\d{4})(\d{2})", name)
        if not m:
            continue
        hi = _month_start(dt.datetime(int(m.group(1)), int(m.group(2)), 1, tzinfo=dt.UTC), 1)
        if _ms(hi) <= cutoff_ms:
            session.execute(text(f"DROP TABLE {name}"))
            dropped.append(name)
    return dropped


def ioc_summary(session: Session, *, principal: Principal) -> dict[str, Any]:
    """Counts for the operations centre: devices and online rate, open alarms by severity, today's volumes."""
    counts = dict(session.execute(_scope(select(Device.status, func.count()), principal, Device.org_id)
                                  .group_by(Device.status)).all())
    total = sum(counts.values())
    online = counts.get("online", 0)
    sev = dict(session.execute(_scope(select(Alarm.severity, func.count()), principal, Alarm.org_id)
                               .where(Alarm.status != "cleared").group_by(Alarm.severity)).all())
    now = utcnow()
    midnight = now.astimezone(CST).replace(hour=0, minute=0, second=0, microsecond=0)
    today = session.scalar(_scope(select(func.count()), principal, Alarm.org_id).select_from(Alarm)
                           .where(Alarm.raised_at >= midnight)) or 0
    day = session.get(DailyCount, cst_day(now))
    enabled = total - counts.get("disabled", 0)
    return {
        "devices_total": total, "devices_online": online,
        "online_rate": round(online / enabled, 4) if enabled else 0.0,
        "devices_offline": counts.get("offline", 0), "devices_disabled": counts.get("disabled", 0),
        "alarms_active_by_severity": {i: int(sev.get(i, 0)) for i in (1, 2, 3, 4)},
        "alarms_today": int(today), "readings_today": int(day.accepted) if day else 0,
        "rejected_today": int(day.rejected) if day else 0,
    }


def devices_geojson(session: Session, *, principal: Principal, bbox: str | None = None,
                    status: str | None = None, model: str | None = None, limit: int = 20000,
                    max_points: int | None = None) -> dict[str, Any]:
    """Devices as a GeoJSON FeatureCollection (with the worst open alarm severity) for the map; with `max_points`
    and more devices than that in the visible area, counted cells instead (`online`, `offline`, `disabled`)."""
    q = _scope(select(Device.code, Device.name, Device.model_code, Device.status, Device.lon, Device.lat,
                      Device.grid_code, Device.last_seen_at, Device.id), principal, Device.org_id)
    q = q.where(Device.lon.is_not(None))
    if status:
        _check_device_status(status)
        q = q.where(Device.status == status)
    if model:
        q = q.where(Device.model_code == model)
    box = _bbox(bbox)
    if box:
        q = q.where(Device.lon.between(box[0], box[2]), Device.lat.between(box[1], box[3]))
        if max_points:
            many = session.scalar(select(func.count()).select_from(
                q.with_only_columns(Device.id).limit(max_points + 1).subquery()))
            if (many or 0) > max_points:
                from citybrain.geo import service as geo

                return geo.cluster_points(session, q, lon=Device.lon, lat=Device.lat, bbox=box, sums={
                    s: case((Device.status == s, 1), else_=0) for s in ("online", "offline", "disabled")})
    worst = dict(session.execute(select(Alarm.device_id, func.max(Alarm.severity)).where(Alarm.status != "cleared")
                                 .group_by(Alarm.device_id)).all())
    feats = []
    for r in session.execute(q.order_by(Device.id).limit(limit)):
        m = catalog.get(r.model_code)
        feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [r.lon, r.lat]},
                      "properties": {"code": r.code, "name": r.name, "model": r.model_code,
                                     "model_name": m.name if m else r.model_code, "status": r.status,
                                     "grid_code": r.grid_code, "alarm_severity": worst.get(r.id),
                                     "last_seen_at": r.last_seen_at.isoformat() if r.last_seen_at else None}})
    return {"type": "FeatureCollection", "features": feats}


def alarms_geojson(session: Session, *, principal: Principal, bbox: str | None = None,
                   status: str | None = "active", limit: int = 5000) -> dict[str, Any]:
    """Alarms as a GeoJSON FeatureCollection for the map (status active|acknowledged|cleared|open)."""
    q = _alarm_status_filter(_scope(select(Alarm), principal, Alarm.org_id), status).where(Alarm.lon.is_not(None))
    box = _bbox(bbox)
    if box:
        q = q.where(Alarm.lon.between(box[0], box[2]), Alarm.lat.between(box[1], box[3]))
    feats = []
    for a in session.scalars(q.order_by(Alarm.id.desc()).limit(limit)):
        d = alarm_dict(a)
        for k in ("raised_at", "acked_at", "cleared_at"):
            d[k] = d[k].isoformat() if d[k] else None
        feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [a.lon, a.lat]},
                      "properties": d})
    return {"type": "FeatureCollection", "features": feats}


def model_list() -> list[dict[str, Any]]:
    """The shipped device models."""
    return [m.as_dict() for m in catalog.MODELS]


def iter_codes(session: Session, *, model: str | None = None) -> Iterable[str]:
    """Every device code (optionally of one model)."""
    q = select(Device.code).order_by(Device.id)
    if model:
        q = q.where(Device.model_code == model)
    return session.scalars(q)


# --- payloads (HTTP body or MQTT message) -----------------------------------------------------------------------


def parse_payload(raw: bytes) -> tuple[list[Any] | None, str | None]:
    """Readings from a JSON body: `{"readings": [...]}`, a list, or one reading object; or (None, why not)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON: {str(exc)[:120]}"
    if isinstance(doc, list):
        return doc, None
    if isinstance(doc, dict):
        if "readings" in doc:
            items = doc["readings"]
            if not isinstance(items, list):
                return None, "readings must be a list"
            dev = doc.get("device")
            if isinstance(dev, str):  # a device's batch: {"device": code, "readings": [{"ts","values"}]}
                items = [dict(i, device=dev) if isinstance(i, dict) and "device" not in i else i for i in items]
            return items, None
        return [doc], None
    return None, "body must be a JSON object or array"


def record_unreadable(session: Session, *, raw: bytes, source: str, sender: str | None, detail: str,
                      device_code: str | None = None, device_id: int | None = None) -> None:
    """Keep a message that could not be read at all (reason `malformed`) and commit. `device_id`: the device
    that authenticated the message, so its owner department sees the dead letter."""
    now = utcnow()
    session.execute(insert(DeadLetter).values(
        device_code=clean_text(device_code)[:80] if device_code else None, device_id=device_id, prop=None, ts=None,
        value=clean_text(raw[:4000].decode("utf-8", errors="replace")), reason="malformed",
        detail=clean_text(detail)[:300],
        source=source, sender=sender, received_at=now))
    _bump_daily(session, cst_day(now), 0, 1)
    session.commit()
