"""Errors: every API error is RFC 9457 `application/problem+json` with a zh-CN and an English message.

Raise a `Problem` (or a subclass) anywhere in a service; the handlers installed by `install` turn it,
validation failures, unknown routes and unexpected exceptions into problem documents. The body carries
`title`/`detail` in the caller's language (Accept-Language, zh-CN first) and both languages explicitly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("citybrain.errors")

PROBLEM_JSON = "application/problem+json"


class ProblemResponse(JSONResponse):
    """A problem document, serialised with orjson."""

    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str, option=orjson.OPT_UTC_Z)


class Problem(Exception):
    """An error a caller can act on: status, stable code, message in zh-CN and English, offending fields."""

    status: int = 400
    code: str = "bad_request"
    title_zh: str = "请求有误"
    title_en: str = "Bad request"
    # an audit record to write once the request's own transaction has ended (permission denials)
    audit: dict[str, Any] | None = None

    def __init__(
        self,
        zh: str | None = None,
        en: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        self.detail_zh = zh or self.title_zh
        self.detail_en = en or self.title_en
        if code:
            self.code = code
        if status:
            self.status = status
        self.errors = errors or []
        self.headers = headers or {}
        self.extra = extra
        super().__init__(self.detail_en)

    def body(self, lang: str, instance: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        """The problem document in the caller's language."""
        zh = lang.startswith("zh")
        doc: dict[str, Any] = {
            "type": f"urn:citybrain:problem:{self.code}",
            "title": self.title_zh if zh else self.title_en,
            "status": self.status,
            "detail": self.detail_zh if zh else self.detail_en,
            "code": self.code,
            "message_zh": self.detail_zh,
            "message_en": self.detail_en,
            "errors": self.errors,
        }
        if instance:
            doc["instance"] = instance
        if request_id:
            doc["request_id"] = request_id
        doc.update(self.extra)
        return doc


class BadRequest(Problem):
    pass


class Invalid(Problem):
    status, code, title_zh, title_en = 422, "invalid", "数据校验未通过", "Validation failed"


class Unauthorized(Problem):
    status, code, title_zh, title_en = 401, "unauthorized", "未登录或凭证无效", "Not authenticated"

    def __init__(self, zh: str | None = None, en: str | None = None, **kw: Any):
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(zh, en, **kw)


class Forbidden(Problem):
    status, code, title_zh, title_en = 403, "forbidden", "没有权限", "Forbidden"


class NotFound(Problem):
    status, code, title_zh, title_en = 404, "not_found", "未找到", "Not found"


class Conflict(Problem):
    status, code, title_zh, title_en = 409, "conflict", "状态冲突", "Conflict"


class Locked(Problem):
    status, code, title_zh, title_en = 423, "locked", "账号已锁定", "Account locked"


class TooManyRequests(Problem):
    status, code, title_zh, title_en = 429, "rate_limited", "请求过于频繁", "Too many requests"


class PayloadTooLarge(Problem):
    status, code, title_zh, title_en = 413, "too_large", "请求体过大", "Payload too large"


class Unavailable(Problem):
    status, code, title_zh, title_en = 503, "unavailable", "服务暂时不可用", "Service unavailable"


def database_problem(exc: BaseException) -> Problem | None:
    """The problem a database or conversion error stands for, when the input (not the server) is at fault.

    A value out of the column's range (an id of 20 digits), text PostgreSQL cannot store (NUL bytes), a
    unique key taken by a concurrent request, a database busy beyond its timeout: none of these is a 500.
    """
    from sqlalchemy import exc as sa

    if isinstance(exc, OverflowError) or (isinstance(exc, sa.StatementError) and isinstance(exc.orig, OverflowError)):
        return Invalid("数值超出允许范围", "A number is out of the allowed range", code="out_of_range")
    if isinstance(exc, sa.IntegrityError):
        return Conflict("数据与现有记录冲突（可能已被同时修改），请刷新后重试",
                        "The change conflicts with existing data (perhaps a concurrent change); reload and retry",
                        code="integrity_conflict")
    if isinstance(exc, sa.DataError) or (isinstance(exc, sa.StatementError) and isinstance(exc.orig, ValueError)):
        return Invalid("数据格式或取值无法保存（例如包含空字符或超出范围）",
                       "A value cannot be stored (for example a NUL character or a number out of range)",
                       code="unstorable_value")
    if isinstance(exc, sa.OperationalError) and "locked" in str(exc.orig).lower():
        return Unavailable("数据库繁忙，请稍后重试", "The database is busy; please retry", code="db_busy",
                           headers={"Retry-After": "1"})
    return None


def request_language(request: Request) -> str:
    """The caller's language: `lang` cookie, then Accept-Language; zh-CN unless English is asked for."""
    cookie = request.cookies.get("lang", "")
    if cookie:
        return "en" if cookie.startswith("en") else "zh-CN"
    accept = request.headers.get("accept-language", "").lower()
    if accept.startswith("en"):
        return "en"
    return "zh-CN"


def problem_response(request: Request, problem: Problem) -> ProblemResponse:
    """Render a problem for this request."""
    rid = getattr(request.state, "request_id", None)
    return ProblemResponse(
        problem.body(request_language(request), instance=request.url.path, request_id=rid),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


_HTTP_TITLES = {
    400: ("请求有误", "Bad request"),
    401: ("未登录或凭证无效", "Not authenticated"),
    403: ("没有权限", "Forbidden"),
    404: ("未找到该资源", "Resource not found"),
    405: ("不支持该请求方法", "Method not allowed"),
    406: ("不支持请求的格式", "Not acceptable"),
    413: ("请求体过大", "Payload too large"),
    415: ("不支持的内容类型", "Unsupported media type"),
    429: ("请求过于频繁", "Too many requests"),
}


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie", "form")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


# Chinese for the validation errors people meet (pydantic's `type`); the English text stays pydantic's own
_ZH_ERRORS = {
    "missing": "必填", "json_invalid": "不是有效的 JSON", "json_type": "须为 JSON 对象", "model_type": "须为对象",
    "model_attributes_type": "须为对象", "dict_type": "须为对象", "list_type": "须为列表",
    "string_type": "须为文字", "string_too_short": "太短", "string_too_long": "太长",
    "string_pattern_mismatch": "格式不正确", "int_type": "须为整数", "int_parsing": "须为整数",
    "int_from_float": "须为整数", "float_type": "须为数字", "float_parsing": "须为数字",
    "bool_type": "须为是/否（true/false）", "bool_parsing": "须为是/否（true/false）",
    "greater_than": "数值太小", "greater_than_equal": "数值太小", "less_than": "数值太大", "less_than_equal": "数值太大",
    "too_short": "项数太少", "too_long": "项数太多", "enum": "不是可选的值", "literal_error": "不是可选的值",
    "date_type": "须为日期", "date_parsing": "须为日期（YYYY-MM-DD）", "date_from_datetime_parsing": "须为日期（YYYY-MM-DD）",
    "datetime_type": "须为时间", "datetime_parsing": "须为时间（ISO 8601）", "datetime_from_date_parsing": "须为时间（ISO 8601）",
    "extra_forbidden": "不允许的字段", "value_error": "取值无效", "url_parsing": "须为网址", "uuid_parsing": "须为 UUID",
    "string_nul": "不能包含空字符（U+0000）",  # ours: deps.refuse_nul_text
}


def validation_problem(exc: RequestValidationError) -> Invalid:
    """A 422 problem naming each offending field, with what is wrong in Chinese and in English."""
    errors = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        kind = err.get("type", "")
        field = "body" if kind == "json_invalid" else _field_name(loc)
        zh = _ZH_ERRORS.get(kind, "取值无效")
        if kind == "value_error":  # a validator of ours: its own words ("中文; English"), when it has Chinese
            own = str(err.get("msg", "")).removeprefix("Value error, ")
            if any("\u4e00" <= ch <= "\u9fff" for ch in own):
                zh = own.split("; ")[0]
        if kind in ("string_too_short", "string_too_long", "too_short", "too_long", "greater_than",
                    "greater_than_equal", "less_than", "less_than_equal") and err.get("ctx"):
            zh += f"（{_bound_zh(kind, err['ctx'])}）"
        errors.append({"field": field, "in": str(loc[0]) if loc else "body", "message": err.get("msg", ""),
                       "message_zh": zh, "type": kind})
    names_zh = "；".join(f"{e['field']} {e['message_zh']}" for e in errors[:5])
    names_en = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return Invalid(f"请求数据校验未通过：{names_zh}", f"Request validation failed: {names_en}", errors=errors)


def _bound_zh(kind: str, ctx: dict[str, Any]) -> str:
    for key, zh in (("min_length", "至少 {} 个字符"), ("max_length", "最多 {} 个字符"), ("gt", "须大于 {}"),
                    ("ge", "须不小于 {}"), ("lt", "须小于 {}"), ("le", "须不大于 {}")):
        if key in ctx:
            if kind in ("too_short", "too_long"):
                zh = zh.replace("个字符", "项")
            return zh.format(ctx[key])
    return ""


async def problem_for(request: Request, exc: BaseException) -> ProblemResponse:
    """The answer the app's handlers (`install`) give `exc`, for pure ASGI fast paths that bypass them:
    a Problem (its denial audited first), a known database error, else a logged 500."""
    if isinstance(exc, Problem):
        if exc.audit:
            from starlette.concurrency import run_in_threadpool

            from citybrain.audit.service import record_alone

            try:
                await run_in_threadpool(record_alone, **exc.audit)
            except Exception:
                log.exception("could not record a denial in the audit trail")
        return problem_response(request, exc)
    known = database_problem(exc)
    if known is not None:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return problem_response(request, known)
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    p = Problem("服务器内部错误，已记录，请稍后重试", "Internal error; it has been logged", status=500, code="internal")
    p.title_zh, p.title_en = "服务器内部错误", "Internal server error"
    return problem_response(request, p)


async def send_json_or_problem(scope: Any, receive: Any, send: Any, request_id: str,
                               produce: Callable[[], Awaitable[bytes | None]]) -> int:
    """For pure ASGI fast paths: send the JSON body `produce()` returns (200) or the problem+json answer of the
    error it raises, with the request id; returns the status (500, nothing sent, if the client went away)."""
    try:
        out = await produce()
    except Exception as exc:
        response = await problem_for(Request(scope), exc)
        response.headers["x-request-id"] = request_id
        await response(scope, receive, send)
        return response.status_code
    if out is None:
        return 500
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(out)).encode()),
        (b"x-request-id", request_id.encode())]})
    await send({"type": "http.response.body", "body": out})
    return 200


def install(app: FastAPI) -> None:
    """Install the problem+json handlers on an app."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> ProblemResponse:
        if exc.audit:
            from starlette.concurrency import run_in_threadpool

            from citybrain.audit.service import record_alone

            try:
                await run_in_threadpool(record_alone, **exc.audit)
            except Exception:  # the refusal stands even if it cannot be recorded; the failure is logged
                log.exception("could not record a denial in the audit trail")
        return problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> ProblemResponse:
        return problem_response(request, validation_problem(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> ProblemResponse:
        zh, en = _HTTP_TITLES.get(exc.status_code, ("请求失败", "Request failed"))
        detail_en = exc.detail if isinstance(exc.detail, str) and exc.detail else en
        p = Problem(zh, detail_en, status=exc.status_code, code=f"http_{exc.status_code}")
        p.title_zh, p.title_en = zh, en
        p.headers = dict(exc.headers or {})
        return problem_response(request, p)

    from sqlalchemy.exc import SQLAlchemyError

    async def _database(request: Request, exc: Exception) -> ProblemResponse:
        known = database_problem(exc)
        if known is None:
            raise exc
        log.warning("%s %s answered %s: %s", request.method, request.url.path, known.status, exc)
        return problem_response(request, known)

    app.add_exception_handler(SQLAlchemyError, _database)
    app.add_exception_handler(OverflowError, _database)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> ProblemResponse:
        known = database_problem(exc)
        if known is not None:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
            return problem_response(request, known)
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        p = Problem("服务器内部错误，已记录，请稍后重试", "Internal error; it has been logged", status=500, code="internal")
        p.title_zh, p.title_en = "服务器内部错误", "Internal server error"
        return problem_response(request, p)
