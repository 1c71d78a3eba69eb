"""exit_reason on orders and trades: what a protective exit (stop-loss, take-profit, trailing stop) closed

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 01:00:00.000000

A protective exit's order and the trade it closes say why: ``stop_loss``, ``take_profit`` or
``trailing_stop`` (null for every other order and trade, including all rows written before).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD/DROP COLUMN (SQLite has both): a batch copy of ``orders`` would trip the fills'
    # foreign key on it.
    op.add_column("orders", sa.Column("exit_reason", sa.String(16), nullable=True))
    op.add_column("trades", sa.Column("exit_reason", sa.String(16), nullable=True))


def downgrade() -> None:
    op.drop_column("trades", "exit_reason")
    op.drop_column("orders", "exit_reason")
