"""Web logic: role-aware navigation and the IOC summary assembled from the other modules' service functions."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from citybrain import clock, modules
from citybrain.context import Principal

log = logging.getLogger("citybrain.web")


@dataclass(frozen=True)
class NavItem:
    key: str  # text key "nav.<key>" and the page's `active` name
    href: str
    permission: str | None  # None: public page
    hide_if: str | None = None  # hide from the menu of users holding this (they have a better page)


NAV: tuple[NavItem, ...] = (
    NavItem("ioc", "/ioc", "ioc.view"),
    NavItem("map", "/map", "geo.read"),
    NavItem("desk", "/work/desk", "case.accept"),
    NavItem("inbox", "/work/inbox", "case.handle"),
    NavItem("grid", "/m/grid", "case.report", hide_if="case.accept"),
    NavItem("devices", "/devices", "iot.read"),
    NavItem("cockpit", "/cockpit", "case.evaluate"),
)

PUBLIC_NAV: tuple[NavItem, ...] = (
    NavItem("citizen", "/citizen", None),
    NavItem("track", "/citizen/track", None),
)

# First page per role, checked in this order.
_HOME: tuple[tuple[str, str, str | None], ...] = (
    ("case.accept", "/work/desk", None),
    ("case.handle", "/work/inbox", None),
    ("case.verify", "/m/grid", "case.accept"),
    ("ioc.view", "/ioc", None),
    ("geo.read", "/map", None),
    ("iot.read", "/devices", None),
)


def navigation(principal: Principal) -> list[NavItem]:
    """The pages this principal may open, in menu order (public pages for everyone without a work page)."""
    if principal.kind != "user" and principal.kind != "apikey":
        return list(PUBLIC_NAV)
    items = [n for n in NAV if n.permission and principal.can(n.permission)
             and not (n.hide_if and principal.can(n.hide_if))]
    if principal.roles <= {"citizen"} or not items:
        items += list(PUBLIC_NAV)
    return items


def home_for(principal: Principal) -> str | None:
    """The page a principal starts on, or None when it has no work page."""
    for perm, href, unless in _HOME:
        if principal.can(perm) and not (unless and principal.can(unless)):
            return href
    if principal.can("case.report"):
        return "/citizen"
    return None


def _part_summary(module: str, session: Session, principal: Principal) -> dict[str, Any]:
    """One module's IOC summary, or {"connected": False} when the module is not installed."""
    svc = modules.part(module, "service")
    fn = getattr(svc, "ioc_summary", None) if svc is not None else None
    if fn is None:
        return {"connected": False}
    try:
        data = fn(session) if module == "data" else fn(session, principal=principal)
    except Exception:  # one failing panel must not blank the big screen
        log.exception("ioc_summary of %s failed", module)
        return {"connected": True, "error": True}
    out = dict(data or {})
    out["connected"] = True
    return out


def compute_ioc_summary(session: Session, *, principal: Principal) -> dict[str, Any]:
    """The IOC's indicators computed now: cases, IoT and data exchange, each marked connected or not."""
    t0 = time.perf_counter()
    out = {
        "generated_at": clock.now().isoformat(),
        "cases": _part_summary("cases", session, principal),
        "iot": _part_summary("iot", session, principal),
        "data": _part_summary("data", session, principal),
    }
    out["compute_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    return out


# The big screen asks every 30 s from every open screen; the indicators of one data scope are computed once
# and shared. Events that change them (cases, alarms, device status) start a refresh at once, and a request
# that finds its entry out of date waits briefly for that refresh.
SUMMARY_TTL_S = 30.0
SUMMARY_WAIT_S = 5.0
_TOPICS = ("cases.", "iot.alarm.", "iot.device.", "data.")


class _Entry:
    def __init__(self, principal: Principal):
        self.principal = principal
        self.value: dict[str, Any] | None = None
        self.at = 0.0
        self.dirty = True
        self.lock = threading.Lock()  # single flight
        self.done = threading.Event()


_cache: dict[Any, _Entry] = {}
_cache_lock = threading.Lock()
_listening: list[Any] = []


def _scope_key(principal: Principal) -> Any:
    return "city" if principal.org_scope is None else tuple(sorted(principal.org_scope))


def _compute(entry: _Entry, session: Session, principal: Principal) -> dict[str, Any]:
    """Compute a scope's summary into its entry (the caller holds `entry.lock`); waiting requests are released."""
    entry.done.clear()
    entry.dirty = False
    try:
        value = compute_ioc_summary(session, principal=principal)
        entry.value, entry.at = value, time.monotonic()
        return value
    except Exception:
        entry.dirty = True
        raise
    finally:
        entry.done.set()


def _refresh(entry: _Entry) -> None:
    """Recompute a scope's summary in the background until no change is left unseen (at most every 2 s)."""
    if not entry.lock.acquire(blocking=False):
        return  # the thread computing it will see the dirty flag
    try:
        from citybrain.db import get_db

        while entry.dirty:
            started = time.monotonic()
            try:
                with get_db().read() as session:
                    _compute(entry, session, entry.principal)
            except Exception:
                log.exception("IOC summary refresh failed")
                return
            if entry.dirty:  # changed again meanwhile: requests wait for the next round
                entry.done.clear()
                time.sleep(max(0.0, 2.0 - (time.monotonic() - started)))
    finally:
        entry.done.set()
        entry.lock.release()


def _on_event(event: Any) -> None:
    """A change the indicators show: mark every cached scope out of date and refresh it in the background."""
    if not str(getattr(event, "topic", "")).startswith(_TOPICS):
        return
    with _cache_lock:
        entries = list(_cache.values())
    for entry in entries:
        entry.dirty = True
        threading.Thread(target=_refresh, args=(entry,), name="ioc-summary", daemon=True).start()


def listen_for_changes() -> None:
    """Subscribe the cache to live bus events (called when the server starts)."""
    from citybrain import bus

    for unsubscribe in _listening:
        unsubscribe()
    _listening[:] = [bus.listen(_on_event)]


def reset_cache() -> None:
    """Forget every cached summary (tests, database switch)."""
    with _cache_lock:
        _cache.clear()


def ioc_summary(session: Session, *, principal: Principal, max_age_s: float | None = None) -> dict[str, Any]:
    """The IOC's indicators for the principal's data scope: shared for up to 30 s, refreshed on changes."""
    ttl = SUMMARY_TTL_S if max_age_s is None else max_age_s
    key = _scope_key(principal)
    with _cache_lock:
        entry = _cache.get(key)
        if entry is None:
            entry = _cache[key] = _Entry(principal)
    fresh = entry.value is not None and not entry.dirty and time.monotonic() - entry.at < ttl
    if fresh:
        return {**entry.value, "cached": True}
    if entry.lock.acquire(blocking=False):  # nobody is computing it: compute in this request
        try:
            return {**_compute(entry, session, principal), "cached": False}
        finally:
            entry.lock.release()
    entry.done.wait(SUMMARY_WAIT_S if entry.value is not None else 120)
    if entry.value is None:
        return compute_ioc_summary(session, principal=principal)
    return {**entry.value, "cached": True}


# --- photos ---------------------------------------------------------------------------------------------------------

MAX_PHOTO_BYTES = 8 * 1024 * 1024
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
)


def sniff_image(data: bytes) -> str | None:
    """The image type of these bytes (JPEG, PNG, GIF, WebP), or None if they are not one."""
    for sig, offset, ctype in _SIGNATURES:
        if data[offset:offset + len(sig)] == sig and (ctype != "image/webp" or data[:4] == b"RIFF"):
            return ctype
    return None


def store_attachment(session: Session, *, data: bytes, filename: str | None, principal: Principal) -> dict[str, Any]:
    """Keep an uploaded photo (JPEG/PNG/GIF/WebP, at most 8 MB) and return its key and URL."""
    import hashlib

    from citybrain.audit import service as audit
    from citybrain.errors import Invalid, PayloadTooLarge
    from citybrain.web.models import Attachment

    if not data:
        raise Invalid("文件为空", "The file is empty", errors=[{"field": "file", "message": "empty"}])
    if len(data) > MAX_PHOTO_BYTES:
        raise PayloadTooLarge("照片不能超过 8 MB", "A photo may be at most 8 MB",
                              errors=[{"field": "file", "message": "larger than 8 MB"}])
    ctype = sniff_image(data)
    if ctype is None:
        raise Invalid("只能上传 JPEG、PNG、GIF 或 WebP 图片", "Only JPEG, PNG, GIF or WebP images can be uploaded",
                      errors=[{"field": "file", "message": "not an image"}])
    key = hashlib.sha256(data).hexdigest()
    row = session.get(Attachment, key)
    if row is None:
        name = (filename or "")[-200:] or None
        row = Attachment(key=key, content_type=ctype, size=len(data), filename=name, data=data,
                         uploaded_by=principal.label, uploaded_at=clock.now())
        session.add(row)
        audit.commit(session, action="web.attachment.upload", target_type="attachment", target_id=key,
                     after={"size": len(data), "content_type": ctype, "filename": name}, actor=principal)
    return attachment_dict(row)


def attachment_dict(row: Any) -> dict[str, Any]:
    """An attachment as the API shows it (without its bytes)."""
    return {"key": row.key, "url": f"/api/v1/attachments/{row.key}", "content_type": row.content_type,
            "size": row.size, "filename": row.filename}


def get_attachment(session: Session, *, key: str) -> Any:
    """One stored photo (404 if unknown)."""
    from citybrain.errors import NotFound
    from citybrain.web.models import Attachment

    row = session.get(Attachment, key.lower()) if len(key) == 64 else None
    if row is None:
        raise NotFound("附件不存在", "No such attachment", code="attachment_not_found")
    return row


# --- case work helpers ------------------------------------------------------------------------------------------------


def report_categories(session: Session) -> list[dict[str, Any]]:
    """The categories a report may use (the cases module's active dictionary), or [] without the cases module."""
    svc = modules.part("cases", "service")
    if svc is None:
        return []
    out = []
    for kind in ("event", "component"):
        _total, items = svc.list_categories(session, kind=kind, limit=1000, offset=0)
        out += [{"code": c["code"], "name": c["name"], "kind": c.get("kind", kind), "big_name": c.get("big_name", "")}
                for c in items if c.get("active", True)]
    return out


# What citizens pick from: common problems in plain words, each mapped to a class of the standard dictionary
# (GB/T 47678.5 事项); "其他" goes in without a class (12345 诉求类型 02 求助) and the command centre classifies it.
OTHER = "other"
CITIZEN_TYPES: tuple[tuple[str, str, str], ...] = (
    ("06010", "垃圾堆积、乱倒垃圾", "Rubbish piled up or dumped"),
    ("06042", "垃圾桶、垃圾站满溢", "Overflowing bins"),
    ("06012", "道路脏乱不洁", "Dirty street"),
    ("06013", "道路、人行道破损", "Damaged road or pavement"),
    ("01002", "井盖缺失、破损", "Missing or broken manhole cover"),
    ("01037", "路灯不亮、损坏", "Street light out or broken"),
    ("09009", "机动车乱停放", "Illegally parked car"),
    ("09010", "共享单车、电动车乱停放", "Bikes or scooters blocking the way"),
    ("09006", "占道经营、流动摊贩", "Street stalls blocking the way"),
    ("07001", "小广告、乱张贴", "Flyers and posters"),
    ("06028", "噪声扰民", "Noise"),
    ("06027", "油烟污染", "Cooking fumes"),
    ("06036", "乱堆杂物", "Clutter piled in public space"),
    ("06001", "私搭乱建", "Illegal structure"),
    ("06051", "盲道被占、缺损", "Tactile paving blocked or damaged"),
)


def citizen_categories(session: Session, *, lang: str) -> list[dict[str, Any]]:
    """The citizen report's short list (those of its classes the active dictionary has) and "其他" last."""
    svc = modules.part("cases", "service")
    if svc is None:
        return []
    en = lang == "en"
    out = [{"code": code, "name": name_en if en else name, "kind": "event", "big_name": ""}
           for code, name, name_en in CITIZEN_TYPES if svc.find_category(session, code=code, kind="event") is not None]
    out.append({"code": OTHER, "name": "Something else" if en else "其他问题", "kind": "", "big_name": ""})
    return out


def dispatch_suggestion(session: Session, *, case_id: int, principal: Principal) -> dict[str, Any]:
    """The department the responsibility matrix suggests for a case (the one auto-dispatch would pick)."""
    from citybrain.errors import NotFound

    svc = modules.part("cases", "service")
    if svc is None:
        raise NotFound("案件模块未接入", "The cases module is not installed", code="not_connected")
    case = svc.get_case(session, case_id=case_id, principal=principal)
    dept, unit, how = svc.resolve_for_case(session, case)
    return {"case_id": case.id, "dept_org_id": dept, "unit_org_id": unit, "how": how}
