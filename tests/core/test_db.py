"""The SQLite write gate: writers of one process queue for the database's one write transaction and always
hand it on, whether the transaction commits, rolls back, fails or is abandoned."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from citybrain import db as dbmod
from citybrain.config import Settings
from citybrain.db import Database


@pytest.fixture()
def sdb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Database:
    monkeypatch.setattr(dbmod, "WRITE_WAIT_S", 2.0)  # a leaked gate shows up as an error, not a 30 s hang
    d = Database(Settings(data_dir=tmp_path, secret_key="t" * 32))
    with d.write() as s:
        s.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY, who TEXT)"))
        s.commit()
    yield d
    d.dispose()


def _count(d: Database) -> int:
    with d.read() as s:
        return s.execute(text("SELECT count(*) FROM t")).scalar_one()


def test_concurrent_writers_all_commit(sdb: Database) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(50):
                with sdb.write() as s:
                    s.execute(text("INSERT INTO t (k, who) VALUES (:k, :w)"), {"k": n * 1000 + i, "w": str(n)})
                    s.commit()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _count(sdb) == 200


def test_gate_is_handed_on_after_error_rollback_and_abandoned_session(sdb: Database) -> None:
    with pytest.raises(RuntimeError), sdb.write() as s:  # an error inside a write: rolled back
        s.execute(text("INSERT INTO t (k) VALUES (1)"))
        raise RuntimeError("boom")
    with sdb.write() as s:  # a write session closed without commit: the pool rolls it back
        s.execute(text("INSERT INTO t (k) VALUES (2)"))
    with sdb.write() as s:  # a statement that fails in the database
        with pytest.raises(Exception, match="UNIQUE|no such"):
            s.execute(text("INSERT INTO nosuch (k) VALUES (1)"))
        s.rollback()
    done: list[int] = []

    def other() -> None:  # another thread must get the gate at once
        with sdb.write() as s:
            s.execute(text("INSERT INTO t (k) VALUES (3)"))
            s.commit()
        done.append(3)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert done == [3]
    with sdb.read() as s:
        assert s.execute(text("SELECT k FROM t ORDER BY k")).scalars().all() == [3]
    assert not sdb.write_gate.locked()


def test_a_second_writer_waits_for_the_first_commit(sdb: Database) -> None:
    holding, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def first() -> None:
        with sdb.write() as s:
            s.execute(text("INSERT INTO t (k) VALUES (1)"))
            holding.set()
            release.wait(5)
            s.commit()

    def second() -> None:
        with sdb.write() as s:  # waits at the gate until `first` commits, then sees its row
            seen.append(s.execute(text("SELECT count(*) FROM t")).scalar_one())
            s.execute(text("INSERT INTO t (k) VALUES (2)"))
            s.commit()

    a = threading.Thread(target=first)
    a.start()
    holding.wait(5)
    b = threading.Thread(target=second)
    b.start()
    assert sdb.write_gate.locked()
    release.set()
    a.join()
    b.join()
    assert seen == [1]
    assert _count(sdb) == 2


def test_the_checkpointer_moves_committed_pages_out_of_the_wal_without_the_writer(sdb: Database) -> None:
    """Writers leave the WAL to the background checkpointer (their own checkpoint only past a large WAL): the
    committed pages reach the database file while the writer goes on, and the WAL is reused, not grown."""
    import sqlite3
    import time

    path = str(sdb.url).split("///", 1)[1]

    def wal_frames() -> tuple[int, int]:
        with sqlite3.connect(path) as c:  # a PASSIVE checkpoint of nothing new: (busy, frames in WAL, backfilled)
            _busy, log, done = c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return log, done

    def write(n: int) -> None:
        for i in range(n):
            with sdb.write() as s:
                s.execute(text("INSERT INTO t (who) VALUES (:w)"), {"w": "x" * 3000 + str(i)})
                s.commit()

    write(200)  # ~200 pages: far below the connections' own threshold, so nothing checkpoints them
    with sdb.read() as s:
        assert s.execute(text("PRAGMA wal_autocheckpoint")).scalar_one() == dbmod.AUTOCHECKPOINT_PAGES
    sdb.start_checkpointer()
    try:
        deadline = time.monotonic() + 10
        while sdb.checkpointer.runs < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        log, done = wal_frames()
        assert log >= 200 and done == log  # every committed frame is in the database file already
        write(200)  # the next writer starts the WAL over instead of appending after 200+ frames
        time.sleep(dbmod.CHECKPOINT_EVERY_S * 4)
        log2, done2 = wal_frames()
        assert log2 < log + 200 and done2 == log2
    finally:
        sdb.stop_checkpointer()
    assert sdb.checkpointer is None and _count(sdb) == 400
