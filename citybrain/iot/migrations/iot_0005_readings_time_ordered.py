"""SQLite readings in time order: key (ts, device_id) plus an index (device_id, ts)

Revision ID: iot_0005
Revises: iot_0004
Create Date: 2026-11-21 16:30:00

With the key (device_id, ts) every device's rows sit together, so a batch of 125 devices dirtied about 125
B-tree pages, each written whole to the WAL at commit (~1 KB per reading). Keyed by time, a batch's rows land
in the few pages at the right edge of the table; a device's time range is found through the small
(device_id, ts) index, whose entries (~15 bytes) dirty several times fewer pages than the rows did. Existing
rows are copied over.

PostgreSQL is left as it is: its table is a heap (rows appended in arrival order), partitioned by ts, with the
(device_id, ts) primary key as its only index, the same shape this gives SQLite.
"""

import sqlalchemy as sa
from alembic import op

revision = 'iot_0005'
down_revision = 'iot_0004'
branch_labels = None
depends_on = None


def _rebuild(key: tuple[str, str], index: bool) -> None:
    op.rename_table('iot_reading', 'iot_reading_old')
    op.create_table('iot_reading',
                    sa.Column('device_id', sa.Integer(), nullable=False),
                    sa.Column('ts', sa.BigInteger(), nullable=False),
                    sa.Column('vals', sa.JSON(), nullable=False),
                    sa.PrimaryKeyConstraint(*key, name=op.f('pk_iot_reading')),
                    sqlite_with_rowid=False)
    op.execute(f"INSERT INTO iot_reading (device_id, ts, vals) SELECT device_id, ts, vals FROM iot_reading_old "
               f"ORDER BY {', '.join(key)}")
    op.drop_table('iot_reading_old')
    if index:
        op.create_index('ix_iot_reading_device_ts', 'iot_reading', ['device_id', 'ts'])


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(("ts", "device_id"), index=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index('ix_iot_reading_device_ts', table_name='iot_reading')
        _rebuild(("device_id", "ts"), index=False)
