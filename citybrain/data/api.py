"""Data hub API: catalogue, collection, sharing and exchange under /api/v1/data; the public open-data API
under /api/v1/open (no login); CKAN Action API compatibility under /api/3/action."""

from __future__ import annotations

import csv
import io
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, Depends, File, Header, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from citybrain import context
from citybrain.context import Principal
from citybrain.data import exchangelog, service
from citybrain.data import schemas as sc
from citybrain.db import get_db
from citybrain.deps import ReadDB, WriteDB, optional_principal, require, require_async
from citybrain.errors import Invalid, NotFound, PayloadTooLarge, Problem, send_json_or_problem

router = APIRouter(prefix="/api/v1/data", tags=["data 数据共享交换"])
open_router = APIRouter(prefix="/api/v1/open", tags=["open 数据开放 (public)"])
ckan_router = APIRouter(prefix="/api/3/action", tags=["open 数据开放 (public)"])
# CKAN serves its Action API at /api/action too (the `ckanapi` client calls that path)
ckan_router_unversioned = APIRouter(prefix="/api/action", tags=["open 数据开放 (public)"])
# the exchange is the hot path: the app matches its routes before every other module's
exchange_router = APIRouter(prefix="/api/v1/data/exchange", tags=["data 数据共享交换"])
hot_routers = [exchange_router]
routers = [router, open_router, ckan_router, ckan_router_unversioned]

MAX_UPLOAD = 200 * 1024 * 1024


class ORJSONResponse(Response):
    """JSON rendered with orjson (dates, datetimes and non-ASCII text as is)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str, option=orjson.OPT_UTC_Z)


def _json(doc: Any, status: int = 200) -> ORJSONResponse:
    return ORJSONResponse(doc, status_code=status)


# --- catalogue --------------------------------------------------------------------------------------------------------


@router.get("/resources", summary="资源目录检索 Search the catalogue")
def list_resources(db: ReadDB, who: Principal = Depends(require("data.catalog.read")),
                   q: str | None = Query(None, max_length=100), classification: str | None = None,
                   share_type: str | None = None, open_type: str | None = None, provider_code: str | None = None,
                   status: str | None = "published", base_table: str | None = None,
                   limit: int = Query(20, ge=1, le=200), offset: int = Query(0, ge=0)) -> ORJSONResponse:
    total, items = service.list_resources(db, q=q, classification=classification, share_type=share_type,
                                          open_types=[open_type] if open_type else None,
                                          provider_code=provider_code, status=status or None,
                                          base_table=base_table, limit=limit, offset=offset)
    return _json({"total": total, "items": items})


@router.post("/resources", status_code=201, summary="编目 Register a resource")
def create_resource(body: sc.ResourceIn, db: WriteDB,
                    who: Principal = Depends(require("data.catalog.manage"))) -> ORJSONResponse:
    data = body.model_dump(exclude={"provider_code", "publish"})
    data["items"] = [it.model_dump(exclude_none=True) for it in body.items]
    r = service.create_resource(db, principal=who, data=data, provider_code=body.provider_code,
                                publish=body.publish)
    return _json(service.get_resource(db, code=r.code), 201)


@router.get("/resources/{code}", summary="资源详情 One resource")
def get_resource(code: str, db: ReadDB, who: Principal = Depends(require("data.catalog.read"))) -> ORJSONResponse:
    return _json(service.get_resource(db, code=code))


@router.patch("/resources/{code}", summary="修改资源 Change a resource (new version)")
def update_resource(code: str, body: sc.ResourcePatch, db: WriteDB,
                    who: Principal = Depends(require("data.catalog.manage"))) -> ORJSONResponse:
    changes = body.model_dump(exclude_none=True)
    if body.items is not None:
        changes["items"] = [it.model_dump(exclude_none=True) for it in body.items]
    service.update_resource(db, principal=who, code=code, changes=changes)
    return _json(service.get_resource(db, code=code))


@router.get("/resources/{code}/versions", summary="资源版本 Versions")
def versions(code: str, db: ReadDB, who: Principal = Depends(require("data.catalog.read"))) -> ORJSONResponse:
    return _json(service.resource_versions(db, code=code))


@router.get("/catalog/stats", summary="目录统计 Catalogue statistics")
def catalog_stats(db: ReadDB, who: Principal = Depends(require("data.catalog.read"))) -> ORJSONResponse:
    return _json(service.catalog_stats(db))


# --- collection -------------------------------------------------------------------------------------------------------


@router.post("/resources/{code}/records", summary="推送数据 Push records (upsert by key)")
async def push_records(code: str, request: Request, db: WriteDB,
                       who: Principal = Depends(require("data.load"))) -> ORJSONResponse:
    body = await request.body()
    if len(body) > MAX_UPLOAD:
        raise PayloadTooLarge()
    try:
        doc = orjson.loads(body or b"null")
    except orjson.JSONDecodeError:
        raise Invalid("请求体不是合法 JSON", "The body is not valid JSON") from None
    rows = doc.get("records") if isinstance(doc, dict) else doc
    if not isinstance(rows, list):
        raise Invalid("请提交记录数组或 {\"records\": [...]}", "Send a JSON array or {\"records\": [...]}",
                      errors=[{"field": "records", "message": "array expected"}])
    rows = [r if isinstance(r, dict) else {"__invalid__": r} for r in rows]
    from starlette.concurrency import run_in_threadpool

    load = await run_in_threadpool(service.load_records, db, principal=who, code=code, rows=rows, source="api")
    return _json(service.load_dict(load), 201)


@router.post("/resources/{code}/records/delete", summary="删除数据 Delete records by key (tombstones)")
def delete_records(code: str, body: sc.DeleteIn, db: WriteDB,
                   who: Principal = Depends(require("data.load"))) -> ORJSONResponse:
    return _json(service.delete_records(db, principal=who, code=code, keys=body.keys, reason=body.reason))


@router.delete("/resources/{code}/records/{key}", summary="删除一条数据 Delete one record by key")
def delete_record(code: str, key: str, db: WriteDB, who: Principal = Depends(require("data.load")),
                  reason: str = Query(..., min_length=1, max_length=2000)) -> ORJSONResponse:
    out = service.delete_records(db, principal=who, code=code, keys=[key], reason=reason)
    if not out["deleted"]:
        raise NotFound("没有该主键的记录", "No record with that key", code="record_not_found")
    return _json(out)


@router.post("/resources/{code}/upload", summary="上传文件归集 Upload CSV / JSON / XLSX")
def upload(code: str, db: WriteDB, file: Annotated[UploadFile, File()],
           who: Principal = Depends(require("data.load"))) -> ORJSONResponse:
    content = file.file.read(MAX_UPLOAD + 1)
    if len(content) > MAX_UPLOAD:
        raise PayloadTooLarge()
    rows = service.read_upload(file.filename or "upload.csv", content)
    load = service.load_records(db, principal=who, code=code, rows=rows, source=f"file:{file.filename}")
    return _json(service.load_dict(load), 201)


@router.get("/resources/{code}/loads", summary="归集批次 Loads of a resource")
def loads(code: str, db: ReadDB, who: Principal = Depends(require("data.load"))) -> ORJSONResponse:
    return _json(service.list_loads(db, principal=who, code=code))


@router.get("/loads/{load_id}", summary="质量报告 A load's quality report")
def get_load(load_id: int, db: ReadDB, who: Principal = Depends(require("data.load"))) -> ORJSONResponse:
    return _json(service.load_dict(service.get_load(db, principal=who, load_id=load_id)))


@router.get("/loads/{load_id}/rejects", summary="问题数据 Rejected rows with reasons")
def rejects(load_id: int, db: ReadDB, who: Principal = Depends(require("data.load")),
            limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> ORJSONResponse:
    return _json(service.load_rejects(db, principal=who, load_id=load_id, limit=limit, offset=offset))


# --- sharing ------------------------------------------------------------------------------------------------------------


@router.post("/requests", status_code=201, summary="共享申请 Request a resource")
def create_request(body: sc.RequestIn, db: WriteDB,
                   who: Principal = Depends(require("data.request"))) -> ORJSONResponse:
    req = service.create_request(db, principal=who, code=body.resource_code, fields=body.fields,
                                 unmasked_fields=body.unmasked_fields, purpose=body.purpose,
                                 legal_basis=body.legal_basis, valid_from=body.valid_from, valid_to=body.valid_to)
    return _json(service.get_request(db, principal=who, request_id=req.id), 201)


@router.get("/requests", summary="共享申请列表 Requests sent or received")
def list_requests(db: ReadDB, who: Principal = Depends(require("data.catalog.read")),
                  direction: str = Query("all", pattern="^(all|incoming|outgoing)$"), status: str | None = None,
                  overdue: bool | None = None, limit: int = Query(50, ge=1, le=200),
                  offset: int = Query(0, ge=0)) -> ORJSONResponse:
    total, items = service.list_requests(db, principal=who, direction=direction, status=status, overdue=overdue,
                                         limit=limit, offset=offset)
    return _json({"total": total, "items": items})


@router.get("/requests/{request_id}", summary="申请详情 One request")
def get_request(request_id: int, db: ReadDB,
                who: Principal = Depends(require("data.catalog.read"))) -> ORJSONResponse:
    return _json(service.get_request(db, principal=who, request_id=request_id))


@router.post("/requests/{request_id}/decision", summary="审批 Approve or refuse (provider)")
def decide(request_id: int, body: sc.DecisionIn, db: WriteDB,
           who: Principal = Depends(require("data.approve"))) -> ORJSONResponse:
    service.decide_request(db, principal=who, request_id=request_id, approve=body.approve, reason=body.reason,
                           fields=body.fields, unmasked_fields=body.unmasked_fields, valid_to=body.valid_to)
    return _json(service.get_request(db, principal=who, request_id=request_id))


@router.post("/requests/{request_id}/withdraw", summary="撤回申请 Withdraw a pending request")
def withdraw(request_id: int, db: WriteDB, who: Principal = Depends(require("data.request"))) -> ORJSONResponse:
    service.withdraw_request(db, principal=who, request_id=request_id)
    return _json(service.get_request(db, principal=who, request_id=request_id))


@router.get("/grants", summary="共享授权 Grants held or given")
def grants(db: ReadDB, who: Principal = Depends(require("data.catalog.read")),
           active_only: bool = True) -> ORJSONResponse:
    return _json(service.list_grants(db, principal=who, active_only=active_only))


@router.post("/grants/{grant_id}/revoke", summary="撤销授权 Revoke a grant (provider)")
def revoke(grant_id: int, body: sc.ReasonIn, db: WriteDB,
           who: Principal = Depends(require("data.approve"))) -> ORJSONResponse:
    return _json(service.grant_dict(service.revoke_grant(db, principal=who, grant_id=grant_id,
                                                         reason=body.reason)))


# --- exchange -----------------------------------------------------------------------------------------------------------


def _fields(fields: str | None) -> list[str] | None:
    return [f.strip() for f in fields.split(",") if f.strip()] if fields else None


# The exchange is the hot path: async endpoints with an event-loop credential check (`require_async`), the
# call run and rendered by `exchange_answer`; `ExchangeFastPath` (below) serves the query route without the
# framework's layers.
_EXCHANGE = require_async("data.exchange")


def _exchange(who: Principal, code: str, **kw: Any) -> tuple[bytes, dict[str, Any] | None]:
    """One exchange call, rendered, and its log entry; the bytes may leave only once the entry is committed.
    The read session (snapshot) ends here, before the log commit."""
    with get_db().read() as s:
        result, entry = service.exchange_call(s, principal=who, code=code, **kw)
    return orjson.dumps(result, default=str, option=orjson.OPT_UTC_Z), entry


async def exchange_answer(who: Principal, code: str, **kw: Any) -> bytes:
    """The answer of one exchange call, after its log entry (and rate-limit charge) has been committed by
    the process's log writer: the event loop serves other requests meanwhile, and their entries join the
    same group commit. On SQLite the call's reads run on the event loop itself (a local file, no network
    wait: a thread hand-off costs more CPU than it frees, ~0.2 ms a call); on PostgreSQL in a worker thread."""
    db = get_db()
    if db.is_sqlite:
        body, entry = _exchange(who, code, **kw)
    else:
        body, entry = await run_in_threadpool(_exchange, who, code, **kw)
    if entry is not None:
        await exchangelog.WRITER.submit_async(db, entry)
    return body


async def _exchange_json(who: Principal, code: str, **kw: Any) -> Response:
    return Response(await exchange_answer(who, code, **kw), media_type="application/json")


@exchange_router.get("/{code}/records/{key}", summary="按主键查询 Get one record by key")
async def exchange_get(code: str, key: str, who: Principal = Depends(_EXCHANGE),
                       fields: str | None = Query(None, max_length=2000)) -> Response:
    return await _exchange_json(who, code, op="get", key=key, fields=_fields(fields))


@exchange_router.post("/{code}/query", summary="条件查询 Query with filters and paging")
async def exchange_query(code: str, body: sc.QueryIn, who: Principal = Depends(_EXCHANGE)) -> Response:
    return await _exchange_json(who, code, op="query", filters=body.filters, fields=body.fields, page=body.page,
                                page_size=body.page_size, after=body.after)


@exchange_router.get("/{code}/records", summary="条件查询 Query (filters as query parameters)")
async def exchange_query_get(code: str, request: Request, who: Principal = Depends(_EXCHANGE),
                             fields: str | None = Query(None, max_length=2000), page: int = Query(1, ge=1),
                             page_size: int = Query(100, ge=1, le=1000),
                             limit: int | None = Query(None, ge=1, le=1000, description="the same as page_size "
                                                       "(the name the changes feed uses)"),
                             after: str | None = Query(None, pattern=r"^[0-9]{1,18}$")) -> Response:
    filters = {k: v for k, v in request.query_params.items()
               if k not in ("fields", "page", "page_size", "limit", "after")}
    return await _exchange_json(who, code, op="query", filters=filters, fields=_fields(fields), page=page,
                                page_size=limit or page_size, after=after)


@exchange_router.get("/{code}/changes", summary="增量获取 Changes since a cursor")
async def exchange_changes(code: str, who: Principal = Depends(_EXCHANGE),
                           cursor: str = Query("0", max_length=20), limit: int = Query(100, ge=1, le=1000),
                           fields: str | None = Query(None, max_length=2000)) -> Response:
    return await _exchange_json(who, code, op="pull", cursor=cursor, limit=limit, fields=_fields(fields))


class ExchangeFastPath:
    """ASGI middleware: `POST /api/v1/data/exchange/{code}/query` (the consumers' hot path) answered without
    the framework's routing, dependency and response layers. It serves only what it can serve exactly like
    the route: a credential seen in the last seconds that holds `data.exchange`, sent in `Authorization:
    Bearer` or `X-API-Key`, and a JSON body of the query's exact shape. Anything else (no or unknown
    credential, a denial, a cookie, another content type, a body the route's model would coerce or refuse)
    goes on to the route with the body replayed, so every refusal and validation problem stays the route's.
    Same call (`exchange_answer`: grant checks, masks, rate limit and log committed before the answer), same
    body, same problem+json errors, request id and HTTP metrics as the route."""

    PREFIX = "/api/v1/data/exchange/"
    ROUTE = "/api/v1/data/exchange/{code}/query"
    MAX_BODY = 64 * 1024
    KEYS = frozenset({"filters", "fields", "page", "page_size", "after"})

    def __init__(self, app: Any):
        self.app = app
        from citybrain.app import FastPathMetrics  # the app imports this module

        self.metrics = FastPathMetrics(self.ROUTE)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if scope.get("method") != "POST" or not path.startswith(self.PREFIX) or not path.endswith("/query"):
            await self.app(scope, receive, send)
            return
        code = path[len(self.PREFIX):-6]
        headers: dict[bytes, bytes] = {}
        for k, v in scope["headers"]:
            headers.setdefault(k, v)
        try:
            principal = _cached_caller(headers)
        except Exception:  # noqa: BLE001 - whatever a credential does to it, the route answers it
            principal = None
        if not code or "/" in code or principal is None or not principal.can("data.exchange"):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            more = msg.get("more_body", False)
            if size > self.MAX_BODY:
                break
        args = None if more else _query_args(headers, b"".join(chunks))
        if args is None:  # the route answers (and, where it must, refuses) exactly as without this path
            await self.app(scope, _replay(chunks, more, receive), send)
            return
        await self._serve(scope, receive, send, headers, principal, code, args)

    async def _serve(self, scope: Any, receive: Any, send: Any, headers: dict[bytes, bytes], principal: Principal,
                     code: str, args: dict[str, Any]) -> None:
        start = time.perf_counter()
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        client = scope.get("client")
        token = context.begin(rid, client[0] if client else None)
        context.set_principal(principal)
        status = 500
        try:
            status = await send_json_or_problem(
                scope, receive, send, rid, lambda: exchange_answer(principal, code, op="query", **args))
        finally:
            self.metrics.observe(status, start)
            context.end(token)


def _cached_caller(headers: dict[bytes, bytes]) -> Principal | None:
    """The caller of a Bearer or X-API-Key credential resolved in the last seconds (`deps._credential` order),
    else None."""
    from citybrain.identity import service as identity

    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        cred = auth[7:].strip()
    else:
        cred = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    return identity.cached_principal(credential=cred) if cred else None


_AFTER = re.compile(r"[0-9]{1,18}")


def _query_args(headers: dict[bytes, bytes], body: bytes) -> dict[str, Any] | None:
    """The arguments of a JSON query body that `sc.QueryIn` would take as they are, else None."""
    if headers.get(b"content-type", b"").split(b";")[0].strip().lower() != b"application/json":
        return None
    if b"\\u0000" in body:  # a NUL character in the text: the route refuses it (`deps.refuse_nul_text`)
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or not doc.keys() <= ExchangeFastPath.KEYS:
        return None
    filters = doc.get("filters", {})
    fields = doc.get("fields")
    page = doc.get("page", 1)
    page_size = doc.get("page_size", 100)
    after = doc.get("after")
    if (type(filters) is not dict or not all(type(v) is str for v in filters.values())
            or (after is not None and (type(after) is not str or not _AFTER.fullmatch(after)))
            or (fields is not None and (type(fields) is not list or not all(type(f) is str for f in fields)))
            or type(page) is not int or not 1 <= page <= 1_000_000
            or type(page_size) is not int or not 1 <= page_size <= 1000):
        return None
    return {"filters": filters, "fields": fields, "page": page, "page_size": page_size, "after": after}


def _replay(chunks: list[bytes], more: bool, receive: Any) -> Any:
    """A `receive` that gives the body chunks already read, then whatever is left of the request."""
    left = list(chunks)

    async def replay() -> dict[str, Any]:
        if left:
            return {"type": "http.request", "body": left.pop(0), "more_body": bool(left) or more}
        return await receive()

    return replay


# in front of the framework's own layers (`app.CityBrainAPI`): the fast path is complete without them
outer_middleware = [ExchangeFastPath]


@router.get("/exchange-log", summary="交换日志 Exchange log")
def exchange_log(db: ReadDB, who: Principal = Depends(require("data.stats")), code: str | None = None,
                 limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> ORJSONResponse:
    return _json(service.exchange_log(db, principal=who, code=code, limit=limit, offset=offset))


@router.get("/stats/exchange", summary="交换统计 Exchange statistics")
def exchange_stats(db: ReadDB, who: Principal = Depends(require("data.stats")),
                   days: int = Query(7, ge=1, le=366)) -> ORJSONResponse:
    return _json(service.exchange_stats(db, principal=who, days=days))


@router.get("/ioc", summary="运行态势 IOC summary of the data hub")
def ioc(db: ReadDB, who: Principal = Depends(require("ioc.view"))) -> ORJSONResponse:
    return _json(service.ioc_summary(db))


# --- open data (public) ------------------------------------------------------------------------------------------------


@open_router.get("/resources", summary="开放数据目录 Browse and search open data")
def open_list(db: ReadDB, q: str | None = Query(None, max_length=100), limit: int = Query(20, ge=1, le=100),
              offset: int = Query(0, ge=0)) -> ORJSONResponse:
    total, items = service.open_list(db, q=q, limit=limit, offset=offset)
    return _json({"total": total, "items": items})


@open_router.get("/catalog.jsonld", summary="DCAT JSON-LD 目录 DCAT export", response_class=Response,
                 responses={200: {"description": "W3C DCAT catalogue as JSON-LD",
                                  "content": {"application/ld+json": {"schema": {"type": "object"}}}}})
def dcat(request: Request, db: ReadDB) -> Response:
    doc = service.dcat_catalog(db, base_url=str(request.base_url).rstrip("/"))
    return Response(orjson.dumps(doc, option=orjson.OPT_UTC_Z), media_type="application/ld+json")


@open_router.get("/resources/{code}", summary="开放数据详情 One open dataset")
def open_get(code: str, db: ReadDB) -> ORJSONResponse:
    r = service.get_resource(db, code=code)
    if r["status"] != "published" or r["open_type"] == "closed":
        raise NotFound(f"开放数据 {code} 不存在", f"Open dataset {code} does not exist", code="resource_not_found")
    r["items"] = [it for it in r["items"] if it.get("grade") == "public"]
    r.pop("legal_basis", None)
    return _json(r)


@open_router.get("/resources/{code}/preview", summary="数据预览 Preview (first rows)")
def open_preview(code: str, db: ReadDB, who: Principal = Depends(optional_principal),
                 limit: int = Query(20, ge=1, le=100)) -> ORJSONResponse:
    fields, rows = service.open_rows(db, code=code, principal=who, limit=limit)
    return _json({"fields": fields, "records": list(rows)})


@open_router.get("/resources/{code}/download.{fmt}", summary="下载 Download CSV or JSON", response_class=Response,
                 responses={200: {"description": "the public fields of every row",
                                  "content": {"text/csv": {"schema": {"type": "string"}},
                                              "application/json": {"schema": {"type": "object"}}}}})
def open_download(code: str, fmt: str, db: ReadDB, who: Principal = Depends(optional_principal)) -> Response:
    if fmt not in ("csv", "json"):
        raise NotFound("只支持 csv 或 json 下载", "Only csv and json downloads exist", code="bad_format")
    fields, rows = service.open_rows(db, code=code, principal=who)
    principal = who if who.kind != "anonymous" else None

    def gen_csv():
        n = 0
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        buf.write("\ufeff")
        w.writeheader()
        try:
            for row in rows:
                w.writerow(row)
                n += 1
                if buf.tell() > 65536:
                    yield buf.getvalue().encode()
                    buf.seek(0)
                    buf.truncate()
            yield buf.getvalue().encode()
        finally:
            service.log_open_download(code=code, records=n, principal=principal)

    def gen_json():
        n = 0
        yield b'{"resource":' + orjson.dumps(code) + b',"fields":' + orjson.dumps(fields) + b',"records":['
        try:
            for row in rows:
                yield (b"," if n else b"") + orjson.dumps(row, option=orjson.OPT_UTC_Z)
                n += 1
            yield b"]}"
        finally:
            service.log_open_download(code=code, records=n, principal=principal)

    name = service.ckan_name(code)
    if fmt == "csv":
        return StreamingResponse(_closing(gen_csv()), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    return StreamingResponse(_closing(gen_json()), media_type="application/json",
                             headers={"Content-Disposition": f'attachment; filename="{name}.json"'})


async def _closing(gen: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Stream a generator from the thread pool and close it there as soon as the response ends, also when the
    client goes away early (its `finally` logs the download and ends its read), rather than leaving it to the
    garbage collector in whatever thread happens to run it."""
    try:
        while (chunk := await run_in_threadpool(next, gen, None)) is not None:
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(gen.close)


@open_router.post("/resources/{code}/keys", status_code=201, summary="申请开放数据密钥 Apply for a key")
def open_key(code: str, body: sc.OpenKeyIn, db: WriteDB) -> ORJSONResponse:
    a, ticket = service.apply_open_key(db, code=code, applicant=body.applicant, contact=body.contact,
                                       purpose=body.purpose)
    return _json({"application_id": a.id, "status": a.status, "resource": code, "ticket": ticket,
                  "note_zh": "申请已提交，由数据提供部门审核；凭据只显示一次，用于查询进度和领取密钥",
                  "note_en": "Submitted for the provider's review. Keep the ticket (shown once) to follow the "
                             "application and collect the key"}, 201)


@open_router.get("/applications/{application_id}", summary="申请进度 Application status (with the ticket)")
def open_application(application_id: int, db: ReadDB,
                     ticket: str = Header("", alias="X-Application-Ticket")) -> ORJSONResponse:
    return _json(service.open_application_status(db, application_id=application_id, ticket=ticket))


@open_router.post("/applications/{application_id}/key", status_code=201,
                  summary="领取密钥 Collect the key of an approved application (once)")
def collect_open_key(application_id: int, body: sc.TicketIn, db: WriteDB) -> ORJSONResponse:
    key = service.collect_open_key(db, application_id=application_id, ticket=body.ticket)
    return _json({"key": key, "note_zh": "密钥只显示一次，请妥善保存；调用时放在 X-API-Key 请求头",
                  "note_en": "The key is shown once; send it in the X-API-Key header"}, 201)


@router.get("/open-applications", summary="开放数据密钥申请 Open-data key applications to my departments")
def open_applications(db: ReadDB, who: Principal = Depends(require("data.approve")),
                      status: str | None = None) -> ORJSONResponse:
    return _json(service.list_open_applications(db, principal=who, status=status))


@router.post("/open-applications/{application_id}/decision", summary="审核开放数据申请 Approve or refuse")
def decide_open_application(application_id: int, body: sc.OpenDecisionIn, db: WriteDB,
                            who: Principal = Depends(require("data.approve"))) -> ORJSONResponse:
    a = service.decide_open_application(db, principal=who, application_id=application_id, approve=body.approve,
                                        reason=body.reason)
    return _json(service.open_application_dict(a, service.resource_code(db, a.resource_id)))


# --- CKAN Action API ------------------------------------------------------------------------------------------------------


def _ckan_error(status: int, kind: str, message: str, message_zh: str | None = None) -> JSONResponse:
    """A CKAN error envelope (what CKAN clients parse: they read the JSON body whatever its media type) that
    is also a problem document, served as application/problem+json like every other API error."""
    return JSONResponse(media_type="application/problem+json", content={"help": "", "success": False, "error": {"__type": kind, "message": message},
                         "type": f"urn:citybrain:problem:ckan_{status}", "title": kind, "status": status,
                         "detail": message, "code": f"ckan_{status}", "message_zh": message_zh or message,
                         "message_en": message, "errors": []},
                        status_code=status)


@ckan_router_unversioned.api_route("/{action}", methods=["GET", "POST"], include_in_schema=False)
@ckan_router.post("/{action}", summary="CKAN Action API (subset), POST", operation_id="ckan_action_post")
@ckan_router.get("/{action}", summary="CKAN Action API (subset): package_list, package_show, package_search, "
                 "organization_list, status_show, help_show", operation_id="ckan_action_get")
async def ckan_action(action: str, request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool

    params: dict[str, Any] = dict(request.query_params)
    if request.method == "POST":
        body = await request.body()
        if body:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                if "json" in request.headers.get("content-type", ""):
                    return _ckan_error(400, "Bad Request", "JSON Error: the request body is not valid JSON",
                                       "请求体不是有效的 JSON")
                form = await request.form()
                doc = dict(form)
            if isinstance(doc, dict):
                params.update(doc)
    base = str(request.base_url).rstrip("/")
    help_url = f"{base}/api/3/action/help_show?name={action}"
    try:
        result = await run_in_threadpool(_ckan_call, action, params, base)
    except Problem as p:
        return _ckan_error(p.status, "Not Found Error" if p.status == 404 else "Validation Error", p.detail_en,
                           p.detail_zh)
    if result is _UNKNOWN:
        return _ckan_error(400, "Bad Request", f"Action name not known: {action}", f"不支持的接口：{action}")
    return Response(orjson.dumps({"help": help_url, "success": True, "result": result}, default=str,
                                option=orjson.OPT_UTC_Z),
                    media_type="application/json")


_UNKNOWN = object()


def _int(params: dict[str, Any], name: str, default: int, hi: int) -> int:
    """A natural-number parameter of a CKAN action, at most `hi` (as CKAN: a negative number is refused)."""
    try:
        value = int(params.get(name, default))
    except (TypeError, ValueError):
        raise Invalid(f"{name} 须为整数", f"{name} must be an integer") from None
    if value < 0:
        raise Invalid(f"{name} 不能为负数", f"{name} must be a natural number") from None
    return min(value, hi)


# what `help_show` answers (CKAN gives an action's documentation there; every answer's `help` links to it)
CKAN_HELP = {
    "package_list": "Return a list of the names of the site's datasets (packages).\n\n"
                    ":param limit: how many to return (optional)\n:param offset: where to start (optional)\n"
                    ":rtype: list of strings\n\n返回开放数据集名称列表。",
    "package_show": "Return the metadata of a dataset (package) and its resources.\n\n"
                    ":param id: the id or name of the dataset\n:rtype: dictionary\n\n返回一个开放数据集的元数据及其资源。",
    "package_search": "Search for datasets (packages).\n\n:param q: the solr-style query (optional)\n"
                      ":param fq: filter query, e.g. organization:<name> (optional)\n:param rows: how many (optional)\n"
                      ":param start: offset (optional)\n:rtype: dictionary with count and results\n\n检索开放数据集。",
    "organization_list": "Return a list of the names of the site's organizations.\n\n"
                         ":param all_fields: return full dictionaries instead of names (optional)\n"
                         ":rtype: list\n\n返回数据提供部门列表。",
    "status_show": "Return a dictionary with information about the site's configuration.\n\n"
                   ":rtype: dictionary\n\n返回站点信息。",
    "help_show": "Return the help string for a particular API action.\n\n:param name: action function name\n"
                 ":rtype: string\n\n返回某个接口的说明。",
}


def _ckan_call(action: str, params: dict[str, Any], base: str) -> Any:
    from citybrain.db import get_db

    if action == "help_show":
        name = str(params.get("name") or "")
        if name not in CKAN_HELP:
            raise NotFound(f"不支持的接口：{name}", f"Action function not found: {name}")
        return CKAN_HELP[name]
    with get_db().read() as db:
        if action == "package_list":
            limit, offset = _int(params, "limit", 1000, 1000), _int(params, "offset", 0, 10**9)
            _t, rows = service.open_list(db, limit=max(1, limit), offset=offset)
            names = [service.ckan_name(r["code"]) for r in rows]
            return names if limit else []
        if action == "package_show":
            ident = str(params.get("id") or params.get("name_or_id") or "")
            if not ident:
                raise Invalid("缺少参数 id（数据集名称或编码）", "Missing value: id")
            total, rows = service.open_list(db, limit=100)
            offset = 100
            while len(rows) < total:
                rows += service.open_list(db, limit=100, offset=offset)[1]
                offset += 100
            for r in rows:
                if ident in (r["code"], service.ckan_name(r["code"])):
                    return service.ckan_package(r, base)
            raise NotFound("未找到数据集", "Not found")
        if action == "package_search":
            q = str(params.get("q") or "").strip()
            if q in ("*:*", "*"):
                q = ""
            rows_n, start = _int(params, "rows", 10, 1000), _int(params, "start", 0, 10**9)
            total, rows = service.open_list(db, q=q or None, limit=max(1, rows_n), offset=start)
            return {"count": total, "results": [service.ckan_package(r, base) for r in rows] if rows_n else [],
                    "sort": "score desc, metadata_modified desc", "facets": {}, "search_facets": {}}
        if action == "organization_list":
            total, rows = service.open_list(db, limit=100)
            offset = 100
            while len(rows) < total:
                rows += service.open_list(db, limit=100, offset=offset)[1]
                offset += 100
            orgs: dict[str, dict[str, Any]] = {}
            for r in rows:
                o = orgs.setdefault(r["provider_code"], {
                    "id": r["provider_code"], "name": service.ckan_name(r["provider_code"]),
                    "title": r.get("provider_name") or r["provider_code"], "display_name":
                        r.get("provider_name") or r["provider_code"], "type": "organization", "state": "active",
                    "is_organization": True, "package_count": 0})
                o["package_count"] += 1
            all_fields = str(params.get("all_fields", "")).lower() in ("true", "1")
            out = sorted(orgs.values(), key=lambda o: o["name"])
            return out if all_fields else [o["name"] for o in out]
        if action == "status_show":
            return {"site_title": "CityBrain 政务数据开放", "ckan_version": "2.10.0", "api_version": 3,
                    "extensions": ["citybrain"], "locale_default": "zh_Hans_CN"}
    return _UNKNOWN
