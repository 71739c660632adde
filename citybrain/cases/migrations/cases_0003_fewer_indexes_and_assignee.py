"""fewer B-trees per new case (partial indexes for mostly-empty columns); person-level assignment (指派)

Revision ID: cases_0003
Revises: cases_0002
Create Date: 2026-11-21 14:00:00
"""

import sqlalchemy as sa
from alembic import op

import citybrain.db

revision = 'cases_0003'
down_revision = 'cases_0002'
branch_labels = None
depends_on = None


def _where(sql: str, pg: str | None = None) -> dict:
    return {"sqlite_where": sa.text(sql), "postgresql_where": sa.text(pg or sql)}


def upgrade() -> None:
    with op.batch_alter_table('cases_case', schema=None) as batch_op:
        batch_op.add_column(sa.Column('assignee_user_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('assignee_name', sa.String(length=60), nullable=True))
        batch_op.add_column(sa.Column('assigned_at', citybrain.db.UTCDateTime(), nullable=True))
    for name in ('ix_cases_case_closed_at', 'ix_cases_case_reporter_user_id', 'ix_cases_case_overdue_status',
                 'ix_cases_case_device_rule', 'ix_cases_case_status_closed'):
        op.drop_index(name, table_name='cases_case')
    op.create_index('ix_cases_case_status_closed', 'cases_case', ['status', 'closed_at'],
                    **_where('closed_at IS NOT NULL'))
    op.create_index('ix_cases_case_overdue', 'cases_case', ['status', 'reported_at'],
                    **_where('overdue IS 1', 'overdue IS true'))
    op.create_index('ix_cases_case_device_rule', 'cases_case', ['device_code', 'rule_id'],
                    **_where('device_code IS NOT NULL'))
    op.create_index('ix_cases_case_reporter', 'cases_case', ['reporter_user_id'],
                    **_where('reporter_user_id IS NOT NULL'))
    op.create_index('ix_cases_case_assignee', 'cases_case', ['assignee_user_id', 'status'],
                    **_where('assignee_user_id IS NOT NULL'))


def downgrade() -> None:
    for name in ('ix_cases_case_assignee', 'ix_cases_case_reporter', 'ix_cases_case_device_rule',
                 'ix_cases_case_overdue', 'ix_cases_case_status_closed'):
        op.drop_index(name, table_name='cases_case')
    op.create_index('ix_cases_case_status_closed', 'cases_case', ['status', 'closed_at'])
    op.create_index('ix_cases_case_device_rule', 'cases_case', ['device_code', 'rule_id'])
    op.create_index('ix_cases_case_overdue_status', 'cases_case', ['overdue', 'status', 'reported_at'])
    op.create_index('ix_cases_case_reporter_user_id', 'cases_case', ['reporter_user_id'])
    op.create_index('ix_cases_case_closed_at', 'cases_case', ['closed_at'])
    with op.batch_alter_table('cases_case', schema=None) as batch_op:
        batch_op.drop_column('assigned_at')
        batch_op.drop_column('assignee_name')
        batch_op.drop_column('assignee_user_id')
