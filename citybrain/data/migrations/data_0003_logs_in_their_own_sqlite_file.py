"""SQLite: the exchange log, its daily sums and the rate buckets move to the logs file (`<name>-logs.db`)

Written on every exchange call, these tables made every other connection drop its page cache of the main
file after each call (SQLite's change counter is per file). PostgreSQL: nothing changes.

Revision ID: data_0003
Revises: data_0002
Create Date: 2026-11-22 02:00:00
"""

from alembic import op

from citybrain.db import LOGS_SCHEMA, move_sqlite_tables

revision = 'data_0003'
down_revision = 'data_0002'
branch_labels = None
depends_on = None

TABLES = ["data_exchange_log", "data_exchange_daily", "data_rate_bucket"]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        move_sqlite_tables(op.get_bind(), TABLES, "main", LOGS_SCHEMA)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        move_sqlite_tables(op.get_bind(), TABLES, LOGS_SCHEMA, "main")
