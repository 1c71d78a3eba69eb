"""The broker interface. A broker never decides anything: it executes OrderRequests.

Submission is synchronous and non-blocking: ``submit`` returns at once with the order's known
status (a network broker returns it SUBMITTED and finishes the call in the background). What
happens afterwards (acks, fills, cancels) reaches the engine through the listener, so the
engine's per-candle core is the same code whatever the broker.

Reconciliation (bot/reconcile.py) asks every broker the same venue-side questions: an order by
client id, executions since a time, the orders open at the venue, the books. The simulated
broker is its own venue and answers from its wallet; the Bybit broker asks the exchange.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any, Protocol

from bot.domain import ZERO, Balance, Fill, Instrument, Order, OrderRequest, Position
from bot.protection import Protection

if TYPE_CHECKING:
    import numpy as np

#: Called with the order's new state, and the fill that caused it when there is one.
Listener = Callable[[Order, Fill | None], None]


class VenueListener(Protocol):
    """What a broker tells its owner besides order updates (the engine implements it)."""

    def on_adopted(self, order: Order) -> None:
        """An order the venue has and the journal does not (first seen after a restart)."""

    def on_venue_event(self, kind: str, payload: dict[str, Any]) -> None:
        """Something worth journaling happened at the venue (fills recovered, a resync)."""

    def on_funding(self, t: int, rate: float, qty: Decimal, price: Decimal, amount: Decimal) -> None:
        """The position was settled for funding at ``t`` (``amount``: cash moved, negative = paid)."""

    def on_exit_order(self, order: Order, trigger: Decimal | None) -> None:
        """A protective exit triggered (at ``trigger``, when known) and became ``order``; its
        updates and fills follow through the listener."""

    def on_liquidation(self, order: Order, detail: dict[str, Any]) -> None:
        """The venue liquidates the position with ``order`` (its fill follows through the listener)."""


class MarketDataListener(Protocol):
    """Something that must see every closed bar's prices (the simulated fill engine)."""

    def pending(self) -> bool:
        """True when the next bar has work to do."""

    def on_bar(self, time_ms: int, open_: float, high: float, low: float, close: float) -> None: ...

    def quiet_bars(self, upcoming: dict[str, np.ndarray]) -> int:
        """How many of these next bars (arrays by field), from the first, need nothing here."""


class Broker(ABC):
    instrument: Instrument
    #: True when orders leave the process: the journal must be flushed before each submit.
    write_ahead: bool = False

    def __init__(self) -> None:
        self._listener: Listener | None = None
        self._venue: VenueListener | None = None

    def set_listener(self, listener: Listener, venue: VenueListener | None = None) -> None:
        self._listener = listener
        self._venue = venue

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

    def set_protection(self, protection: Protection | None, now_ms: int, *, send: bool = True) -> None:
        """Guard the open position with these protective levels (None: remove them); ``send=False``:
        the venue holds them already (a restart), only follow them."""
        raise NotImplementedError(f"{type(self).__name__} cannot place protective orders")

    def protection(self) -> Protection | None:
        """The protective levels guarding the position now (None: unguarded)."""
        return None

    async def venue_protection(self) -> Protection | None:
        """The protective levels the venue holds on the position (reconciliation)."""
        return self.protection()

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

    # -- resume and reconciliation ----------------------------------------------------------------
    @abstractmethod
    def restore(self, initial_cash: Decimal, fills: list[Fill], orders: list[Order]) -> None:
        """A resumed run's journaled fills and orders: rebuild the wallet, or follow them again."""

    def restore_funding(self, amount: Decimal) -> None:
        """A resumed run's funding cash (every market's, ``amount`` moved in all): a wallet this
        broker keeps moves by it; a venue's books are the venue's."""

    @abstractmethod
    async def lookup_order(self, client_order_id: str) -> Order | None:
        """The venue's view of an order (its fills booked and reported); None if it has no such order."""

    @abstractmethod
    def resolve_missing(self, client_order_id: str, reason: str) -> None:
        """A journaled order the venue never received: rejected, so it is never waited on."""

    @abstractmethod
    async def fills_since(self, since_ms: int | None = None) -> int:
        """Executions at the venue since ``since_ms`` (default: the last one seen) not yet booked:
        book and report them; return how many."""

    @abstractmethod
    async def venue_open_orders(self) -> list[Order]:
        """Orders open at the venue; those this broker did not know are adopted and reported."""

    @abstractmethod
    async def refresh_books(self) -> Position:
        """The position as the venue holds it now (the books follow the venue)."""

    async def check_books(self) -> dict[str, Any] | None:
        """Venue books against ours; the difference (after resyncing to the venue) or None."""
        return None

    async def close(self) -> None:
        """Release connections; orders at the venue stay as they are."""

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait (bounded) until nothing is in flight; True when everything resolved."""
        return True

    async def orders_sent(self, timeout_s: float) -> None:
        """Wait (bounded) until every order submitted so far has been answered by its venue (its
        create call returned): what follows then never competes with sending it. A broker whose
        ``submit`` is the venue (the simulated one) returns at once, without yielding."""


def fill_pieces(qty: Decimal, step: Decimal, n: int) -> list[Decimal]:
    """``qty`` as up to ``n`` executions, each a whole number of lots (the last takes the rest):
    how a fill is split when partial fills are on (both the simulator and the simulated broker)."""
    n = max(1, min(n, int(qty / step))) if step > 0 else 1
    if n == 1:
        return [qty]
    piece = (qty / n / step).to_integral_value(rounding=ROUND_FLOOR) * step
    return [piece] * (n - 1) + [qty - piece * (n - 1)]


def thin_part(qty: Decimal, step: Decimal) -> Decimal:
    """What a thin bar fills of a market order of ``qty`` (half, rounded down to the lot); the
    rest is cancelled as Bybit cancels what an IOC market order could not fill."""
    return (qty / 2 / step).to_integral_value(rounding=ROUND_FLOOR) * step if step > 0 else ZERO


def to_decimal(x: float) -> Decimal:
    """Float -> Decimal through its shortest repr (37820.5 stays 37820.5, not a binary tail)."""
    return Decimal(repr(float(x)))
