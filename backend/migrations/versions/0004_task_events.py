"""task events outbox, consumer inbox, task activity

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 16:35:20.376924
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import backend.db

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('inbox_event',
    sa.Column('consumer', sa.String(length=64), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('received_at', backend.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('consumer', 'event_id', name=op.f('pk_inbox_event'))
    )
    op.create_table('outbox_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('created_at', backend.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('available_at', backend.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('published_at', backend.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'published', 'dead')", name=op.f('ck_outbox_event_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_event')),
    sa.UniqueConstraint('event_id', name=op.f('uq_outbox_event_event_id')),
    sa.UniqueConstraint('task_id', 'version', name=op.f('uq_outbox_event_task_id_version'))
    )
    with op.batch_alter_table('outbox_event', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_event_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_outbox_event_pending', ['task_id', 'id'], unique=False, sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))
        batch_op.create_index('ix_outbox_event_status_id', ['status', 'id'], unique=False)
        batch_op.create_index('ix_outbox_event_task_id_id', ['task_id', 'id'], unique=False)

    op.create_table('task_activity',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('title', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('changes', sa.JSON(), nullable=True),
    sa.Column('occurred_at', backend.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_activity')),
    sa.UniqueConstraint('event_id', name=op.f('uq_task_activity_event_id'))
    )
    with op.batch_alter_table('task_activity', schema=None) as batch_op:
        batch_op.create_index('ix_task_activity_user_id_task_id_version', ['user_id', 'task_id', 'version'], unique=False)

    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default='1', nullable=False))

    if op.get_bind().dialect.name == 'postgresql':
        # Relays in every process LISTEN on this channel; notifications are delivered at
        # commit and identical ones in a transaction are folded into one.
        op.execute(
            "CREATE FUNCTION notify_outbox_event() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_notify('todo_outbox', ''); RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER outbox_event_notify AFTER INSERT ON outbox_event "
            "FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox_event()"
        )



def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS outbox_event_notify ON outbox_event")
        op.execute("DROP FUNCTION IF EXISTS notify_outbox_event()")
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_column('version')

    with op.batch_alter_table('task_activity', schema=None) as batch_op:
        batch_op.drop_index('ix_task_activity_user_id_task_id_version')

    op.drop_table('task_activity')
    with op.batch_alter_table('outbox_event', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_event_task_id_id')
        batch_op.drop_index('ix_outbox_event_status_id')
        batch_op.drop_index('ix_outbox_event_pending', sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))
        batch_op.drop_index('ix_outbox_event_created_at')

    op.drop_table('outbox_event')
    op.drop_table('inbox_event')
