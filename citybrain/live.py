"""Live push: `GET /api/v1/live`, a Server-Sent Events stream of bus events the caller may see.

Every event committed on the bus reaches open streams through `bus.listen`. A stream carries an event only if
the caller holds the read permission of the event's module (`TOPIC_PERMISSIONS`) and, unless the caller is
city-wide, the event's `org_ids` include an organisation in the caller's data scope. Comments (`: heartbeat`)
keep proxies from closing idle streams; the credential is checked again every `RECHECK_SECONDS`, so logging
out, disabling the account or revoking the key ends the stream. A client that reconnects with `Last-Event-ID`
is sent the events it missed (up to `REPLAY_LIMIT`). See docs/live.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from citybrain import bus
from citybrain.context import Principal
from citybrain.db import get_db
from citybrain.deps import current_principal
from citybrain.errors import Invalid, Problem

log = logging.getLogger("citybrain.live")

# module (first topic token) -> the permission needed to see its events; topics of other modules are not pushed
TOPIC_PERMISSIONS: dict[str, str] = {"iot": "iot.read", "cases": "case.read", "data": "data.stats"}
HEARTBEAT_SECONDS = 15.0
RECHECK_SECONDS = 60.0
QUEUE_SIZE = 1000
REPLAY_LIMIT = 500

router = APIRouter(prefix="/api/v1", tags=["core"])


def visible(principal: Principal, topic: str, payload: dict) -> bool:
    """True if the principal may see an event of this topic and payload."""
    perm = TOPIC_PERMISSIONS.get(topic.split(".", 1)[0])
    if perm is None or not principal.can(perm):
        return False
    if principal.org_scope is None:
        return True
    org_ids = payload.get("org_ids") if isinstance(payload, dict) else None
    if not isinstance(org_ids, list):
        return False
    return any(isinstance(o, int) and o in principal.org_scope for o in org_ids)


def _patterns(topics: str | None) -> tuple[str, ...]:
    if not topics:
        return (">",)
    out = []
    for raw in topics.split(","):
        p = raw.strip()
        tokens = p.split(".")
        if not p or any(not t for t in tokens) or (">" in tokens[:-1]) or any(
            not (t in ("*", ">") or t.replace("_", "").replace("-", "").isalnum()) for t in tokens
        ):
            raise Invalid(f"主题模式无效：{p!r}", f"Invalid topic pattern: {p!r}",
                          errors=[{"field": "topics", "message": "dot-separated tokens, * or a final >"}])
        out.append(p)
    return tuple(out)


def format_event(event_id: int, topic: str, payload: dict) -> str:
    """One SSE message: `id`, `event` (the topic) and `data` (the JSON payload)."""
    data = orjson.dumps({"topic": topic, "payload": payload}, default=str, option=orjson.OPT_UTC_Z).decode()
    return f"id: {event_id}\nevent: {topic}\ndata: {data}\n\n"


def _replay(after_id: int, until_id: int) -> list[bus.Event]:
    with get_db().read() as s:
        rows = s.execute(
            select(bus.BusEvent.id, bus.BusEvent.topic, bus.BusEvent.payload, bus.BusEvent.created_at)
            .where(bus.BusEvent.id > after_id, bus.BusEvent.id <= until_id)
            .order_by(bus.BusEvent.id)
            .limit(REPLAY_LIMIT)
        ).all()
    return [bus.Event(r.id, r.topic, r.payload, r.created_at) for r in rows]


def _recheck(request: Request) -> bool:
    """True while the stream's credential is still good (logout, disabling, revocation end it)."""
    from citybrain.deps import _credential
    from citybrain.identity import service as identity

    cred = _credential(request)
    if not cred:
        return False
    try:
        with get_db().write() as s:
            if cred.startswith("cbk_"):
                identity.principal_from_api_key(s, key=cred)
            else:
                identity.principal_from_token(s, token=cred, touch=False)
    except Problem:
        return False
    return True


class _Stream:
    """The bridge from the dispatcher's thread to one client's event loop."""

    def __init__(self, principal: Principal, patterns: Iterable[str]):
        self.principal = principal
        self.patterns = tuple(patterns)
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[bus.Event] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.dropped = 0

    def wanted(self, ev: bus.Event) -> bool:
        return any(bus.topic_matches(p, ev.topic) for p in self.patterns) and visible(
            self.principal, ev.topic, ev.payload)

    def on_event(self, ev: bus.Event) -> None:  # dispatcher thread
        if self.wanted(ev):
            self.loop.call_soon_threadsafe(self._put, ev)

    def _put(self, ev: bus.Event) -> None:  # event loop
        try:
            self.queue.put_nowait(ev)
        except asyncio.QueueFull:
            self.dropped += 1


@router.get(
    "/live",
    summary="实时推送 Live events (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={200: {"description": "text/event-stream of `id`/`event`/`data` messages and `: heartbeat` comments",
                     "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def live(
    request: Request,
    who: Principal = Depends(current_principal),
    topics: str | None = Query(default=None, max_length=400,
                               description="comma-separated topic patterns, e.g. `iot.alarm.*,cases.>`"),
) -> StreamingResponse:
    patterns = _patterns(topics)
    stream = _Stream(who, patterns)
    last_id = request.headers.get("last-event-id", "")
    resume = int(last_id) if last_id.isdigit() and len(last_id) < 19 else None
    unsubscribe = bus.listen(stream.on_event)
    head = bus.dispatcher()._last_seen or 0

    async def body() -> AsyncIterator[str]:
        sent_up_to = 0
        try:
            yield f"retry: 5000\n: connected as {who.label}\n\n"
            if resume is not None and resume < head:
                for ev in await run_in_threadpool(_replay, resume, head):
                    if stream.wanted(ev):
                        yield format_event(ev.id, ev.topic, ev.payload)
                sent_up_to = head
            checked = time.monotonic()
            while True:
                try:
                    ev = await asyncio.wait_for(stream.queue.get(), timeout=HEARTBEAT_SECONDS)
                except TimeoutError:
                    if await request.is_disconnected():
                        break
                    yield ": heartbeat\n\n"
                else:
                    if ev.id > sent_up_to:
                        yield format_event(ev.id, ev.topic, ev.payload)
                if stream.dropped:
                    yield f"event: overflow\ndata: {{\"dropped\": {stream.dropped}}}\n\n"
                    stream.dropped = 0
                if time.monotonic() - checked >= RECHECK_SECONDS:
                    checked = time.monotonic()
                    if not await run_in_threadpool(_recheck, request):
                        yield "event: logout\ndata: {}\n\n"
                        break
        finally:
            unsubscribe()

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
