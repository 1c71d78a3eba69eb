"""exit_reason on orders and trades: what a protective exit (stop-loss, take-profit, trailing stop) closed

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:00:00.000000

A protective exit's order and the trade it closes say why: ``stop_loss``, ``take_profit`` or
``trailing_stop`` (null for every other order and trade, including all rows written before).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("exit_reason", sa.String(16), nullable=True))
    with op.batch_alter_table("trades") as batch:
        batch.add_column(sa.Column("exit_reason", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trades") as batch:
        batch.drop_column("exit_reason")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("exit_reason")
