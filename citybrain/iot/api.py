"""IoT API under /api/v1/iot: telemetry ingestion, devices, models, rules, alarms, queries, map layers.

Live alarms and status changes reach browsers through the core SSE stream `GET /api/v1/live`."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from prometheus_client import Counter, Histogram
from starlette.concurrency import run_in_threadpool

from citybrain import context
from citybrain.context import Principal
from citybrain.db import get_db
from citybrain.deps import ReadDB, WriteDB, checks_own_text, require
from citybrain.errors import Forbidden, Invalid, PayloadTooLarge, Unauthorized, send_json_or_problem
from citybrain.iot import relay, schemas, service
from citybrain.iot.worker import worker as ingest_worker

router = APIRouter(prefix="/api/v1/iot", tags=["iot 物联感知"])
log = logging.getLogger("citybrain.iot")

MAX_BODY = 16 * 1024 * 1024

READINGS = Counter("citybrain_iot_readings_total", "Telemetry readings by outcome", ["source", "outcome"])
INGEST_SECONDS = Histogram("citybrain_iot_ingest_seconds", "Time to validate, store and commit one message",
                           ["source"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
AUTH_FAILURES = Counter("citybrain_iot_auth_failures_total", "Telemetry refused for bad credentials", ["source"])


_SERIES: dict[str, tuple[Any, ...]] = {}  # source -> its metric series (a label lookup costs a lock and a dict)


def _series(source: str) -> tuple[Any, ...]:
    found = _SERIES.get(source)
    if found is None:
        found = _SERIES[source] = (READINGS.labels(source, "stored"), READINGS.labels(source, "duplicate"),
                                   READINGS.labels(source, "rejected"), INGEST_SECONDS.labels(source))
    return found


def _credentials(headers: Any) -> tuple[str | None, str, str | None]:
    """(device code, device secret, gateway key) from the request headers."""
    code = headers.get("x-device-code")
    auth = headers.get("authorization", "")
    key = headers.get("x-api-key") or (auth[7:].strip() if auth.lower().startswith("bearer ") else None)
    if code is None and auth.lower().startswith("device "):
        code, _, secret = auth[7:].strip().partition(":")
    else:
        secret = headers.get("x-device-secret", "")
    return code, secret, key


def _why_zh(why: str | None) -> str:
    """The Chinese of `service.parse_payload`'s reason why a body is unreadable."""
    if not why:
        return "无法读取"
    if why.startswith("not JSON"):
        return "不是有效的 JSON" + why[len("not JSON"):]
    return {"readings must be a list": "readings 须为数组",
            "body must be a JSON object or array": "须为 JSON 对象或数组"}.get(why, why)


def _record_unreadable(**kw: Any) -> None:
    """Keep an unreadable body as a dead letter, in a transaction of its own (`_prepare` only reads)."""
    with get_db().write() as ws:
        service.record_unreadable(ws, source="http", **kw)


def _prepare(headers: Any, raw: bytes, s: Any) -> service.Part:
    """Authenticate and parse one telemetry request (in the ingest thread, with a reading session); raises its
    problem."""
    code, secret, key = _credentials(headers)
    device = sender = None
    if code:
        try:
            device = service.authenticate_device(s, code=code, secret=secret)
        except Forbidden as exc:
            st = service._state(s)
            with st.lock:
                info = service._registry(s, st).get(code)
            if info is None:
                raise
            # a disabled device: keep what it sent as dead letters, then refuse with 403
            items, why = service.parse_payload(raw)
            if items is None or len(items) > service.MAX_BATCH_READINGS:
                _record_unreadable(raw=raw, sender=f"device:{info.code}", detail=why or "batch too large",
                                   device_code=info.code, device_id=info.id)
                raise
            return service.Part(items, "http", device=info, refuse=exc)
        except Unauthorized:
            AUTH_FAILURES.labels("http").inc()
            raise
    elif key:
        try:
            sender = service.principal_from_key(s, key=key)
        except Unauthorized:
            AUTH_FAILURES.labels("http").inc()
            raise
        if not sender.can("iot.ingest"):
            raise Forbidden("该凭证无权上报物联数据", "This key may not send telemetry (needs iot.ingest)",
                            code="permission_denied")
    else:
        AUTH_FAILURES.labels("http").inc()
        raise Unauthorized("请提供设备编码与密钥或网关密钥",
                           "Send X-Device-Code and X-Device-Secret, or a gateway key", code="not_authenticated")
    items, why = service.parse_payload(raw)
    if items is None:
        _record_unreadable(raw=raw, sender=sender.label if sender else (f"device:{device.code}" if device else None),
                           detail=why or "unreadable", device_code=device.code if device else None,
                           device_id=device.id if device else None)
        raise Invalid(f"数据无法解析：{_why_zh(why)}", f"Unreadable message: {why}", code="malformed_payload",
                      accepted=0, rejected=1)
    if len(items) > service.MAX_BATCH_READINGS:
        raise Invalid(f"单批最多 {service.MAX_BATCH_READINGS} 条",
                      f"At most {service.MAX_BATCH_READINGS} readings per batch", code="batch_too_large")
    return service.Part(items, "http", sender=sender, device=device)


def answer(part: service.Part) -> tuple[dict[str, Any], BaseException | None]:
    """A committed telemetry request's result (`IngestResult.as_dict`) and the problem to answer instead, if any
    (a disabled device's readings were kept as dead letters; every reading was rejected)."""
    res = part.result
    out = res.as_dict()
    if part.refuse is not None:
        return out, part.refuse
    if res.accepted == 0 and res.rejected > 0:
        return out, Invalid(f"全部 {res.rejected} 条数据被拒收（已留存于死信表）",
                            ("The reading was" if res.rejected == 1 else f"All {res.rejected} readings were")
                            + " rejected (kept in the dead-letter table)",
                            code="readings_rejected", **{k: v for k, v in out.items()})
    return out, None


async def ingest_request(headers: Any, raw: bytes) -> dict[str, Any]:
    """Hand a telemetry request to the ingest thread (group commit), or under `serve --workers N` to the ingest
    process (`iot.relay`), and wait for its commit; the answer."""
    t0 = time.perf_counter()
    relay_client = relay.client()
    try:
        if relay_client is not None:
            out, problem = await relay_client.ingest(headers, raw)
        else:
            out, problem = answer(await _ingest_here(headers, raw))
    finally:
        _series("http")[3].observe(time.perf_counter() - t0)
    stored, duplicate, rejected, _seconds = _series("http")
    if out["stored"]:
        stored.inc(out["stored"])
    if out["duplicates"]:
        duplicate.inc(out["duplicates"])
    if out["rejected"]:
        rejected.inc(out["rejected"])
    if problem is not None:
        raise problem
    return out


async def _ingest_here(headers: Any, raw: bytes) -> service.Part:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[service.Part] = loop.create_future()

    def resolve(part: service.Part | None, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(part)  # type: ignore[arg-type]

    def done(part: service.Part | None, exc: BaseException | None) -> None:
        loop.call_soon_threadsafe(resolve, part, exc)

    ingest_worker(get_db()).submit(partial(_prepare, headers, raw), done, len(raw))
    return await fut


_PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


@router.post("/telemetry", summary="上报遥测数据 Send telemetry (device secret or gateway key)",
             responses={401: {"description": "设备密钥或网关密钥错误 Wrong device secret or gateway key", **_PROBLEM},
                        403: {"description": "设备已停用或密钥无上报权限 Device disabled or key lacks iot.ingest",
                              **_PROBLEM}})
@checks_own_text  # a NUL in a reading dead-letters that reading (wrong_type, unknown_device, ...), not the request
async def telemetry(request: Request) -> dict[str, Any]:
    """Body: `{"readings": [{"device": code, "ts": ISO-8601|epoch, "values": {prop: value}}]}` (gateway), or
    `{"ts": ..., "values": {...}}` (a device with `X-Device-Code`/`X-Device-Secret`). Answered after commit."""
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise PayloadTooLarge("请求体超过 16 MB", "Body larger than 16 MB")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge("请求体超过 16 MB", "Body larger than 16 MB")
    return await ingest_request(request.headers, raw)


class TelemetryFastPath:
    """ASGI middleware: `POST /api/v1/iot/telemetry` answered without the framework's routing, dependency and
    response layers (the hot path of every sensor). Same checks, same ingestion (`ingest_request`), same
    problem+json errors, request id and HTTP metrics as the regular route, which stays for the OpenAPI document
    and for apps built without this middleware."""

    PATH = "/api/v1/iot/telemetry"

    def __init__(self, app: Any):
        self.app = app
        from citybrain.app import FastPathMetrics  # the app imports this module

        self.metrics = FastPathMetrics(self.PATH)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        rid = headers.get("x-request-id", "")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        client = scope.get("client")
        token = context.begin(rid, client[0] if client else None)
        status = 500

        async def produce() -> bytes | None:
            if int(headers.get("content-length") or 0) > MAX_BODY:
                raise PayloadTooLarge("请求体超过 16 MB", "Body larger than 16 MB")
            chunks = []
            size = 0
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return None
                body = msg.get("body", b"")
                size += len(body)
                if size > MAX_BODY:
                    raise PayloadTooLarge("请求体超过 16 MB", "Body larger than 16 MB")
                chunks.append(body)
                if not msg.get("more_body"):
                    break
            return orjson.dumps(await ingest_request(headers, b"".join(chunks)))

        try:
            status = await send_json_or_problem(scope, receive, send, rid, produce)
        finally:
            self.metrics.observe(status, start)
            context.end(token)


middleware = [TelemetryFastPath]


# --- models and devices -------------------------------------------------------------------------------------------


@router.get("/models", summary="物模型 Device models")
def models(who: Principal = Depends(require("iot.read"))) -> list[dict[str, Any]]:
    return service.model_list()


@router.get("/devices", summary="设备列表 Devices")
def devices(db: ReadDB, who: Principal = Depends(require("iot.read")), model: str | None = None,
            status: str | None = None, org_id: int | None = None, grid_code: str | None = None,
            q: str | None = None, bbox: str | None = None, limit: int = Query(50, ge=1, le=1000),
            offset: int = Query(0, ge=0)) -> dict[str, Any]:
    total, rows = service.list_devices(db, principal=who, model=model, status=status, org_id=org_id,
                                       grid_code=grid_code, q=q, bbox=bbox, limit=limit, offset=offset)
    return {"total": total, "items": [service.device_dict(d) for d in rows]}


@router.get("/devices.geojson", summary="设备地图图层 Devices as GeoJSON")
def devices_geojson(db: ReadDB, who: Principal = Depends(require("iot.read")), bbox: str | None = None,
                    status: str | None = None, model: str | None = None,
                    max_points: int | None = Query(None, ge=1, le=20000, description=(
                        "above this many devices in bbox, answer counted cells (cluster, count, online, offline, "
                        "disabled)"))) -> dict[str, Any]:
    return service.devices_geojson(db, principal=who, bbox=bbox, status=status, model=model, max_points=max_points)


@router.post("/devices", status_code=201, summary="登记设备 Register a device (secret shown once)")
def create_device(body: schemas.DeviceIn, db: WriteDB,
                  who: Principal = Depends(require("iot.device.manage"))) -> dict[str, Any]:
    org_id = body.org_id if body.org_id is not None else who.org_id
    dev, secret = service.create_device(db, name=body.name, model=body.model, org_id=org_id, lon=body.lon,
                                        lat=body.lat, address=body.address, code=body.code, principal=who)
    return {**service.device_dict(dev), "secret": secret}


@router.post("/devices/import", summary="CSV 批量导入设备 Import devices from CSV (per-row report)")
async def import_devices(request: Request, who: Principal = Depends(require("iot.device.manage")),
                         dry_run: bool = False) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        f = form.get("file")
        if f is None or isinstance(f, str):
            raise Invalid("请上传 file 字段的 CSV 文件", "Upload the CSV as form field 'file'",
                          errors=[{"field": "file", "message": "required"}])
        data = await f.read()
    else:
        data = await request.body()
    if len(data) > MAX_BODY:
        raise PayloadTooLarge("文件超过 16 MB", "File larger than 16 MB")

    def run() -> dict[str, Any]:
        with get_db().write() as s:
            return service.import_csv(s, data=data, principal=who, dry_run=dry_run)

    return await run_in_threadpool(run)


@router.get("/devices/{code}", summary="设备详情 One device")
def device(code: str, db: ReadDB, who: Principal = Depends(require("iot.read"))) -> dict[str, Any]:
    return service.device_dict(service.get_device(db, code=code, principal=who))


@router.patch("/devices/{code}", summary="修改/停用设备 Change or disable a device")
def patch_device(code: str, body: schemas.DevicePatch, db: WriteDB,
                 who: Principal = Depends(require("iot.device.manage"))) -> dict[str, Any]:
    dev = service.update_device(db, code=code, principal=who, **body.model_dump(exclude_unset=True))
    return service.device_dict(dev)


@router.post("/devices/{code}/secret", summary="轮换设备密钥 Rotate the device secret (shown once)")
def rotate(code: str, db: WriteDB, who: Principal = Depends(require("iot.device.manage"))) -> dict[str, Any]:
    return {"code": code, "secret": service.rotate_secret(db, code=code, principal=who)}


@router.get("/devices/{code}/latest", summary="最新值 Latest values")
def latest(code: str, db: ReadDB, who: Principal = Depends(require("iot.read"))) -> dict[str, Any]:
    return service.device_latest(db, code=code, principal=who)


@router.get("/devices/{code}/readings", summary="历史数据 Readings (raw or downsampled)")
def device_readings(code: str, db: ReadDB, property: str, who: Principal = Depends(require("iot.read")),
                    since: dt.datetime | None = None, until: dt.datetime | None = None,
                    interval_s: int | None = Query(None, ge=1, le=86400 * 31),
                    limit: int = Query(1000, ge=1, le=20000)) -> dict[str, Any]:
    for name, t in (("since", since), ("until", until)):
        if t is not None and t.tzinfo is None:
            raise Invalid("时间需带时区", "Times need a timezone", errors=[{"field": name, "message": "e.g. +08:00"}])
    return service.readings(db, code=code, prop=property, principal=who, since=since, until=until,
                            interval_s=interval_s, limit=limit)


@router.get("/grids/{grid_code}/latest", summary="网格内设备最新值 Latest values in one grid")
def grid_latest(grid_code: str, db: ReadDB, who: Principal = Depends(require("iot.read"))) -> Response:
    doc = {"grid_code": grid_code, "devices": service.grid_latest(db, grid_code=grid_code, principal=who)}
    return Response(orjson.dumps(doc, option=orjson.OPT_UTC_Z), media_type="application/json")  # many nested values: skip the encoder


@router.get("/aggregate", summary="区域统计 avg/min/max per grid, community or town")
def aggregate(db: ReadDB, property: str, who: Principal = Depends(require("iot.read")), level: str = "grid",
              model: str | None = None, since: dt.datetime | None = None,
              until: dt.datetime | None = None) -> dict[str, Any]:
    for name, t in (("since", since), ("until", until)):
        if t is not None and t.tzinfo is None:
            raise Invalid("时间需带时区", "Times need a timezone", errors=[{"field": name, "message": "e.g. +08:00"}])
    return {"property": property, "level": level,
            "areas": service.aggregate(db, prop=property, principal=who, level=level, model=model, since=since,
                                       until=until)}


@router.post("/gateways", status_code=201, summary="签发网关密钥 Issue a gateway key (shown once)")
def create_gateway(body: schemas.GatewayIn, db: WriteDB,
                   who: Principal = Depends(require("iot.device.manage"))) -> dict[str, Any]:
    key, key_id = service.create_gateway_key(db, name=body.name,
                                             org_id=body.org_id if body.org_id is not None else who.org_id,
                                             principal=who)
    return {"id": key_id, "key": key, "scopes": ["iot.ingest"]}


# --- rules and alarms ---------------------------------------------------------------------------------------------


@router.get("/rules", summary="告警规则 Alarm rules")
def rules(db: ReadDB, who: Principal = Depends(require("iot.read")), model: str | None = None) -> list[dict]:
    return [service.rule_dict(r) for r in service.list_rules(db, model=model)]


@router.post("/rules", status_code=201, summary="新建告警规则 Add an alarm rule")
def create_rule(body: schemas.RuleIn, db: WriteDB, who: Principal = Depends(require("iot.rule.manage"))) -> dict:
    r = service.create_rule(db, principal=who, **body.model_dump())
    return service.rule_dict(r)


@router.patch("/rules/{rule_id}", summary="修改告警规则 Change an alarm rule")
def patch_rule(rule_id: int, body: schemas.RulePatch, db: WriteDB,
               who: Principal = Depends(require("iot.rule.manage"))) -> dict:
    r = service.update_rule(db, rule_id=rule_id, principal=who, **body.model_dump(exclude_unset=True))
    return service.rule_dict(r)


@router.get("/alarms", summary="告警列表 Alarms")
def alarms(db: ReadDB, who: Principal = Depends(require("iot.read")), status: str | None = None,
           severity: int | None = Query(None, ge=1, le=4), device_code: str | None = None,
           grid_code: str | None = None, limit: int = Query(50, ge=1, le=1000),
           offset: int = Query(0, ge=0)) -> dict[str, Any]:
    total, rows = service.list_alarms(db, principal=who, status=status, severity=severity, device_code=device_code,
                                      grid_code=grid_code, limit=limit, offset=offset)
    return {"total": total, "items": [service.alarm_dict(a) for a in rows]}


@router.get("/alarms.geojson", summary="告警地图图层 Alarms as GeoJSON")
def alarms_geojson(db: ReadDB, who: Principal = Depends(require("iot.read")), bbox: str | None = None,
                   status: str | None = "active") -> dict[str, Any]:
    return service.alarms_geojson(db, principal=who, bbox=bbox, status=status)


@router.get("/alarms/{alarm_id}", summary="告警详情 One alarm")
def alarm(alarm_id: int, db: ReadDB, who: Principal = Depends(require("iot.read"))) -> dict[str, Any]:
    return service.alarm_dict(service.get_alarm(db, alarm_id=alarm_id, principal=who))


@router.post("/alarms/{alarm_id}/ack", summary="确认告警 Acknowledge an alarm")
def ack(alarm_id: int, db: WriteDB, body: schemas.AlarmAck | None = None,
        who: Principal = Depends(require("iot.alarm.ack"))) -> dict[str, Any]:
    a = service.acknowledge_alarm(db, alarm_id=alarm_id, principal=who, note=body.note if body else None)
    return service.alarm_dict(a)


@router.post("/alarms/{alarm_id}/close", summary="人工解除告警 Clear an alarm by hand (reason required)")
def close(alarm_id: int, body: schemas.AlarmClose, db: WriteDB,
          who: Principal = Depends(require("iot.alarm.ack"))) -> dict[str, Any]:
    return service.alarm_dict(service.close_alarm(db, alarm_id=alarm_id, principal=who, note=body.note))


@router.get("/dead-letters", summary="拒收数据 Rejected readings with reasons")
def dead_letters(db: ReadDB, who: Principal = Depends(require("iot.read")), device_code: str | None = None,
                 reason: str | None = None, limit: int = Query(50, ge=1, le=1000),
                 offset: int = Query(0, ge=0)) -> dict[str, Any]:
    total, rows = service.dead_letters(db, principal=who, device_code=device_code, reason=reason, limit=limit,
                                       offset=offset)
    items = [{"id": r.id, "device_code": r.device_code, "property": r.prop, "ts": r.ts, "value": r.value,
              "reason": r.reason, "reason_zh": service.REASONS.get(r.reason, (r.reason,))[0], "detail": r.detail,
              "source": r.source, "sender": r.sender, "received_at": r.received_at} for r in rows]
    return {"total": total, "items": items}


@router.get("/dead-letters/summary", summary="拒收统计 Rejections per device and reason")
def dead_letter_summary(db: ReadDB, who: Principal = Depends(require("iot.read")),
                        device_code: str | None = None) -> list[dict[str, Any]]:
    return service.dead_letter_counts(db, principal=who, device_code=device_code)


@router.get("/summary", summary="物联态势 Summary for the operations centre")
def summary(db: ReadDB, who: Principal = Depends(require("iot.read"))) -> dict[str, Any]:
    return service.ioc_summary(db, principal=who)
