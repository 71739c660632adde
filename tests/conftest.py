"""Test fixtures: a fresh database per test on SQLite and, when reachable, on PostgreSQL.

Every test that uses `db` (or `client`) runs once per backend. The PostgreSQL backend needs
CITYBRAIN_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres); when it is not
reachable those runs are skipped on a developer's machine and FAIL under CI=true. The same holds for
the `mosquitto` and `nats` fixtures.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient

from citybrain import bus, clock, context
from citybrain.config import Settings, configure
from citybrain.db import Database, set_db
from citybrain.identity import service as identity_service

identity_service.use_fast_password_hashing()  # cheap Argon2id in tests (production keeps library defaults)

PG_URL = os.environ.get("CITYBRAIN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"
TEST_SECRET = "test-secret-not-for-production"
DEMO_PASSWORD = "CityBrain@2026"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip (or, under CI=true, fail) when a production part is not running."""
    if not reachable(host, port):
        msg = f"{name} is not reachable at {host}:{port}"
        if IN_CI:
            pytest.fail(f"{msg}; CI must run the {name} tests", pytrace=False)
        pytest.skip(msg)


def make_settings(data_dir: Path, database_url: str | None = None) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url, secret_key=TEST_SECRET,
                    demo_password=DEMO_PASSWORD)


def _seed(db: Database) -> None:
    """What every test database starts with: migrations, roles, the demo district's orgs, users and map."""
    from citybrain import modules
    from citybrain.app import startup

    startup(db)
    for name in ("identity", "geo"):
        mod = modules.part(name, "demo")
        if mod is not None:
            mod.seed(db)


class _Templates:
    def __init__(self, root: Path):
        self.root = root
        self.sqlite: Path | None = None
        self.pg_template: str | None = None

    def sqlite_db(self, dest: Path) -> Database:
        if self.sqlite is None:
            tpl_dir = self.root / "sqlite-template"
            db = Database(configure(make_settings(tpl_dir)))
            set_db(db)
            _seed(db)
            db.dispose()  # the last connection to close checkpoints the WAL into the file
            set_db(None)
            self.sqlite = tpl_dir / "citybrain.db"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.sqlite, dest / "citybrain.db")
        return Database(configure(make_settings(dest)))

    def _admin(self):
        import psycopg

        return psycopg.connect(PG_URL, autocommit=True)

    def pg_db(self, dest: Path) -> tuple[Database, str]:
        base = urlparse(PG_URL)
        if self.pg_template is None:
            name = f"cbtpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            with self._admin() as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            url = base._replace(path=f"/{name}").geturl()
            db = Database(configure(make_settings(dest / "tpl", url)))
            set_db(db)
            _seed(db)
            db.dispose()
            set_db(None)
            self.pg_template = name
        name = f"cbt_{uuid.uuid4().hex[:10]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.pg_template}"')
        url = base._replace(path=f"/{name}").geturl()
        return Database(configure(make_settings(dest, url))), name

    def drop(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def cleanup(self) -> None:
        if self.pg_template:
            self.drop(self.pg_template)


@pytest.fixture(scope="session")
def templates(tmp_path_factory) -> Iterator[_Templates]:
    t = _Templates(tmp_path_factory.mktemp("templates"))
    yield t
    t.cleanup()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, templates: _Templates, tmp_path: Path) -> Iterator[Database]:
    """A fresh database holding the demo district's organisations, users and map, on each backend."""
    clock.reset()
    bus.reset()
    identity_service.forget_principals()
    pg_name = None
    if request.param == "postgres":
        u = urlparse(PG_URL)
        need_service("PostgreSQL", u.hostname or "127.0.0.1", u.port or 5432)
        database, pg_name = templates.pg_db(tmp_path)
    else:
        database = templates.sqlite_db(tmp_path)
    set_db(database)
    context.set_principal(context.SYSTEM)
    yield database
    bus.reset()
    set_db(None)
    database.dispose()
    clock.reset()
    configure(None)
    if pg_name:
        templates.drop(pg_name)


@pytest.fixture
def client(db: Database) -> Iterator[TestClient]:
    """An HTTP client on the app (bus dispatcher off: call `bus.drain()` to deliver events)."""
    from citybrain.app import create_app

    app = create_app(background=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def login(client: TestClient, username: str, password: str = DEMO_PASSWORD) -> dict[str, str]:
    """Log in and return the Authorization header."""
    r = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    client.cookies.clear()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
def as_role(client: TestClient):
    """`as_role("operator")` -> headers of that demo account (cached per test)."""
    cache: dict[str, dict[str, str]] = {}

    def _get(role: str) -> dict[str, str]:
        if role not in cache:
            cache[role] = login(client, role)
        return cache[role]

    return _get


@pytest.fixture
def mosquitto() -> str:
    need_service("Mosquitto", "127.0.0.1", 1883)
    return "mqtt://127.0.0.1:1883"


@pytest.fixture
def nats_url() -> str:
    need_service("NATS", "127.0.0.1", 4222)
    return "nats://127.0.0.1:4222"
