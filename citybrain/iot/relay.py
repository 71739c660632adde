"""Telemetry relay for `citybrain serve --workers N` (N >= 2): the HTTP workers hand each telemetry request to
ONE ingest process over a local socket, so ingestion uses a second core while the IoT state stays in one place.

The IoT module keeps its registry, rule state, open alarms and latest values in the memory of the process that
ingests (docs/iot.md), so only one process per database may ingest. With one worker that process also serves
HTTP, and the GIL caps the whole server at one core. With several workers the parent starts one more process,
the *ingest process* (role `ingest`), which takes no connections: it holds the background lock (bus delivery,
MQTT, the status checker) and listens on a Unix socket. The HTTP workers (role `http`) parse HTTP and forward a
telemetry request's credentials and body unchanged; the ingest process authenticates, validates, stores,
evaluates the rules and commits (group commit, `iot.worker`) and answers with the result or the problem, which
the HTTP worker sends as the request's answer. An answer comes only after the commit, as with one process.

The HTTP workers also tell the ingest process when they change something it holds in memory: a device
(registered, edited, disabled, secret rotated), the device list (bulk import), the rules, or an alarm cleared by
hand (`notify`); and the ingest process tells every HTTP worker when it has committed events, so their live
streams (SSE) deliver alarms at once instead of at their next poll.

Wire format (both directions): a 13-byte head `kind (1 byte), id, meta length, body length (3 x uint32)`, then
the meta (JSON) and the body (bytes). Kinds: `T` telemetry (meta: the credential headers; body: the request
body), `N` a change notice (meta: `{"kind", "id"}`), `L` latest values (meta: device ids), `R` an answer (meta:
`{"ok": result}` and/or `{"problem": ...}`, or the latest values by device id), `W` events committed.

The latest value of each device and property lives in the ingest process's memory (the device rows get it at
most every 10 s): an HTTP worker answering a latest-values query asks the ingest process for the devices it
shows (`latest`), and falls back to the device rows only if the ingest process cannot be reached. The socket is in Linux's abstract namespace; each end checks that the other runs
as the same user (`SO_PEERCRED`), and nothing received is unpickled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import threading
import time
from functools import partial
from typing import Any

import orjson

from citybrain import errors
from citybrain.config import RELAY_ENV, process_role

log = logging.getLogger("citybrain.iot")


HEAD = struct.Struct("!cIII")
TELEMETRY, NOTICE, ANSWER, WAKE, LATEST = b"T", b"N", b"R", b"W", b"L"
CONNECT_WAIT_S = 30.0  # how long a request waits for the ingest process to (re)start before answering 503
ANSWER_WAIT_S = 120.0  # a request whose answer takes longer is answered 503 (its readings may still be stored)
CREDENTIAL_HEADERS = ("x-device-code", "x-device-secret", "x-api-key", "authorization")


def frame(kind: bytes, ident: int, meta: Any, body: bytes = b"") -> bytes:
    """One message on the relay socket."""
    m = orjson.dumps(meta)
    return HEAD.pack(kind, ident, len(m), len(body)) + m + body


def problem_doc(exc: BaseException) -> dict[str, Any]:
    """A problem as data, to be raised again on the other side (`problem_from`). An error that is not a
    Problem becomes the problem the app's handlers would have answered (a known database error, else 500)."""
    p = exc if isinstance(exc, errors.Problem) else errors.database_problem(exc)
    if p is None:
        log.error("telemetry failed in the ingest process", exc_info=exc)
        return {"cls": "Problem", "status": 500, "code": "internal", "zh": "服务器内部错误，已记录，请稍后重试",
                "en": "Internal error; it has been logged", "title_zh": "服务器内部错误",
                "title_en": "Internal server error", "errors": [], "headers": {}, "extra": {}}
    return {"cls": type(p).__name__, "status": p.status, "code": p.code, "zh": p.detail_zh, "en": p.detail_en,
            "title_zh": p.title_zh, "title_en": p.title_en, "errors": p.errors, "headers": p.headers,
            "extra": p.extra}


def problem_from(doc: dict[str, Any]) -> errors.Problem:
    """The Problem that `problem_doc` described (same class, status, code, messages, fields and extras)."""
    cls = getattr(errors, str(doc.get("cls")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.Problem)):
        cls = errors.Problem
    p = cls.__new__(cls)
    errors.Problem.__init__(p, doc["zh"], doc["en"], code=doc["code"], status=doc["status"], errors=doc["errors"],
                            headers=doc["headers"], **doc["extra"])
    p.title_zh, p.title_en = doc["title_zh"], doc["title_en"]
    return p


def unavailable() -> errors.Problem:
    return errors.Unavailable("数据接入服务正在重启，请稍后重试（未确认的数据可原样重发，不会重复入库）",
                              "Ingestion is restarting; please retry (unacknowledged readings may be sent again: "
                              "repeats are not stored twice)", code="ingest_unavailable",
                              headers={"Retry-After": "1"})


def _same_user(sock: socket.socket) -> bool:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


# --- the ingest process ------------------------------------------------------------------------------------------------


class RelayServer:
    """The ingest process's end: accepts the HTTP workers' connections and feeds their requests to the ingest
    thread (`iot.worker`); each answer goes back after the commit."""

    def __init__(self, db: Any, address: str):
        self.db, self.address = db, address
        self.sock: socket.socket | None = None
        self.conns: dict[socket.socket, threading.Lock] = {}
        self.lock = threading.Lock()
        self.stopping = False
        self._unwake: Any = None

    def start(self, wait_s: float = 30.0) -> None:
        """Listen (waiting up to `wait_s` for a predecessor that still holds the address) and accept in a thread."""
        deadline = time.monotonic() + wait_s
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(self.address)
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        sock.listen(64)
        self.sock = sock
        from citybrain import bus

        self._unwake = bus.add_waker(self._wake_all)
        threading.Thread(target=self._accept, name="citybrain-iot-relay", daemon=True).start()

    def stop(self) -> None:
        self.stopping = True
        if self._unwake is not None:
            self._unwake()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
        with self.lock:
            for conn in list(self.conns):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()  # type: ignore[union-attr]
            except OSError:
                return
            if not _same_user(conn):
                log.warning("relay: refused a connection from another user")
                conn.close()
                continue
            with self.lock:
                self.conns[conn] = threading.Lock()
            threading.Thread(target=self._serve, args=(conn,), name="citybrain-iot-relay-conn", daemon=True).start()

    def _send(self, conn: socket.socket, data: bytes) -> None:
        lock = self.conns.get(conn)
        if lock is None:
            return
        try:
            with lock:
                conn.sendall(data)
        except OSError:
            pass  # the worker has gone; its requests are answered 503 on its side

    def _wake_all(self) -> None:
        data = HEAD.pack(WAKE, 0, 0, 0)
        for conn in list(self.conns):
            self._send(conn, data)

    def _serve(self, conn: socket.socket) -> None:
        from citybrain.iot import api, service
        from citybrain.iot.worker import worker

        ingest = worker(self.db)
        f = conn.makefile("rb")
        try:
            while True:
                head = f.read(HEAD.size)
                if len(head) < HEAD.size:
                    return
                kind, ident, mlen, blen = HEAD.unpack(head)
                meta = orjson.loads(f.read(mlen)) if mlen else None
                body = f.read(blen) if blen else b""
                if kind == TELEMETRY:
                    done = partial(self._answer, conn, ident)
                    ingest.submit(partial(api._prepare, meta or {}, body), done, len(body))
                elif kind == LATEST and isinstance(meta, list):
                    docs = service.latest_in_memory(self.db, [i for i in meta if isinstance(i, int)])
                    self._send(conn, frame(ANSWER, ident, {str(k): v for k, v in docs.items()}))
                elif kind == NOTICE and isinstance(meta, dict):
                    try:
                        with self.db.read() as s:
                            service.apply_notice(s, kind=str(meta.get("kind")), ref=meta.get("id"))
                    except Exception:
                        log.exception("relay: could not apply a change notice; reloading the IoT state")
                        service.reset_state()
        except (OSError, ValueError):
            return
        finally:
            with self.lock:
                self.conns.pop(conn, None)
            f.close()
            conn.close()

    def _answer(self, conn: socket.socket, ident: int, part: Any, exc: BaseException | None) -> None:
        from citybrain.iot import api

        if exc is not None:
            meta: dict[str, Any] = {"problem": problem_doc(exc)}
        else:
            out, problem = api.answer(part)
            meta = {"ok": out} if problem is None else {"ok": out, "problem": problem_doc(problem)}
        self._send(conn, frame(ANSWER, ident, meta))


_server: RelayServer | None = None


def start_server(db: Any) -> None:
    """In the ingest process: listen on the address the parent chose."""
    global _server
    name = os.environ.get(RELAY_ENV)
    if process_role() != "ingest" or not name or _server is not None:
        return
    _server = RelayServer(db, "\0" + name)
    _server.start()


def stop_server() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None


# --- the HTTP workers --------------------------------------------------------------------------------------------------


class RelayClient:
    """An HTTP worker's end: one connection to the ingest process, shared by all its requests (by id)."""

    def __init__(self, address: str):
        self.address = address
        self.writer: asyncio.StreamWriter | None = None
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.next_id = 0
        self.connecting: asyncio.Lock | None = None
        self.reading: asyncio.Task[None] | None = None
        self.starting: asyncio.Task[None] | None = None

    async def _connected(self) -> asyncio.StreamWriter:
        if self.writer is not None and not self.writer.is_closing():
            return self.writer
        if self.connecting is None:
            self.connecting = asyncio.Lock()
        async with self.connecting:
            if self.writer is not None and not self.writer.is_closing():
                return self.writer
            deadline = time.monotonic() + CONNECT_WAIT_S
            while True:
                try:  # (uvloop takes no abstract socket name: connect here, hand it the socket)
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        sock.connect(self.address)
                    except OSError:
                        sock.close()
                        raise
                    sock.setblocking(False)
                    reader, writer = await asyncio.open_unix_connection(sock=sock)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise unavailable() from None
                    await asyncio.sleep(0.1)
            if not _same_user(sock):
                writer.close()
                raise unavailable()
            self.writer = writer
            self.reading = asyncio.get_running_loop().create_task(self._read(reader, writer))
            return writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(HEAD.size)
                kind, ident, mlen, blen = HEAD.unpack(head)
                meta = orjson.loads(await reader.readexactly(mlen)) if mlen else None
                if blen:
                    await reader.readexactly(blen)
                if kind == WAKE:
                    from citybrain import bus

                    bus.dispatcher().wake()
                    continue
                fut = self.pending.pop(ident, None)
                if fut is not None and not fut.done():
                    fut.set_result(meta)
        except (asyncio.IncompleteReadError, OSError, ValueError):
            pass
        finally:
            if self.writer is writer:
                self.writer = None
            writer.close()
            for fut in self.pending.values():  # what was in flight may or may not be stored: the sender resends
                if not fut.done():
                    fut.set_exception(unavailable())
            self.pending.clear()

    async def _send(self, kind: bytes, meta: Any, body: bytes = b"") -> asyncio.Future[dict[str, Any]] | None:
        writer = await self._connected()
        fut = None
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        if kind == TELEMETRY:
            fut = asyncio.get_running_loop().create_future()
            self.pending[self.next_id] = fut
        writer.write(frame(kind, self.next_id, meta, body))
        return fut

    async def ingest(self, headers: Any, raw: bytes) -> tuple[dict[str, Any], errors.Problem | None]:
        """Have the ingest process ingest one telemetry request: its result and the problem to answer instead
        (as `api.answer`); a problem before any reading was looked at (credentials, body) is raised here."""
        meta = {k: headers[k] for k in CREDENTIAL_HEADERS if k in headers}
        fut = await self._send(TELEMETRY, meta, raw)
        try:
            doc = await asyncio.wait_for(fut, ANSWER_WAIT_S)  # type: ignore[arg-type]
        except TimeoutError:
            raise unavailable() from None
        problem = problem_from(doc["problem"]) if "problem" in doc else None
        if "ok" not in doc:
            raise problem  # type: ignore[misc]
        return doc["ok"], problem


_client: RelayClient | None = None


def client() -> RelayClient | None:
    """This HTTP worker's relay client, or None when this process ingests itself."""
    global _client
    if process_role() != "http":
        return None
    if _client is None:
        _client = RelayClient("\0" + os.environ[RELAY_ENV])
    return _client


NOTICE_WAIT_S = 5.0


def notify(kind: str, ref: Any = None) -> None:
    """In an HTTP worker, after a commit: tell the ingest process that something it holds in memory changed
    (`service.apply_notice`). Blocking and short; if the ingest process cannot be reached within NOTICE_WAIT_S it
    is not running, and it loads everything afresh when it starts."""
    if process_role() != "http":
        return
    data = frame(NOTICE, 0, {"kind": kind, "id": ref})
    deadline = time.monotonic() + NOTICE_WAIT_S
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(NOTICE_WAIT_S)
                sock.connect("\0" + os.environ[RELAY_ENV])
                if _same_user(sock):
                    sock.sendall(data)
                return
        except OSError:
            if time.monotonic() > deadline:
                log.warning("relay: the ingest process was not reachable for a %s change notice", kind)
                return
            time.sleep(0.1)


def connect_soon() -> None:
    """In an HTTP worker's event loop at startup: connect to the ingest process now, so that its event wake-ups
    reach this worker's live streams before any telemetry has passed through it."""
    c = client()
    if c is None:
        return

    async def connect() -> None:
        with contextlib.suppress(errors.Problem):
            await c._connected()

    c.starting = asyncio.get_running_loop().create_task(connect())


def latest(ids: list[int]) -> dict[int, dict[str, Any]] | None:
    """In an HTTP worker: the ingest process's latest values of these devices ({id: {prop: [ts, value]}}, only
    devices it holds in memory); None when this process ingests itself or the ingest process is not reachable."""
    if process_role() != "http":
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(NOTICE_WAIT_S)
            sock.connect("\0" + os.environ[RELAY_ENV])
            if not _same_user(sock):
                return None
            sock.sendall(frame(LATEST, 0, ids))
            f = sock.makefile("rb")
            head = f.read(HEAD.size)
            if len(head) < HEAD.size:
                return None
            _kind, _ident, mlen, _blen = HEAD.unpack(head)
            doc = orjson.loads(f.read(mlen))
    except (OSError, ValueError):
        log.warning("relay: latest values not available from the ingest process; showing the device rows")
        return None
    return {int(k): v for k, v in doc.items()}
