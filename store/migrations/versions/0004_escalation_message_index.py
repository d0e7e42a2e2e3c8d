"""Index on escalation (slack_channel, slack_ts): the cards of a Slack message.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 12:40:00

Without it every card update after a click scanned the whole escalation table (about
180 ms at 1M invoices on PostgreSQL).
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | Sequence[str] | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('escalation', schema=None) as batch_op:
        batch_op.create_index('ix_escalation_slack_message', ['slack_channel', 'slack_ts'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('escalation', schema=None) as batch_op:
        batch_op.drop_index('ix_escalation_slack_message')
