"""FastAPI dependencies every module's api.py uses: database sessions and the acting principal.

    from citybrain.deps import ReadDB, WriteDB, require, CurrentUser

    @router.post("/cases/{case_id}/dispatch")
    def dispatch(case_id: int, db: WriteDB, who: Principal = Depends(require("case.dispatch"))): ...

Credentials are read from `Authorization: Bearer cbt_...` (login token), `Authorization: Bearer cbk_...`
or `X-API-Key: cbk_...` (machine key), or the web's `cb_session` cookie.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from citybrain import context
from citybrain.context import ANONYMOUS, Principal
from citybrain.db import get_db
from citybrain.errors import Unauthorized, validation_problem

SESSION_COOKIE = "cb_session"


def read_session() -> Iterator[Session]:
    """A read session for one request."""
    with get_db().read() as s:
        yield s


def write_session() -> Iterator[Session]:
    """A write session for one request (services commit; anything uncommitted is rolled back)."""
    with get_db().write() as s:
        yield s


ReadDB = Annotated[Session, Depends(read_session)]
WriteDB = Annotated[Session, Depends(write_session)]


def _credential(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    return request.cookies.get(SESSION_COOKIE)


F = TypeVar("F", bound=Callable[..., Any])
NUL_MESSAGE = "Text must not contain NUL characters (U+0000)"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def checks_own_text(endpoint: F) -> F:
    """Mark an endpoint that checks the text it is sent itself, so `refuse_nul_text` leaves it alone (telemetry:
    a NUL in one reading dead-letters that reading, it does not refuse the request's other readings)."""
    endpoint.checks_own_text = True  # type: ignore[attr-defined]
    return endpoint


async def refuse_nul_text(request: Request) -> None:
    """App-wide dependency: a NUL character (U+0000) in a path or query parameter, or anywhere in a JSON or
    form body (keys too), is a 422 naming each such field, on every backend. PostgreSQL cannot store NUL in
    text; SQLite would store it silently, and such a database could not move to PostgreSQL. Costs a byte search
    per request; the body is read only for JSON and URL-encoded forms (which the route reads anyway; the
    request keeps it), never for multipart uploads."""
    scope = request.scope
    if getattr(getattr(scope.get("route"), "endpoint", None), "checks_own_text", False):
        return
    found: list[tuple[Any, ...]] = []
    if "\x00" in scope["path"]:
        found += [("path", k) for k, v in request.path_params.items() if isinstance(v, str) and "\x00" in v]
        found = found or [("path",)]
    query = scope["query_string"]
    if b"%00" in query or b"\x00" in query:
        found += _nul_pairs(request.query_params.multi_items(), "query")
    if scope["method"] in _BODY_METHODS:
        ctype = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded":
            body = await request.body()
            if b"%00" in body or b"\x00" in body:
                found += _nul_pairs(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True), "body")
        elif not ctype or ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json")):
            body = await request.body()
            if b"\\u0000" in body or b"\x00" in body:  # JSON writes NUL as \u0000 (or, in UTF-16/32, as 0 bytes)
                with suppress(ValueError, RecursionError):  # not JSON: the route says what is wrong with it
                    found += _nul_locations(await request.json())
    if found:
        raise validation_problem(RequestValidationError(
            [{"type": "string_nul", "loc": loc, "msg": NUL_MESSAGE, "input": None} for loc in found[:20]]))


def _safe(key: str) -> str:
    return key.replace("\x00", "\\u0000")


def _nul_pairs(pairs: Any, where: str) -> list[tuple[Any, ...]]:
    return [(where, _safe(k)) for k, v in pairs if "\x00" in k or "\x00" in v]


def _nul_locations(doc: Any, limit: int = 20) -> list[tuple[Any, ...]]:
    """Where (("body", key or index, ...)) a parsed JSON document holds text with a NUL, in document order."""
    out: list[tuple[Any, ...]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [(("body",), doc)]
    while stack and len(out) < limit:  # iterative: as deep as the JSON parser allows, without recursion
        loc, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                out.append(loc)
        elif isinstance(value, dict):
            stack.extend(((*loc, _safe(k)), "\x00" if "\x00" in k else v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(((*loc, i), v) for i, v in reversed(list(enumerate(value))))
    return out


def optional_principal(request: Request) -> Principal:
    """The caller, or ANONYMOUS when no credential is sent (a bad credential is still a 401)."""
    from citybrain.identity import service as identity

    cred = _credential(request)
    if not cred:
        return ANONYMOUS
    principal = identity.cached_principal(credential=cred) or _resolve(cred)
    context.set_principal(principal)
    return principal


def _resolve(cred: str) -> Principal:
    """Look a credential up in the database (401 if unknown) and remember the principal."""
    from citybrain.identity import service as identity

    if not cred.startswith(("cbk_", "cbt_")):  # neither a machine key nor a login token: say which is which
        raise Unauthorized("凭证无效：登录令牌以 cbt_ 开头，机器密钥（API Key）以 cbk_ 开头",
                           "Invalid credential: login tokens start with cbt_, machine (API) keys with cbk_",
                           code="invalid_credential")
    with get_db().write() as s:
        if cred.startswith("cbk_"):
            principal = identity.principal_from_api_key(s, key=cred)
        else:
            principal = identity.principal_from_token(s, token=cred)
    identity.remember_principal(credential=cred, principal=principal)
    return principal


def current_principal(principal: Principal = Depends(optional_principal)) -> Principal:
    """The authenticated caller (401 if none)."""
    if principal.kind == "anonymous":
        raise Unauthorized("请先登录", "Authentication required", code="not_authenticated")
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]


def require(permission: str) -> Callable[..., Principal]:
    """A dependency that admits only callers holding `permission` (403 `permission_denied` otherwise)."""

    def _dep(principal: Principal = Depends(current_principal)) -> Principal:
        from citybrain.identity.service import authorize

        authorize(principal, permission)
        return principal

    _dep.__name__ = f"require_{permission.replace('.', '_')}"
    _dep.permissions = (permission,)  # type: ignore[attr-defined]  # read by the role x action matrix test
    return _dep


def require_async(permission: str) -> Callable[..., Principal]:
    """`require` for hot endpoints: resolved on the event loop, so a recently seen credential costs no
    thread hand-off (a first sight or a denial goes to a worker thread as usual)."""

    async def _dep(request: Request) -> Principal:
        from starlette.concurrency import run_in_threadpool

        from citybrain.identity import service as identity

        cred = _credential(request)
        if not cred:
            raise Unauthorized("请先登录", "Authentication required", code="not_authenticated")
        principal = identity.cached_principal(credential=cred) or await run_in_threadpool(_resolve, cred)
        context.set_principal(principal)
        if not principal.can(permission):
            await run_in_threadpool(identity.authorize, principal, permission)  # records the denial, raises 403
        return principal

    _dep.__name__ = f"require_async_{permission.replace('.', '_')}"
    _dep.permissions = (permission,)  # type: ignore[attr-defined]
    _dep.needs_login = True  # type: ignore[attr-defined]
    return _dep


def require_any(*permissions: str) -> Callable[..., Principal]:
    """A dependency that admits callers holding at least one of `permissions`."""
    if not permissions:
        raise ValueError("require_any needs at least one permission")

    def _dep(principal: Principal = Depends(current_principal)) -> Principal:
        from citybrain.identity.service import authorize

        held = [p for p in permissions if principal.can(p)]
        authorize(principal, held[0] if held else permissions[0])
        return principal

    _dep.__name__ = "require_any_" + "_".join(p.replace(".", "_") for p in permissions)
    _dep.permissions = tuple(permissions)  # type: ignore[attr-defined]
    return _dep


def route_permissions(route: object) -> tuple[str, ...] | None:
    """The permissions a route's `require`/`require_any` dependency admits (None if it has none)."""
    dependant = getattr(route, "dependant", None)
    stack = [dependant] if dependant is not None else []
    while stack:
        d = stack.pop()
        perms = getattr(d.call, "permissions", None)
        if perms:
            return tuple(perms)
        stack.extend(d.dependencies)
    return None


def route_needs_login(route: object) -> bool:
    """True if a route admits only authenticated callers."""
    dependant = getattr(route, "dependant", None)
    stack = [dependant] if dependant is not None else []
    while stack:
        d = stack.pop()
        if d.call is current_principal or getattr(d.call, "needs_login", False):
            return True
        stack.extend(d.dependencies)
    return False


def api_routes(app: object) -> list[tuple[str, str, object]]:
    """Every (METHOD, path, route) the app serves through FastAPI routes, included routers flattened."""
    out: list[tuple[str, str, object]] = []
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before included routers were kept as branches
        contexts: list = [r for r in getattr(app, "routes", [])]
    else:
        contexts = list(iter_route_contexts(app.routes))  # type: ignore[attr-defined]
    for ctx in contexts:
        route = getattr(ctx, "original_route", ctx)
        if getattr(route, "dependant", None) is None:
            continue
        path = ctx.path_format or ctx.path
        for method in sorted(ctx.methods or ()):
            if method != "HEAD":
                out.append((method, path, route))
    return out
