"""The simulated fill engine used by backtests and paper trading.

Fill assumptions (written down in the README):

- A market order decided on bar t's close fills at bar t+1's open, moved against the trader by
  ``slippage_bps``, rounded to the tick. Never at the close that produced the decision.
- A limit order is live from the next bar on. A buy fills when the bar's low reaches the limit
  (at the open if the bar opens through it, else at the limit); a sell mirrors it.
- Fee: ``fee_rate`` x notional on every fill, both sides. Spot buys pay it in the coin bought,
  as Bybit does: ``fee_rate`` x qty of the base coin, so the holding grows by qty - fee and the
  cash pays qty x price; every other fee is in the quote coin.
- A buy that cash cannot pay for at the fill price shrinks to what cash buys, rounded down to
  the lot; below the instrument minimum it is rejected. Spot cannot sell more than it holds.
- Partial fills, off by default (backtests unchanged): ``partial_fills`` books each fill as up to
  N pieces (a market order one tick worse per piece), ``thin_every`` half-fills every Nth market
  order and cancels the rest; the same rules as the venue simulator's.
- Protective exits (stop-loss, take-profit, trailing stop) by broker/protective.py's rules,
  after the bar's working orders have met its open.
- Accounting is exact (Decimal): cash, signed position, average entry price, realised PnL.
- Several markets share one :class:`Wallet` (the run's USDT): one broker per market, each with
  its own position book and orders, every fill moving the one cash balance.
- Linear markets: isolated margin at ``market.leverage`` and liquidation at Bybit's liquidation
  price, closed at the bankruptcy price (broker/margin.py).
"""

from __future__ import annotations

from bisect import bisect_right
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np

from bot.domain import (
    ZERO,
    Balance,
    Category,
    ExitReason,
    Fill,
    Instrument,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Side,
)
from bot.positions import PositionBook
from bot.protection import Protection
from broker.base import Broker, fill_pieces, thin_part, to_decimal
from broker.margin import Liquidation, MarginBook, MarginRule, affordable_qty, liquidation_hit
from broker.protective import both_reached, exit_price, first_in_finer_bars, ratchet, trigger

_FEE_Q = Decimal("1e-10")


class Wallet:
    """The run's quote-currency cash, shared by every market's broker (exact, with a float mirror
    for the per-bar equity mark)."""

    __slots__ = ("cash", "cash_f", "margins")

    def __init__(self, initial_cash: float | Decimal) -> None:
        self.cash = Decimal(repr(float(initial_cash))) if isinstance(initial_cash, float | int) else initial_cash
        self.cash_f = float(self.cash)
        self.margins = MarginBook()  # each linear market's position cost and margin

    def move(self, delta: Decimal) -> None:
        self.cash += delta
        self.cash_f = float(self.cash)

    def reset(self, cash: Decimal) -> None:
        self.cash = Decimal(cash)
        self.cash_f = float(self.cash)


class SimulatedBroker(Broker):
    def __init__(self, instrument: Instrument, initial_cash: float, fee_rate: float,
                 slippage_bps: float, *, wallet: Wallet | None = None, partial_fills: int = 1,
                 thin_every: int = 0, margin: MarginRule | None = None) -> None:
        super().__init__()
        #: The venue simulator's knobs (broker/bybit_sim AccountConfig), same rules: each fill in
        #: up to N pieces, and every Nth market order half filled, the rest cancelled.
        self.partial_fills = partial_fills
        self.thin_every = thin_every
        self._market_orders = 0
        self._thin: set[str] = set()
        self.instrument = instrument
        self.fee_rate = Decimal(repr(fee_rate))
        self.slippage = Decimal(repr(slippage_bps)) / Decimal(10_000)
        self.wallet = wallet if wallet is not None else Wallet(initial_cash)
        self.book = PositionBook()
        self._orders: dict[str, Order] = {}
        self._done: dict[str, Order] = {}
        self._fill_seq = 0
        # Float mirror of the position for the per-bar equity mark (the hot path avoids Decimal).
        self._qty_f = 0.0
        self._funding_times: list[int] = []
        self._funding_rates: list[float] = []
        self._next_funding = 0  # index of the next settlement
        self.funding_paid = Decimal(0)  # net cash paid for funding (negative: received)
        self._protection: Protection | None = None
        #: Finer bars (``market.intrabar_data``): open times, highs, lows, and the bar length they
        #: subdivide; they order a bar's stop and target when it reached both.
        self._fine: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None = None
        #: Linear: isolated margin at this leverage, liquidation by Bybit's rule (spot: none).
        self.margin = None if instrument.category is Category.SPOT else (margin or MarginRule())
        self._liq_f: float | None = None  # the open position's liquidation price (float, hot path)

    def set_funding(self, times: list[int], rates: list[float], after_ms: int) -> None:
        """Settle at these funding times (bot/funding.py's rule), those after ``after_ms`` (the
        first traded bar's open: history bars before it are never settled)."""
        self._funding_times, self._funding_rates = [int(t) for t in times], [float(r) for r in rates]
        self._next_funding = bisect_right(self._funding_times, after_ms)

    @property
    def cash(self) -> Decimal:
        return self.wallet.cash

    @property
    def qty(self) -> Decimal:
        return self.book.qty

    @property
    def avg_price(self) -> Decimal:
        return self.book.avg_price

    @property
    def realized(self) -> Decimal:
        return self.book.realized

    @property
    def fees(self) -> Decimal:
        return self.book.fees

    @property
    def long_only(self) -> bool:
        return self.instrument.category is Category.SPOT

    # -- interface --------------------------------------------------------------------------
    def submit(self, req: OrderRequest, now_ms: int) -> Order:
        reason = self._validate(req)
        if reason:
            return Order.from_request(req, now_ms).transition(OrderStatus.SUBMITTED, now_ms).transition(
                OrderStatus.REJECTED, now_ms, reject_reason=reason)
        order = Order.accepted(req, now_ms, f"sim-{req.client_order_id}")
        self._orders[order.client_order_id] = order
        if req.order_type is OrderType.MARKET and self.thin_every > 0:
            self._market_orders += 1
            if self._market_orders % self.thin_every == 0:
                self._thin.add(req.client_order_id)
        return order

    def _validate(self, req: OrderRequest) -> str | None:
        reason = self.instrument.violation(req)
        if reason:
            return reason
        if req.client_order_id in self._orders:
            return "duplicate client order id"
        if self.long_only and req.side is Side.SELL:
            # Bybit 170131: a spot sell may not exceed the coin's free balance (held less what
            # working sells have locked).
            free = self.qty - sum((o.remaining for o in self._orders.values() if o.side is Side.SELL), ZERO)
            if req.qty > free:
                return f"spot sell of {req.qty} exceeds the {free} held (insufficient balance)"
        return None

    def cancel(self, client_order_id: str, now_ms: int) -> Order | None:
        order = self._orders.pop(client_order_id, None)
        if order is None:
            return None
        order = order.transition(OrderStatus.CANCELLED, now_ms)
        self._done[client_order_id] = order
        self._emit(order)
        return order

    def open_orders(self) -> list[Order]:
        return list(self._orders.values())

    def position(self) -> Position:
        return Position(self.instrument.symbol, self.qty, self.avg_price, self.realized)

    def balance(self, mark_price: float) -> Balance:
        equity = self.cash + self.qty * to_decimal(mark_price) if self.qty else self.cash
        return Balance(cash=self.cash, equity=equity)

    def equity(self, mark_price: float) -> float:
        return self.wallet.cash_f + self._qty_f * mark_price

    def cash_and_qty(self) -> tuple[float, float]:
        return self.wallet.cash_f, self._qty_f

    # -- the fill engine: a market-data listener -----------------------------------------------
    def pending(self) -> bool:
        """True when a bar has work to do here (an order is working, a position is protected or
        can be liquidated, or funding is to settle)."""
        return (bool(self._orders) or self._protection is not None or self._liq_f is not None
                or self._next_funding < len(self._funding_times))

    def quiet_bars(self, upcoming: dict[str, np.ndarray]) -> int:
        """How many of these next bars, from the first, :meth:`on_bar` would do nothing on: no
        order working and no protection to watch, no funding time reached, the position's
        liquidation price (its float pre-check) not touched."""
        if self._orders or self._protection is not None:
            return 0
        t = upcoming["time"]
        n = len(t)
        if self._next_funding < len(self._funding_times):
            n = min(n, int(np.searchsorted(t, self._funding_times[self._next_funding], side="left")))
        liq = self._liq_f
        if liq is not None and n:  # a bar's low is at most its open, its high at least
            hit = upcoming["low"][:n] <= liq if self._qty_f > 0 else upcoming["high"][:n] >= liq
            if hit.any():
                n = int(hit.argmax())
        return n

    def set_protection(self, protection: Protection | None, now_ms: int, *, send: bool = True) -> None:
        """Guard the position with these levels (None: remove them); from the next price on."""
        if protection is not None and (protection.empty or protection.direction * self.book.qty <= 0):
            protection = None  # nothing to guard (flat, or the position is on the other side)
        self._protection = protection

    def protection(self) -> Protection | None:
        return self._protection

    def set_intrabar(self, times: np.ndarray, highs: np.ndarray, lows: np.ndarray, bar_ms: int) -> None:
        """Finer bars of this market: which of a bar's stop and target came first."""
        self._fine = (np.asarray(times, dtype=np.int64), np.asarray(highs), np.asarray(lows), int(bar_ms))

    def on_bar(self, time_ms: int, open_: float, high: float, low: float, close: float) -> None:
        times = self._funding_times
        while self._next_funding < len(times) and times[self._next_funding] <= time_ms:
            self._settle(times[self._next_funding], self._funding_rates[self._next_funding], open_)
            self._next_funding += 1
        liq = self._liq_f  # float pre-checks: the Decimal rule runs only when the price is near
        if liq is not None and ((open_ <= liq) if self._qty_f > 0 else (open_ >= liq)):
            self._check_liquidation(time_ms, open_, open_, open_)  # opened through it: before any fill
        if self._orders:
            for order in list(self._orders.values()):
                price = self._match(order, open_, high, low)
                if price is not None:
                    self._fill(order, price, time_ms)
        p = self._protection
        later = p is not None and self._liquidated_before_stop(p)
        if p is not None and not later:
            self._protect(p, time_ms, open_, high, low)
        liq = self._liq_f
        if liq is not None and ((low <= liq) if self._qty_f > 0 else (high >= liq)):
            self._check_liquidation(time_ms, open_, high, low)
        if later and self._protection is not None:  # a stop past the liquidation price, not liquidated
            self._protect(self._protection, time_ms, open_, high, low)

    def _liquidated_before_stop(self, p: Protection) -> bool:
        """True when the liquidation price lies between the entry and the stop (a long's stop below
        it): moving away from the entry, the bar reaches the liquidation first."""
        stop, liq = p.stop(), self._liq_f
        return stop is not None and liq is not None and float(stop[0]) * p.direction < liq * p.direction

    def _protect(self, p: Protection, time_ms: int, open_: float, high: float, low: float) -> None:
        """Trigger ``p`` on this bar (its exit is a market order filled at once), or move its trail."""
        hi, lo = to_decimal(high), to_decimal(low)
        hit = trigger(p, to_decimal(open_), hi, lo)
        if hit is None:
            self._protection = ratchet(p, hi, lo)
            return
        if self._fine is not None and both_reached(p, to_decimal(open_), hi, lo):
            t, h, lows, bar_ms = self._fine
            i, j = np.searchsorted(t, time_ms), np.searchsorted(t, time_ms + bar_ms)
            if first_in_finer_bars(p, h[i:j].tolist(), lows[i:j].tolist()):
                assert p.take_profit is not None
                hit = (p.take_profit, ExitReason.TAKE_PROFIT)  # the finer bars reached the target first
        self._protection = None
        level, reason = hit
        qty = self.instrument.floor_qty(abs(self.book.qty))  # spot: what is held, less the dust below a lot
        if qty <= 0:
            return
        order = Order(client_order_id=p.exit_id, symbol=p.symbol, side=Side.SELL if p.direction > 0 else Side.BUY,
                      qty=qty, order_type=OrderType.MARKET, status=OrderStatus.ACCEPTED, created_time=time_ms,
                      updated_time=time_ms, decision_id=p.decision_id, exchange_order_id=f"sim-{p.exit_id}",
                      exit_reason=reason)
        if self._venue is not None:
            self._venue.on_exit_order(order, level)
        self._orders[order.client_order_id] = order
        self._fill(order, exit_price(p, level, self.slippage, self.instrument), time_ms)

    def _check_liquidation(self, time_ms: int, open_: float, high: float, low: float) -> None:
        assert self.margin is not None
        hit = liquidation_hit(self.margin, self.instrument, self.book.qty, self.book.avg_price,
                              to_decimal(open_), to_decimal(high), to_decimal(low))
        if hit is not None:
            self._liquidate(hit, time_ms)

    def _liquidate(self, hit: Liquidation, time_ms: int) -> None:
        """Close the position at its bankruptcy price (Bybit's BustTrade): working orders are
        cancelled first, the liquidation is an order of its own, journaled with its event."""
        for cid in list(self._orders):
            order = self._orders.pop(cid).transition(OrderStatus.CANCELLED, time_ms, reject_reason="liquidation")
            self._done[cid] = order
            self._emit(order)
        sym = self.instrument.symbol
        req = OrderRequest(client_order_id=f"liq-{sym}-{time_ms}", symbol=sym,
                           side=Side.SELL if hit.qty > 0 else Side.BUY, qty=abs(hit.qty), reduce_only=True)
        order = Order.accepted(req, time_ms, f"sim-{req.client_order_id}")
        assert self.margin is not None
        if self._venue is not None:
            self._venue.on_liquidation(order, hit.payload(sym, self.margin.leverage, self.margin.mmr))
        self._orders[order.client_order_id] = order
        self._execute(order, order.qty, hit.bust_price, time_ms, last=True, reason="liquidation")

    def _settle(self, t: int, rate: float, open_: float) -> None:
        """Funding at ``t`` on the position held before this bar's fills, at this bar's open."""
        qty = self.book.qty
        if not qty:
            return
        price = to_decimal(open_)
        amount = -(qty * price * Decimal(repr(rate))).quantize(_FEE_Q)
        self.wallet.move(amount)
        self.funding_paid -= amount
        if self._venue is not None:
            self._venue.on_funding(t, rate, qty, price, amount)

    def _match(self, order: Order, open_: float, high: float, low: float) -> Decimal | None:
        if order.order_type is OrderType.MARKET:
            # Slippage and tick rounding both go against the trader.
            base = to_decimal(open_)
            if order.side is Side.BUY:
                return self.instrument.round_price(base * (1 + self.slippage), ROUND_CEILING)
            return self.instrument.round_price(base * (1 - self.slippage), ROUND_FLOOR)
        limit = order.price
        assert limit is not None
        if order.side is Side.BUY and to_decimal(low) <= limit:
            return min(to_decimal(open_), limit)
        if order.side is Side.SELL and to_decimal(high) >= limit:
            return max(to_decimal(open_), limit)
        return None

    def _fill(self, order: Order, price: Decimal, time_ms: int) -> None:
        qty = order.remaining
        ins = self.instrument
        cash = self.wallet.cash
        if self.margin is not None:  # linear: the opening part needs its margin and fee
            qty = affordable_qty(self.margin, ins, self.book.qty, self.book.avg_price, order.side, qty, price,
                                 self.fee_rate, self.wallet.margins.available(cash))
        elif order.side is Side.BUY:
            cost = qty * price * (1 + self.fee_rate)
            if cost > cash:
                qty = ins.floor_qty(cash / (price * (1 + self.fee_rate))) if cash > 0 else ZERO
        else:
            qty = min(qty, self.qty)
        if qty <= 0 or qty < ins.min_qty:
            self._end(order.transition(OrderStatus.CANCELLED, time_ms,
                                       reject_reason="insufficient cash at the fill price"))
            return
        thin = order.client_order_id in self._thin
        if thin:
            qty = thin_part(qty, ins.qty_step)
        # A market order walks the book one tick per piece (as the venue simulator does).
        walk = ins.tick_size if order.order_type is OrderType.MARKET else ZERO
        pieces = fill_pieces(qty, ins.qty_step, self.partial_fills) if qty > 0 else []
        for i, part in enumerate(pieces):
            order = self._execute(order, part, price + walk * i if order.side is Side.BUY else price - walk * i,
                                  time_ms, last=not thin and i == len(pieces) - 1)
        if thin:
            self._thin.discard(order.client_order_id)
            self._end(order.transition(OrderStatus.CANCELLED, time_ms,
                                       reject_reason="thin bar: the unfilled remainder was cancelled (IOC)"))

    def _execute(self, order: Order, qty: Decimal, price: Decimal, time_ms: int, last: bool,
                 reason: str = "") -> Order:
        """One execution of ``order``; ``last`` completes it (a shrunk fill too: the remainder is
        not left working). ``reason``: why the venue traded it (``liquidation``), "" for orders."""
        ins = self.instrument
        in_base = self.long_only and order.side is Side.BUY
        fee = ((qty if in_base else qty * price) * self.fee_rate).quantize(_FEE_Q)
        currency = ins.base_coin if in_base else ins.quote_coin
        self._apply(order.side, qty, price, fee, in_base)
        self._fill_seq += 1
        fill = Fill(
            exec_id=f"sim-{order.client_order_id}-{self._fill_seq}",
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=qty,
            price=price,
            fee=fee,
            time=time_ms,
            is_maker=order.order_type is OrderType.LIMIT,
            fee_currency=currency,
            reason=reason,
        )
        filled = order.filled_qty + qty
        avg = ((order.avg_fill_price or ZERO) * order.filled_qty + price * qty) / filled if order.filled_qty else price
        order = order.transition(OrderStatus.FILLED if last else OrderStatus.PARTIALLY_FILLED, time_ms,
                                 filled_qty=filled, avg_fill_price=avg)
        if last:
            self._end(order, fill)
        else:
            self._orders[order.client_order_id] = order
            self._emit(order, fill)
        return order

    def _end(self, order: Order, fill: Fill | None = None) -> None:
        del self._orders[order.client_order_id]
        self._done[order.client_order_id] = order
        self._emit(order, fill)

    def _apply(self, side: Side, qty: Decimal, price: Decimal, fee: Decimal, in_base: bool) -> None:
        self.wallet.move(self.book.apply(side, qty, price, fee, fee_in_base=in_base))
        self._margin_changed()
        p = self._protection
        if p is not None and p.direction * self.book.qty <= 0:
            self._protection = None  # the position it guarded is closed (or flipped)

    def _margin_changed(self) -> None:
        """The position changed: its float mirror, the wallet's margin entry, its liquidation price."""
        book, rule = self.book, self.margin
        self._qty_f = float(book.qty)
        if rule is None:
            return
        self.wallet.margins.set(self.instrument.symbol, book.qty * book.avg_price,
                                rule.initial_margin(book.qty, book.avg_price))
        self._liq_f = float(rule.liquidation_price(book.qty, book.avg_price, self.instrument)) if book.qty else None

    # -- the venue side (the simulated broker is its own venue) -----------------------------------
    async def lookup_order(self, client_order_id: str) -> Order | None:
        return self._orders.get(client_order_id) or self._done.get(client_order_id)

    def resolve_missing(self, client_order_id: str, reason: str) -> None:
        return None  # every order it was given is in its books

    async def fills_since(self, since_ms: int | None = None) -> int:
        return 0  # every fill is booked as it happens

    async def venue_open_orders(self) -> list[Order]:
        return self.open_orders()

    async def refresh_books(self) -> Position:
        return self.position()

    # -- resume ----------------------------------------------------------------------------------
    def restore_funding(self, amount: Decimal) -> None:
        self.wallet.move(amount)

    def restore(self, initial_cash: Decimal, fills: list[Fill], orders: list[Order]) -> None:
        """Rebuild a resumed run's books from all its fills and orders (every market's): this
        market's fills booked again and its working orders back; the shared wallet is the initial
        cash moved by every fill (a fill's cash move does not depend on the book it lands in), so
        restoring each market of a run gives the same wallet."""
        sym = self.instrument.symbol
        self.book = PositionBook()
        cash = Decimal(initial_cash)
        own = 0
        for f in fills:
            if f.symbol == sym:
                cash += self.book.apply(f.side, f.qty, f.price, f.fee, fee_in_base=f.fee_in_base)
                own += 1
            else:
                cash += f.cash_change
        self.wallet.reset(cash)
        self._margin_changed()
        mine = [o for o in orders if o.symbol == sym]
        self._orders = {o.client_order_id: o for o in mine if not o.status.is_terminal}
        self._done = {o.client_order_id: o for o in mine if o.status.is_terminal}
        self._fill_seq = own  # execution ids continue the run's sequence
