"""The broker interface. A broker never decides anything: it executes OrderRequests.

Submission is synchronous and non-blocking: ``submit`` returns at once with the order's known
status (a network broker returns it SUBMITTED and finishes the call in the background). What
happens afterwards (acks, fills, cancels) reaches the engine through the listener, so the
engine's per-candle core is the same code whatever the broker.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from decimal import Decimal

from bot.domain import Balance, Fill, Instrument, Order, OrderRequest, Position

#: Called with the order's new state, and the fill that caused it when there is one.
Listener = Callable[[Order, Fill | None], None]


class Broker(ABC):
    instrument: Instrument
    #: True when orders leave the process: the journal must be flushed before each submit.
    write_ahead: bool = False

    def __init__(self) -> None:
        self._listener: Listener | None = None

    def set_listener(self, listener: Listener) -> None:
        self._listener = listener

    def _emit(self, order: Order, fill: Fill | None = None) -> None:
        if self._listener is not None:
            self._listener(order, fill)

    @abstractmethod
    def submit(self, req: OrderRequest, now_ms: int) -> Order:
        """Send an order. Returns it SUBMITTED/ACCEPTED, or REJECTED with a reason."""

    @abstractmethod
    def cancel(self, client_order_id: str, now_ms: int) -> Order | None:
        """Cancel an open order; None when no such open order exists."""

    @abstractmethod
    def open_orders(self) -> list[Order]: ...

    @abstractmethod
    def position(self) -> Position: ...

    @abstractmethod
    def balance(self, mark_price: float) -> Balance: ...

    def equity(self, mark_price: float) -> float:
        """Fast float mark-to-market for the per-bar equity curve."""
        return float(self.balance(mark_price).equity)

    def cash_and_qty(self) -> tuple[float, float]:
        b = self.balance(0.0)
        return float(b.cash), float(self.position().qty)

    def needs_prices(self) -> bool:
        """True when :meth:`on_bar` has work to do (the simulated broker with working orders)."""
        return False

    def on_bar(self, time_ms: int, open_: float, high: float, low: float, close: float) -> None:
        """A new closed bar. The simulated broker fills pending orders here; venues ignore it."""


def to_decimal(x: float) -> Decimal:
    """Float -> Decimal through its shortest repr (37820.5 stays 37820.5, not a binary tail)."""
    return Decimal(repr(float(x)))
