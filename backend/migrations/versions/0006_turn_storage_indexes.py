"""turn storage indexes: running runs by conversation

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 19:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('agent_run', schema=None) as batch_op:
        batch_op.create_index('ix_agent_run_running', ['conversation_id'], unique=False, sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))


def downgrade() -> None:
    with op.batch_alter_table('agent_run', schema=None) as batch_op:
        batch_op.drop_index('ix_agent_run_running', sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))
