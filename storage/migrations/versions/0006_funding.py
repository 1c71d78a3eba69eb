"""funding: one row per funding settlement of a linear market's position

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 18:00:00.000000

Backtests and replays of perpetuals now pay or receive funding at each settlement of the
market's funding file (bot/funding.py); each settlement is a row, summed in the run's summary.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.schema import ExactDecimal

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "funding",
        sa.Column("run_id", sa.String(16), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("time", sa.BigInteger, primary_key=True),
        sa.Column("rate", sa.Float, nullable=False),
        sa.Column("qty", ExactDecimal(length=64), nullable=False),
        sa.Column("price", ExactDecimal(length=64), nullable=False),
        sa.Column("amount", ExactDecimal(length=64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("funding")
