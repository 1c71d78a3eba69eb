"""One symbol's leg of a Bybit account: the engine's Broker interface, scoped to its symbol.

A leg is made by :meth:`broker.bybit.account.BybitAccount.leg`; the account owns what legs
share (the REST client, the one private stream, the wallet's cash) and routes the stream's
items to the leg of their symbol. Everything here is about this leg's symbol only.

``submit`` is synchronous and returns the order SUBMITTED; a task finishes the call. The
create is sent once; when its answer is lost (timeout, 5xx, dropped connection, rate limit)
the order is looked up by its orderLinkId before anything else, and only an order the venue
provably does not have is sent again (same orderLinkId, so a late duplicate is refused with
110072 instead of trading twice). Refusals become REJECTED orders and the loop goes on. Any
other failure inside an order task (a lookup refused with 10002, say) is logged and leaves the
order in flight: the working-order watchdog looks every order up that has had no news for a
while, SUBMITTED ones included, and reconciliation does too.
Everything afterwards arrives on the private stream (or, after a reconnect, from REST) and
reaches the engine through the listener on the event loop. Fills are de-duplicated by exec id.

Books: the leg's position moves with every execution and the account's shared cash by the
same execution's cash delta (the venue's own arithmetic, exact Decimal), seeded from and
checked against the venue's position and wallet; a disagreement while nothing is in flight on
any leg resyncs to the venue and is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog

from bot.domain import (
    Balance,
    Category,
    Fill,
    Instrument,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
)
from bot.errors import ExchangeError, ExchangeRetryableError, OrderRejected
from bot.positions import PositionBook
from bot.protection import Protection
from broker.base import Broker, to_decimal
from broker.bybit import parse
from broker.bybit.errors import DUPLICATE_LINK_ID, ORDER_NOT_FOUND, CreateOutcomeUnknown
from broker.bybit.http import BybitHttp
from broker.bybit.stream import PrivateStream
from broker.bybit.tpsl import PositionTpsl
from broker.bybit.venue_events import VenueEvents

if TYPE_CHECKING:
    from broker.bybit.account import BybitAccount

log = structlog.get_logger("broker.bybit")

#: How many times an order the venue provably does not have is sent again before giving up.
MAX_SENDS = 4


#: While a stopping run waits for its working orders, it looks them up over REST this often.
DRAIN_LOOKUP_S = 0.5


class BybitBroker(PositionTpsl, VenueEvents, Broker):
    write_ahead = True

    def __init__(self, account: BybitAccount, symbol: str, category: str, *, hold_timeout_s: float = 30.0,
                 stale_after_s: float = 2.0) -> None:
        super().__init__()
        self.account = account
        #: An acknowledged order with no news for this long is asked for over REST (a lost push).
        self.stale_after_s = stale_after_s
        self._touched: dict[str, float] = {}
        self._sending: set[str] = set()        # creates in flight: their task resolves them
        self._missing: dict[str, int] = {}     # watchdog lookups in a row that found no such order
        self._exists: set[str] = set()          # orders the venue refused to take twice: it has them
        self.symbol = symbol
        self.category = Category(category)
        self.hold_timeout_s = hold_timeout_s
        self.instrument = Instrument(symbol, self.category, Decimal("0.1"), Decimal("0.001"), Decimal("0.001"))
        self._orders: dict[str, Order] = {}     # working (non-terminal) orders by client id
        self._done: dict[str, Order] = {}       # terminal orders this process has seen
        self._seen_exec: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._creates: set[asyncio.Task[Any]] = set()  # the tasks sending creates (orders_sent)
        self._pending_exec: dict[str, list[dict[str, Any]]] = {}
        self.adopted: list[str] = []
        self.closed = False
        # This leg's position; the cash is the account's (shared by every leg).
        self.book = PositionBook()
        self._qty_f = 0.0
        self.venue_position: dict[str, Any] | None = None
        #: The protective levels this leg placed as the position's TP/SL (their decision names
        #: the exit orders they become at the venue).
        self._protection: Protection | None = None
        self._legs: dict[str, tuple[Decimal, Decimal]] = {}
        self.last_fill_time: int | None = None
        self.stats = {"creates": 0, "lookups": 0, "resends": 0, "duplicates_refused": 0, "stream_fills": 0,
                      "rest_fills": 0, "dup_fills": 0, "resyncs": 0, "funding": 0}

    # -- what the account shares ------------------------------------------------------------------
    @property
    def http(self) -> BybitHttp:
        return self.account.http

    @property
    def stream(self) -> PrivateStream | None:
        return self.account.stream

    @property
    def cash(self) -> Decimal:
        """The account's cash (linear: USDT wallet balance - sum of size x entry over linear legs)."""
        return self.account.cash

    @property
    def since_floor(self) -> int | None:
        """Venue time the run began (the account's): older executions are the account's past."""
        return self.account.since_floor

    @since_floor.setter
    def since_floor(self, value: int | None) -> None:
        self.account.since_floor = value

    @property
    def qty(self) -> Decimal:
        return self.book.qty

    # -- start-up (driven by the account) ----------------------------------------------------------
    async def load_rules(self) -> None:
        self.instrument = parse.instrument(await self.http.instrument(self.symbol, self.category.value),
                                           self.category.value)

    async def refresh_books(self) -> Position:
        """The venue's position for this symbol (and the wallet, so the shared cash follows)."""
        wallet = await self.http.wallet()
        pos = await self.http.position(self.symbol, self.category.value)
        self.account.set_books(wallet, {self.symbol: pos})
        return self.position()

    # -- resume and reconciliation (the Broker protocol) -------------------------------------------
    def restore(self, initial_cash: Decimal, fills: list[Fill], orders: list[Order]) -> None:
        """Follow a resumed run's orders of this symbol again (``orders`` are every market's); its
        fills are known (never booked twice). The books themselves are the venue's (``load``), not
        rebuilt from the journal."""
        self.mark_seen({f.exec_id for f in fills if f.symbol == self.symbol})
        for o in orders:
            if o.symbol == self.symbol:
                self.track(o)

    async def lookup_order(self, client_order_id: str) -> Order | None:
        found = await self.venue_order(client_order_id)
        if found is None:
            return None
        self.apply_snapshot(found)
        await self.fetch_fills(client_order_id, found)
        return self.known(client_order_id)

    async def fills_since(self, since_ms: int | None = None) -> int:
        return await self.catch_up(since_ms)

    async def venue_open_orders(self) -> list[Order]:
        out = []
        for item in await self.http.open_orders(self.symbol, self.category.value):
            cid = parse.link_id(item)
            if self.known(cid) is None:
                self.apply_snapshot(item)
            o = self.known(cid)
            if o is not None:
                out.append(o)
        return out

    def _venue_event(self, kind: str, payload: dict[str, Any]) -> None:
        if self._venue is not None:
            self._venue.on_venue_event(kind, payload)

    def _funded(self, t: int, rate: float, qty: Decimal, price: Decimal, amount: Decimal) -> None:
        if self._venue is not None:
            self._venue.on_funding(t, rate, qty, price, amount)

    def _liquidated(self, order: Order, detail: dict[str, Any]) -> None:
        if self._venue is not None:
            self._venue.on_liquidation(order, detail)

    def _adopted(self, order: Order) -> None:
        if self._venue is not None:
            self._venue.on_adopted(order)

    async def close(self) -> None:
        """Stop this leg's background work (idempotent). The shared stream and REST client stay
        open: the account closes them (``BybitAccount.close``, which also closes every leg)."""
        self.closed = True
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait (bounded) until no create/cancel of this leg is in flight and none of its orders is
        working, so that a clean stop journals every outcome. True when everything resolved.
        (``BybitAccount.drain`` waits for every leg.)"""
        deadline = time.monotonic() + timeout_s
        looked = time.monotonic()
        while (self._tasks or self._orders) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if self._orders and time.monotonic() - looked >= DRAIN_LOOKUP_S:
                await self.look_up_working()  # a lost push must not leave the run's last fills out
                looked = time.monotonic()
        return not (self._tasks or self._orders)

    # -- Broker interface --------------------------------------------------------------------------
    def submit(self, req: OrderRequest, now_ms: int) -> Order:
        order = Order.from_request(req, now_ms).transition(OrderStatus.SUBMITTED, now_ms)
        reason = self._validate(req)
        if reason is not None:
            return order.transition(OrderStatus.REJECTED, now_ms, reject_reason=reason)
        self._orders[order.client_order_id] = order
        task = self._spawn(self._send(order, req), order.client_order_id)
        self._creates.add(task)
        task.add_done_callback(self._creates.discard)
        return order

    async def orders_sent(self, timeout_s: float) -> None:
        if self._creates:
            await asyncio.wait(set(self._creates), timeout=timeout_s)

    def _validate(self, req: OrderRequest) -> str | None:
        """The instrument's rules, applied before anything leaves the process."""
        reason = self.instrument.violation(req)
        if reason is not None:
            return reason
        if req.client_order_id in self._orders or req.client_order_id in self._done:
            return "duplicate client order id"
        return None

    def cancel(self, client_order_id: str, now_ms: int) -> Order | None:
        order = self._orders.get(client_order_id)
        if order is None:
            return None
        self._spawn(self._cancel(order), client_order_id)
        return order

    def open_orders(self) -> list[Order]:
        return list(self._orders.values())

    def position(self) -> Position:
        return Position(self.symbol, self.book.qty, self.book.avg_price, self.book.realized)

    def balance(self, mark_price: float) -> Balance:
        equity = self.cash + self.qty * to_decimal(mark_price) if self.qty else self.cash
        return Balance(cash=self.cash, equity=equity)

    def equity(self, mark_price: float) -> float:
        """Shared cash + this leg's qty x mark: the account's equity while the other legs are flat
        (``BybitAccount.equity`` marks every leg)."""
        return self.account.cash_f + self._qty_f * mark_price

    def cash_and_qty(self) -> tuple[float, float]:
        """(the account's shared cash, this leg's quantity)."""
        return self.account.cash_f, self._qty_f

    # -- order entry (background) ------------------------------------------------------------------
    def _spawn(self, coro: Any, cid: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(self._guarded(coro, cid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guarded(self, coro: Any, cid: str | None) -> None:
        """An order task that fails leaves its order as it is, in flight: the watchdog and
        reconciliation resolve it by lookup. Nothing is lost unseen."""
        try:
            await coro
        except Exception as exc:  # noqa: BLE001 - a failure here must never end unseen
            log.error("order_task_failed", order=cid, task=getattr(coro, "__qualname__", "?"),
                      error=f"{type(exc).__name__}: {exc}")
            if cid is not None and cid in self._orders:
                self._touched[cid] = time.monotonic()  # looked up once stale_after_s has passed

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
        self._sending.add(order.client_order_id)
        try:
            await self._send_create(order, req)
        finally:
            self._sending.discard(order.client_order_id)

    async def _send_create(self, order: Order, req: OrderRequest) -> None:
        cid = order.client_order_id
        body = self._body(order, req)
        exists = False  # the venue refused a resend as a duplicate: it has the order
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
                res = await self.http.create(self.category.value, **body)
            except OrderRejected as exc:
                if exc.code != DUPLICATE_LINK_ID:
                    self._reject(cid, str(exc))
                    return
                self.stats["duplicates_refused"] += 1  # the venue already has it: resolve by lookup
                exists = True
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
            if exists:
                # Lookups can lag a create: an order the venue holds stays in flight (SUBMITTED)
                # for the watchdog and reconciliation to find, never "rejected".
                self._exists.add(cid)
                log.warning("order_not_found_yet", order=cid)
                return
            self.stats["resends"] += 1
            await asyncio.sleep(min(0.2 * attempt, 1.0))
        self._reject(cid, f"order create failed {MAX_SENDS} times and the venue has no such order")

    async def _lookup(self, cid: str) -> dict[str, Any] | None:
        self.stats["lookups"] += 1
        for _ in range(10):
            try:
                return await self.venue_order(cid)
            except ExchangeRetryableError:
                await asyncio.sleep(0.5)
        return await self.venue_order(cid)

    async def venue_order(self, cid: str) -> dict[str, Any] | None:
        """The venue's order ``cid`` of this symbol. Bybit looks an orderLinkId up account-wide
        (the symbol is no filter then): an order of another symbol is not this leg's. A protective
        exit's order has no orderLinkId: it is known by its orderId."""
        known = self.known(cid)
        found = await self.http.order(self.symbol, cid, self.category.value,
                                      by_order_id=known is not None and known.exit_reason is not None)
        return found if found is None or found.get("symbol", self.symbol) == self.symbol else None

    async def _cancel(self, order: Order) -> None:
        try:
            await self.http.cancel(self.symbol, order.client_order_id, self.category.value)
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
        self._update(o.transition(OrderStatus.REJECTED, self._now(), reject_reason=reason[:500]))

    def _update(self, o: Order, fill: Fill | None = None) -> None:
        if o.status.is_terminal:
            self._orders.pop(o.client_order_id, None)
            self._touched.pop(o.client_order_id, None)
            self._missing.pop(o.client_order_id, None)
            self._exists.discard(o.client_order_id)
            self._done[o.client_order_id] = o
        else:
            self._orders[o.client_order_id] = o
            self._touched[o.client_order_id] = time.monotonic()
        self._emit(o, fill)
        if fill is not None and self.category is Category.SPOT:
            self._spot_after_fill()

def _with(o: Order, **changes: Any) -> Order:
    return replace(o, **changes)

