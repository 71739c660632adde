"""Web logic: role-aware navigation and the IOC summary assembled from the other modules' service functions."""

from __future__ import annotations

import logging
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


def ioc_summary(session: Session, *, principal: Principal) -> dict[str, Any]:
    """The IOC's indicators: cases, IoT and data exchange, each marked connected or not."""
    return {
        "generated_at": clock.now().isoformat(),
        "cases": _part_summary("cases", session, principal),
        "iot": _part_summary("iot", session, principal),
        "data": _part_summary("data", session, principal),
    }
