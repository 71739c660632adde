"""`citybrain serve` in a subprocess, for the benchmarks and the crash test: started on a data folder with
its own settings, answered `/healthz` before it is handed out, its output in `<data_dir>/server.log`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


class Server:
    """A running `citybrain serve` on `data_dir`; `env` adds or overrides CITYBRAIN_* settings."""

    def __init__(self, data_dir: Path, port: int, *, secret: str, database_url: str | None = None,
                 env: dict[str, str] | None = None, clean_env: bool = False, timeout_s: float = 120.0):
        base_env = {k: v for k, v in os.environ.items() if not (clean_env and k.startswith("CITYBRAIN_"))}
        base_env.pop("CITYBRAIN_DATABASE_URL", None)
        full = {**base_env, "CITYBRAIN_DATA_DIR": str(data_dir), "CITYBRAIN_SECRET_KEY": secret, **(env or {})}
        if database_url:
            full["CITYBRAIN_DATABASE_URL"] = database_url
        self.log = open(data_dir / "server.log", "ab")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen([sys.executable, "-c", "from citybrain.cli import main; main()", "serve",
                                      "--host", "127.0.0.1", "--port", str(port)], env=full,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start; see {data_dir / 'server.log'}")

    def rss_mb(self) -> float:
        """The server process's resident memory in MB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server and its worker processes (`serve --workers N`),
        from /proc: a bench divides the difference by the work done, which compares across runs on a shared
        machine better than the rate does."""
        tick = os.sysconf("SC_CLK_TCK")
        pids = [self.proc.pid]
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # a worker that ended meanwhile
                continue
            total += int(fields[11]) + int(fields[12])
        return total / tick

    def stop(self) -> None:
        """Terminate the server (kill it if it does not stop within 15 s)."""
        terminate(self.proc, 15)
        self.log.close()


def terminate(proc: subprocess.Popen, timeout_s: float) -> None:
    """Stop a child process: SIGTERM, then SIGKILL if it has not ended within `timeout_s`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the system picks it), for a test's own server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
