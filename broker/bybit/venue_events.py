"""Venue events for the Bybit broker: pushes and REST snapshots merged into orders and books.

A mixin of :class:`broker.bybit.broker.BybitBroker` (one symbol's leg of an account), split off
so that order entry and the handling of what the venue reports live in files of their own. The
account routes each stream item to the leg of its symbol (``on_item``). Order status follows the venue,
except fill statuses, which only executions drive (so a fill is never counted without its
execution id); a venue order ahead of our executions triggers a REST fetch of the missing ones.
The working-order watchdog (``watch_once``) asks the venue about orders that have gone quiet.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog

from bot.domain import ZERO, Category, ExitReason, Fill, Order, OrderStatus, OrderType, Side, base_coin
from bot.errors import ExchangeError
from bot.positions import PositionBook
from bot.protection import Protection
from broker.bybit import parse
from broker.bybit.http import BybitHttp

if TYPE_CHECKING:
    from broker.bybit.account import BybitAccount

log = structlog.get_logger("broker.bybit")


class VenueEvents:
    """Needs the broker's order maps, books and ``_update``/``_reject``/``_spawn``/``_now``."""

    account: BybitAccount
    symbol: str
    category: Category
    _orders: dict[str, Order]
    _done: dict[str, Order]
    _seen_exec: set[str]
    _pending_exec: dict[str, list[dict[str, Any]]]
    adopted: list[str]
    book: PositionBook
    _qty_f: float
    venue_position: dict[str, Any] | None
    last_fill_time: int | None
    stats: dict[str, int]
    stale_after_s: float
    _touched: dict[str, float]
    _sending: set[str]
    _missing: dict[str, int]
    _exists: set[str]
    _protection: Protection | None

    if TYPE_CHECKING:  # provided by BybitBroker
        def _update(self, o: Order, fill: Fill | None = None) -> None: ...
        def _reject(self, cid: str, reason: str) -> None: ...
        def _spawn(self, coro: Any, cid: str | None = None) -> None: ...
        def _now(self) -> int: ...
        def open_orders(self) -> list[Order]: ...
        def _venue_event(self, kind: str, payload: dict[str, Any]) -> None: ...
        def _adopted(self, order: Order) -> None: ...
        def _exit_order(self, order: Order, trigger: Decimal | None) -> None: ...
        def _exit_reason(self, item: dict[str, Any]) -> ExitReason | None: ...
        def _funded(self, t: int, rate: float, qty: Decimal, price: Decimal, amount: Decimal) -> None: ...
        def _liquidated(self, order: Order, detail: dict[str, Any]) -> None: ...
        async def venue_order(self, cid: str) -> dict[str, Any] | None: ...
        async def _lookup(self, cid: str) -> dict[str, Any] | None: ...
        @property
        def qty(self) -> Decimal: ...
        @property
        def http(self) -> BybitHttp: ...
        @property
        def cash(self) -> Decimal: ...
        @property
        def since_floor(self) -> int | None: ...

    # -- books -------------------------------------------------------------------------------------
    def set_book(self, wallet: dict[str, Any], pos: dict[str, Any] | None) -> None:
        """This leg's position as the venue holds it (linear: the position; spot: the base coin's
        wallet balance). The shared cash is the account's to recompute (``BybitAccount.set_books``)."""
        self.venue_position = pos
        fees = self.book.fees
        if self.category is Category.SPOT:
            # The coin's whole balance (fees in it already taken): what an exit can sell.
            self.book = PositionBook(qty=wallet_coin(wallet, base_coin(self.symbol)), realized=self.book.realized,
                                     fees=fees)
        else:
            self.book = PositionBook(qty=parse.signed_size(pos) if pos else ZERO,
                                     avg_price=parse.d(pos.get("avgPrice")) if pos else ZERO,
                                     realized=parse.d(pos.get("cumRealisedPnl")) if pos else ZERO, fees=fees)
        self._qty_f = float(self.book.qty)

    def entry_value(self) -> Decimal:
        """What this leg takes off the wallet balance to make the cash-equivalent: size x entry
        (linear); spot holdings are bought with the wallet's USDT, so nothing."""
        return self.book.qty * self.book.avg_price if self.category is Category.LINEAR else ZERO

    def on_item(self, topic: str, item: dict[str, Any]) -> None:
        """One item of a private push about this leg's symbol (the account routes them)."""
        try:
            if topic == "execution":
                if parse.is_trade(item):
                    self.stats["stream_fills"] += 1
                    self._apply_exec(item)
                elif parse.is_funding(item):
                    self._apply_funding(item)
            elif topic == "order":
                self._apply_order(item)
            elif topic == "position":
                self._venue_position(item)
        except Exception as exc:  # noqa: BLE001 - one bad push must not kill the stream
            log.error("stream_message_failed", topic=topic, error=f"{type(exc).__name__}: {exc}")

    def _venue_position(self, item: dict[str, Any]) -> None:
        self.venue_position = item

    def _known(self, cid: str) -> Order | None:
        return self._orders.get(cid) or self._done.get(cid)

    def _adopt(self, item: dict[str, Any]) -> Order:
        """An order the venue has and this process does not: journal it, marked adopted (a
        triggered position TP/SL: the protective exit of the decision that set it)."""
        cid = parse.link_id(item)
        now = int(item.get("createdTime") or self._now())
        reason = self._exit_reason(item)
        if reason is not None:
            mine = self._protection
            o = Order(client_order_id=cid, symbol=item["symbol"], side=Side(item["side"]),
                      qty=parse.d(item.get("qty")), order_type=OrderType.MARKET, status=OrderStatus.SUBMITTED,
                      created_time=now, updated_time=now, decision_id=mine.decision_id if mine else None,
                      exchange_order_id=item.get("orderId"), exit_reason=reason)
            self._orders[cid] = o
            self._exit_order(o, parse.d(item.get("triggerPrice")) or None)
            return o
        if parse.is_liquidation(item):
            o = Order(client_order_id=cid, symbol=item["symbol"], side=Side(item["side"]),
                      qty=parse.d(item.get("qty")), order_type=OrderType.MARKET, status=OrderStatus.SUBMITTED,
                      created_time=now, updated_time=now, exchange_order_id=item.get("orderId"))
            self._orders[cid] = o
            self._liquidated(o, {"symbol": o.symbol, "side": "long" if o.side is Side.SELL else "short",
                                 "qty": format(o.qty.normalize(), "f"), "venue_order_id": str(item.get("orderId"))})
            return o
        o = Order(client_order_id=cid, symbol=item["symbol"], side=Side(item["side"]), qty=parse.d(item.get("qty")),
                  order_type=OrderType(item.get("orderType", "Market")), status=OrderStatus.SUBMITTED,
                  created_time=now, updated_time=now,
                  price=parse.d(item["price"]) if item.get("orderType") == "Limit" else None,
                  exchange_order_id=item.get("orderId"), adopted=True)
        self._orders[cid] = o
        self.adopted.append(cid)
        self._adopted(o)
        self._venue_event("order_adopted", {"order_id": cid, "status": item.get("orderStatus")})
        return o

    def _apply_order(self, item: dict[str, Any]) -> None:
        cid = parse.link_id(item)
        if self._known(cid) is None and self._exit_reason(item) is not None and \
                item.get("orderStatus") in ("Untriggered", "Deactivated", "Cancelled", "Rejected"):
            return  # a position TP/SL waiting at the venue (or withdrawn): the protection, not an order
        o = self._known(cid) or self._adopt(item)
        if o.status.is_terminal:
            return
        status = parse.STATUS.get(str(item.get("orderStatus")), OrderStatus.ACCEPTED)
        eid = item.get("orderId") or o.exchange_order_id
        venue_filled = parse.d(item.get("cumExecQty"))
        if venue_filled > o.filled_qty:
            # Fills the stream has not delivered (yet): executions decide, fetch them if they stay missing.
            self._pending_exec[cid] = [item]
            self._spawn(self._fetch_fills_later(cid, item), cid)
            if o.status is OrderStatus.SUBMITTED:
                self._update(o.transition(OrderStatus.ACCEPTED, self._now(), exchange_order_id=eid))
            return
        if status in (OrderStatus.ACCEPTED, OrderStatus.SUBMITTED):
            if o.status is OrderStatus.SUBMITTED and status is OrderStatus.ACCEPTED:
                self._update(o.transition(OrderStatus.ACCEPTED, self._now(), exchange_order_id=eid))
            return
        if status in (OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED):
            if status is OrderStatus.REJECTED and o.status is not OrderStatus.SUBMITTED:
                status = OrderStatus.CANCELLED
            reason = item.get("rejectReason") if item.get("rejectReason") not in (None, "EC_NoError") else None
            self._update(o.transition(status, self._now(), exchange_order_id=eid, reject_reason=reason))

    async def _fetch_fills_later(self, cid: str, item: dict[str, Any]) -> None:
        await asyncio.sleep(0.3)  # the execution push usually arrives right behind the order push
        o = self._known(cid)
        if o is not None and parse.d(item.get("cumExecQty")) > o.filled_qty:
            await self._fetch_fills(cid, item)

    async def _fetch_fills(self, cid: str, item: dict[str, Any]) -> None:
        o = self._known(cid)
        if o is None or parse.d(item.get("cumExecQty")) <= o.filled_qty:
            if o is not None and item.get("orderStatus") in ("Cancelled", "Rejected", "Deactivated",
                                                              "PartiallyFilledCanceled"):
                self._apply_order(item)
            return
        by_id = o.exit_reason is not None and cid == o.exchange_order_id  # a position TP/SL's has no orderLinkId
        for e in reversed(await self.http.executions(self.symbol, link_id=None if by_id else cid,
                                                     order_id=cid if by_id else None, category=self.category.value)):
            if parse.is_trade(e):
                self.stats["rest_fills"] += int(e["execId"] not in self._seen_exec)
                self._apply_exec(e)
        o = self._known(cid)
        if o is not None and not o.status.is_terminal:
            self._apply_order(item)

    def _apply_exec(self, e: dict[str, Any]) -> None:
        exec_id = str(e["execId"])
        if exec_id in self._seen_exec:
            self.stats["dup_fills"] += 1
            return
        f = parse.fill(e)
        o = self._known(f.client_order_id)
        if o is None:
            o = self._adopt({**e, "qty": e.get("orderQty") or e.get("execQty"),
                             "price": e.get("orderPrice"), "createdTime": e.get("execTime")})
        self._seen_exec.add(exec_id)
        self._book(f)
        filled = o.filled_qty + f.qty
        avg = ((o.avg_fill_price or ZERO) * o.filled_qty + f.price * f.qty) / filled
        status = OrderStatus.FILLED if filled >= o.qty else OrderStatus.PARTIALLY_FILLED
        oid = e.get("orderId") or o.exchange_order_id
        if o.status.is_terminal:
            # The venue filled an order these books had closed. The fill is a fact: it is booked
            # and journaled all the same. A rejection was only this side's conclusion (the order
            # was not found), so the venue's status replaces it; a cancel keeps its status.
            log.error("fill_after_terminal", order=o.client_order_id, status=str(o.status))
            self._update(replace(o, status=status if o.status is OrderStatus.REJECTED else o.status,
                                 filled_qty=filled, avg_fill_price=avg, updated_time=f.time,
                                 exchange_order_id=oid,
                                 reject_reason=None if o.status is OrderStatus.REJECTED else o.reject_reason), f)
            return
        self._update(o.transition(status, f.time, filled_qty=filled, avg_fill_price=avg, exchange_order_id=oid), f)

    def _apply_funding(self, e: dict[str, Any]) -> None:
        """The venue settled the position's funding: the cash moves by ``-execFee``, and the engine
        journals it as the backtest's funding rows are (``on_funding``)."""
        exec_id = str(e["execId"])
        if exec_id in self._seen_exec:
            return
        self._seen_exec.add(exec_id)
        amount = -parse.d(e.get("execFee"))
        qty = parse.d(e.get("execQty"))
        self.account.move_cash(amount)
        self.stats["funding"] += 1
        self._funded(int(e["execTime"]), float(parse.d(e.get("feeRate"))), qty if e.get("side") == "Buy" else -qty,
                     parse.d(e.get("execPrice")), amount)

    def _book(self, f: Fill) -> None:
        # Spot holdings carry no entry price at the venue: only linear positions track one. A
        # spot buy's fee is paid in the coin bought (feeCurrency): it shrinks the holding, not the cash.
        delta = self.book.apply(f.side, f.qty, f.price, f.fee, track_entry=self.category is Category.LINEAR,
                                fee_in_base=f.fee_in_base)
        self.account.move_cash(delta)
        self.last_fill_time = max(self.last_fill_time or 0, f.time)
        self._qty_f = float(self.book.qty)
        p = self._protection
        if p is not None and p.direction * self.book.qty <= 0:
            self._protection = None  # the position it guarded is closed: Bybit drops its TP/SL

    # -- catch-up and checks -----------------------------------------------------------------------
    def mark_seen(self, exec_ids: set[str]) -> None:
        self._seen_exec |= exec_ids

    def track(self, order: Order) -> None:
        """An order known from the journal (restart): follow it again. A journaled intent may
        have left the process before the kill, so it is treated as sent (SUBMITTED)."""
        if order.status.is_terminal:
            self._done[order.client_order_id] = order
            return
        if order.status is OrderStatus.CREATED:
            order = replace(order, status=OrderStatus.SUBMITTED)
        self._orders[order.client_order_id] = order

    def known(self, cid: str) -> Order | None:
        return self._known(cid)

    def resolve_missing(self, cid: str, reason: str) -> None:
        """A journaled order the venue never received: rejected, so it is never waited on."""
        self._reject(cid, reason)

    def apply_snapshot(self, item: dict[str, Any]) -> None:
        """A venue order (REST item or push): status merged, unknown orders adopted."""
        self._apply_order(item)

    async def fetch_fills(self, cid: str, item: dict[str, Any]) -> None:
        await self._fetch_fills(cid, item)

    async def catch_up(self, since_ms: int | None = None) -> int:
        """After a reconnect: executions missed meanwhile (REST), then every working order's state."""
        start = since_ms if since_ms is not None else (self.last_fill_time or 0) - 60_000
        floor = self.since_floor or 0
        start = max(start, floor)
        n = 0
        cat = self.category.value
        for e in reversed(await self.http.executions(self.symbol, start_ms=max(start, 0) or None, category=cat)):
            if int(e.get("execTime") or 0) < floor:
                continue
            if parse.is_trade(e) and str(e["execId"]) not in self._seen_exec:
                self.stats["rest_fills"] += 1
                n += 1
                self._apply_exec(e)
            elif parse.is_funding(e):
                self._apply_funding(e)
        for cid in list(self._orders):
            found = await self.venue_order(cid)
            if found is not None:
                self._apply_order(found)
        if n:
            self._venue_event("fills_recovered", {"count": n})
        return n

    async def watch_once(self, now: float) -> None:
        """A push can be lost without the stream dropping, and an order task can fail: a working
        order that has had no news for ``stale_after_s`` (SUBMITTED ones too, unless their create
        is still in flight) is looked up by its orderLinkId and its fills fetched over REST. A
        SUBMITTED order the venue has not heard of at two such lookups in a row never reached it."""
        for cid in list(self._orders):
            if cid in self._sending or now - self._touched.setdefault(cid, now) < self.stale_after_s:
                continue
            self._touched[cid] = now
            await self._look_up(cid)

    async def look_up_working(self) -> None:
        """Every working order (but one whose create is in flight) looked up now, with its fills:
        a stopping run settles what it can instead of waiting for the watchdog's next round."""
        for cid in list(self._orders):
            if cid not in self._sending:
                await self._look_up(cid)

    async def _look_up(self, cid: str) -> None:
        try:
            found = await self._lookup(cid)
            if found is not None:
                self._missing.pop(cid, None)
                self._apply_order(found)
                await self._fetch_fills(cid, found)
            else:
                self._not_found(cid)
        except ExchangeError as exc:
            log.warning("order_watch_failed", order=cid, error=str(exc))

    def _not_found(self, cid: str) -> None:
        o = self._orders.get(cid)
        if o is None or o.status is not OrderStatus.SUBMITTED or cid in self._exists:
            return
        self._missing[cid] = misses = self._missing.get(cid, 0) + 1
        if misses >= 2:
            self._reject(cid, "the venue has no such order: the create never reached it")

    async def check_books(self) -> dict[str, Any] | None:
        """The venue's wallet and this symbol's position vs the books, when nothing is in flight on
        any leg (a fill of another leg moves the shared cash); resync and report a disagreement."""
        acct = self.account
        if acct.busy():
            return None
        wallet = await self.http.wallet()
        pos = await self.http.position(self.symbol, self.category.value)
        if acct.busy():
            return None
        before = (self.qty, self.cash)
        acct.set_books(wallet, {self.symbol: pos})  # the venue's numbers are the truth from here on
        if before[0] != self.qty or abs(before[1] - self.cash) > Decimal("0.000001"):
            self.stats["resyncs"] += 1
            return {"qty_books": format(before[0], "f"), "qty_venue": format(self.qty, "f"),
                    "cash_books": format(before[1], "f"), "cash_venue": format(self.cash, "f")}
        return None


def wallet_coin(wallet: dict[str, Any], coin: str) -> Decimal:
    """A coin's ``walletBalance`` in a UNIFIED wallet item (zero when the wallet has none)."""
    for c in wallet.get("coin") or []:
        if c.get("coin") == coin:
            return parse.d(c.get("walletBalance"))
    return ZERO
