"""readings: one row per device message (device_id, ts, vals JSON) instead of one row per property

Revision ID: iot_0004
Revises: iot_0003
Create Date: 2026-11-21 13:40:00

Existing rows are migrated: the readings of one device at one timestamp become one row whose `vals` object
holds every property (numbers and bools as numbers, enums and strings as strings).
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = 'iot_0004'
down_revision = 'iot_0003'
branch_labels = None
depends_on = None


def _month(ms: int, add: int = 0) -> dt.datetime:
    t = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    m = t.year * 12 + (t.month - 1) + add
    return dt.datetime(m // 12, m % 12 + 1, 1, tzinfo=dt.UTC)


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def _pg_partitions(bind, table: str) -> list[str]:
    return list(bind.execute(sa.text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :t"), {"t": table}).scalars())


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE iot_reading RENAME TO iot_reading_old")
        op.execute("ALTER TABLE iot_reading_old RENAME CONSTRAINT pk_iot_reading TO pk_iot_reading_old")
        for name in _pg_partitions(bind, "iot_reading_old"):
            op.execute(f"ALTER TABLE {name} RENAME TO {name.replace('iot_reading_', 'iot_reading_old_', 1)}")
        op.execute("CREATE TABLE iot_reading (device_id integer NOT NULL, ts bigint NOT NULL, vals json NOT NULL, "
                   "CONSTRAINT pk_iot_reading PRIMARY KEY (device_id, ts)) PARTITION BY RANGE (ts)")
        op.execute("CREATE TABLE iot_reading_default PARTITION OF iot_reading DEFAULT")
        lo, hi = bind.execute(sa.text("SELECT min(ts), max(ts) FROM iot_reading_old")).first()
        now = _ms(dt.datetime.now(dt.UTC))
        lo, hi = min(lo or now, now), max(hi or now, now)
        m, last = _month(lo), _month(hi, 2)
        while m <= last:  # monthly partitions for the migrated data and two months ahead
            nxt = _month(_ms(m), 1)
            op.execute(f"CREATE TABLE iot_reading_{m:%Y%m} PARTITION OF iot_reading "
                       f"FOR VALUES FROM ({_ms(m)}) TO ({_ms(nxt)})")
            m = nxt
        op.execute("INSERT INTO iot_reading (device_id, ts, vals) SELECT device_id, ts, json_object_agg(prop, "
                   "CASE WHEN text IS NOT NULL THEN to_json(text) ELSE to_json(value) END) "
                   "FROM iot_reading_old WHERE value IS NOT NULL OR text IS NOT NULL GROUP BY device_id, ts")
        op.execute("DROP TABLE iot_reading_old")
    else:
        op.rename_table('iot_reading', 'iot_reading_old')
        op.create_table('iot_reading',
                        sa.Column('device_id', sa.Integer(), nullable=False),
                        sa.Column('ts', sa.BigInteger(), nullable=False),
                        sa.Column('vals', sa.JSON(), nullable=False),
                        sa.PrimaryKeyConstraint('device_id', 'ts', name=op.f('pk_iot_reading')),
                        sqlite_with_rowid=False)
        op.execute("INSERT INTO iot_reading (device_id, ts, vals) SELECT device_id, ts, json_group_object(prop, "
                   "CASE WHEN text IS NOT NULL THEN text ELSE value END) FROM iot_reading_old "
                   "WHERE value IS NOT NULL OR text IS NOT NULL GROUP BY device_id, ts")
        op.drop_table('iot_reading_old')


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE iot_reading RENAME TO iot_reading_wide")
        op.execute("ALTER TABLE iot_reading_wide RENAME CONSTRAINT pk_iot_reading TO pk_iot_reading_wide")
        for name in _pg_partitions(bind, "iot_reading_wide"):
            op.execute(f"ALTER TABLE {name} RENAME TO {name.replace('iot_reading_', 'iot_reading_wide_', 1)}")
        op.execute("CREATE TABLE iot_reading (device_id integer NOT NULL, prop varchar(40) NOT NULL, "
                   "ts bigint NOT NULL, value double precision, text varchar(200), "
                   "CONSTRAINT pk_iot_reading PRIMARY KEY (device_id, prop, ts)) PARTITION BY RANGE (ts)")
        op.execute("CREATE TABLE iot_reading_default PARTITION OF iot_reading DEFAULT")
        op.execute("INSERT INTO iot_reading (device_id, prop, ts, value, text) SELECT w.device_id, e.key, w.ts, "
                   "CASE WHEN json_typeof(e.value) = 'number' THEN (e.value #>> '{}')::float8 END, "
                   "CASE WHEN json_typeof(e.value) = 'string' THEN e.value #>> '{}' END "
                   "FROM iot_reading_wide w, json_each(w.vals) e")
        op.execute("DROP TABLE iot_reading_wide")
    else:
        op.rename_table('iot_reading', 'iot_reading_wide')
        op.create_table('iot_reading',
                        sa.Column('device_id', sa.Integer(), nullable=False),
                        sa.Column('prop', sa.String(length=40), nullable=False),
                        sa.Column('ts', sa.BigInteger(), nullable=False),
                        sa.Column('value', sa.Float(), nullable=True),
                        sa.Column('text', sa.String(length=200), nullable=True),
                        sa.PrimaryKeyConstraint('device_id', 'prop', 'ts', name=op.f('pk_iot_reading')),
                        sqlite_with_rowid=False)
        op.execute("INSERT INTO iot_reading SELECT w.device_id, e.key, w.ts, "
                   "CASE WHEN e.type IN ('real', 'integer') THEN e.value END, "
                   "CASE WHEN e.type = 'text' THEN e.value END FROM iot_reading_wide w, json_each(w.vals) e")
        op.drop_table('iot_reading_wide')
