"""Revisions iot_0004 (one row per device message) and iot_0005 (SQLite: time-ordered key) keep existing readings."""

from __future__ import annotations

import orjson
from alembic import command
from sqlalchemy import text

from citybrain.db import alembic_config, migrate
from citybrain.iot import service


def test_narrow_readings_are_migrated_to_one_row_per_message_and_back(db):
    command.downgrade(alembic_config(db), "iot_0003")
    with db.write() as s:
        s.execute(text("INSERT INTO iot_reading (device_id, prop, ts, value, text) VALUES "
                       "(1, 'pm25', 1000, 35.5, NULL), (1, 'pm10', 1000, 60.0, NULL), (1, 'pm25', 2000, 36.0, NULL), "
                       "(2, 'state', 1000, NULL, 'open'), (2, 'displaced', 1000, 1.0, NULL)"))
        s.commit()
    migrate(db)
    with db.read() as s:
        rows = s.execute(text("SELECT device_id, ts, vals FROM iot_reading ORDER BY device_id, ts")).all()
        vals = [(d, ts, v if isinstance(v, dict) else orjson.loads(v)) for d, ts, v in rows]
        assert vals == [(1, 1000, {"pm25": 35.5, "pm10": 60.0}), (1, 2000, {"pm25": 36.0}),
                        (2, 1000, {"state": "open", "displaced": 1.0})]
        assert service.count_readings(s) == 5
    command.downgrade(alembic_config(db), "iot_0003")
    with db.read() as s:
        back = s.execute(text("SELECT device_id, prop, ts, value, text FROM iot_reading "
                              "ORDER BY device_id, ts, prop")).all()
        assert [tuple(r) for r in back] == [(1, "pm10", 1000, 60.0, None), (1, "pm25", 1000, 35.5, None),
                                             (1, "pm25", 2000, 36.0, None), (2, "displaced", 1000, 1.0, None),
                                             (2, "state", 1000, None, "open")]
    migrate(db)
