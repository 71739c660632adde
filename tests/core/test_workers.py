"""`citybrain serve --workers N`: the parent hands the connections to the workers in turn."""

from __future__ import annotations

import http.client
import os
import re
import signal
import time
from pathlib import Path

import pytest

from citybrain.served import Server, free_port
from tests.conftest import TEST_SECRET

PORT = free_port()  # the system's pick when the module loads, so parallel suites never share it
pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc to see who holds a socket")


def _children(pid: int) -> set[int]:
    """The worker processes of the server `pid` (its children, without multiprocessing's resource tracker)."""
    out = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if ppid == pid and b"resource_tracker" not in cmd:
            out.add(int(d.name))
    return out


def _holder(client_port: int, pids: set[int]) -> int | None:
    """Which of `pids` holds the server side of the connection from local port `client_port`."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        local, remote = f[1], f[2]
        if int(local.split(":")[1], 16) == PORT and int(remote.split(":")[1], 16) == client_port:
            inode = f[9]
    if inode is None:
        return None
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def _open(n: int) -> list[http.client.HTTPConnection]:
    """`n` keep-alive connections, each having been answered once."""
    conns = []
    for _ in range(n):
        c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
        c.request("GET", "/healthz")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b'{"status":"ok"}'
        conns.append(c)
    return conns


def _split(conns: list[http.client.HTTPConnection], pids: set[int]) -> dict[int, list[int]]:
    """Worker pid -> the indexes of `conns` it serves."""
    by: dict[int, list[int]] = {p: [] for p in pids}
    for i, c in enumerate(conns):
        by[_holder(c.sock.getsockname()[1], pids)].append(i)
    return by


def _wait(cond, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_two_workers_share_keep_alive_connections_evenly(tmp_path):
    """8 keep-alive connections to a 2-worker server: 4 on each worker, every request on a connection
    answered by its worker (the ingest process takes none); the next burst is spread the same way; a worker
    that dies is replaced; SIGHUP replaces every worker and the ingest process; SIGTERM stops the parent and
    every worker."""
    log = tmp_path / "server.log"
    server = Server(tmp_path, PORT, secret=TEST_SECRET, env={"CITYBRAIN_WORKERS": "2"}, clean_env=True)
    try:
        _wait(lambda: log.read_text().count("ready for connections") == 2, "both workers")
        _wait(lambda: log.read_text().count("Ingest process [") == 1, "the ingest process")
        ingest = {int(m) for m in re.findall(r"Started ingest process \[(\d+)\]", log.read_text())}
        workers = _children(server.proc.pid) - ingest
        assert len(workers) == 2 and len(ingest) == 1 and ingest <= _children(server.proc.pid)
        conns = _open(8)
        by = _split(conns, workers)
        assert sorted(len(v) for v in by.values()) == [4, 4], by
        for c in conns:  # keep-alive: more requests on the same connections, each still served
            for _ in range(3):
                c.request("GET", "/healthz")
                assert c.getresponse().read() == b'{"status":"ok"}'
        assert _split(conns, workers) == by

        # the next burst is spread in turn too, whatever the connections before it did
        a, b = sorted(workers)
        for i in by[a]:
            conns[i].close()
        more = _open(4)
        assert sorted(len(v) for v in _split(more, workers).values()) == [2, 2]

        # a worker killed outright is replaced; the server goes on answering
        os.kill(a, signal.SIGKILL)
        _wait(lambda: log.read_text().count("ready for connections") == 3, "a replacement worker")
        now = _children(server.proc.pid) - ingest
        assert b in now and a not in now and len(now) == 2
        fresh = _open(4)
        assert all(_holder(c.sock.getsockname()[1], now) is not None for c in fresh)
        for c in conns + more + fresh:
            c.close()

        # SIGHUP: each worker is replaced by a new one once that one is ready
        os.kill(server.proc.pid, signal.SIGHUP)
        _wait(lambda: log.read_text().count(" replaces ") == 2, "the reload")
        _wait(lambda: log.read_text().count("Ingest process [") == 2, "the new ingest process")
        _wait(lambda: len(_children(server.proc.pid)) == 3, "the old workers to stop")
        ingest2 = {int(m) for m in re.findall(r"Started ingest process \[(\d+)\]", log.read_text())} - ingest
        reloaded = _children(server.proc.pid) - ingest2
        assert not reloaded & now and len(reloaded) == 2 and ingest2 <= _children(server.proc.pid)
        last = _open(4)
        assert sorted(len(v) for v in _split(last, reloaded).values()) == [2, 2]
        for c in last:
            c.close()
        now |= reloaded | ingest | ingest2
    finally:
        server.stop()
    assert server.proc.returncode == 0
    assert not {w for w in workers | now if Path(f"/proc/{w}").exists()}
    text = log.read_text()
    assert "Received SIGTERM, stopping" in text and text.count("Application shutdown complete") >= 2


def test_dispatch_takes_turns_and_passes_over_a_crowded_worker():
    """The parent's choice: workers in turn (ready ones only), except one holding `SLACK` or more connections
    than the least-loaded one; None when no worker is ready."""
    import socket

    import uvicorn

    from citybrain.workers import Dispatcher, _Proc

    d = Dispatcher(uvicorn.Config("x:y"), socket.socket())
    gone = socket.socket()
    gone.close()  # no channel to read reports from
    a, b, c = (_Proc(None, gone) for _ in range(3))
    a.ready = b.ready = True  # c is still starting
    d.procs = [a, b, c]

    def take(n: int) -> list[str]:
        out = []
        for _ in range(n):
            p = d._pick([])
            p.open += 1
            out.append("ab"[d.procs.index(p)])
        return out

    assert take(6) == ["a", "b", "a", "b", "a", "b"]
    b.open = a.open + Dispatcher.SLACK + 2  # b holds many long-lived connections: a gets the new ones until
    assert take(4) == ["a", "a", "a", "b"]  # the gap is under SLACK again, then they take turns
    assert take(2) == ["a", "b"]
    a.open = b.open - Dispatcher.SLACK + 1
    d.turn = 1
    assert d._pick([]) is b
    assert d._pick([b]) is a  # a worker that could not take the connection is not asked again
    a.ready = b.ready = False
    assert d._pick([]) is None
