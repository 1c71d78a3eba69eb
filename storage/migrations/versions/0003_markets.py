"""Many markets in one run: equity rows keyed by market; runs name every market they trade

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 12:00:00.000000

``equity`` gains ``symbol`` (part of the key: one curve per market, each row carrying the
portfolio's equity at that market's bar close). Existing rows take their run's symbol.
``runs.symbol``, ``runs.timeframe`` and ``runs.category`` hold comma-separated lists for
multi-market runs (TEXT on PostgreSQL; SQLite never enforces a VARCHAR length).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_RUN_COLUMNS = (("symbol", 32), ("timeframe", 8), ("category", 8))


def _equity(name: str, with_symbol: bool) -> None:
    cols = [sa.Column("run_id", sa.String(16), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)]
    if with_symbol:
        cols.append(sa.Column("symbol", sa.String(32), primary_key=True))
    cols += [sa.Column("time", sa.BigInteger, primary_key=True), sa.Column("equity", sa.Float, nullable=False),
             sa.Column("cash", sa.Float, nullable=False), sa.Column("position", sa.Float, nullable=False),
             sa.Column("price", sa.Float, nullable=False)]
    op.create_table(name, *cols, sqlite_with_rowid=False)


def upgrade() -> None:
    _equity("equity_new", with_symbol=True)
    op.execute("INSERT INTO equity_new (run_id, symbol, time, equity, cash, position, price) "
               "SELECT e.run_id, r.symbol, e.time, e.equity, e.cash, e.position, e.price "
               "FROM equity e JOIN runs r ON r.id = e.run_id")
    op.drop_table("equity")
    op.rename_table("equity_new", "equity")
    if op.get_bind().dialect.name != "sqlite":
        for col, n in _RUN_COLUMNS:
            op.alter_column("runs", col, type_=sa.Text(), existing_type=sa.String(length=n), existing_nullable=False)


def downgrade() -> None:
    _equity("equity_old", with_symbol=False)
    op.execute("INSERT INTO equity_old (run_id, time, equity, cash, position, price) "
               "SELECT run_id, time, MAX(equity), MAX(cash), MAX(position), MAX(price) FROM equity "
               "GROUP BY run_id, time")
    op.drop_table("equity")
    op.rename_table("equity_old", "equity")
    if op.get_bind().dialect.name != "sqlite":
        for col, n in _RUN_COLUMNS:
            op.alter_column("runs", col, type_=sa.String(length=n), existing_type=sa.Text(), existing_nullable=False)
