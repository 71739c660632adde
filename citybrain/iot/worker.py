"""Group commit for telemetry: one ingest thread per database takes every request waiting in its queue and
ingests them in ONE transaction (`service.ingest_parts`), then answers each request after that commit.

On SQLite the work is split in two stages: the ingest thread authenticates, parses and validates a group
(`service.check_parts`, reads only) and hands it to a writer thread, which stores it, evaluates the rules and
commits (`service.store_checked`). SQLite runs its part of the writing (inserts, commit) without the GIL, so
the next group is being checked meanwhile. PostgreSQL keeps one stage (its commit waits on the server).

Under load, requests that arrive while a transaction commits are written together by the next one, so the
fixed cost of a transaction (begin, commit, counters, device rows) is shared; alone, a request is written at
once. Each request still gets its own result (accepted, duplicates, rejections, alarms) and its own errors: a
request that fails its checks (credentials, unreadable body) fails alone, and if a group's transaction fails,
its requests are retried one by one so one bad request cannot fail the others.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from citybrain import context
from citybrain.db import Database
from citybrain.iot import service

log = logging.getLogger("citybrain.iot")

GROUP_MAX_BYTES = 1024 * 1024  # at most this much request body per transaction (~15,000 readings)
IDLE_EXIT_S = 30.0  # the thread ends after this long without work (a new request starts it again)
GROUP_WAIT_S = 0.002  # PostgreSQL: how long a group may wait for as many requests as the previous group had

Prepare = Callable[[Session], service.Part]
Done = Callable[[service.Part | None, BaseException | None], None]


class IngestWorker:
    """The ingest thread of one database."""

    def __init__(self, db: Database):
        self.db = db
        self.q: queue.SimpleQueue[tuple[Prepare, Done, int]] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.groups = 0
        self.requests = 0
        self.conn: Any = None  # PostgreSQL: the ingest thread's own connection (no pool ping per group)
        self.last_group = 0
        # SQLite: checked groups wait here for the writer thread (one at most: the next group is checked while
        # the previous one is written; SQLite writes and commits without the GIL)
        self.handoff: queue.Queue[tuple[list[tuple[Done, service.Part]], service.Checked] | None] = queue.Queue(1)
        self.writer: threading.Thread | None = None

    def submit(self, prepare: Prepare, done: Done, size: int) -> None:
        """Queue a request: `prepare(session)` authenticates and parses it into a Part (or raises);
        `done(part, error)` is called from the ingest thread after the commit (or the failure)."""
        self.q.put((prepare, done, size))
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="citybrain-iot-ingest", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                first = self.q.get(timeout=IDLE_EXIT_S)
            except queue.Empty:
                with self.lock:
                    if self.q.empty():
                        self.thread = None
                        if self.writer is not None:  # it ends once it has written what it was handed
                            self.handoff.put(None)
                            self.writer.join()
                            self.writer = None
                        self._close()
                        return
                continue
            jobs = [first]
            size = first[2]
            # PostgreSQL: each commit waits for a disk flush, so while the previous group had more requests than
            # are waiting now, wait briefly for them (steady senders fill each group); SQLite commits cheaply
            wait_until = 0.0 if self.db.is_sqlite else time.monotonic() + GROUP_WAIT_S
            while size < GROUP_MAX_BYTES:
                try:
                    job = self.q.get_nowait()
                except queue.Empty:
                    left = wait_until - time.monotonic()
                    if len(jobs) >= self.last_group or left <= 0:
                        break
                    try:
                        job = self.q.get(timeout=left)
                    except queue.Empty:
                        break
                jobs.append(job)
                size += job[2]
            self.last_group = len(jobs)
            try:
                if self.db.is_sqlite:
                    self._check(jobs)
                else:
                    self._process(jobs)
            except BaseException as exc:  # never leave a request unanswered
                log.exception("telemetry group failed")
                self._close()
                for _prepare, done, _size in jobs:
                    _safe(done, None, exc)

    def _close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                log.warning("could not close the ingest connection", exc_info=True)
            self.conn = None

    def _session(self) -> Session:
        if self.db.is_sqlite:  # nothing to save there (no ping); the pool's connections as everywhere else
            return self.db.write_factory()
        if self.conn is None or self.conn.closed or self.conn.invalidated:
            self._close()
            self.conn = self.db.write_engine.connect()
        return self.db.write_factory(bind=self.conn)

    def _check(self, jobs: list[tuple[Prepare, Done, int]]) -> None:
        """SQLite, first stage (the ingest thread): authenticate, parse and validate a group with a reading
        session, then hand it to the writer thread (waiting while the writer still has one waiting)."""
        ready: list[tuple[Done, service.Part]] = []
        with self.db.read() as s:
            for prepare, done, _size in jobs:
                try:
                    part = prepare(s)
                except BaseException as exc:
                    s.rollback()
                    _safe(done, None, exc)
                    continue
                ready.append((done, part))
            if not ready:
                return
            try:
                checked = service.check_parts(s, [part for _d, part in ready])
            except BaseException as exc:
                for done, _part in ready:
                    _safe(done, None, exc)
                return
        if self.writer is None or not self.writer.is_alive():
            self.writer = threading.Thread(target=self._write_loop, name="citybrain-iot-write", daemon=True)
            self.writer.start()
        self.handoff.put((ready, checked))

    def _write_loop(self) -> None:
        """SQLite, second stage (the writer thread): store each checked group in one transaction, answer it."""
        while True:
            item = self.handoff.get()
            if item is None:
                return
            ready, checked = item
            try:
                self._store(ready, checked)
            except BaseException as exc:  # never leave a request unanswered
                log.exception("telemetry group failed")
                for done, _part in ready:
                    _safe(done, None, exc)

    def _store(self, ready: list[tuple[Done, service.Part]], checked: service.Checked) -> None:
        self.groups += 1
        self.requests += len(ready)
        _act_for(ready)
        with self.db.write_factory() as s:
            try:
                service.store_checked(s, checked)
            except Exception as exc:
                if len(ready) == 1:
                    _safe(ready[0][0], None, exc)
                    return
                self._one_by_one(s, ready, exc)
                return
        for done, part in ready:
            _safe(done, part, None)

    def _one_by_one(self, s: Session, ready: list[tuple[Done, service.Part]], exc: Exception) -> None:
        """A group's transaction failed: each request again alone, so one bad request cannot fail the others."""
        log.warning("telemetry group of %d failed (%s); retrying one by one", len(ready), exc)
        for done, part in ready:
            context.set_principal(_principal(part))
            try:
                service.ingest_parts(s, [part])
            except Exception as exc1:
                _safe(done, None, exc1)
                continue
            _safe(done, part, None)

    def _process(self, jobs: list[tuple[Prepare, Done, int]]) -> None:
        ready: list[tuple[Done, service.Part]] = []
        with self._session() as s:
            for prepare, done, _size in jobs:
                try:
                    part = prepare(s)
                except BaseException as exc:
                    s.rollback()
                    _safe(done, None, exc)
                    continue
                ready.append((done, part))
            if s.in_transaction():  # end the credential lookups' transaction (none when the key was cached)
                s.commit()
            if not ready:
                return
            self.groups += 1
            self.requests += len(ready)
            _act_for(ready)
            try:
                service.ingest_parts(s, [part for _d, part in ready])
            except Exception as exc:
                if len(ready) == 1:
                    _safe(ready[0][0], None, exc)
                    return
                self._one_by_one(s, ready, exc)
                return
        for done, part in ready:
            _safe(done, part, None)


def _act_for(ready: list[tuple[Done, service.Part]]) -> None:
    """Who the group's transaction acts for: its one sender, else the system."""
    principals = {(p.kind, p.id, p.name) for p in (_principal(part) for _d, part in ready)}
    context.set_principal(_principal(ready[0][1]) if len(principals) == 1 else context.SYSTEM)


def _principal(part: service.Part) -> Any:
    if part.sender is not None:
        return part.sender
    if part.device is not None:
        return service.device_principal(part.device)
    return context.SYSTEM


def _safe(done: Done, part: service.Part | None, exc: BaseException | None) -> None:
    try:
        done(part, exc)
    except Exception:
        log.exception("could not answer a telemetry request")


_workers: weakref.WeakValueDictionary[int, IngestWorker] = weakref.WeakValueDictionary()
_workers_lock = threading.Lock()


def worker(db: Database) -> IngestWorker:
    """The ingest worker of a database (one per Database object)."""
    with _workers_lock:
        w = _workers.get(id(db))
        if w is None or w.db is not db:
            w = _workers[id(db)] = IngestWorker(db)
        return w
