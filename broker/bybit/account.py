"""One Bybit (unified) account traded by several legs: one per symbol, one wallet, one stream.

The account owns what its legs share: the REST client, the one private stream (subscribed once
to ``order``, ``execution``, ``position`` and ``wallet``), the working-order watcher and the
wallet's cash. ``account.leg(symbol, category)`` makes the engine's :class:`BybitBroker` for one
symbol; every stream item is handed to the leg of its ``symbol`` (items of symbols no leg trades
are ignored, never adopted), so each leg books only its own executions.

Shared cash is the cash-equivalent of the wallet: USDT ``walletBalance`` minus size x entry of
every linear leg, so that the account's equity is cash + sum of qty x mark over the legs. Every
execution moves it by that leg's ``PositionBook.apply`` delta; a leg's ``refresh_books`` and
``check_books`` resync it from the venue's wallet and the legs' positions.

Who closes what: ``BybitAccount.close`` closes every leg, the watcher, the stream and the REST
client, once (a second call does nothing). A leg's ``close`` stops that leg's background work
only. ``leg.drain`` waits for that leg; ``account.drain`` for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import structlog

from bot.domain import ZERO
from bot.errors import ConfigError, ExchangeError
from broker.bybit.broker import BybitBroker
from broker.bybit.errors import LEVERAGE_REFUSED
from broker.bybit.http import BybitHttp
from broker.bybit.stream import PrivateStream
from broker.bybit.venue_events import wallet_coin

log = structlog.get_logger("broker.bybit")


class BybitAccount:
    def __init__(self, http: BybitHttp, *, stream: PrivateStream | None = None) -> None:
        self.http = http
        self.stream = stream
        self.legs: dict[str, BybitBroker] = {}
        self.cash = ZERO
        self.cash_f = 0.0
        self.venue_wallet: dict[str, Any] | None = None
        #: Venue time this run began: older executions belong to the account's past, not to the run.
        self.since_floor: int | None = None
        #: The leverage each linear leg set on the venue at start-up: (symbol -> event payload).
        self.leverage_set: dict[str, dict[str, str]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._leverage: dict[str, Decimal] = {}
        self._loaded = False
        self._closed = False

    def leg(self, symbol: str, category: str, *, leverage: Decimal | None = None, **kw: Any) -> BybitBroker:
        """The broker of one symbol (``kw``: BybitBroker's knobs). Once per symbol, before ``load``.
        ``leverage`` (linear): set on the venue when the account loads."""
        if symbol in self.legs:
            raise ConfigError(f"the Bybit account already trades {symbol}: one leg per symbol")
        if self._loaded:
            raise ConfigError(f"add the {symbol} leg before the account is loaded")
        leg = BybitBroker(self, symbol, category, **kw)
        self.legs[symbol] = leg
        if leverage is not None and leg.category.value == "linear":
            self._leverage[symbol] = leverage
        return leg

    # -- start-up ----------------------------------------------------------------------------------
    async def load(self) -> None:
        """Every leg's instrument rules, one key check, every linear leg's leverage, every leg's
        books, then the one private stream and the working-order watcher."""
        if not self.legs:
            raise ConfigError("a Bybit account needs at least one leg (symbol) to trade")
        for leg in self.legs.values():
            await leg.load_rules()
        await self.http.check_keys()
        for symbol, leverage in self._leverage.items():
            await self._set_leverage(symbol, leverage)
        await self.refresh_books()
        self._loaded = True
        if self.stream is not None:
            self.stream.on_message = self.on_stream
            self.stream.on_reconnect = self.catch_up
            await self.stream.start()
        self._watcher = asyncio.get_running_loop().create_task(self._watch_working_orders())

    async def _set_leverage(self, symbol: str, leverage: Decimal) -> None:
        """``market.leverage`` on the venue (start and resume alike); a value the venue refuses
        (above the instrument's maximum, say) is a configuration error."""
        text = format(leverage.normalize(), "f")
        try:
            changed = await self.http.set_leverage(symbol, "linear", text)
        except ExchangeError as exc:
            if exc.code in LEVERAGE_REFUSED:
                raise ConfigError(f"{symbol}: the venue refuses market.leverage {text}: {exc}") from None
            raise
        self.leverage_set[symbol] = {"symbol": symbol, "leverage": text, "venue": "set" if changed else "unchanged"}
        log.info("leverage_set", **self.leverage_set[symbol])

    async def refresh_books(self) -> None:
        """The wallet and every leg's position, as the venue holds them now."""
        wallet = await self.http.wallet()
        positions = {s: await self.http.position(s, leg.category.value) for s, leg in self.legs.items()}
        self.set_books(wallet, positions)

    def set_books(self, wallet: dict[str, Any], positions: Mapping[str, dict[str, Any] | None]) -> None:
        """The venue's wallet, and the positions of the legs named in ``positions``; the shared
        cash is recomputed from the wallet and every leg's (now current) books."""
        self.venue_wallet = wallet
        for symbol, pos in positions.items():
            self.legs[symbol].set_book(wallet, pos)
        self.cash = wallet_coin(wallet, "USDT") - sum((leg.entry_value() for leg in self.legs.values()), ZERO)
        self.cash_f = float(self.cash)

    def move_cash(self, delta: Decimal) -> None:
        """An execution of some leg moved the wallet's cash by ``delta``."""
        self.cash += delta
        self.cash_f = float(self.cash)

    def busy(self) -> bool:
        """True while any leg has an order working (a create in flight is one: SUBMITTED)."""
        return any(leg.open_orders() for leg in self.legs.values())

    def equity(self, marks: Mapping[str, float]) -> float:
        """Cash + sum of qty x mark over the legs (a leg missing from ``marks`` counts as flat)."""
        return self.cash_f + sum(leg.cash_and_qty()[1] * marks.get(s, 0.0) for s, leg in self.legs.items())

    # -- the private stream ------------------------------------------------------------------------
    def on_stream(self, msg: dict[str, Any]) -> None:
        """One push: each item goes to the leg of its symbol (and category, where it says)."""
        topic = msg.get("topic", "")
        data = msg.get("data") or []
        if topic == "wallet":
            if data:
                self.venue_wallet = data[0]
            return
        for item in data:
            leg = self.legs.get(str(item.get("symbol")))
            if leg is None or leg.closed or item.get("category", leg.category.value) != leg.category.value:
                continue  # not a symbol this account trades (e.g. a manual order): not ours to adopt
            leg.on_item(topic, item)

    async def catch_up(self) -> None:
        """After a reconnect: every leg's missed executions and working orders, over REST."""
        for leg in list(self.legs.values()):
            if not leg.closed:
                await leg.catch_up()

    async def _watch_working_orders(self) -> None:
        while True:
            legs = [leg for leg in self.legs.values() if not leg.closed]
            await asyncio.sleep(max(min((leg.stale_after_s for leg in legs), default=2.0) / 2, 0.05))
            now = time.monotonic()
            for leg in legs:
                try:
                    await leg.watch_once(now)
                except Exception as exc:  # noqa: BLE001 - the watcher must outlive any one leg's trouble
                    log.error("order_watch_error", symbol=leg.symbol, error=f"{type(exc).__name__}: {exc}")

    # -- stopping ----------------------------------------------------------------------------------
    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait (bounded) until no leg has anything in flight; True when everything resolved."""
        deadline = time.monotonic() + timeout_s
        ok = True
        for leg in self.legs.values():
            ok = await leg.drain(max(deadline - time.monotonic(), 0.0)) and ok
        return ok

    async def close(self) -> None:
        """Every leg, the watcher, the stream, the REST client; once. Orders at the venue stay."""
        if self._closed:
            return
        self._closed = True
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
        for leg in self.legs.values():
            await leg.close()
        if self.stream is not None:
            await self.stream.close()
        self.http.close()
