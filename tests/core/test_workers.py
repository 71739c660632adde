"""`citybrain serve --workers N`: the parent hands each connection to the least-loaded worker."""

from __future__ import annotations

import http.client
import os
import signal
import time
from pathlib import Path

import pytest

from citybrain.served import Server
from tests.conftest import TEST_SECRET

PORT = 8163

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
    answered by its worker; connections freed on one worker make it the next to get new ones; a worker
    that dies is replaced; SIGHUP replaces every worker; SIGTERM stops the parent and every worker."""
    log = tmp_path / "server.log"
    server = Server(tmp_path, PORT, secret=TEST_SECRET, env={"CITYBRAIN_WORKERS": "2"}, clean_env=True)
    try:
        _wait(lambda: log.read_text().count("ready for connections") == 2, "both workers")
        workers = _children(server.proc.pid)
        assert len(workers) == 2
        conns = _open(8)
        by = _split(conns, workers)
        assert sorted(len(v) for v in by.values()) == [4, 4], by
        for c in conns:  # keep-alive: more requests on the same connections, each still served
            for _ in range(3):
                c.request("GET", "/healthz")
                assert c.getresponse().read() == b'{"status":"ok"}'
        assert _split(conns, workers) == by

        # close the 4 connections of one worker: the next 4 all go to it (least loaded)
        a, b = sorted(workers)
        for i in by[a]:
            conns[i].close()
        _wait(lambda: all(_holder(conns[i].sock.getsockname()[1] if conns[i].sock else 0, {a}) is None
                          for i in by[a]), "the closed connections to end")
        time.sleep(1.0)  # the worker reports them ended; the parent reads that before the next accept
        more = _open(4)
        assert _split(more, workers) == {a: [0, 1, 2, 3], b: []}

        # a worker killed outright is replaced; the server goes on answering
        os.kill(a, signal.SIGKILL)
        _wait(lambda: log.read_text().count("ready for connections") == 3, "a replacement worker")
        now = _children(server.proc.pid)
        assert b in now and a not in now and len(now) == 2
        fresh = _open(4)
        assert all(_holder(c.sock.getsockname()[1], now) is not None for c in fresh)
        for c in conns + more + fresh:
            c.close()

        # SIGHUP: each worker is replaced by a new one once that one is ready
        os.kill(server.proc.pid, signal.SIGHUP)
        _wait(lambda: log.read_text().count(" replaces ") == 2, "the reload")
        _wait(lambda: len(_children(server.proc.pid)) == 2, "the old workers to stop")
        reloaded = _children(server.proc.pid)
        assert not reloaded & now
        last = _open(4)
        assert sorted(len(v) for v in _split(last, reloaded).values()) == [2, 2]
        for c in last:
            c.close()
        now |= reloaded
    finally:
        server.stop()
    assert server.proc.returncode == 0
    assert not {w for w in workers | now if Path(f"/proc/{w}").exists()}
    text = log.read_text()
    assert "Received SIGTERM, stopping" in text and text.count("Application shutdown complete") >= 2
