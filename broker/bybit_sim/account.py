"""The simulated account: orders, matching against the replayed candles, executions, books.

One account (one UID) behind every configured API key. Matching rules (the same as the bot's
simulated broker, so backtest and live-on-simulator agree):

- A market order fills at the next kline tick. If the bar forming when it was accepted had not
  ticked yet (the bot sends right after a bar closes), it fills at that bar's open; otherwise at
  the tick's price. ``slippage_bps`` moves the price against the trader, rounded to the tick.
- A limit order is live from the bar after acceptance; a buy fills when the bar's low reaches
  the limit, at min(open, limit); a sell mirrors it.
- Fee: ``fee_rate`` per fill. Spot, as on Bybit: a buy pays it in the coin bought (``feeCurrency``
  the base coin, ``execFee`` = fee_rate x execQty; the coin balance grows by execQty - execFee,
  USDT pays execValue), a sell in USDT out of the proceeds; a sell above the coin's free balance
  (balance less what working sells lock) is refused with 170131. Linear: fee_rate x notional in
  USDT, one-way position per symbol, wallet
  balance moves by realised PnL minus fees; a new order needs initial margin (notional / the
  symbol's leverage, broker/bybit_sim/leverage.py) plus its fee from the available balance, else
  110007. The margin is the unified
  account's, shared by every symbol (cross margin): positions and working orders of all linear
  symbols hold it, and every position's unrealised PnL counts. Spot: USDT and base-coin balances.
- Position TP/SL (``/v5/position/trading-stop``): broker/bybit_sim/tpsl.py, checked on every
  tick after the working orders.
- Partial fills (off by default): ``partial_fills`` splits each fill into executions pushed one
  by one; ``thin_every`` half-fills every Nth market order and cancels the rest (IOC).
- Funding (a market with a funding file, broker/bybit_sim/market.py): each settlement time T is
  settled at the first tick of the first bar opening at or after T, before that tick's matching,
  on the linear position then held, at that bar's open (the bot's simulated broker's rule):
  ``execFee = size x open x rate`` (signed; a long pays a positive rate), an execution of
  ``execType`` Funding (``feeRate`` the rate, ``execTime`` T), the wallet moved by ``-execFee``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import structlog

from broker.base import fill_pieces, thin_part
from broker.bybit_sim.funding import settle_funding
from broker.bybit_sim.leverage import LeverageDesk
from broker.bybit_sim.market import Market
from broker.bybit_sim.spot_stops import FILTERS, SpotStops
from broker.bybit_sim.state import BarTick, SimState
from broker.bybit_sim.tpsl import TpslDesk
from broker.bybit_sim.wire import ZERO, Book, SimExec, SimOrder, SimReject, dec, s

log = structlog.get_logger("bybit_sim.account")
_FEE_Q = Decimal("1e-10")


@dataclass
class AccountConfig:
    initial_usdt: float = 10_000.0
    fee_rate: float = 0.001
    slippage_bps: float = 0.0
    #: Linear leverage (Bybit's default for a new USDT perpetual position is 10x).
    leverage: float = 10.0
    #: Each fill in up to N executions (distinct execIds, whole lots, each pushed on its own:
    #: the order reads PartiallyFilled between them); a market order walks the book one tick per
    #: execution. 1: one execution per fill.
    partial_fills: int = 1
    #: Every Nth market order meets a thin bar: half of it fills (in pieces as above) and Bybit
    #: cancels the rest, as it does an IOC market order's unfilled remainder (spot:
    #: PartiallyFilledCanceled; linear: Cancelled with cumExecQty > 0). 0: never.
    thin_every: int = 0


Push = Callable[[str, list[dict[str, Any]]], None]


@dataclass
class Account:
    state: SimState
    cfg: AccountConfig
    push: Push = lambda topic, data: None  # noqa: E731 - replaced by the private stream module
    orders: dict[str, SimOrder] = field(default_factory=dict)        # by orderId
    by_link: dict[str, SimOrder] = field(default_factory=dict)
    execs: list[SimExec] = field(default_factory=list)
    books: dict[str, Book] = field(default_factory=dict)
    coins: dict[str, Decimal] = field(default_factory=dict)          # wallet balances (USDT, spot coins)
    seq: int = 0
    market_orders: int = 0
    #: Last kline tick seen per symbol: (bar index, price).
    last_tick: dict[str, tuple[int, Decimal]] = field(default_factory=dict)
    #: Index of each market's next funding settlement (set at its first tick: earlier ones are history).
    next_funding: dict[str, int] = field(default_factory=dict)
    #: Hook run just before each execution is pushed (fault injection: dropped streams).
    before_exec_push: Callable[[SimExec], None] | None = None
    #: Hook run right after an order is accepted, before the answer leaves (tests kill the client here).
    on_accept: Callable[[SimOrder], None] | None = None

    def __post_init__(self) -> None:
        self.coins.setdefault("USDT", dec(self.cfg.initial_usdt))
        self.fee_rate = dec(self.cfg.fee_rate)
        self.slip = dec(self.cfg.slippage_bps) / Decimal(10_000)
        self.tpsl = TpslDesk(self)
        self.leverage = LeverageDesk(self)
        self.spot_stops = SpotStops(self)
        self.state.add_bar_listener(self.on_tick)

    # -- rules -------------------------------------------------------------------------------------
    def rules(self, m: Market, category: str) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """(tick, qty step, min qty, max qty) as instruments-info serves them."""
        r = m.rules
        if category == "spot":
            return dec(r["spot_tick"]), dec(r["base_precision"]), dec(r["spot_min_qty"]), Decimal("1e9")
        return dec(r["tick"]), dec(r["qty_step"]), dec(r["min_qty"]), dec(r["max_qty"])

    def price_now(self, m: Market) -> Decimal:
        now = self.state.now_ms()
        i = m.forming_index(now)
        if i is None:
            i = max(m.closed_count(now) - 1, 0)
        return dec(m.bar(i, now).close)

    # -- order entry -------------------------------------------------------------------------------
    def create(self, p: dict[str, Any]) -> SimOrder:
        category = p.get("category")
        if category not in ("linear", "spot"):
            raise SimReject(10001, "params error: category invalid")
        m = self.state.market(p.get("symbol"))
        if m is None:
            raise SimReject(10001, "params error: symbol invalid")
        side, otype = p.get("side"), p.get("orderType")
        if side not in ("Buy", "Sell"):
            raise SimReject(10001, "params error: side invalid")
        if otype not in ("Market", "Limit"):
            raise SimReject(10001, "params error: orderType invalid")
        link = str(p.get("orderLinkId") or "")
        if len(link) > 36:
            raise SimReject(10001, "params error: orderLinkId is too long")
        if link and link in self.by_link:
            raise SimReject(110072, "OrderLinkedID is duplicate")
        tick, step, min_qty, max_qty = self.rules(m, category)
        try:
            qty = Decimal(str(p.get("qty")))
            price = Decimal(str(p["price"])) if otype == "Limit" else None
        except Exception:  # noqa: BLE001 - any unparsable number is a parameter error
            raise SimReject(10001, "params error: qty or price invalid") from None
        if not qty.is_finite() or qty <= 0 or qty % step != 0:
            raise SimReject(10001, f"params error: qty {p.get('qty')} is not a multiple of {s(step)}")
        if qty < min_qty or qty > max_qty:
            raise SimReject(10001, "The number of contracts exceeds minimum limit allowed")
        if price is not None and (not price.is_finite() or price <= 0 or price % tick != 0):
            raise SimReject(10001, f"params error: price {p.get('price')} is not a multiple of {s(tick)}")
        reduce_only = bool(p.get("reduceOnly"))
        ref = price if price is not None else self.price_now(m)
        order_filter = p.get("orderFilter") or "Order"
        if order_filter not in ("Order", *FILTERS) or (order_filter != "Order" and category != "spot"):
            raise SimReject(10001, "params error: orderFilter invalid")
        if order_filter != "StopOrder":  # a StopOrder's balance is checked when it triggers
            self._check_funds(m, category, side, qty, ref, reduce_only)
        now = self.state.now_ms()
        oid = str(uuid.uuid4()) if category == "linear" else str(uuid.uuid4().int % 10**19)
        forming = m.forming_index(now)
        last = self.last_tick.get(m.symbol)
        o = SimOrder(order_id=oid, link_id=link, category=category, symbol=m.symbol, side=side, order_type=otype,
                     qty=qty, price=price, reduce_only=reduce_only, created=now, updated=now,
                     bar_index=forming if forming is not None else -1,
                     bar_seen=last is not None and forming is not None and last[0] == forming)
        if order_filter != "Order":
            self.spot_stops.arm(o, p, m)
        if otype == "Market" and self.cfg.thin_every > 0:
            self.market_orders += 1
            o.thin = self.market_orders % self.cfg.thin_every == 0
        self.orders[oid] = o
        if link:
            self.by_link[link] = o
        self.state.stats["orders_created"] += 1
        self.push("order", [o.wire()])
        if self.on_accept is not None:
            self.on_accept(o)
        return o

    def _check_funds(self, m: Market, category: str, side: str, qty: Decimal, price: Decimal,
                     reduce_only: bool) -> None:
        usdt = self.coins["USDT"]
        if category == "spot":
            if side == "Sell" and qty > self.coins.get(m.base, ZERO) - self._spot_locked(m.base):
                raise SimReject(170131, "Insufficient balance.")
            if side == "Buy" and qty * price * (1 + self.fee_rate) > usdt - self._spot_locked("USDT"):
                raise SimReject(170131, "Insufficient balance.")
            return
        book = self.books.get(m.symbol, Book())
        signed = qty if side == "Buy" else -qty
        reduces = book.size != 0 and (book.size > 0) != (signed > 0) and qty <= abs(book.size)
        if reduce_only and not reduces:
            raise SimReject(110017, "Reduce-only rule not satisfied")
        if reduces:
            return
        opening = qty - (min(qty, abs(book.size)) if (book.size > 0) != (signed > 0) else ZERO)
        need = self._margin_held(m.symbol, price) + opening * price * (1 / self.leverage.of(m.symbol) + self.fee_rate)
        if need > usdt + self._upnl():
            raise SimReject(110007, "ab not enough for new order")

    def _spot_locked(self, coin: str) -> Decimal:
        return self.spot_locked(coin)

    def spot_locked(self, coin: str, but: SimOrder | None = None) -> Decimal:
        """What working spot orders hold of ``coin``: a sell its base coin, a limit buy its USDT;
        a waiting StopOrder holds nothing (``but``: leave that order out)."""
        held = ZERO
        for o in (o for o in self.orders.values() if o.is_open and o.category == "spot" and o is not but
                  and not (o.stop_order_type == "Stop" and o.status == "Untriggered")):
            m = self.state.market(o.symbol)
            left = o.qty - o.cum_qty
            if o.side == "Sell" and m is not None and m.base == coin:
                held += left
            elif o.side == "Buy" and coin == "USDT" and o.price is not None:
                held += left * o.price * (1 + self.fee_rate)
        return held

    def _margin_held(self, symbol: str, price: Decimal) -> Decimal:
        """The initial margin held in the unified account, each symbol at its leverage: every linear
        position at its entry and every working linear order (a market order of ``symbol`` at
        ``price``, of another at its market)."""
        held = sum((abs(b.size) * b.avg / self.leverage.of(k) for k, b in self.books.items()), ZERO)
        for o in (o for o in self.orders.values() if o.is_open and o.category == "linear" and not o.conditional):
            m = self.state.market(o.symbol)
            at = o.price or (price if o.symbol == symbol or m is None else self.price_now(m))
            held += (o.qty - o.cum_qty) * at / self.leverage.of(o.symbol)
        return held

    def _upnl(self) -> Decimal:
        """Unrealised PnL of every linear position, marked at the market."""
        return sum((b.size * (self.price_now(m) - b.avg) for k, b in self.books.items()
                    if b.size and (m := self.state.market(k)) is not None), ZERO)

    def cancel(self, p: dict[str, Any]) -> SimOrder:
        oid, link = p.get("orderId"), p.get("orderLinkId")
        if not oid and not link:
            raise SimReject(10001, "params error: OrderId or orderLinkId is required")
        o = self.orders.get(str(oid)) if oid else self.by_link.get(str(link))
        if o is None or not o.is_open:
            raise SimReject(110001, "Order does not exist")
        self._cancelled(o, self.state.now_ms())
        return o

    def cancel_order(self, o: SimOrder, now: int) -> None:
        """The venue cancels a working order (a liquidation cancels the symbol's orders first)."""
        self._cancelled(o, now)

    def _cancelled(self, o: SimOrder, now: int) -> None:
        # Bybit: PartiallyFilledCanceled is spot's; a derivatives order cancelled after a partial
        # fill reads Cancelled with cumExecQty > 0.
        o.status = "PartiallyFilledCanceled" if o.cum_qty and o.category == "spot" else "Cancelled"
        o.updated = now
        self.push("order", [o.wire()])

    # -- matching ----------------------------------------------------------------------------------
    def on_tick(self, tick: BarTick) -> None:
        try:
            self._on_tick(tick)
        except Exception:  # noqa: BLE001 - a matcher bug must never stop the replayer
            log.exception("sim_matcher_failed", bar=tick.bar.start)
            self.state.stats["matcher_errors"] += 1

    def _on_tick(self, tick: BarTick) -> None:
        m, bar = tick.market, tick.bar
        settle_funding(self, m, bar.start, dec(bar.open))
        self.last_tick[m.symbol] = (tick.index, dec(bar.close))
        for o in [o for o in self.orders.values() if o.is_open and o.symbol == m.symbol and not o.conditional]:
            price = self._match(o, tick)
            if price is not None:
                # A fill at the bar's open is stamped with the open time (as the bot's simulated broker does).
                at_open = o.order_type == "Market" and (tick.index > o.bar_index or not o.bar_seen)
                self._fill(o, m, price, bar.start if at_open else tick.now_ms)
        self.leverage.on_tick(tick)  # books hold linear positions only
        self.tpsl.on_tick(tick)
        self.spot_stops.on_tick(tick)

    def fill_conditional(self, o: SimOrder, m: Market, price: Decimal, now: int) -> None:
        """A triggered TP/SL order: a market order for the whole position, filled at ``price``."""
        self._fill(o, m, price, now)

    def liquidate(self, o: SimOrder, m: Market, price: Decimal, now: int) -> None:
        """The venue's liquidation order: the whole position in one BustTrade execution at ``price``."""
        self._execute(o, m, o.qty, price, now, exec_type="BustTrade")

    def _match(self, o: SimOrder, tick: BarTick) -> Decimal | None:
        bar = tick.bar
        tick_size = self.rules(tick.market, o.category)[0]
        if o.order_type == "Market":
            base = dec(bar.open) if (tick.index > o.bar_index or not o.bar_seen) else dec(bar.close)
            if o.side == "Buy":
                return _round(base * (1 + self.slip), tick_size, ROUND_CEILING)
            return _round(base * (1 - self.slip), tick_size, ROUND_FLOOR)
        if tick.index <= o.bar_index:
            return None  # a limit order is live from the next bar on
        assert o.price is not None
        if o.side == "Buy" and dec(bar.low) <= o.price:
            return min(dec(bar.open), o.price)
        if o.side == "Sell" and dec(bar.high) >= o.price:
            return max(dec(bar.open), o.price)
        return None

    def _fill(self, o: SimOrder, m: Market, price: Decimal, now: int) -> None:
        tick, step = self.rules(m, o.category)[:2]
        left = o.qty - o.cum_qty
        qty = thin_part(left, step) if o.thin else left
        pieces = fill_pieces(qty, step, self.cfg.partial_fills) if qty > 0 else []
        walk = tick if o.order_type == "Market" else ZERO  # a market order eats the book level by level
        for i, part in enumerate(pieces):
            self._execute(o, m, part, price + walk * i if o.side == "Buy" else price - walk * i, now)
        if o.thin:
            self._cancelled(o, now)

    def _execute(self, o: SimOrder, m: Market, qty: Decimal, price: Decimal, now: int,
                 exec_type: str = "Trade") -> None:
        """One execution of ``o``: booked, then pushed (execution, order, position, wallet)."""
        in_base = o.category == "spot" and o.side == "Buy"  # Bybit spot: a buy's fee is the coin bought
        fee = ((qty if in_base else qty * price) * self.fee_rate).quantize(_FEE_Q)
        self.seq += 1
        closed = self._apply(o, m, qty, price, fee, now)
        o.cum_qty += qty
        o.cum_value += qty * price
        o.cum_fee += fee
        o.status = "Filled" if o.cum_qty == o.qty else "PartiallyFilled"
        o.updated = now
        ex = SimExec(exec_id=str(uuid.uuid4()), order=o, qty=qty, price=price, fee=fee, time=now, seq=self.seq,
                     is_maker=o.order_type == "Limit", closed_size=closed,
                     fee_currency=m.base if in_base else m.quote_coin, exec_type=exec_type)
        self.execs.append(ex)
        self.state.stats["executions"] += 1
        if self.before_exec_push is not None:
            self.before_exec_push(ex)
        self.push("execution", [ex.wire()])
        self.push("order", [o.wire()])
        if o.category == "linear":
            self.tpsl.after_fill(m)
            self.push("position", [self.position_wire(m, "linear")])
        self.push("wallet", [self.wallet_wire()])

    def _apply(self, o: SimOrder, m: Market, qty: Decimal, price: Decimal, fee: Decimal, now: int) -> Decimal:
        signed = qty if o.side == "Buy" else -qty
        if o.category == "spot":
            base_fee, usdt_fee = (fee, ZERO) if o.side == "Buy" else (ZERO, fee)
            self.coins[m.base] = self.coins.get(m.base, ZERO) + signed - base_fee
            self.coins["USDT"] -= signed * price + usdt_fee
            return ZERO
        b = self.books.setdefault(m.symbol, Book())
        old, new = b.size, b.size + signed
        closed = ZERO
        if old == 0 or (old > 0) == (signed > 0):
            b.avg = (abs(old) * b.avg + qty * price) / abs(new)
        else:
            closed = min(abs(signed), abs(old))
            pnl = (price - b.avg) * closed * (1 if old > 0 else -1)
            b.realized += pnl
            self.coins["USDT"] += pnl
            if new == 0:
                b.avg = ZERO
            elif (new > 0) != (old > 0):
                b.avg = price
        self.coins["USDT"] -= fee
        b.size, b.updated, b.seq = new, now, self.seq
        return closed

    # -- views -------------------------------------------------------------------------------------
    def position_wire(self, m: Market, category: str) -> dict[str, Any]:
        b = self.books.get(m.symbol, Book())
        mark = self.price_now(m)
        side = "Buy" if b.size > 0 else "Sell" if b.size < 0 else ""
        return {
            "positionIdx": 0, "riskId": 1, "riskLimitValue": "2000000", "symbol": m.symbol, "side": side,
            "size": s(abs(b.size)), "avgPrice": s(b.avg), "entryPrice": s(b.avg),
            "positionValue": s(abs(b.size) * b.avg), "tradeMode": 0, "positionStatus": "Normal",
            "autoAddMargin": 0, "adlRankIndicator": 0, "positionBalance": "0",
            "markPrice": s(mark), **self.leverage.wire_fields(m),
            "tpslMode": "Full", **self.tpsl.wire_fields(m.symbol),
            "unrealisedPnl": s(b.size * (mark - b.avg)) if b.size else "0", "curRealisedPnl": s(b.realized),
            "cumRealisedPnl": s(b.realized), "seq": b.seq, "isReduceOnly": False, "createdTime": "0",
            "updatedTime": str(b.updated), "category": category,
        }

    def wallet_wire(self) -> dict[str, Any]:
        coins = []
        upnl = self._upnl()
        for coin, bal in self.coins.items():
            eq = bal + (upnl if coin == "USDT" else ZERO)
            coins.append({"coin": coin, "equity": s(eq), "usdValue": s(eq) if coin == "USDT" else "",
                          "walletBalance": s(bal), "availableToWithdraw": s(bal), "availableToBorrow": "",
                          "borrowAmount": "0", "accruedInterest": "0", "totalOrderIM": "0", "totalPositionIM": "0",
                          "totalPositionMM": "0", "unrealisedPnl": s(upnl) if coin == "USDT" else "0",
                          "cumRealisedPnl": "0", "bonus": "0", "collateralSwitch": True, "marginCollateral": True,
                          "locked": s(self._spot_locked(coin)), "spotHedgingQty": "0"})
        usdt = self.coins["USDT"]
        return {"accountType": "UNIFIED", "accountIMRate": "0", "accountMMRate": "0", "accountLTV": "0",
                "totalEquity": s(usdt + upnl), "totalWalletBalance": s(usdt), "totalMarginBalance": s(usdt + upnl),
                "totalAvailableBalance": s(usdt + upnl), "totalPerpUPL": s(upnl), "totalInitialMargin": "0",
                "totalMaintenanceMargin": "0", "coin": coins}


def _round(price: Decimal, tick: Decimal, rounding: str) -> Decimal:
    return ((price / tick).to_integral_value(rounding=rounding) * tick).quantize(tick)
