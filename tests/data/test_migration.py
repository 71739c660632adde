"""Revision data_0003 (SQLite: the exchange log, daily sums and rate buckets in the logs file) keeps every row."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text

from citybrain.db import alembic_config, logs_path, migrate

ROWS = {
    "data_exchange_log": "SELECT id, resource_id, actor, op, records FROM data_exchange_log ORDER BY id",
    "data_exchange_daily": "SELECT day, consumer_org_id, resource_id, calls, records FROM data_exchange_daily "
                           "ORDER BY day, consumer_org_id, resource_id",
    "data_rate_bucket": "SELECT subject, tokens, at_s FROM data_rate_bucket ORDER BY subject",
}


def _where(db, table: str) -> set[str]:
    with db.read() as s:
        return {schema for schema in ("main", "logs") if s.execute(text(
            f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}).first()}


def _rows(db) -> dict[str, list[tuple]]:
    with db.read() as s:
        return {t: [tuple(r) for r in s.execute(text(q))] for t, q in ROWS.items()}


def test_logs_tables_move_to_the_logs_file_with_their_rows_and_back(db):
    with db.write() as s:
        s.execute(text("INSERT INTO data_exchange_log (at, consumer_org_id, provider_org_id, resource_id, actor, "
                       "key_id, op, fields, unmasked, records, request_id) VALUES "
                       "('2026-11-20 01:00:00.000000', 3, 4, 7, 'apikey:9', 9, 'query', 'name,phone', '', 100, 'r1'), "
                       "('2026-11-20 02:00:00.000000', 3, 4, 7, 'apikey:9', 9, 'get', 'name', 'name', 1, 'r2')"))
        s.execute(text("INSERT INTO data_exchange_daily (day, consumer_org_id, provider_org_id, resource_id, calls, "
                       "records) VALUES ('2026-11-20', 3, 4, 7, 2, 101)"))
        s.execute(text("INSERT INTO data_rate_bucket (subject, tokens, at_s) VALUES ('apikey:9', 12.5, 1700000000.5)"))
        s.commit()
    before = _rows(db)
    sqlite = db.is_sqlite
    if sqlite:
        assert all(_where(db, t) == {"logs"} for t in ROWS)
    command.downgrade(alembic_config(db), "data_0002")
    if sqlite:
        assert all(_where(db, t) == {"main"} for t in ROWS)
    assert _rows(db) == before
    # a logs file left over with stale copies (a cut-short upgrade, or a database deleted without it)
    if sqlite:
        with db.write() as s:
            s.execute(text("CREATE TABLE logs.data_rate_bucket (subject VARCHAR(60) PRIMARY KEY, tokens FLOAT, "
                           "at_s FLOAT)"))
            s.execute(text("INSERT INTO logs.data_rate_bucket VALUES ('apikey:9', 0, 0), ('stale', 1, 1)"))
            s.commit()
    migrate(db)
    if sqlite:
        assert all(_where(db, t) == {"logs"} for t in ROWS)
        assert logs_path(db.path).exists()
    assert _rows(db) == before


def test_a_lost_logs_file_is_recreated_empty(db, tmp_path):
    """A database restored without its logs file still serves exchange calls: the tables come back empty."""
    if not db.is_sqlite:
        pytest.skip("the logs file exists on the embedded database only")
    path = logs_path(db.path)
    db.dispose()
    path.unlink()
    migrate(db)
    assert all(_where(db, t) == {"logs"} for t in ROWS)
    assert all(rows == [] for rows in _rows(db).values())
    with db.read() as s:
        assert s.execute(text("SELECT name FROM logs.sqlite_master WHERE type = 'index' AND name LIKE 'ix_%' "
                              "ORDER BY name")).scalars().all() == [
            "ix_data_exchange_daily_day", "ix_data_exchange_log_at", "ix_data_exchange_log_consumer_org_id",
            "ix_data_exchange_log_resource_id"]
