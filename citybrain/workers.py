"""`citybrain serve --workers N`: N worker processes behind one listening socket, with the connections spread
by the parent instead of by the kernel's accept race.

With uvicorn's own multi-process mode every worker accepts from the shared socket, and whichever process
wakes first takes the connection: a client holding a few keep-alive connections (a consumer's pool, `wrk
-c8`) often ends up with most or all of them on one process while the others idle (measured: 8 connections
split 4/4, 3/5, 2/6 or 8/0 between two workers, the rate falling to a half or a third). Here the parent
accepts every connection and hands it, over a Unix socket (`SCM_RIGHTS`), to the next ready worker in turn,
passing over a worker that holds many more connections than the least-loaded one; each worker serves the connections it is given with uvicorn's own
HTTP protocol (`loop.connect_accepted_socket`) and reports every connection that ends. Accepting costs the
parent one `accept` and one `sendmsg` per connection, not per request.

Everything else is uvicorn's: each worker is a `uvicorn.Server` (lifespan, graceful shutdown of its
connections on SIGTERM or SIGINT, the app built by `citybrain.app:create_app`), and `app.runs_background`
still picks the one process that runs the background work. The parent restarts a worker that dies (and
stops if a worker fails during startup, as uvicorn does), and on SIGTERM or SIGINT stops accepting, asks
every worker to finish its requests, and waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from citybrain.config import RELAY_ENV, ROLE_ENV

log = logging.getLogger("uvicorn.error")

READY = b"r"  # worker -> parent: startup done, send connections
CLOSED = b"-"  # worker -> parent: one per connection that ended (several may come in one message)
CONN = b"c"  # parent -> worker: with one connection's file descriptor


def serve(config: uvicorn.Config) -> None:
    """Run `config.workers` worker processes on `config.host:config.port`, connections spread by the parent."""
    listener = config.bind_socket()
    listener.listen(config.backlog)
    if not Dispatcher(config, listener).run():
        sys.exit(STARTUP_FAILURE)


def new_relay_address() -> str:
    """A fresh name for this server's ingest process's socket (in Linux's abstract namespace: no file)."""
    return f"citybrain-ingest-{os.getpid()}-{os.urandom(6).hex()}"


# --- the HTTP protocol ---------------------------------------------------------------------------------------------------


class _Coalesced:
    """A connection's transport whose writes made in one turn of the event loop leave together: a response's
    head and body (two ASGI messages, two writes in uvicorn) go out in one send, one TCP segment for a small
    answer, instead of two sends each waking the client. Writes are held until the end of the loop's turn
    (or until 64 kB are held); closing sends what is held first."""

    __slots__ = ("_t", "_loop", "_buf", "_held")
    HOLD = 64 * 1024

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._t, self._loop = transport, loop
        self._buf: list[bytes] | None = None
        self._held = 0

    def write(self, data: bytes) -> None:
        if self._buf is None:
            self._buf, self._held = [data], len(data)
            self._loop.call_soon(self._flush)
        else:
            self._buf.append(data)
            self._held += len(data)
            if self._held >= self.HOLD:
                self._flush()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        buf, self._buf = self._buf, None
        if buf and not self._t.is_closing():
            self._t.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def write_eof(self) -> None:
        self._flush()
        self._t.write_eof()

    def close(self) -> None:
        self._flush()
        self._t.close()

    def abort(self) -> None:
        self._buf = None
        self._t.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


class HttpProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP/1.1 protocol, writing each response's head and body in one send (`_Coalesced`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_Coalesced(transport, self.loop))  # type: ignore[arg-type]


# --- the worker process ------------------------------------------------------------------------------------------------


def _worker_main(config: uvicorn.Config, channel: socket.socket, role: str | None = None) -> None:
    if role:
        os.environ[ROLE_ENV] = role
    config.configure_logging()
    with contextlib.suppress(KeyboardInterrupt):  # the parent has been told too and stops every worker
        Worker(config, channel).run()


class _Channel:
    """Stands in for the listening server in `uvicorn.Server.shutdown`: closing it tells the parent to send
    this worker no more connections."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket):
        self.loop, self.sock = loop, sock

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    async def wait_closed(self) -> None:
        return None


class Worker(uvicorn.Server):
    """A uvicorn server that serves the connections its parent hands it instead of accepting its own."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket):
        super().__init__(config)
        self.channel = channel
        self.unreported = 0  # ended connections not yet reported (the channel was full)
        self.connecting: set[asyncio.Task[None]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        config, state, app_state = self.config, self.server_state, self.lifespan.state
        worker = self

        class Counted(config.http_protocol_class):  # type: ignore[misc, name-defined]
            def connection_lost(self, exc: Exception | None) -> None:
                try:
                    super().connection_lost(exc)
                finally:
                    worker.ended()

        def protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return Counted(config=config, server_state=state, app_state=app_state, _loop=_loop)

        loop = asyncio.get_running_loop()
        self.channel.setblocking(False)
        loop.add_reader(self.channel.fileno(), self._take, loop, protocol)
        self.servers = [_Channel(loop, self.channel)]  # type: ignore[list-item]
        self.channel.send(READY)
        if os.environ.get(ROLE_ENV) == "ingest":
            log.info("Ingest process [%d] ready (telemetry from the workers, background work)", os.getpid())
        else:
            log.info("Worker process [%d] ready for connections", os.getpid())
        self.started = True

    def _take(self, loop: asyncio.AbstractEventLoop, protocol: Any) -> None:
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self.channel, 16, 16, socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                msg, fds = b"", []
            if not msg and not fds:  # the parent has gone: finish what is running and stop
                self.servers[0].close()
                self.should_exit = True
                return
            for fd in fds:
                task = loop.create_task(self._connect(loop, protocol, socket.socket(fileno=fd)))
                self.connecting.add(task)
                task.add_done_callback(self.connecting.discard)

    async def _connect(self, loop: asyncio.AbstractEventLoop, protocol: Any, sock: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(protocol, sock, ssl=self.config.ssl)
        except Exception:  # noqa: BLE001 - the client went away before it was served
            sock.close()
            self.ended()

    def ended(self) -> None:
        """Report one ended connection to the parent at once (its count of this worker's connections is
        what it balances on; batched only while the channel is full)."""
        self.unreported += 1
        try:
            self.channel.send(CLOSED * self.unreported)
            self.unreported = 0
        except (BlockingIOError, InterruptedError):
            pass  # sent with the next one
        except OSError:
            self.unreported = 0  # the channel is closed: shutting down, nobody is counting


# --- the parent ----------------------------------------------------------------------------------------------------------


class _Proc:
    __slots__ = ("process", "channel", "ready", "open", "replaces", "role")

    def __init__(self, process: Any, channel: socket.socket, role: str | None = None):
        self.process, self.channel, self.role = process, channel, role
        self.ready = False
        self.open = 0  # connections handed to it that it has not reported ended
        self.replaces: _Proc | None = None  # the worker it takes over from once ready (SIGHUP)


class Dispatcher:
    """Accepts on the listening socket and hands each connection to a ready worker (`_pick`)."""

    def __init__(self, config: uvicorn.Config, listener: socket.socket):
        self.config, self.listener = config, listener
        self.procs: list[_Proc] = []
        self.retiring: list[Any] = []  # ended workers' processes not yet reaped
        self.failed = False  # a worker failed during startup
        self.sel = selectors.DefaultSelector()
        self.turn = 0
        self.stopping = False
        self.accepting = False
        self.opened = False  # accepting began: once every worker was ready, or STARTUP_WAIT_S passed
        self.began = time.monotonic()
        self.spawn = multiprocessing.get_context("spawn")

    # workers

    def _start(self, role: str | None = None) -> _Proc:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        process = self.spawn.Process(target=_worker_main, args=(self.config, theirs, role),
                                     name="citybrain-ingest" if role == "ingest" else "citybrain-worker")
        process.start()
        theirs.close()
        mine.setblocking(False)
        p = _Proc(process, mine, role)
        self.sel.register(mine, selectors.EVENT_READ, p)
        log.info("Started %s process [%d]", "ingest" if role == "ingest" else "worker", process.pid)
        return p

    def _retire(self, p: _Proc) -> None:
        """Send `p` no more connections and close its channel: it finishes its requests and stops."""
        if p in self.procs:
            self.procs.remove(p)
        if p.channel.fileno() >= 0:
            self.sel.unregister(p.channel)
            p.channel.close()
        self.retiring.append(p.process)  # reaped once it has finished

    def _gone(self, p: _Proc, was_ready: bool) -> None:
        """A worker's channel closed: it is stopping or dead; unless the server is stopping, replace it (a
        worker that stopped before it was ready is waited for: if it failed its startup, the server stops,
        or, during a reload, the worker it was to replace stays)."""
        self._retire(p)
        if self.stopping:
            return
        if not was_ready:
            p.process.join(timeout=30)
            if p.process.exitcode == STARTUP_FAILURE:
                if p.replaces is not None and p.replaces in self.procs:
                    log.error("Worker process [%d] failed to start; reload stopped, [%d] kept", p.process.pid,
                              p.replaces.process.pid)
                    return
                log.error("Worker process [%d] failed to start; stopping", p.process.pid)
                self.failed = self.stopping = True
                return
        if any(q.replaces is p for q in self.procs):
            return  # its replacement is starting already
        log.info("Worker process [%d] ended; starting another", p.process.pid)
        self.procs.append(self._start(p.role))

    def _reload(self) -> None:
        """SIGHUP: start a new worker for each; each old one is retired once its replacement is ready."""
        for p in [q for q in self.procs if q.replaces is None]:
            if p.role == "ingest":  # one at a time: the new one takes over the lock and the socket when it is gone
                self._retire(p)
                self.procs.append(self._start("ingest"))
                continue
            new = self._start(p.role)
            new.replaces = p
            self.procs.append(new)

    # connections

    SLACK = 8  # a worker this many connections above the least-loaded one is passed over

    def _pick(self, tried: list[_Proc]) -> _Proc | None:
        """The next ready worker in turn (not one of `tried`), passing over any that holds `SLACK` or more
        connections than the least-loaded one. Taking turns spreads a burst of new connections exactly (a
        client opening 8 gets 4 on each of 2 workers); the counts only bound the drift that connections of
        different lifetimes cause, because they lag: a worker reports an ended connection only once it has
        seen the close, which on a busy machine can come after the next burst has been handed out."""
        for p in list(self.procs):  # the latest reports first
            if p.channel.fileno() >= 0:
                self._message(p)
        ready = [p for p in self.procs if p.ready and p not in tried and p.role != "ingest"]
        if not ready:
            return None
        floor = min(p.open for p in ready) + self.SLACK
        n = len(self.procs)
        for i in range(n):
            p = self.procs[(self.turn + i) % n]
            if p.ready and p not in tried and p.open < floor and p.role != "ingest":
                self.turn = (self.turn + i + 1) % n
                return p
        return None

    def _accept(self) -> None:
        for _ in range(64):
            try:
                conn, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: log, leave it in the backlog for now
                log.warning("accept failed: %s", exc)
                return
            try:  # (the worker's transport sets TCP_NODELAY)
                tried: list[_Proc] = []
                while True:
                    p = self._pick(tried)
                    if p is None:
                        log.warning("no worker could take a connection; closed it")
                        break
                    tried.append(p)
                    try:
                        socket.send_fds(p.channel, [CONN], [conn.fileno()])
                        p.open += 1
                        break
                    except (BlockingIOError, InterruptedError):
                        continue  # this worker's queue is full: the next one
                    except OSError:
                        p.ready = False  # gone; its channel's EOF is handled by the loop
            finally:
                conn.close()  # the worker holds its own copy now

    STARTUP_WAIT_S = 60.0

    def _set_accepting(self) -> None:
        """Accept while a worker is ready; at startup only once every worker is (connections wait in the
        backlog meanwhile), so the first clients' keep-alive connections do not all stay on the first worker
        up; after STARTUP_WAIT_S with those that are."""
        if not self.opened:
            self.opened = (all(p.ready for p in self.procs)
                           or time.monotonic() - self.began > self.STARTUP_WAIT_S)
        want = not self.stopping and self.opened and any(p.ready and p.role != "ingest" for p in self.procs)
        if want and not self.accepting:
            self.sel.register(self.listener, selectors.EVENT_READ, None)
        elif not want and self.accepting:
            self.sel.unregister(self.listener)
        self.accepting = want

    def _message(self, p: _Proc) -> None:
        while True:
            try:
                msg = p.channel.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                msg = b""
            if not msg:
                was_ready, p.ready = p.ready, False
                self._gone(p, was_ready)
                return
            if msg == READY:
                p.ready = True
                if p.replaces is not None:  # a reload: the old worker finishes its requests and stops
                    old, p.replaces = p.replaces, None
                    log.info("Worker process [%d] replaces [%d]", p.process.pid, old.process.pid)
                    self._retire(old)
            else:
                p.open = max(0, p.open - msg.count(CLOSED))

    # the loop

    def run(self) -> bool:
        """Start the workers and dispatch until SIGINT or SIGTERM, then stop them gracefully; False if a
        worker failed during startup."""
        log.info("Started parent process [%d]: %d workers, connections handed out in turn", os.getpid(),
                 self.config.workers)
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        self.sel.register(wake_r, selectors.EVENT_READ, "wake")
        old_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        caught: list[int] = []
        old = {sig: signal.signal(sig, lambda s, _f: caught.append(s))
               for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        self.listener.setblocking(False)
        try:
            if self.config.workers > 1:  # HTTP workers and one ingest process (citybrain/iot/relay.py)
                os.environ[RELAY_ENV] = new_relay_address()
                self.procs = [self._start("ingest")] + [self._start("http") for _ in range(self.config.workers)]
            else:
                self.procs = [self._start()]
            while not self.stopping:
                self._set_accepting()
                events = self.sel.select(timeout=1.0)
                if signal.SIGHUP in caught:
                    caught.remove(signal.SIGHUP)
                    log.info("Received SIGHUP, restarting the workers")
                    self._reload()
                if caught:  # before the workers' channels: they may be closing on the same Ctrl+C
                    log.info("Received %s, stopping", signal.Signals(caught[0]).name)
                    break
                for key, _ev in events:
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            wake_r.recv(512)
                    elif key.fileobj.fileno() >= 0:  # type: ignore[union-attr]
                        self._message(key.data)
                self.retiring = [proc for proc in self.retiring if proc.exitcode is None]
        finally:
            self.stopping = True
            self._set_accepting()
            self.listener.close()
            for p in self.procs:
                if p.process.exitcode is None:
                    os.kill(p.process.pid, signal.SIGTERM)
            for p in self.procs:
                p.process.join()
                if p.channel.fileno() >= 0:
                    p.channel.close()
            for proc in self.retiring:
                proc.join()
            for sig, handler in old.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_fd)
            wake_r.close()
            wake_w.close()
            log.info("Stopped parent process [%d]", os.getpid())
        return not self.failed
