"""runs.host, runs.pid: which machine and process drive a run

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:10:00.000000

Many bots write to one journal (PostgreSQL); ``bot journal runs`` tells them apart by the host
and process id that started (or last resumed) each run. Older runs keep NULL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("host", sa.Text, nullable=True))
        batch.add_column(sa.Column("pid", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("pid")
        batch.drop_column("host")
