"""Protective exits on Bybit spot: conditional orders (``POST /v5/order/create`` with
``orderFilter=StopOrder``, ``triggerPrice``, a Market sell of the coin held, floored to the lot).

Spot has no position TP/SL and no native trailing stop, so a long's protection is two orders:
the stop leg (the tighter of the stop-loss and the trailing stop) and the take-profit leg. A
StopOrder holds no coin while it waits, so both can cover the whole holding; when one fills,
the holding is gone and the other is cancelled. The trail moves as the simulated broker moves
it, on a closed bar (broker/protective.py ``ratchet``): the bot amends the stop leg's trigger
(``POST /v5/order/amend``); while the bot is down the stop stays where it was last amended.
Both legs carry orderLinkIds derived from the protection's exit id, so a restarted bot finds
them on the venue. A mixin of :class:`broker.bybit.broker.BybitBroker`.
"""

from __future__ import annotations

import hashlib
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any

import structlog

from bot.domain import ExitReason
from bot.errors import ExchangeError
from bot.protection import Protection
from broker.bybit import parse
from broker.protective import ratchet

if TYPE_CHECKING:
    from bot.domain import Instrument
    from broker.bybit.http import BybitHttp

log = structlog.get_logger("broker.bybit")

#: Bybit: "Order does not exist" (already filled or cancelled) and a duplicate orderLinkId.
GONE, DUPLICATE = 110001, 110072


def leg_ids(exit_id: str) -> tuple[str, str]:
    """(stop leg, take-profit leg) orderLinkIds of a protection: deterministic, under 36 chars."""
    h = hashlib.sha1(exit_id.encode()).hexdigest()[:24]
    return f"px-{h}-s", f"px-{h}-t"


class SpotStops:
    symbol: str
    instrument: Instrument
    _protection: Protection | None
    #: Legs this process placed or found: orderLinkId -> (trigger, qty) as the venue holds it.
    _legs: dict[str, tuple[Decimal, Decimal]]

    if TYPE_CHECKING:  # provided by BybitBroker
        def _spawn(self, coro: Any, cid: str | None = None) -> Any: ...
        def _venue_event(self, kind: str, payload: dict[str, Any]) -> None: ...
        @property
        def http(self) -> BybitHttp: ...
        @property
        def qty(self) -> Decimal: ...

    def _spot_set(self, p: Protection | None, send: bool) -> None:
        self._protection = p
        if not send:
            return
        stale = [k for k in self._legs if p is None or k not in leg_ids(p.exit_id)]
        self._spawn(self._spot_send(p, stale))

    def _held(self) -> Decimal:
        return (self.qty // self.instrument.qty_step) * self.instrument.qty_step if self.qty > 0 else Decimal(0)

    def _wanted(self, p: Protection | None) -> dict[str, Decimal]:
        if p is None:
            return {}
        sl_id, tp_id = leg_ids(p.exit_id)
        stop = p.stop()
        out = {sl_id: stop[0]} if stop is not None else {}
        if p.take_profit is not None:
            out[tp_id] = p.take_profit
        return out

    async def _spot_send(self, p: Protection | None, stale: list[str]) -> None:
        for link in stale:
            await self._spot_cancel(link)
        qty = self._held()
        if p is None or qty < self.instrument.min_qty:
            return
        for link, level in self._wanted(p).items():
            if link in self._legs:
                continue
            body = {"symbol": self.symbol, "side": "Sell", "orderType": "Market", "qty": format(qty, "f"),
                    "marketUnit": "baseCoin", "orderFilter": "StopOrder", "orderLinkId": link,
                    "triggerPrice": format(self.instrument.round_price(level, ROUND_FLOOR), "f")}
            try:
                await self.http.create("spot", **body)
            except ExchangeError as exc:
                if exc.code != DUPLICATE:  # a duplicate: the venue has it (sent before a restart)
                    log.error("protection_refused", symbol=self.symbol, order=link, error=str(exc))
                    self._venue_event("protection_refused", {"symbol": self.symbol, "error": str(exc)[:500]})
                    continue
            self._legs[link] = (level, qty)
            log.info("protection_placed", symbol=self.symbol, order=link, trigger=body["triggerPrice"], qty=body["qty"])

    async def _spot_cancel(self, link: str) -> None:
        try:
            await self.http.cancel(self.symbol, link, "spot")
        except ExchangeError as exc:
            if exc.code != GONE:
                log.error("protection_cancel_failed", symbol=self.symbol, order=link, error=str(exc))
                return
        self._legs.pop(link, None)

    async def _spot_amend(self, link: str, trigger: Decimal | None, qty: Decimal | None) -> None:
        body: dict[str, Any] = {"category": "spot", "symbol": self.symbol, "orderLinkId": link}
        if trigger is not None:
            body["triggerPrice"] = format(trigger, "f")
        if qty is not None:
            body["qty"] = format(qty, "f")
        try:
            await self.http.amend(**body)
        except ExchangeError as exc:
            log.error("protection_amend_failed", symbol=self.symbol, order=link, error=str(exc))
            return
        was = self._legs.get(link, (Decimal(0), Decimal(0)))
        self._legs[link] = (trigger if trigger is not None else was[0], qty if qty is not None else was[1])

    # -- the trail, on closed bars (the engine's MarketDataListener) ------------------------------
    def pending(self) -> bool:
        p = self._protection
        return p is not None and p.trailing_distance is not None

    def on_bar(self, time_ms: int, open_: float, high: float, low: float, close: float) -> None:
        """A bar closed: the trail follows it (as the simulated broker's); a tighter stop is amended."""
        p = self._protection
        if p is None or p.trailing_distance is None:
            return
        p = self._protection = ratchet(p, Decimal(repr(high)), Decimal(repr(low)))
        sl_id = leg_ids(p.exit_id)[0]
        stop = p.stop()
        leg = self._legs.get(sl_id)
        if stop is not None and leg is not None and stop[0] > leg[0]:
            self._spawn(self._spot_amend(sl_id, stop[0], None))

    def _spot_after_fill(self) -> None:
        """The holding moved: legs follow its size, and go when it is gone."""
        if not self._legs:
            return
        held = self._held()
        if held < self.instrument.min_qty:
            self._protection = None
            for link in list(self._legs):
                self._spawn(self._spot_cancel(link))
            return
        for link, (_, qty) in list(self._legs.items()):
            if qty != held:
                self._spawn(self._spot_amend(link, None, held))

    def _spot_reason(self, item: dict[str, Any]) -> ExitReason | None:
        link = str(item.get("orderLinkId") or "")
        p = self._protection
        if p is None or link not in leg_ids(p.exit_id):
            return None
        if link.endswith("-t"):
            return ExitReason.TAKE_PROFIT
        stop = p.stop()
        return stop[1] if stop is not None else ExitReason.STOP_LOSS

    async def _spot_venue(self) -> Protection | None:
        """The legs the venue holds of the protection this process follows (None: none)."""
        p = self._protection
        if p is None:
            return None
        found: dict[str, Decimal] = {}
        for item in await self.http.open_orders(self.symbol, "spot"):
            link = str(item.get("orderLinkId") or "")
            if link in leg_ids(p.exit_id) and item.get("orderStatus") == "Untriggered":
                found[link] = parse.d(item.get("triggerPrice"))
                self._legs[link] = (found[link], parse.d(item.get("qty")))
        sl_id, tp_id = leg_ids(p.exit_id)
        if not found or set(self._wanted(p)) - set(found):
            # A leg is missing (a kill between the two creates): not on the venue as a whole; the
            # reconciliation places it again (the legs found are known, so not sent twice).
            return None
        stop = found.get(sl_id)
        # The stop leg holds the tighter of the stop-loss and the trail: the levels are the journal's
        # when the leg is there (its trigger is reported as the trail's current level).
        return Protection(self.symbol, 1, p.decision_id, p.exit_id,
                          stop_loss=p.stop_loss if stop is not None else None, take_profit=found.get(tp_id),
                          trailing_distance=p.trailing_distance if stop is not None else None,
                          trailing_stop=stop if p.trailing_distance is not None else None, best_price=p.best_price)
