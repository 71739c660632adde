"""The FastAPI application: core endpoints, middleware, and every installed module's router."""

from __future__ import annotations

import gc
import hmac
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

from citybrain import __version__, bus, context, errors, live, modules
from citybrain.config import Settings, configure, get_settings, process_role
from citybrain.db import Database, get_db, migrate, set_db
from citybrain.deps import refuse_nul_text

log = logging.getLogger("citybrain")

STATIC_DIR = Path(__file__).parent / "web" / "static"

GC_YOUNG = 10_000  # served apps: objects allocated (net) between two collections of the youngest generation
HTTP_REQUESTS = Counter("citybrain_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram("citybrain_http_request_seconds", "HTTP request latency", ["method", "route"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))


class FastPathMetrics:
    """The HTTP metrics of one route a pure ASGI fast path answers, label series looked up once per status."""

    def __init__(self, route: str, method: str = "POST"):
        self.route, self.method = route, method
        self.series: dict[int, tuple[Any, Any]] = {}  # status -> (counter, histogram) children

    def observe(self, status: int, start: float) -> None:
        """Count one answered request and its time since `start` (a `time.perf_counter()` value)."""
        series = self.series.get(status)
        if series is None:
            series = self.series[status] = (HTTP_REQUESTS.labels(self.method, self.route, str(status)),
                                            HTTP_LATENCY.labels(self.method, self.route))
        series[0].inc()
        series[1].observe(time.perf_counter() - start)


class RequestContextMiddleware:
    """Gives every request an id and a context (ip, principal) and records its metrics."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        client = scope.get("client")
        token = context.begin(rid, client[0] if client else None)
        scope.setdefault("state", {})["request_id"] = rid
        status = {"code": 500}
        start = time.perf_counter()

        async def _send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], path, str(status["code"])).inc()
            HTTP_LATENCY.labels(scope["method"], path).observe(time.perf_counter() - start)
            context.end(token)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem document; `title`/`detail` follow Accept-Language, both languages are given.",
    "required": ["type", "title", "status", "detail", "code", "message_zh", "message_en", "errors"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "stable machine-readable code, e.g. permission_denied"},
        "message_zh": {"type": "string"},
        "message_en": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"}, "message": {"type": "string"}}}},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
    },
    "additionalProperties": True,
}
_PROBLEM_TEXT = {
    "400": "请求有误 Bad request", "401": "未登录或凭证无效 Not authenticated", "403": "没有权限 Forbidden",
    "404": "未找到 Not found", "409": "状态冲突 Conflict", "413": "请求体过大 Payload too large",
    "422": "数据校验未通过 Validation failed", "423": "账号已锁定 Account locked",
    "429": "请求过于频繁 Too many requests", "500": "服务器内部错误 Internal error",
    "503": "服务暂时不可用 Service unavailable",
}


# Swagger UI from the vendored files, started by a script file (static/web/swagger-init.js): the pages' CSP,
# which /docs sends too, allows no inline scripts
DOCS_HTML = """<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>CityBrain API</title>
<link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css">
<link rel="icon" href="/static/vendor/swagger-ui/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="/openapi.json"></div>
<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/static/web/swagger-init.js"></script>
</body>
</html>
"""


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with problem+json error responses, security schemes and each route's permissions."""
    if app.openapi_schema:
        return app.openapi_schema
    from citybrain.deps import api_routes, route_needs_login, route_permissions

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    comps = schema.setdefault("components", {})
    schemas = comps.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    comps["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "登录令牌 cbt_... from POST /api/v1/auth/token, or a machine key cbk_..."},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "机器凭证 cbk_..."},
    }
    routes = {(m.lower(), path): r for m, path, r in api_routes(app)}
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            route = routes.get((method, path))
            responses = op.setdefault("responses", {})
            codes = ["500", "503"]
            if path.startswith("/api/"):  # any API route may refuse a credential it was sent
                codes += ["400", "401", "403", "404", "409", "413", "422", "429"]
            if route is not None and route_needs_login(route):
                op["security"] = [{"bearer": []}, {"apiKey": []}]
                perms = route_permissions(route)
                if perms:
                    op["x-permissions"] = list(perms)
            if path == "/api/v1/auth/token":
                codes += ["401", "403", "423"]
            for code in codes:
                responses[code] = {"description": _PROBLEM_TEXT[code], "content": problem}
    app.openapi_schema = schema
    return schema


def startup(db: Database, *, hooks: bool = True) -> None:
    """Prepare a database for serving: migrations, built-in roles, module start hooks."""
    migrate(db)
    from citybrain.identity import service as identity

    with db.write() as s:
        identity.ensure_builtin_roles(s)
    if hooks:
        for _name, mod in modules.parts("startup"):
            mod.start(db)


_background_lock: list[Any] = []


def runs_background(settings: Settings) -> bool:
    """Whether this process runs the background work (bus delivery, module workers). With several worker
    processes (CITYBRAIN_WORKERS > 1) only the one holding `<data_dir>/background.lock` does."""
    role = process_role()
    if role == "http":  # `serve --workers N`: the ingest process runs it
        return False
    if settings.workers <= 1 and role is None:
        return True
    if _background_lock:
        return True
    import fcntl

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    f = open(settings.data_dir / "background.lock", "a")  # noqa: SIM115 - held for the process's life
    try:  # the ingest process waits for a predecessor (a reload) to let go
        fcntl.flock(f, fcntl.LOCK_EX if role == "ingest" else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return False
    _background_lock.append(f)
    return True


def shutdown(db: Database) -> None:
    """Stop module background work."""
    for _name, mod in modules.parts("startup"):
        stop = getattr(mod, "stop", None)
        if stop:
            stop(db)


class CityBrainAPI(FastAPI):
    """FastAPI with the modules' outer fast paths (`api.outer_middleware`) in front of the framework's own
    layers (telemetry check, error, telemetry and body-limit middleware: ~30 µs a request). An outer fast
    path answers what it can answer exactly like its route, including its errors as problem+json, and
    passes everything else (lifespan too) on to the full application."""

    outer: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.outer is not None:
            await self.outer(scope, receive, send)
        else:
            await FastAPI.__call__(self, scope, receive, send)


def _framework(app: FastAPI) -> ASGIApp:
    async def call(scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(app, scope, receive, send)

    return call


def create_app(settings: Settings | None = None, *, background: bool = True) -> FastAPI:
    """Build the application. `background=False` leaves the bus dispatcher and module workers off (tests)."""
    if settings is not None:
        configure(settings)
    settings = get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = get_db()
        primary = background and runs_background(settings)
        startup(db, hooks=primary)
        if background:  # a served app: keep the startup heap (modules, routes, mappers) out of every full GC pass
            gc.freeze()
            # and collect the young generation after GC_YOUNG new objects instead of 700: a 500-reading telemetry
            # request makes more than 1,000 (parsed readings, rows, latest values) that die with it or replace
            # older ones, so the default ran a pass or two per request for almost nothing
            gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
        bus.set_background(primary)
        if primary and os.environ.get("CITYBRAIN_CKPT", "1") != "0":
            db.start_checkpointer()
        bridge = None
        if primary and settings.bus_backend == "nats":
            from citybrain.bus_nats import NatsBridge

            bridge = NatsBridge(db, settings.nats_url)
            bridge.start()
        elif background:
            d = bus.dispatcher()
            d.deliver = primary  # the other workers only feed their live listeners (SSE)
            d.prime_listeners()
            d.start()
        if background and process_role() == "http":
            from citybrain.iot import relay

            relay.connect_soon()
        try:
            yield
        finally:
            if bridge is not None:
                bridge.stop()
            elif background:
                bus.dispatcher().stop()
            if primary:
                bus.set_background(False)
                shutdown(db)
                db.stop_checkpointer()

    app = CityBrainAPI(
        title="CityBrain 城市大脑 API",
        version=__version__,
        description="城市运行管理平台接口。Every error is application/problem+json with zh-CN and English messages.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        dependencies=[Depends(refuse_nul_text)],  # every route: no NUL in text, on any backend
    )
    app.add_middleware(RequestContextMiddleware)
    errors.install(app)
    app.state.settings = settings

    @app.get("/healthz", tags=["core"], summary="健康检查 Health (checks the database)")
    def healthz() -> dict:
        try:
            get_db().check()
        except Exception as exc:
            raise errors.Problem("数据库不可用", "Database unavailable", status=503, code="db_unavailable") from exc
        return {"status": "ok"}

    @app.get("/metrics", tags=["core"], summary="Prometheus metrics", response_class=Response)
    def metrics(request: Request) -> Response:
        token = get_settings().metrics_token
        if token and not hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {token}"):
            raise errors.Unauthorized("需要监控令牌（CITYBRAIN_METRICS_TOKEN）", "The metrics token is required "
                                      "(CITYBRAIN_METRICS_TOKEN)", code="metrics_token_required")
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        from citybrain.web.api import content_security_policy

        return HTMLResponse(DOCS_HTML, headers={"Content-Security-Policy": content_security_policy(None),
                                                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"})

    # a module's hot routers (api.hot_routers) come first: routes are matched in order, and every route
    # tried before the right one costs each request time
    for _name, mod in modules.parts("api"):
        for router in getattr(mod, "hot_routers", ()):
            app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(live.router)
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]

    for _name, mod in modules.parts("api"):
        for router in getattr(mod, "routers", None) or [mod.router]:
            app.include_router(router)
        for mw in getattr(mod, "middleware", ()):  # a module's pure ASGI fast paths (e.g. iot telemetry)
            app.add_middleware(mw)
    outer = [mw for _name, mod in modules.parts("api") for mw in getattr(mod, "outer_middleware", ())]
    if outer:  # in front of the framework's layers (see CityBrainAPI)
        inner = _framework(app)
        for mw in outer:
            inner = mw(inner)
        app.outer = inner
    return app


def reset_for_tests(db: Database) -> None:
    """Point the process at another database (tests)."""
    bus.reset()
    set_db(db)

