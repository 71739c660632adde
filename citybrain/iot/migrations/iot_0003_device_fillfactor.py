"""device rows updated in place (PostgreSQL HOT updates)

Revision ID: iot_0003
Revises: iot_0002
Create Date: 2026-11-21 11:30:00
"""

from alembic import op


revision = 'iot_0003'
down_revision = 'iot_0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # every batch rewrites last_seen_at and latest of the reporting devices: leave room on each page so
    # PostgreSQL can update in place (HOT) without touching the device indexes
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE iot_device SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE iot_device RESET (fillfactor)")
