"""Fixtures of the data hub tests: a small demo hub, department users and consumer keys."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from citybrain import context, served
from citybrain.data import demo, exchangelog
from citybrain.db import Database
from citybrain.identity import service as identity
from tests.conftest import DEMO_PASSWORD, login

POP = "440115-1-01-001-0001"
ENT = "440115-1-02-001-0001"
PLACE = "440115-1-03-001-0001"
LIC = "440115-1-05-001-0001"
LOWINCOME = "440115-3-MZJ-001"
HEALTH = "440115-2-JKBZ-001"
SECRET = "440115-3-GAJ-009"


@pytest.fixture
def hub(db: Database) -> Database:
    """The demo hub at a small size (catalogue, base data, requests, one day of traffic)."""
    exchangelog.LIMITER.reset()
    demo.seed(db, people=300, entities=120, history_days=2, calls_per_day=150)
    context.set_principal(context.SYSTEM)
    return db


@pytest.fixture
def dept_user(hub: Database, client):
    """`dept_user("D-GAJ", "handler")` -> auth headers of a new user of that department and role."""
    made: dict[tuple[str, str], dict[str, str]] = {}

    def _make(org_code: str, role: str = "handler") -> dict[str, str]:
        if (org_code, role) not in made:
            name = f"{role}-{org_code.lower()}"
            with hub.write() as s:
                org = identity.org_by_code(s, code=org_code)
                identity.create_user(s, username=name, real_name="测试用户", password=DEMO_PASSWORD,
                                     org_id=org.id, roles=[role])
            made[(org_code, role)] = login(client, name)
        return made[(org_code, role)]

    return _make


@pytest.fixture
def consumer_key(hub: Database):
    """`consumer_key("D-YXZX")` -> X-API-Key headers of a new exchange key of that department."""

    def _make(org_code: str) -> dict[str, str]:
        with hub.write() as s:
            org = identity.org_by_code(s, code=org_code)
            key, _k = identity.create_api_key(s, name=f"test-{org_code}", scopes=["data.exchange"],
                                              kind="consumer", org_id=org.id)
        return {"X-API-Key": key}

    return _make


@contextlib.contextmanager
def running_server(data_dir: Path, port: int, **env: str) -> Iterator[str]:
    """A real `citybrain serve` subprocess on the SQLite database in `data_dir` (extra CITYBRAIN_* env)."""
    full = {**os.environ, "CITYBRAIN_DATA_DIR": str(data_dir), "CITYBRAIN_SECRET_KEY": "test-secret-not-for-production",
            **env}
    full.pop("CITYBRAIN_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-c", "from citybrain.cli import main; main()", "serve", "--port",
                             str(port)], env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                pytest.fail(proc.stderr.read().decode()[-2000:])
            time.sleep(0.1)
        yield base
    finally:
        served.terminate(proc, 15)
