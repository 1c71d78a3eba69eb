"""initial journal schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 02:22:01.567684
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.schema

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('runs',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('strategy', sa.String(length=32), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('timeframe', sa.String(length=8), nullable=False),
    sa.Column('category', sa.String(length=8), nullable=False),
    sa.Column('model_id', sa.String(length=64), nullable=True),
    sa.Column('data_source', sa.Text(), nullable=True),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('initial_cash', storage.schema.ExactDecimal(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_bar', sa.BigInteger(), nullable=True),
    sa.Column('last_bar', sa.BigInteger(), nullable=True),
    sa.Column('bars', sa.Integer(), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.Column('strategy_state', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('decisions',
    sa.Column('id', sa.String(length=48), nullable=False),
    sa.Column('run_id', sa.String(length=16), nullable=False),
    sa.Column('bar_time', sa.BigInteger(), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('target', sa.Float(), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('model_id', sa.String(length=64), nullable=True),
    sa.Column('price', sa.Float(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('explanation', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.create_index('ix_decisions_run_time', ['run_id', 'bar_time'], unique=False)

    op.create_table('equity',
    sa.Column('run_id', sa.String(length=16), nullable=False),
    sa.Column('time', sa.BigInteger(), nullable=False),
    sa.Column('equity', sa.Float(), nullable=False),
    sa.Column('cash', sa.Float(), nullable=False),
    sa.Column('position', sa.Float(), nullable=False),
    sa.Column('price', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'time'),
    sqlite_with_rowid=False,  # one b-tree per row instead of two: equity is written every bar
    )
    op.create_table('events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=16), nullable=False),
    sa.Column('time', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_run', ['run_id', 'time'], unique=False)

    op.create_table('trades',
    sa.Column('id', sa.String(length=48), nullable=False),
    sa.Column('run_id', sa.String(length=16), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('qty', storage.schema.ExactDecimal(length=64), nullable=False),
    sa.Column('entry_time', sa.BigInteger(), nullable=False),
    sa.Column('exit_time', sa.BigInteger(), nullable=False),
    sa.Column('entry_price', storage.schema.ExactDecimal(length=64), nullable=False),
    sa.Column('exit_price', storage.schema.ExactDecimal(length=64), nullable=False),
    sa.Column('gross_pnl', storage.schema.ExactDecimal(length=64), nullable=False),
    sa.Column('fees', storage.schema.ExactDecimal(length=64), nullable=False),
    sa.Column('net_pnl', storage.schema.ExactDecimal(length=64), nullable=False),
    sa.Column('return_pct', sa.Float(), nullable=False),
    sa.Column('bars_held', sa.Integer(), nullable=False),
    sa.Column('entry_decision_id', sa.String(length=48), nullable=True),
    sa.Column('exit_decision_id', sa.String(length=48), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('trades', schema=None) as batch_op:
        batch_op.create_index('ix_trades_run', ['run_id', 'exit_time'], unique=False)

    op.create_table('orders',
    sa.Column('id', sa.String(length=48), nullable=False),
    sa.Column('run_id', sa.String(length=16), nullable=False),
    sa.Column('decision_id', sa.String(length=48), nullable=True),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('side', sa.String(length=8), nullable=False),
    sa.Column('order_type', sa.String(length=8), nullable=False),
    sa.Column('qty', storage.schema.ExactDecimal(length=64), nullable=False),
    sa.Column('price', storage.schema.ExactDecimal(length=64), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('exchange_order_id', sa.String(length=64), nullable=True),
    sa.Column('filled_qty', storage.schema.ExactDecimal(length=64), nullable=False),
    sa.Column('avg_fill_price', storage.schema.ExactDecimal(length=64), nullable=True),
    sa.Column('reject_reason', sa.Text(), nullable=True),
    sa.Column('adopted', sa.Boolean(), nullable=False),
    sa.Column('created_time', sa.BigInteger(), nullable=False),
    sa.Column('updated_time', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index('ix_orders_run', ['run_id', 'created_time'], unique=False)

    op.create_table('fills',
    sa.Column('exec_id', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=16), nullable=False),
    sa.Column('order_id', sa.String(length=48), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('side', sa.String(length=8), nullable=False),
    sa.Column('qty', storage.schema.ExactDecimal(length=64), nullable=False),
    sa.Column('price', storage.schema.ExactDecimal(length=64), nullable=False),
    sa.Column('fee', storage.schema.ExactDecimal(length=64), nullable=False),
    sa.Column('is_maker', sa.Boolean(), nullable=False),
    sa.Column('time', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('exec_id')
    )
    with op.batch_alter_table('fills', schema=None) as batch_op:
        batch_op.create_index('ix_fills_run', ['run_id', 'time'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('fills', schema=None) as batch_op:
        batch_op.drop_index('ix_fills_run')

    op.drop_table('fills')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_run')

    op.drop_table('orders')
    with op.batch_alter_table('trades', schema=None) as batch_op:
        batch_op.drop_index('ix_trades_run')

    op.drop_table('trades')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_run')

    op.drop_table('events')
    op.drop_table('equity')
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_decisions_run_time')

    op.drop_table('decisions')
    op.drop_table('runs')
