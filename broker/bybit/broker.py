"""The Bybit broker: the engine's Broker interface over pybit REST and the private stream.

``submit`` is synchronous and returns the order SUBMITTED; a task finishes the call. The
create is sent once; when its answer is lost (timeout, 5xx, dropped connection, rate limit)
the order is looked up by its orderLinkId before anything else, and only an order the venue
provably does not have is sent again (same orderLinkId, so a late duplicate is refused with
110072 instead of trading twice). Refusals become REJECTED orders and the loop goes on.
Everything afterwards arrives on the private stream (or, after a reconnect, from REST) and
reaches the engine through the listener on the event loop. Fills are de-duplicated by exec id.

Books: position and cash move with every execution (the venue's own arithmetic, exact
Decimal), seeded from and checked against the venue's position and wallet (REST snapshots and
the ``position``/``wallet`` topics); a disagreement while nothing is in flight resyncs to the
venue and is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import structlog

from bot.domain import (
    ZERO,
    Balance,
    Category,
    Fill,
    Instrument,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Side,
)
from bot.errors import ExchangeError, ExchangeRetryableError, OrderRejected
from broker.base import Broker, to_decimal
from broker.bybit import parse
from broker.bybit.errors import DUPLICATE_LINK_ID, ORDER_NOT_FOUND, CreateOutcomeUnknown
from broker.bybit.http import BybitHttp
from broker.bybit.stream import PrivateStream

log = structlog.get_logger("broker.bybit")

#: How many times an order the venue provably does not have is sent again before giving up.
MAX_SENDS = 4


class BybitBroker(Broker):
    write_ahead = True

    def __init__(self, http: BybitHttp, symbol: str, category: str, *, stream: PrivateStream | None = None,
                 hold_timeout_s: float = 30.0) -> None:
        super().__init__()
        self.http = http
        self.symbol = symbol
        self.category = Category(category)
        self.stream = stream
        self.hold_timeout_s = hold_timeout_s
        self.instrument = Instrument(symbol, self.category, Decimal("0.1"), Decimal("0.001"), Decimal("0.001"))
        self._orders: dict[str, Order] = {}     # working (non-terminal) orders by client id
        self._done: dict[str, Order] = {}       # terminal orders this process has seen
        self._seen_exec: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending_exec: dict[str, list[dict[str, Any]]] = {}
        #: Called for an order the journal does not know yet (adopted from the venue).
        self.on_adopt: Callable[[Order], None] | None = None
        self.on_event: Callable[[str, dict[str, Any]], None] | None = None
        self.adopted: list[str] = []
        # Books (linear: cash-equivalent = wallet balance - size x entry, so equity = cash + qty x mark).
        self.qty = ZERO
        self.avg_price = ZERO
        self.realized = ZERO
        self.cash = ZERO
        self.fee_total = ZERO
        self._cash_f = 0.0
        self._qty_f = 0.0
        self.venue_position: dict[str, Any] | None = None
        self.venue_wallet: dict[str, Any] | None = None
        self.last_fill_time: int | None = None
        self.stats = {"creates": 0, "lookups": 0, "resends": 0, "duplicates_refused": 0, "stream_fills": 0,
                      "rest_fills": 0, "dup_fills": 0, "resyncs": 0}

    # -- start-up ----------------------------------------------------------------------------------
    async def load(self) -> None:
        """Instrument rules, key check, books from the venue. Then the private stream."""
        self.instrument = parse.instrument(await self.http.instrument(self.symbol), self.category.value)
        await self.http.check_keys()
        await self.refresh_books()
        if self.stream is not None:
            self.stream.on_message = self.on_stream
            self.stream.on_reconnect = self.catch_up
            await self.stream.start()

    async def refresh_books(self) -> None:
        wallet = await self.http.wallet()
        pos = await self.http.position(self.symbol)
        self._set_books(wallet, pos)

    def _set_books(self, wallet: dict[str, Any], pos: dict[str, Any] | None) -> None:
        self.venue_wallet, self.venue_position = wallet, pos
        usdt = _coin(wallet, "USDT")
        if self.category is Category.SPOT:
            base = self.symbol[:-4] if self.symbol.endswith("USDT") else self.symbol[:-3]
            self.qty, self.avg_price = _coin(wallet, base), ZERO
            self.cash = usdt
        else:
            self.qty = parse.signed_size(pos) if pos else ZERO
            self.avg_price = parse.d(pos.get("avgPrice")) if pos else ZERO
            self.realized = parse.d(pos.get("cumRealisedPnl")) if pos else ZERO
            self.cash = usdt - self.qty * self.avg_price
        self._cash_f, self._qty_f = float(self.cash), float(self.qty)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.stream is not None:
            await self.stream.close()
        self.http.close()

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for in-flight create/cancel calls (tests, clean shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    # -- Broker interface --------------------------------------------------------------------------
    def submit(self, req: OrderRequest, now_ms: int) -> Order:
        order = Order.from_request(req, now_ms).transition(OrderStatus.SUBMITTED, now_ms)
        reason = self._validate(req)
        if reason is not None:
            return order.transition(OrderStatus.REJECTED, now_ms, reject_reason=reason)
        self._orders[order.client_order_id] = order
        self._spawn(self._send(order, req))
        return order

    def _validate(self, req: OrderRequest) -> str | None:
        """The instrument's rules, applied before anything leaves the process."""
        ins = self.instrument
        if req.qty <= 0:
            return "quantity must be positive"
        if req.qty != ins.floor_qty(req.qty):
            return f"quantity {req.qty} is not a multiple of the lot step {ins.qty_step}"
        if req.qty < ins.min_qty:
            return f"quantity {req.qty} below the minimum {ins.min_qty}"
        if ins.max_qty is not None and req.qty > ins.max_qty:
            return f"quantity {req.qty} above the maximum {ins.max_qty}"
        if req.order_type is OrderType.LIMIT:
            if req.price is None or req.price <= 0:
                return "limit order without a positive price"
            if req.price != ins.round_price(req.price):
                return f"price {req.price} is not a multiple of the tick {ins.tick_size}"
        ref = req.price or req.reference_price
        if ref is not None and ins.min_notional and req.qty * ref < ins.min_notional and not req.reduce_only:
            return f"notional {req.qty * ref} below the minimum {ins.min_notional}"
        if req.client_order_id in self._orders or req.client_order_id in self._done:
            return "duplicate client order id"
        return None

    def cancel(self, client_order_id: str, now_ms: int) -> Order | None:
        order = self._orders.get(client_order_id)
        if order is None:
            return None
        self._spawn(self._cancel(order))
        return order

    def open_orders(self) -> list[Order]:
        return list(self._orders.values())

    def position(self) -> Position:
        return Position(self.symbol, self.qty, self.avg_price, self.realized)

    def balance(self, mark_price: float) -> Balance:
        equity = self.cash + self.qty * to_decimal(mark_price) if self.qty else self.cash
        return Balance(cash=self.cash, equity=equity)

    def equity(self, mark_price: float) -> float:
        return self._cash_f + self._qty_f * mark_price

    def cash_and_qty(self) -> tuple[float, float]:
        return self._cash_f, self._qty_f

    # -- order entry (background) ------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _body(self, o: Order, req: OrderRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"symbol": o.symbol, "side": o.side.value, "orderType": o.order_type.value,
                                "qty": format(o.qty, "f"), "orderLinkId": o.client_order_id}
        if o.order_type is OrderType.LIMIT and o.price is not None:
            body["price"] = format(o.price, "f")
            body["timeInForce"] = "GTC"
        if self.category is Category.LINEAR:
            body["positionIdx"] = 0
            if req.reduce_only:
                body["reduceOnly"] = True
        elif o.order_type is OrderType.MARKET:
            body["marketUnit"] = "baseCoin"
        return body

    async def _send(self, order: Order, req: OrderRequest) -> None:
        cid = order.client_order_id
        body = self._body(order, req)
        for attempt in range(1, MAX_SENDS + 1):
            if self.stream is not None and not self.stream.ready.is_set():
                # Hold: no order leaves before the private stream is authenticated again.
                try:
                    await asyncio.wait_for(self.stream.ready.wait(), self.hold_timeout_s)
                except TimeoutError:
                    self._reject(cid, "private stream not authenticated: order not sent")
                    return
            self.stats["creates"] += 1
            try:
                res = await self.http.create(**body)
            except OrderRejected as exc:
                if exc.code != DUPLICATE_LINK_ID:
                    self._reject(cid, str(exc))
                    return
                self.stats["duplicates_refused"] += 1  # the venue already has it: resolve by lookup
            except CreateOutcomeUnknown as exc:
                log.warning("order_create_unknown", order=cid, error=str(exc))
            except ExchangeRetryableError as exc:
                log.warning("order_create_retryable", order=cid, error=str(exc))
            except ExchangeError as exc:
                self._reject(cid, str(exc))
                return
            else:
                self._ack(cid, str(res.get("orderId") or ""))
                return
            # The answer was lost or refused as a duplicate: ask the venue before anything else.
            found = await self._lookup(cid)
            if found is not None:
                self._apply_order(found)
                await self._fetch_fills(cid, found)
                return
            self.stats["resends"] += 1
            await asyncio.sleep(min(0.2 * attempt, 1.0))
        self._reject(cid, f"order create failed {MAX_SENDS} times and the venue has no such order")

    async def _lookup(self, cid: str) -> dict[str, Any] | None:
        self.stats["lookups"] += 1
        for _ in range(10):
            try:
                return await self.http.order(self.symbol, cid)
            except ExchangeRetryableError:
                await asyncio.sleep(0.5)
        return await self.http.order(self.symbol, cid)

    async def _cancel(self, order: Order) -> None:
        try:
            await self.http.cancel(self.symbol, order.client_order_id)
        except OrderRejected as exc:
            if exc.code != ORDER_NOT_FOUND:
                log.warning("order_cancel_refused", order=order.client_order_id, error=str(exc))
        except ExchangeError as exc:
            log.warning("order_cancel_failed", order=order.client_order_id, error=str(exc))
        found = await self._lookup(order.client_order_id)
        if found is not None:
            self._apply_order(found)
            await self._fetch_fills(order.client_order_id, found)

    # -- venue events (event loop thread) ----------------------------------------------------------
    @staticmethod
    def _now() -> int:
        return int(time.time() * 1000)

    def _ack(self, cid: str, exchange_id: str) -> None:
        o = self._orders.get(cid)
        if o is not None and o.status is OrderStatus.SUBMITTED:
            self._update(o.transition(OrderStatus.ACCEPTED, self._now(), exchange_order_id=exchange_id or None))
        elif o is not None and exchange_id and not o.exchange_order_id:
            self._orders[cid] = o = _with(o, exchange_order_id=exchange_id)

    def _reject(self, cid: str, reason: str) -> None:
        o = self._orders.get(cid)
        if o is None:
            return
        log.warning("order_rejected", order=cid, reason=reason)
        self._update(o.transition(OrderStatus.REJECTED, self._now(), reject_reason=reason[:500]))

    def _update(self, o: Order, fill: Fill | None = None) -> None:
        if o.status.is_terminal:
            self._orders.pop(o.client_order_id, None)
            self._done[o.client_order_id] = o
        else:
            self._orders[o.client_order_id] = o
        self._emit(o, fill)

    def on_stream(self, msg: dict[str, Any]) -> None:
        topic = msg.get("topic", "")
        data = msg.get("data") or []
        for item in data:
            if item.get("symbol") not in (None, self.symbol):
                continue
            try:
                if topic == "execution":
                    if parse.is_trade(item):
                        self.stats["stream_fills"] += 1
                        self._apply_exec(item)
                elif topic == "order":
                    self._apply_order(item)
                elif topic == "position":
                    self._venue_position(item)
            except Exception as exc:  # noqa: BLE001 - one bad push must not kill the stream
                log.error("stream_message_failed", topic=topic, error=f"{type(exc).__name__}: {exc}")
        if topic == "wallet" and data:
            self.venue_wallet = data[0]

    def _venue_position(self, item: dict[str, Any]) -> None:
        self.venue_position = item

    def _known(self, cid: str) -> Order | None:
        return self._orders.get(cid) or self._done.get(cid)

    def _adopt(self, item: dict[str, Any]) -> Order:
        """An order the venue has and this process does not: journal it, marked adopted."""
        cid = parse.link_id(item)
        now = int(item.get("createdTime") or self._now())
        o = Order(client_order_id=cid, symbol=item["symbol"], side=Side(item["side"]), qty=parse.d(item.get("qty")),
                  order_type=OrderType(item.get("orderType", "Market")), status=OrderStatus.SUBMITTED,
                  created_time=now, updated_time=now,
                  price=parse.d(item["price"]) if item.get("orderType") == "Limit" else None,
                  exchange_order_id=item.get("orderId"), adopted=True)
        self._orders[cid] = o
        self.adopted.append(cid)
        if self.on_adopt is not None:
            self.on_adopt(o)
        if self.on_event is not None:
            self.on_event("order_adopted", {"order_id": cid, "status": item.get("orderStatus")})
        return o

    def _apply_order(self, item: dict[str, Any]) -> None:
        cid = parse.link_id(item)
        o = self._known(cid) or self._adopt(item)
        if o.status.is_terminal:
            return
        status = parse.STATUS.get(str(item.get("orderStatus")), OrderStatus.ACCEPTED)
        eid = item.get("orderId") or o.exchange_order_id
        venue_filled = parse.d(item.get("cumExecQty"))
        if venue_filled > o.filled_qty:
            # Fills the stream has not delivered (yet): executions decide, fetch them if they stay missing.
            self._pending_exec[cid] = [item]
            self._spawn(self._fetch_fills_later(cid, item))
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
        for e in reversed(await self.http.executions(self.symbol, link_id=cid)):
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
        if o.status.is_terminal and o.status is not OrderStatus.FILLED:
            log.error("fill_after_terminal", order=o.client_order_id, status=str(o.status))
        self._seen_exec.add(exec_id)
        self._book(f)
        filled = o.filled_qty + f.qty
        avg = ((o.avg_fill_price or ZERO) * o.filled_qty + f.price * f.qty) / filled
        status = OrderStatus.FILLED if filled >= o.qty else OrderStatus.PARTIALLY_FILLED
        if o.status.is_terminal:
            return  # books moved; the journal keeps the terminal status it has
        self._update(o.transition(status, f.time, filled_qty=filled, avg_fill_price=avg,
                                  exchange_order_id=e.get("orderId") or o.exchange_order_id), f)

    def _book(self, f: Fill) -> None:
        signed = f.qty if f.side is Side.BUY else -f.qty
        old, new = self.qty, self.qty + signed
        if self.category is Category.LINEAR:
            if old == 0 or (old > 0) == (signed > 0):
                self.avg_price = (abs(old) * self.avg_price + f.qty * f.price) / abs(new)
            else:
                closed = min(abs(signed), abs(old))
                self.realized += (f.price - self.avg_price) * closed * (1 if old > 0 else -1)
                if new == 0:
                    self.avg_price = ZERO
                elif (new > 0) != (old > 0):
                    self.avg_price = f.price
        self.qty = new
        self.cash -= signed * f.price + f.fee
        self.fee_total += f.fee
        self.last_fill_time = max(self.last_fill_time or 0, f.time)
        self._cash_f, self._qty_f = float(self.cash), float(self.qty)

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
            order = _with(order, status=OrderStatus.SUBMITTED)
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
        n = 0
        for e in reversed(await self.http.executions(self.symbol, start_ms=max(start, 0) or None)):
            if parse.is_trade(e) and str(e["execId"]) not in self._seen_exec:
                self.stats["rest_fills"] += 1
                n += 1
                self._apply_exec(e)
        for cid in list(self._orders):
            found = await self.http.order(self.symbol, cid)
            if found is not None:
                self._apply_order(found)
        if n and self.on_event is not None:
            self.on_event("fills_recovered", {"count": n})
        return n

    async def check_books(self) -> dict[str, Any] | None:
        """Venue position/wallet vs the books; resync when they disagree and nothing is in flight."""
        if self._orders:
            return None
        wallet = await self.http.wallet()
        pos = await self.http.position(self.symbol)
        if self._orders:
            return None
        before = (self.qty, self.cash)
        self._set_books(wallet, pos)  # the venue's numbers are the truth from here on
        if before[0] != self.qty or abs(before[1] - self.cash) > Decimal("0.000001"):
            self.stats["resyncs"] += 1
            return {"qty_books": format(before[0], "f"), "qty_venue": format(self.qty, "f"),
                    "cash_books": format(before[1], "f"), "cash_venue": format(self.cash, "f")}
        return None


def _coin(wallet: dict[str, Any], coin: str) -> Decimal:
    for c in wallet.get("coin") or []:
        if c.get("coin") == coin:
            return parse.d(c.get("walletBalance"))
    return ZERO


def _with(o: Order, **changes: Any) -> Order:
    return replace(o, **changes)

