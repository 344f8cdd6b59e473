"""reminders, repeating series, notifications

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 16:28:42.315119
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import backend.db

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('notification',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('title', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('due_at', backend.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('remind_at', backend.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('time_zone', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('fired_at', backend.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('late', sa.Boolean(), nullable=False),
    sa.Column('read_at', backend.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('message_id', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification')),
    sa.UniqueConstraint('task_id', 'remind_at', name=op.f('uq_notification_task_id_remind_at')),
    sa.UniqueConstraint('user_id', 'seq', name=op.f('uq_notification_user_id_seq'))
    )
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.create_index('ix_notification_user_id_read_at', ['user_id', 'read_at'], unique=False)

    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('time_zone', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column('remind_before_minutes', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('reminded_at', backend.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('series_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
        batch_op.add_column(sa.Column('occurrence', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('series_start_at', backend.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_task_reminder_due', ['remind_at'], unique=False, sqlite_where=sa.text('remind_at IS NOT NULL AND reminded_at IS NULL AND completed = false AND deleted_at IS NULL'), postgresql_where=sa.text('remind_at IS NOT NULL AND reminded_at IS NULL AND completed = false AND deleted_at IS NULL'))
        batch_op.create_unique_constraint(batch_op.f('uq_task_series_id_occurrence'), ['series_id', 'occurrence'])
        batch_op.create_check_constraint(op.f('ck_task_occurrence'), 'occurrence >= 1')
        batch_op.create_check_constraint(op.f('ck_task_remind_before_minutes'), 'remind_before_minutes IS NULL OR remind_before_minutes >= 0')



def downgrade() -> None:
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_task_remind_before_minutes'), type_='check')
        batch_op.drop_constraint(op.f('ck_task_occurrence'), type_='check')
        batch_op.drop_constraint(batch_op.f('uq_task_series_id_occurrence'), type_='unique')
        batch_op.drop_index('ix_task_reminder_due', sqlite_where=sa.text('remind_at IS NOT NULL AND reminded_at IS NULL AND completed = false AND deleted_at IS NULL'), postgresql_where=sa.text('remind_at IS NOT NULL AND reminded_at IS NULL AND completed = false AND deleted_at IS NULL'))
        batch_op.drop_column('series_start_at')
        batch_op.drop_column('occurrence')
        batch_op.drop_column('series_id')
        batch_op.drop_column('reminded_at')
        batch_op.drop_column('remind_before_minutes')
        batch_op.drop_column('time_zone')

    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.drop_index('ix_notification_user_id_read_at')

    op.drop_table('notification')
