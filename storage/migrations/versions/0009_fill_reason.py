"""fills.reason: why the venue traded a fill no order of the bot's asked for (liquidation)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 01:30:00.000000

The simulated broker liquidates a linear position whose bar reaches its liquidation price
(broker/margin.py); the closing fill says so (``liquidation``). Older rows read "".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("fills", sa.Column("reason", sa.String(16), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("fills", "reason")
