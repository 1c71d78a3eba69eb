"""The equity curve as blocks: ``equity`` (a row per bar) becomes ``equity_blocks``

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 18:30:00.000000

A backtest's journal was mostly its per-bar equity rows, and writing them cost more than the
engine. A row of ``equity_blocks`` holds one market's marks for consecutive bars, encoded by
storage/equity_codec.py (times, equity, cash, position, price; exact). Upgrade packs each run's
curve per market into blocks of BLOCK bars in time order; downgrade unpacks them into rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

from storage import equity_codec

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

BLOCK = 5000

_ROWS = sa.table("equity", *(sa.column(c) for c in ("run_id", "symbol", *equity_codec.COLUMNS)))
_BLOCKS = sa.table("equity_blocks", *(sa.column(c) for c in ("id", "run_id", "symbol", "first_time", "last_time",
                                                            "n", "data")))


def _blocks_table() -> None:
    op.create_table(
        "equity_blocks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(16), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("first_time", sa.BigInteger, nullable=False),
        sa.Column("last_time", sa.BigInteger, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_equity_blocks_run", "equity_blocks", ["run_id", "symbol", "last_time"])


def _curves(conn: sa.Connection) -> Iterator[tuple[str, str, list[Any]]]:
    """(run id, symbol, up to BLOCK rows in time order) over every row of ``equity``."""
    for run_id, symbol in conn.execute(sa.select(_ROWS.c.run_id, _ROWS.c.symbol).distinct()).all():
        last = None
        while True:
            q = sa.select(*(_ROWS.c[c] for c in equity_codec.COLUMNS)).where(
                _ROWS.c.run_id == run_id, _ROWS.c.symbol == symbol)
            if last is not None:
                q = q.where(_ROWS.c.time > last)
            rows = conn.execute(q.order_by(_ROWS.c.time).limit(BLOCK)).all()
            if not rows:
                break
            yield run_id, symbol, rows
            last = rows[-1][0]


def upgrade() -> None:
    _blocks_table()
    conn = op.get_bind()
    for run_id, symbol, rows in _curves(conn):
        cols = list(zip(*rows, strict=True))
        conn.execute(sa.insert(_BLOCKS).values(run_id=run_id, symbol=symbol, first_time=cols[0][0],
                                               last_time=cols[0][-1], n=len(rows),
                                               data=equity_codec.encode(*cols)))
    op.drop_table("equity")


def downgrade() -> None:
    op.create_table(
        "equity",
        sa.Column("run_id", sa.String(16), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("time", sa.BigInteger, primary_key=True),
        *(sa.Column(c, sa.Float, nullable=False) for c in equity_codec.COLUMNS[1:]),
        sqlite_with_rowid=False,
    )
    conn = op.get_bind()
    keys = conn.execute(sa.select(_BLOCKS.c.run_id, _BLOCKS.c.symbol).distinct()).all()
    for run_id, symbol in keys:
        data = conn.scalars(sa.select(_BLOCKS.c.data).where(_BLOCKS.c.run_id == run_id, _BLOCKS.c.symbol == symbol)
                            .order_by(_BLOCKS.c.id)).all()
        rows = equity_codec.rows(equity_codec.merge(data), {"run_id": run_id, "symbol": symbol})
        for k in range(0, len(rows), BLOCK):
            conn.execute(sa.insert(_ROWS), rows[k:k + BLOCK])
    op.drop_index("ix_equity_blocks_run", table_name="equity_blocks")
    op.drop_table("equity_blocks")
