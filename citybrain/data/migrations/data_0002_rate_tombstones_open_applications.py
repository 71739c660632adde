"""shared rate buckets, deletion tombstones, open-data key applications

Revision ID: data_0002
Revises: data_0001
Create Date: 2026-11-21 13:30:00
"""

from alembic import op
import sqlalchemy as sa
import citybrain.db


revision = 'data_0002'
down_revision = 'data_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('data_rate_bucket',
    sa.Column('subject', sa.String(length=60), nullable=False),
    sa.Column('tokens', sa.Float(), nullable=False),
    sa.Column('at_s', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('subject', name=op.f('pk_data_rate_bucket'))
    )
    op.create_table('data_tombstone',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('feed', sa.String(length=30), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('deleted_at', citybrain.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_tombstone'))
    )
    op.create_index('ix_data_tombstone_feed', 'data_tombstone', ['feed', 'resource_id', 'seq'], unique=False)
    op.create_table('data_open_application',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('provider_org_id', sa.Integer(), nullable=False),
    sa.Column('applicant', sa.String(length=100), nullable=False),
    sa.Column('contact', sa.String(length=100), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('ticket_hash', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('decision_reason', sa.Text(), nullable=True),
    sa.Column('decided_by', sa.String(length=100), nullable=True),
    sa.Column('decided_at', citybrain.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('key_id', sa.Integer(), nullable=True),
    sa.Column('created_at', citybrain.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_open_application'))
    )
    op.create_index(op.f('ix_data_open_application_resource_id'), 'data_open_application', ['resource_id'])
    op.create_index(op.f('ix_data_open_application_provider_org_id'), 'data_open_application',
                    ['provider_org_id'])
    op.create_index(op.f('ix_data_open_application_status'), 'data_open_application', ['status'])


def downgrade() -> None:
    op.drop_table('data_open_application')
    op.drop_index('ix_data_tombstone_feed', table_name='data_tombstone')
    op.drop_table('data_tombstone')
    op.drop_table('data_rate_bucket')
