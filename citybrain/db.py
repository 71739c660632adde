"""Database engines, sessions, shared column types and Alembic migrations.

SQLite (the embedded default) runs in WAL mode with foreign keys and a busy timeout. Two engines share
one database: reads use deferred transactions; writes use ``BEGIN IMMEDIATE`` on SQLite so a
read-modify-write never fails on a stale snapshot. On PostgreSQL both are the same engine.

SQLite has one writer at a time. Within a process, writers queue on a lock of the database (the write gate)
before ``BEGIN IMMEDIATE`` and hand it on at ``COMMIT``/``ROLLBACK``, so the next writer starts at once instead
of sleeping in SQLite's busy handler (which polls with waits of 1-100 ms); other processes (`serve
--workers`) still meet at SQLite's own lock with the busy timeout.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import JSON, DateTime, MetaData, create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from citybrain import clock
from citybrain.config import Settings, get_settings

log = logging.getLogger("citybrain.db")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every CityBrain table."""

    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> dt.datetime:
    """The current time, timezone-aware in UTC (from `citybrain.clock`, so tests can move it)."""
    return clock.now()


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always returned timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


JSONType = JSON().with_variant(JSON(none_as_null=True), "sqlite")


def _json_dumps(obj: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


AUTOCHECKPOINT_PAGES = 10_000  # a committing connection checkpoints the WAL past this (the checkpointer's net)
CHECKPOINT_EVERY_S = 0.1


class Checkpointer:
    """Copies the SQLite WAL into the database file from its own thread and connection: a PASSIVE checkpoint
    every CHECKPOINT_EVERY_S, which SQLite runs without Python's GIL and without the write lock, so writers
    (the telemetry ingest thread above all) neither pay for it in their commits nor wait for it. A committing
    connection still checkpoints once the WAL holds AUTOCHECKPOINT_PAGES frames (when no checkpointer runs, or
    the WAL could not be reset because commits kept landing during the background checkpoints)."""

    def __init__(self, path: str):
        self.path = path
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.runs = 0

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="citybrain-checkpoint", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
            self.thread = None

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not self.stop_event.wait(CHECKPOINT_EVERY_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.runs += 1
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint failed: %s", exc)
        finally:
            conn.close()


WRITE_WAIT_S = 30.0  # how long a writer waits for the write gate (the same as SQLite's busy timeout)
BUSY_TIMEOUT_MS = 30000


class SQLiteWriteConnection(sqlite3.Connection):
    """A write-engine SQLite connection that takes its database's write gate for each write transaction."""

    gate: threading.Lock
    held = False

    def begin_immediate(self) -> None:
        """Wait for the write gate, then ``BEGIN IMMEDIATE`` (the gate is released at commit or rollback)."""
        if not self.gate.acquire(timeout=WRITE_WAIT_S):
            raise sqlite3.OperationalError("database is locked (another writer of this process holds it)")
        self.held = True
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._release()
            raise

    def try_begin_immediate(self) -> bool:
        """``BEGIN IMMEDIATE`` only if the write gate and SQLite's write lock are free at once, else False
        (for a caller that must not wait, an event loop: nothing is held when it returns False)."""
        if not self.gate.acquire(blocking=False):
            return False
        self.held = True
        try:
            self.execute("PRAGMA busy_timeout=0")
            try:
                self.execute("BEGIN IMMEDIATE")
            finally:
                self.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except sqlite3.OperationalError as exc:
            self._release()
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                return False
            raise
        except BaseException:
            self._release()
            raise
        return True

    def _release(self) -> None:
        if self.held:
            self.held = False
            self.gate.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            if not self.in_transaction:
                self._release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release()

    def __del__(self) -> None:  # a connection dropped without close: SQLite frees its lock, so do we
        self._release()


class Database:
    """The engines and session factories of one CityBrain database."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.url = settings.sqlalchemy_url
        self.checkpointer: Checkpointer | None = None
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            self.write_gate = threading.Lock()
            self.engine = self._sqlite_engine(immediate=False)
            self.write_engine = self._sqlite_engine(immediate=True)
        else:
            self.engine = create_engine(
                self.url, pool_size=10, max_overflow=20, pool_pre_ping=True, json_serializer=_json_dumps
            )
            self.write_engine = self.engine
        self.read_factory = sessionmaker(self.engine, expire_on_commit=False)
        self.write_factory = sessionmaker(self.write_engine, expire_on_commit=False)

    def _sqlite_engine(self, *, immediate: bool) -> Engine:
        engine = create_engine(
            self.url,
            connect_args={"check_same_thread": False, "timeout": 30,
                          **({"factory": SQLiteWriteConnection} if immediate else {})},
            pool_size=8,
            max_overflow=16,
            json_serializer=_json_dumps,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            if immediate:
                dbapi_conn.gate = self.write_gate
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache per connection
            cur.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")  # the checkpointer does it first
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            if immediate:
                conn.connection.driver_connection.begin_immediate()
            else:
                conn.exec_driver_sql("BEGIN")

        return engine

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading."""
        with self.read_factory() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session for a change; the caller commits (service functions do), rolls back on error."""
        with self.write_factory() as session:
            try:
                yield session
            except BaseException:
                session.rollback()
                raise

    def check(self) -> None:
        """Raise if the database does not answer."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def start_checkpointer(self) -> None:
        """SQLite: checkpoint the WAL from a background thread (`Checkpointer`); the serving process does this."""
        database = make_url(self.url).database
        if self.is_sqlite and self.checkpointer is None and database and database != ":memory:":
            self.checkpointer = Checkpointer(database)
            self.checkpointer.start()

    def stop_checkpointer(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
            self.checkpointer = None

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()


_db: Database | None = None
_lock = threading.Lock()


def get_db() -> Database:
    """The process's database, opened from the settings on first use."""
    global _db
    with _lock:
        if _db is None:
            _db = Database(get_settings())
        return _db


def set_db(db: Database | None) -> None:
    """Replace the process's database (tests, `serve --data-dir`)."""
    global _db
    with _lock:
        if _db is not None and _db is not db:
            _db.dispose()
        _db = db


def upsert_insert(bind: Any, table: Any) -> Any:
    """An INSERT of `table` for the bind's dialect, which has `on_conflict_do_nothing/update` (SQLite or PostgreSQL)."""
    if bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


# --- migrations -------------------------------------------------------------------------------

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _version_locations() -> list[str]:
    from citybrain.modules import module_paths

    locations = [str(MIGRATIONS_DIR / "versions")]
    for path in module_paths():
        mig = path / "migrations"
        if mig.is_dir():
            locations.append(str(mig))
    return locations


def alembic_config(db: Database | None = None):  # -> alembic.config.Config
    """An Alembic configuration covering the core and every module's migration branch."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("version_locations", " ".join(_version_locations()))
    cfg.set_main_option("path_separator", "space")
    cfg.attributes["db"] = db or get_db()
    return cfg


def migrate(db: Database | None = None) -> None:
    """Bring the database to the newest revision of every branch (alembic upgrade heads)."""
    from alembic import command

    command.upgrade(alembic_config(db), "heads")
