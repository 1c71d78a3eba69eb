"""fills.fee_currency: the coin each fee was paid in (Bybit feeCurrency)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 12:00:00.000000

Bybit spot charges a buy's fee in the coin bought, so a fill's fee is in the quote coin or in
the base coin, and the quantity held is the fills' quantities less the base-coin fees. Rows
written before this column existed were booked as quote-coin fees: they take "" (the quote).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("fills", sa.Column("fee_currency", sa.String(16), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("fills", "fee_currency")
