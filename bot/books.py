"""One market's books: what its venue's news adds up to, journaled as it arrives.

Every order update and fill is journaled; fills build round-trip trades (bot/trades.py) and the
fees paid; funding settlements (each once, however often the venue tells it) and liquidations
are counted. The run's summary (bot/run_summary.py) reads them; a resumed run rebuilds them from
its journal (:meth:`Books.restore`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import structlog

from bot.domain import Category, Fill, Instrument, Order, OrderStatus
from bot.trades import TradeLedger
from storage.journal import Journal
from storage.records import RunSnapshot

log = structlog.get_logger("bot.engine")

_ENDED_UNFILLED = (OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED)


class Books:
    """``multi_market``: trade ids name the market (two markets' trades never share an id)."""

    def __init__(self, run_id: str, symbol: str, instrument: Instrument, journal: Journal,
                 multi_market: bool = False) -> None:
        self.symbol = symbol
        self.journal = journal
        # Spot exits leave what is below one lot (a buy's fee is paid in the coin): that is flat.
        dust = instrument.qty_step if instrument.category is Category.SPOT else Decimal(0)
        self.ledger = TradeLedger(run_id, symbol if multi_market else None, dust)
        self.trade_pnls: list[Decimal] = []
        #: Each closed trade's exit reason (None: not a protective exit), for the summary.
        self.trade_exits: list[str | None] = []
        self.fees_paid = Decimal(0)
        self.funding_paid = Decimal(0)  # net, negative when received (bot/funding.py)
        self._funded: set[int] = set()  # settlement times journaled (a venue may tell one twice)
        self.liquidations = 0

    def on_order_event(self, order: Order, fill: Fill | None, bar_index: int) -> None:
        """An order's new state, with the fill that moved it (if any), on bar ``bar_index``."""
        journal = self.journal
        journal.update_order(order)
        if fill is not None:
            journal.record_fill(fill)
            self.fees_paid += fill.fee_value
            for trade in self.ledger.on_fill(fill, order.decision_id, bar_index):
                trade["symbol"] = self.symbol
                trade["exit_reason"] = None if order.exit_reason is None else str(order.exit_reason)
                self.trade_exits.append(trade["exit_reason"])
                self.trade_pnls.append(trade["net_pnl"])
                journal.record_trade(trade)
        elif order.status in _ENDED_UNFILLED:
            journal.record_event(order.updated_time, f"order_{order.status}", {
                "order_id": order.client_order_id, "reason": order.reject_reason})

    def on_funding(self, t: int, rate: float, qty: Decimal, price: Decimal, amount: Decimal) -> None:
        if t in self._funded:  # a resumed live run's catch-up may fetch a settlement journaled before
            return
        self._funded.add(t)
        self.funding_paid -= amount
        self.journal.record_funding(self.symbol, t, rate, qty, price, amount)

    def on_liquidation(self, order: Order, detail: dict[str, Any]) -> None:
        """The venue's liquidation order (broker/margin.py): journaled, with a ``liquidation`` event."""
        self.liquidations += 1
        log.warning("liquidation", **detail)
        self.journal.record_order(order)
        self.journal.record_event(order.created_time, "liquidation", {"order_id": order.client_order_id, **detail})

    def restore(self, snap: RunSnapshot, bar_of: dict[int, int]) -> None:
        """A journaled run's books: the trade ledger rebuilt from the same fills (journaled trades
        are not written again: inserts ignore known ids), fees, funding and liquidations.
        ``bar_of``: bar index by bar time."""
        for f in snap.fills:
            self.ledger.on_fill(f, snap.decision_of.get(f.client_order_id), bar_of.get(f.time, 0))
        self.trade_pnls.extend(snap.trade_pnls)
        self.fees_paid = snap.fees
        self.funding_paid = -sum((a for _, _, a in snap.funding), Decimal(0))
        self._funded = {t for _, t, _ in snap.funding}
        self.liquidations = sum(1 for f in snap.fills if f.reason == "liquidation")
