"""Journal schema (SQLAlchemy Core). Alembic migrations in ``storage/migrations`` build it.

Money is stored exactly: Decimal columns are NUMERIC on PostgreSQL and text on SQLite (which
has no exact decimal type), always read back as :class:`~decimal.Decimal`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect

from storage import explain_codec


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC where the database has it exactly, canonical text on SQLite."""

    impl = String(64)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(38, 18, asdecimal=True))
        return dialect.type_descriptor(String(64))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        d = value if isinstance(value, Decimal) else Decimal(str(value))
        return d if dialect.name == "postgresql" else format(canonical(d), "f")

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return canonical(value if isinstance(value, Decimal) else Decimal(str(value)))


class CompactJSON(TypeDecorator[Any]):
    """A JSON tree stored as the bytes of :mod:`storage.explain_codec` (quantised vectors,
    rounded floats, compressed), read back as the plain tree."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, bytes):  # encoded already (storage/journal_process.py): a tree is never bytes
            return value
        return explain_codec.encode(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return explain_codec.decode(value)


def canonical(d: Decimal) -> Decimal:
    """Drop trailing zeros without switching to exponent form (100, not 1E+2)."""
    d = d.normalize()
    return d.quantize(Decimal(1)) if d.as_tuple().exponent > 0 else d


metadata = MetaData()
#: Alembic's record of the journal's migration head (alembic_version belongs to Optuna's tables).
VERSION_TABLE = "journal_version"

runs = Table(
    "runs",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("mode", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("strategy", Text, nullable=False),  # a file strategy is named by its path
    # One market, or the run's markets comma-separated in config order.
    Column("symbol", Text, nullable=False),
    Column("timeframe", Text, nullable=False),
    Column("category", Text, nullable=False),
    Column("model_id", String(64)),
    Column("data_source", Text),
    Column("config", JSON, nullable=False),
    Column("initial_cash", ExactDecimal, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("first_bar", BigInteger),
    Column("last_bar", BigInteger),
    Column("bars", Integer, nullable=False, default=0),
    Column("summary", JSON),
    Column("strategy_state", JSON),
    Column("error", Text),
    # The machine and process that started (or last resumed) the run: many bots, one journal.
    Column("host", Text),
    Column("pid", Integer),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", String(48), primary_key=True),
    Column("run_id", String(16), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("bar_time", BigInteger, nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("target", Float),
    Column("confidence", Float),
    Column("model_id", String(64)),
    Column("price", Float),
    Column("status", String(16), nullable=False),
    # Written and read through storage/explain_codec.py (docs/explanations.md, "Storage").
    Column("explanation", CompactJSON),
    Column("error", Text),
    Index("ix_decisions_run_time", "run_id", "bar_time"),
)

orders = Table(
    "orders",
    metadata,
    Column("id", String(48), primary_key=True),  # the client order id (Bybit orderLinkId)
    Column("run_id", String(16), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("decision_id", String(48), ForeignKey("decisions.id"), nullable=True),
    Column("symbol", String(32), nullable=False),
    Column("side", String(8), nullable=False),
    Column("order_type", String(8), nullable=False),
    Column("qty", ExactDecimal, nullable=False),
    Column("price", ExactDecimal),
    Column("status", String(20), nullable=False),
    Column("exchange_order_id", String(64)),
    Column("filled_qty", ExactDecimal, nullable=False),
    Column("avg_fill_price", ExactDecimal),
    Column("reject_reason", Text),
    Column("adopted", Boolean, nullable=False, default=False),
    # A protective exit's order: stop_loss, take_profit or trailing_stop (its decision set it).
    Column("exit_reason", String(16)),
    Column("created_time", BigInteger, nullable=False),
    Column("updated_time", BigInteger, nullable=False),
    Index("ix_orders_run", "run_id", "created_time"),
)

fills = Table(
    "fills",
    metadata,
    Column("exec_id", String(64), primary_key=True),  # the venue's execution id: idempotency key
    Column("run_id", String(16), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("order_id", String(48), ForeignKey("orders.id"), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("side", String(8), nullable=False),
    Column("qty", ExactDecimal, nullable=False),
    Column("price", ExactDecimal, nullable=False),
    Column("fee", ExactDecimal, nullable=False),
    # The coin the fee was paid in (Bybit feeCurrency): the quote coin, or the base coin on a
    # spot buy (which then holds qty - fee). "" on rows from before it was recorded: the quote.
    Column("fee_currency", String(16), nullable=False, server_default=""),
    Column("is_maker", Boolean, nullable=False, default=False),
    Column("time", BigInteger, nullable=False),
    # Why the venue traded it when no order of the bot's did (``liquidation``); "" otherwise.
    Column("reason", String(16), nullable=False, server_default=""),
    Index("ix_fills_run", "run_id", "time"),
)


#: Funding settlements of a linear market's position (bot/funding.py): ``amount`` is the cash
#: moved (negative: paid), ``qty`` the signed position settled, ``price`` the settlement price.
funding = Table(
    "funding",
    metadata,
    Column("run_id", String(16), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("symbol", String(32), primary_key=True),
    Column("time", BigInteger, primary_key=True),
    Column("rate", Float, nullable=False),
    Column("qty", ExactDecimal, nullable=False),
    Column("price", ExactDecimal, nullable=False),
    Column("amount", ExactDecimal, nullable=False),
)

trades = Table(
    "trades",
    metadata,
    Column("id", String(48), primary_key=True),
    Column("run_id", String(16), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("qty", ExactDecimal, nullable=False),
    Column("entry_time", BigInteger, nullable=False),
    Column("exit_time", BigInteger, nullable=False),
    Column("entry_price", ExactDecimal, nullable=False),
    Column("exit_price", ExactDecimal, nullable=False),
    Column("gross_pnl", ExactDecimal, nullable=False),
    Column("fees", ExactDecimal, nullable=False),
    Column("net_pnl", ExactDecimal, nullable=False),
    Column("return_pct", Float, nullable=False),
    Column("bars_held", Integer, nullable=False),
    Column("entry_decision_id", String(48)),
    Column("exit_decision_id", String(48)),
    # The trade was closed by a protective exit (stop_loss, take_profit, trailing_stop); else null.
    Column("exit_reason", String(16)),
    Index("ix_trades_run", "run_id", "exit_time"),
)

equity_blocks = Table(
    "equity_blocks",
    metadata,
    # The equity curve, one market's marks for consecutive bars per row (storage/equity_codec.py):
    # ``equity`` and ``cash`` are the portfolio's at that market's bar close. ``id`` orders the
    # blocks as written (a time marked twice keeps its first mark).
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(16), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("first_time", BigInteger, nullable=False),
    Column("last_time", BigInteger, nullable=False),
    Column("n", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Index("ix_equity_blocks_run", "run_id", "symbol", "last_time"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(16), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("time", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("payload", JSON),
    Index("ix_events_run", "run_id", "time"),
)
