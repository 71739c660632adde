"""rate buckets of the citizen endpoints, shared by worker processes

Revision ID: cases_0005
Revises: cases_0004
Create Date: 2026-11-21 22:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = 'cases_0005'
down_revision = 'cases_0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'cases_rate_bucket',
        sa.Column('key', sa.String(length=80), nullable=False),
        sa.Column('tokens', sa.Float(), nullable=False),
        sa.Column('at_s', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_cases_rate_bucket')),
    )
    with op.batch_alter_table('cases_rate_bucket', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cases_rate_bucket_at_s'), ['at_s'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cases_rate_bucket', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cases_rate_bucket_at_s'))
    op.drop_table('cases_rate_bucket')
