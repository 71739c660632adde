"""Web pages (login, IOC big screen, one map, workbenches, citizen pages) and the IOC summary endpoint.

Pages are server-rendered Jinja2 templates; small vendored scripts call the JSON APIs of the other
modules with the `cb_session` cookie. Every page checks the caller's permission on the server: a role
without the right gets a 403 page, not just a hidden link.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from citybrain import context
from citybrain.config import get_settings
from citybrain.context import ANONYMOUS, Principal
from citybrain.deps import SESSION_COOKIE, ReadDB, WriteDB, optional_principal, require
from citybrain.errors import Problem
from citybrain.web import i18n, service

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

router = APIRouter(tags=["web 页面与运行态势"])


def page_principal(request: Request) -> Principal:
    """The caller of a page: a stale or revoked cookie counts as not logged in (the page sends to login)."""
    try:
        return optional_principal(request)
    except Problem:
        context.set_principal(ANONYMOUS)
        return ANONYMOUS


def _safe_next(target: str | None) -> str:
    """Only same-site paths may be redirect targets."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def render(request: Request, template: str, who: Principal, *, active: str = "", status: int = 200,
           **ctx) -> HTMLResponse:
    """Render a page with the shell's context: language, texts, navigation, the user."""
    lang = i18n.page_language(request)
    settings = get_settings()
    resp = TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "lang": lang,
            "t": i18n.translator(lang),
            "texts": i18n.table(lang),
            "who": who,
            "nav": service.navigation(who),
            "active": active,
            "tile_url": settings.tile_url or "",
            "path": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            **ctx,
        },
        status_code=status,
    )
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Content-Security-Policy"] = content_security_policy(settings.tile_url)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    return resp


def _tile_source(tile_url: str | None) -> str:
    """The CSP source of the optional tile server (`https://t{s}.example.cn/...` -> `https://*.example.cn`)."""
    if not tile_url:
        return ""
    parts = urlsplit(tile_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    host = parts.netloc.rsplit("@", 1)[-1]
    if "{" in host:  # a {s} subdomain template: allow the parent domain's subdomains
        host = "*." + host.split(".", 1)[1] if "." in host else ""
    return f" {parts.scheme}://{host}" if host and "{" not in host else ""


@lru_cache(maxsize=8)
def content_security_policy(tile_url: str | None) -> str:
    """The pages' CSP: scripts, styles, images and API calls from this server only (photos are uploads here;
    inline style attributes are allowed, inline scripts are not); map tiles also from the configured tile server."""
    return ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data: blob:{_tile_source(tile_url)}; connect-src 'self'; font-src 'self' data:; "
            "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'")


def _gate(request: Request, who: Principal, needed: tuple[str, ...]) -> Response | None:
    """None if the caller may open the page; else the login redirect or the 403 page."""
    if who.kind == "anonymous":
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    if needed and not any(who.can(p) for p in needed):
        from citybrain.audit.service import record_alone
        from citybrain.identity.service import authorize

        try:
            authorize(who, needed[0])
        except Problem as problem:  # the denial goes to the audit trail, as the APIs' denials do
            denial = getattr(problem, "audit", None)
            if denial:
                record_alone(**denial)
        return render(request, "forbidden.html", who, status=403, missing=" / ".join(needed))
    return None


def _page(perm: str, template: str, active: str):
    """A page handler that admits users holding `perm`."""

    def handler(request: Request, who: Principal = Depends(page_principal)) -> Response:
        return _gate(request, who, (perm,)) or render(request, template, who, active=active)

    handler.__name__ = f"page_{active}"
    return handler


for _path, _perm, _tpl, _active, _summary in (
    ("/ioc", "ioc.view", "ioc.html", "ioc", "运行态势大屏 IOC big screen"),
    ("/map", "geo.read", "map.html", "map", "一张图 One map"),
    ("/work/desk", "case.accept", "desk.html", "desk", "受理派遣工作台 Operator workbench"),
    ("/work/inbox", "case.handle", "inbox.html", "inbox", "部门待办 Department inbox"),
    ("/devices", "iot.read", "devices.html", "devices", "物联设备控制台 Device console"),
    ("/cockpit", "case.evaluate", "cockpit.html", "cockpit", "领导驾驶舱 Leader cockpit"),
):
    router.add_api_route(_path, _page(_perm, _tpl, _active), methods=["GET"], response_class=HTMLResponse,
                         include_in_schema=False, summary=_summary)


@router.get("/m/grid", response_class=HTMLResponse, include_in_schema=False)
def grid_page(request: Request, db: ReadDB, who: Principal = Depends(page_principal)) -> Response:
    """Grid-worker mobile page: report with category picker, photo, GPS or map tap; my reports; verification."""
    return _gate(request, who, ("case.report",)) or render(request, "grid.html", who, active="grid",
                                                           categories=service.report_categories(db))


@router.get("/", include_in_schema=False)
def home(request: Request, who: Principal = Depends(page_principal)) -> Response:
    """Send each role to its first page."""
    if who.kind == "anonymous":
        return RedirectResponse("/login", status_code=303)
    target = service.home_for(who)
    if target:
        return RedirectResponse(target, status_code=303)
    return render(request, "home.html", who, active="home")


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(request: Request, next: str | None = None, who: Principal = Depends(page_principal)) -> Response:
    """The login form (posts to POST /api/v1/auth/token, which sets the session cookie)."""
    return render(request, "login.html", who, active="login", next=_safe_next(next))


@router.post("/logout", include_in_schema=False)
def logout_page(request: Request, who: Principal = Depends(page_principal)) -> Response:
    """Revoke the session and return to the login page (a form post; SameSite=Strict guards it)."""
    if who.kind == "user":
        from citybrain.db import get_db
        from citybrain.identity import service as identity

        with get_db().write() as s:
            identity.logout(s, principal=who)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE)
    return resp


@router.get("/lang/{code}", include_in_schema=False)
def switch_language(code: str, next: str | None = None) -> Response:
    """Switch the interface language; the choice is kept in the `lang` cookie for a year."""
    lang = "en" if code.lower().startswith("en") else "zh-CN"
    resp = RedirectResponse(_safe_next(next), status_code=303)
    resp.set_cookie(i18n.LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax")
    return resp


@router.get("/citizen", response_class=HTMLResponse, include_in_schema=False)
def citizen_report(request: Request, db: ReadDB, who: Principal = Depends(page_principal)) -> Response:
    """Citizen report page (no login); the category picker is filled on the server."""
    return render(request, "citizen.html", who, active="citizen",
                  categories=service.citizen_categories(db, lang=i18n.page_language(request)))


@router.get("/citizen/track", response_class=HTMLResponse, include_in_schema=False)
def citizen_track(request: Request, ticket: str | None = None,
                  who: Principal = Depends(page_principal)) -> Response:
    """Track a ticket by number and phone, and rate the result (no login)."""
    return render(request, "track.html", who, active="track", ticket=(ticket or "")[:40])


@router.get("/api/v1/ioc/summary", summary="运行态势指标 IOC indicators of cases, devices and data exchange")
def ioc_summary(db: ReadDB, who: Principal = Depends(require("ioc.view"))) -> dict:
    """Key indicators from each installed module; a module not installed is reported as not connected."""
    return service.ioc_summary(db, principal=who)


@router.post("/api/v1/attachments", status_code=201, tags=["web 页面与运行态势"],
             summary="上传照片 Upload a photo for a report or a handling step (JPEG/PNG/GIF/WebP, <= 8 MB)")
def upload_attachment(db: WriteDB, file: UploadFile = File(...),
                      who: Principal = Depends(optional_principal)) -> dict:
    """Citizens may upload without logging in; the returned `url` goes into a case's `photos` or `attachments`."""
    data = file.file.read(service.MAX_PHOTO_BYTES + 1)
    return service.store_attachment(db, data=data, filename=file.filename, principal=who)


@router.get("/api/v1/attachments/{key}", tags=["web 页面与运行态势"], summary="查看照片 A stored photo (staff only)")
def get_attachment(key: str, db: ReadDB, _who: Principal = Depends(require("case.read"))) -> Response:
    """The photo's bytes; readable by staff who may view cases."""
    row = service.get_attachment(db, key=key)
    return Response(row.data, media_type=row.content_type,
                    headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"})


@router.get("/api/v1/web/dispatch-suggestion/{case_id}", tags=["web 页面与运行态势"],
            summary="建议派遣部门 The department the responsibility matrix suggests for a case")
def dispatch_suggestion(case_id: int, db: ReadDB, who: Principal = Depends(require("case.dispatch"))) -> dict:
    return service.dispatch_suggestion(db, case_id=case_id, principal=who)
