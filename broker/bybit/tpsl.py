"""Protective exits on Bybit: the position's TP/SL (``POST /v5/position/trading-stop``, linear);
spot's conditional orders are broker/bybit/spot_stops.py's.

A mixin of :class:`broker.bybit.broker.BybitBroker`. The engine decides the levels
(bot/protection.py); this places them, reads them back for reconciliation, and names the
order a triggered TP/SL becomes at the venue (no orderLinkId; its stopOrderType says why) as
the protective exit of the decision that set them. They stay on the venue while the bot is down.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog

from bot.domain import Category, ExitReason, Order
from bot.errors import ExchangeError
from bot.protection import Protection
from broker.bybit import parse
from broker.bybit.spot_stops import SpotStops

if TYPE_CHECKING:
    from broker.base import VenueListener
    from broker.bybit.http import BybitHttp

log = structlog.get_logger("broker.bybit")


class PositionTpsl(SpotStops):
    """Needs the broker's symbol, category, REST client, ``_spawn`` and venue listener."""

    symbol: str
    category: Category
    _protection: Protection | None
    _venue: VenueListener | None

    if TYPE_CHECKING:  # provided by BybitBroker
        def _spawn(self, coro: Any, cid: str | None = None) -> Any: ...
        def _venue_event(self, kind: str, payload: dict[str, Any]) -> None: ...
        @property
        def http(self) -> BybitHttp: ...

    def set_protection(self, protection: Protection | None, now_ms: int, *, send: bool = True) -> None:
        """Place these levels as the position's TP/SL (``send=False``: they are there already, as
        after a restart); None removes them. Spot: conditional orders (broker/bybit/spot_stops.py)."""
        if self.category is Category.SPOT:
            self._spot_set(protection, send)
            return
        self._protection = protection
        if send:
            self._spawn(self._send_tpsl(protection))

    def protection(self) -> Protection | None:
        return self._protection

    async def _send_tpsl(self, p: Protection | None) -> None:
        def text(x: Decimal | None) -> str:
            return format(x, "f") if x is not None else "0"  # "0" removes the level

        body = {"tpslMode": "Full", "positionIdx": 0, "tpTriggerBy": "LastPrice", "slTriggerBy": "LastPrice",
                "takeProfit": text(p.take_profit if p else None), "stopLoss": text(p.stop_loss if p else None),
                "trailingStop": text(p.trailing_distance if p else None)}
        try:
            await self.http.trading_stop(self.symbol, self.category.value, **body)
        except ExchangeError as exc:
            # Refused (the position moved past a level meanwhile, say): told, never silent.
            log.error("protection_refused", symbol=self.symbol, error=str(exc))
            self._venue_event("protection_refused", {"symbol": self.symbol, "error": str(exc)[:500]})
            return
        log.info("protection_placed", symbol=self.symbol, **{k: v for k, v in body.items() if k[0] in "ts"})

    async def venue_protection(self) -> Protection | None:
        """The position's TP/SL as the venue holds them (None: none, or flat)."""
        if self.category is Category.SPOT:
            return await self._spot_venue()
        pos = await self.http.position(self.symbol, self.category.value)
        if not pos or parse.signed_size(pos) == 0:
            return None
        tp, sl, ts = (parse.d(pos.get(k)) or None for k in ("takeProfit", "stopLoss", "trailingStop"))
        if tp is None and sl is None and ts is None:
            return None
        mine = self._protection
        return Protection(self.symbol, 1 if parse.signed_size(pos) > 0 else -1, mine.decision_id if mine else None,
                          "", stop_loss=sl, take_profit=tp, trailing_distance=ts)

    def _exit_reason(self, item: dict[str, Any]) -> ExitReason | None:
        """The protective exit a venue order belongs to: a position TP/SL's by its stopOrderType,
        a spot stop leg by its orderLinkId."""
        return self._spot_reason(item) if self.category is Category.SPOT else parse.exit_reason(item)

    def _exit_order(self, order: Order, trigger: Decimal | None) -> None:
        if self._venue is not None:
            self._venue.on_exit_order(order, trigger)
