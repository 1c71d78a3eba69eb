"""The shared vocabulary of the bot. A leaf module: it imports nothing of the project.

Domain objects are frozen, slotted dataclasses. Prices and quantities that cross the broker
boundary are :class:`~decimal.Decimal`; candle values stay floats because they feed model math.
Time is UTC, integer milliseconds.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from typing import Any

ZERO = Decimal(0)


class Side(StrEnum):
    BUY = "Buy"
    SELL = "Sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderType(StrEnum):
    MARKET = "Market"
    LIMIT = "Limit"


class ExitReason(StrEnum):
    """Why a protective order closed a position (journaled on its order and trade)."""

    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING_STOP = "trailing_stop"


class Category(StrEnum):
    SPOT = "spot"
    LINEAR = "linear"


class OrderStatus(StrEnum):
    """Order life cycle. ``CREATED``: journaled intent, not yet sent. ``SUBMITTED``: sent, the
    venue's answer not yet known (a timed-out create stays here until looked up by client id)."""

    CREATED = "created"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)

_S = OrderStatus
#: The written transition table: status -> statuses it may move to. Anything else raises.
ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    _S.CREATED: frozenset({_S.SUBMITTED, _S.REJECTED}),
    # A submitted order may be answered by any venue outcome; fills can overtake the ack.
    _S.SUBMITTED: frozenset(
        {_S.ACCEPTED, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELLED, _S.REJECTED, _S.EXPIRED}
    ),
    _S.ACCEPTED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELLED, _S.EXPIRED}),
    _S.PARTIALLY_FILLED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELLED, _S.EXPIRED}),
    _S.FILLED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.REJECTED: frozenset(),
    _S.EXPIRED: frozenset(),
}


# Order.accepted skips the two intermediate copies of these moves.
assert _S.SUBMITTED in ORDER_TRANSITIONS[_S.CREATED] and _S.ACCEPTED in ORDER_TRANSITIONS[_S.SUBMITTED]


class IllegalTransitionError(Exception):
    """Raised by :meth:`Order.transition` on a move the table does not allow."""


TIMEFRAME_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}


def timeframe_ms(timeframe: str) -> int:
    try:
        return TIMEFRAME_MS[timeframe]
    except KeyError:
        raise ValueError(
            f"unknown timeframe {timeframe!r}; expected one of {', '.join(TIMEFRAME_MS)}"
        ) from None


@dataclass(frozen=True, slots=True)
class Candle:
    """A closed bar. ``open_time`` is the bar's open time in UTC milliseconds."""

    symbol: str
    timeframe: str
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class Instrument:
    """Trading rules of a symbol: every price and quantity sent out is rounded to these."""

    symbol: str
    category: Category
    tick_size: Decimal
    qty_step: Decimal
    min_qty: Decimal
    min_notional: Decimal = ZERO
    max_qty: Decimal | None = None

    @property
    def base_coin(self) -> str:
        return base_coin(self.symbol)

    @property
    def quote_coin(self) -> str:
        return self.symbol[len(base_coin(self.symbol)):]

    def floor_qty(self, qty: Decimal) -> Decimal:
        """Round a quantity towards zero to the lot step."""
        steps = (qty / self.qty_step).to_integral_value(rounding=ROUND_DOWN)
        return (steps * self.qty_step).quantize(self.qty_step)

    def round_price(self, price: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
        steps = (price / self.tick_size).to_integral_value(rounding=rounding)
        return (steps * self.tick_size).quantize(self.tick_size)

    def violation(self, req: OrderRequest) -> str | None:
        """Why ``req`` breaks this instrument's rules (lot, min/max qty, tick, min notional), or None.

        Every broker applies it before an order goes anywhere, so both fail the same way.
        """
        if req.qty <= 0:
            return "quantity must be positive"
        if req.qty != self.floor_qty(req.qty):
            return f"quantity {req.qty} is not a multiple of the lot step {self.qty_step}"
        if req.qty < self.min_qty:
            return f"quantity {req.qty} below the minimum {self.min_qty}"
        if self.max_qty is not None and req.qty > self.max_qty:
            return f"quantity {req.qty} above the maximum {self.max_qty}"
        if req.order_type is OrderType.LIMIT:
            if req.price is None or req.price <= 0:
                return "limit order without a positive price"
            if req.price != self.round_price(req.price):
                return f"price {req.price} is not a multiple of the tick {self.tick_size}"
        ref = req.price or req.reference_price
        if ref is not None and self.min_notional and req.qty * ref < self.min_notional and not req.reduce_only:
            return f"notional {req.qty * ref} below the minimum {self.min_notional}"
        return None

    def tradable(self, qty: Decimal, price: Decimal) -> bool:
        """True when ``qty`` at ``price`` clears the minimum order size and notional."""
        qty = abs(qty)
        return qty >= self.min_qty and qty * price >= self.min_notional and qty > 0


_JSON_SCALARS = (str, int, type(None))  # bool is an int
_JSON_KEYS = (str, int, float, type(None))


def check_json(value: Any, _depth: int = 0) -> None:
    """Raise as ``json.dumps(value, allow_nan=False)`` would (TypeError: a value or key JSON
    cannot hold; ValueError: a non-finite float, or nesting past 100 levels: a cycle), without
    writing the text: an explanation is checked on every decision, and formatting its floats
    was most of the check."""
    if isinstance(value, float):
        if value - value != 0.0:  # inf - inf and nan - nan are nan
            raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
    elif isinstance(value, _JSON_SCALARS):
        return
    elif _depth > 100:
        raise ValueError("Circular reference detected (or nested past 100 levels)")
    elif isinstance(value, dict):
        for k, v in value.items():
            if type(k) is not str:
                if not isinstance(k, _JSON_KEYS):
                    raise TypeError(f"keys must be str, int, float, bool or None, not {type(k).__name__}")
                if type(k) is float and k - k != 0.0:
                    raise ValueError(f"Out of range float values are not JSON compliant: {k!r}")
            tv = type(v)
            if tv is float:  # a dict of scores: checked here, without a call per value
                if v - v != 0.0:
                    raise ValueError(f"Out of range float values are not JSON compliant: {v!r}")
            elif tv is not str:
                check_json(v, _depth + 1)
    elif isinstance(value, list | tuple):
        if all(type(v) is float for v in value) and math.isfinite(sum(value)):
            return  # a vector: an inf or a nan would make the sum one (an overflow takes the long way)
        for v in value:
            if type(v) is float:
                if v - v != 0.0:
                    raise ValueError(f"Out of range float values are not JSON compliant: {v!r}")
            elif type(v) is not str:
                check_json(v, _depth + 1)
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


#: The key a failed deferred explanation leaves in the journaled explanation (its error, one line).
EXPLANATION_ERROR = "explanation_error"
#: The key of a journaled explanation whose deferred part is not yet in (the row was written
#: ahead of the order; the completed explanation replaces it before the bar's commit).
EXPLANATION_PENDING = "explanation_pending"


@dataclass(frozen=True, slots=True)
class Decision:
    """What a strategy wants: a target exposure (fraction of equity, signed) and why.

    ``target`` None means "no trade": keep whatever position is held (used for errors and
    warm-up). ``explanation`` must be JSON-serialisable.

    ``deferred`` (optional): the costly rest of the explanation (an attribution), a callable the
    engine calls *after* the decision's order has left, before the next bar of the market. It
    returns a dict merged into ``explanation`` (:meth:`completed`) and works from a snapshot of
    what it needs (the window, the model state before the step), never from later bars; it must
    not change the strategy's state. Not part of equality: a decision is what it decided.
    """

    symbol: str
    bar_time: int
    target: float | None
    confidence: float = 1.0
    model_id: str | None = None
    explanation: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    deferred: Callable[[], dict[str, Any]] | None = field(default=None, compare=False, repr=False)
    #: The strategy's own protective levels (prices): they win over the market's ``exits`` config.
    stop_price: float | None = None
    take_profit_price: float | None = None

    def completed(self) -> Decision:
        """This decision with its deferred part merged into the explanation (itself when it has
        none). A key the eager part already holds (a ``None`` placeholder) keeps its place, so the
        stored key order is the strategy's. Raises whatever the deferred part raises."""
        if self.deferred is None:
            return self
        return replace(self, explanation={**self.explanation, **self.deferred()}, deferred=None)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An instruction to the broker, already rounded to the instrument's rules."""

    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType = OrderType.MARKET
    price: Decimal | None = None
    decision_id: str | None = None
    reduce_only: bool = False
    #: Price used for sizing (the decision bar's close); lets the simulated broker shrink a buy.
    reference_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Order:
    """An order as the bot knows it. Status changes only through :meth:`transition`."""

    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType
    status: OrderStatus
    created_time: int
    updated_time: int
    price: Decimal | None = None
    decision_id: str | None = None
    exchange_order_id: str | None = None
    filled_qty: Decimal = ZERO
    avg_fill_price: Decimal | None = None
    reject_reason: str | None = None
    adopted: bool = False
    #: Set on the order a protective exit became (stop_loss, take_profit, trailing_stop).
    exit_reason: ExitReason | None = None

    @classmethod
    def from_request(cls, req: OrderRequest, now_ms: int) -> Order:
        return cls(
            client_order_id=req.client_order_id,
            symbol=req.symbol,
            side=req.side,
            qty=req.qty,
            order_type=req.order_type,
            status=OrderStatus.CREATED,
            created_time=now_ms,
            updated_time=now_ms,
            price=req.price,
            decision_id=req.decision_id,
        )

    @classmethod
    def accepted(cls, req: OrderRequest, now_ms: int, exchange_order_id: str) -> Order:
        """The order a venue acknowledged at once: created, submitted and accepted at ``now_ms``
        (the moves CREATED -> SUBMITTED -> ACCEPTED, built as one copy)."""
        return cls(req.client_order_id, req.symbol, req.side, req.qty, req.order_type, OrderStatus.ACCEPTED,
                   now_ms, now_ms, req.price, req.decision_id, exchange_order_id)

    def transition(self, status: OrderStatus, now_ms: int, **changes: Any) -> Order:
        """Return a copy in ``status``; raise :class:`IllegalTransitionError` if not allowed."""
        if status not in ORDER_TRANSITIONS[self.status]:
            raise IllegalTransitionError(
                f"order {self.client_order_id}: {self.status} -> {status} is not allowed"
            )
        # Built field by field (``dataclasses.replace`` re-reads the fields on every call, twice
        # the cost: three transitions are most of an order's bookkeeping in a backtest).
        new = Order(self.client_order_id, self.symbol, self.side, self.qty, self.order_type, status,
                    self.created_time, now_ms, self.price, self.decision_id, self.exchange_order_id,
                    self.filled_qty, self.avg_fill_price, self.reject_reason, self.adopted, self.exit_reason)
        for name, value in changes.items():
            if name not in _ORDER_FIELD_SET:
                raise TypeError(f"Order has no field {name!r}")
            object.__setattr__(new, name, value)  # the new copy's own field, before anyone sees it
        return new

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.filled_qty


_ORDER_FIELD_SET = frozenset(f.name for f in fields(Order))


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution. ``exec_id`` is the venue's execution id: the journal's idempotency key.

    ``fee`` is in ``fee_currency`` (Bybit's ``feeCurrency``; "" = the quote coin). Bybit spot
    charges a buy's fee in the coin bought: the holding grows by ``qty - fee``, the cash pays
    ``qty x price`` only.
    """

    exec_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    time: int
    is_maker: bool = False
    fee_currency: str = ""
    #: Why the venue traded it, when no order of the bot's did: ``liquidation``; "" otherwise.
    reason: str = ""

    @property
    def fee_in_base(self) -> bool:
        return fee_in_base(self.symbol, self.fee_currency)

    @property
    def held_change(self) -> Decimal:
        """What the fill does to the quantity held: signed qty, less a fee paid in the base coin."""
        return held_change(self.side, self.qty, self.fee, self.fee_in_base)

    @property
    def fee_value(self) -> Decimal:
        """The fee in the quote coin (a base-coin fee valued at the fill price)."""
        return self.fee * self.price if self.fee_in_base else self.fee

    @property
    def cash_change(self) -> Decimal:
        return fill_cash(self.side, self.qty, self.price, self.fee, self.fee_in_base)


@dataclass(frozen=True, slots=True)
class Position:
    """Signed quantity (negative = short) and its average entry price."""

    symbol: str
    qty: Decimal = ZERO
    avg_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO

    @property
    def is_flat(self) -> bool:
        return self.qty == 0


@dataclass(frozen=True, slots=True)
class Balance:
    cash: Decimal
    equity: Decimal


@functools.lru_cache(maxsize=1024)
def base_coin(symbol: str) -> str:
    """The base coin of a Bybit symbol (base coin + quote coin): BTC of BTCUSDT."""
    for quote in ("USDT", "USDC"):
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)]
    return symbol[:-3]


def fee_in_base(symbol: str, fee_currency: str) -> bool:
    """True when a fee in ``fee_currency`` was charged in ``symbol``'s base coin (spot buys)."""
    return bool(fee_currency) and fee_currency == base_coin(symbol)


def held_change(side: Side, qty: Decimal, fee: Decimal = ZERO, in_base: bool = False) -> Decimal:
    """The change of the quantity held: +qty (buy) / -qty (sell), less a fee paid in the base coin."""
    signed = qty if side is Side.BUY else -qty
    return signed - fee if in_base else signed


def client_order_id(run_id: str, symbol: str, decision_time: int, seq: int = 0) -> str:
    """Deterministic client order id (Bybit ``orderLinkId``, max 36 chars).

    Same run, symbol and decision time -> same id, so a restarted bot can ask the venue whether
    the order already exists before sending it again.
    """
    return f"{run_id}-{symbol_tag(symbol)}-{decision_time}-{seq}"


def decision_id(run_id: str, bar_time: int, symbol: str | None = None) -> str:
    """Deterministic decision id: one decision per run, market and bar. A one-market run leaves
    the market out (``run-bar``); a multi-market run names it like client order ids do."""
    if symbol is None:
        return f"{run_id}-{bar_time}"
    return f"{run_id}-{symbol_tag(symbol)}-{bar_time}"


@functools.cache
def symbol_tag(symbol: str) -> str:
    """Four hex digits naming a market in the ids of a multi-market run (decisions, trades)."""
    return hashlib.sha1(symbol.encode()).hexdigest()[:4]


class DecisionStatus(StrEnum):
    """What became of a decision (journaled with it)."""

    ORDER = "order"        # an order was sent
    HOLD = "hold"          # already at the target (or the gap is below the lot / rebalance threshold)
    NO_TRADE = "no_trade"  # the strategy had no target (warm-up)
    ERROR = "error"        # the strategy or model failed: journaled, never a crash
    BLOCKED = "blocked"    # risk refused the order (cooldown, minimum notional)
    FROZEN = "frozen"      # a kill switch froze trading
    WAITING = "waiting"    # an order was still working; looked at again when it ends
    SUPERSEDED = "superseded"  # waited, and a newer decision of the market replaced it
    CATCH_UP = "catch_up"  # a bar older than the newest closed one (a backfill): never traded

    @property
    def acted(self) -> bool:
        """The decision's target became the engine's target."""
        return self in _ACTED


_ACTED = frozenset({DecisionStatus.ORDER, DecisionStatus.HOLD, DecisionStatus.WAITING, DecisionStatus.BLOCKED,
                    DecisionStatus.SUPERSEDED})


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    STOPPED = "stopped"

    @property
    def is_final(self) -> bool:
        return self is not RunStatus.RUNNING


def fill_cash(side: Side, qty: Decimal, price: Decimal, fee: Decimal = ZERO, fee_in_base: bool = False) -> Decimal:
    """The cash one execution moves, whatever the book: ``-(signed qty x price) - fee`` (a fee
    paid in the base coin moves no cash)."""
    return -((qty if side is Side.BUY else -qty) * price) - (ZERO if fee_in_base else fee)
