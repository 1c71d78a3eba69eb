"""runs.strategy holds any strategy name, including a file strategy's path:Class

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite never enforces a VARCHAR length, and rebuilding `runs` there (batch mode) would drop
    # the table that every other journal table references: nothing to do on SQLite.
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column("runs", "strategy", type_=sa.Text(), existing_type=sa.String(length=32), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column("runs", "strategy", type_=sa.String(length=32), existing_type=sa.Text(), existing_nullable=False)
