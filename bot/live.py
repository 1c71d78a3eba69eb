"""The venue side of paper and live runs: safety checks, the Bybit broker, start-up timing.

Live start-up: safety checks (keys, mainnet confirmation), the venue (instrument rules, a
signed call, books, the authenticated private stream); bot/app.py then opens or resumes the
journal run and the runner reconciles with the venue before the first bar: no decision can
trade before the journal and the exchange agree. Stopping (SIGINT/SIGTERM) leaves orders on
the venue as they are.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog

from bot.config import Config
from bot.domain import Candle
from bot.errors import ConfigError, ExchangeError
from bot.feeds.bybit import BybitFeed
from bot.secrets import Secrets
from broker.bybit import BybitAccount, BybitHttp, PrivateStream, private_url

log = structlog.get_logger("bot.live")

#: Bars of history beyond the strategy's own warm-up, so indicators settle before trading.
WARMUP_MARGIN = 50


@dataclass(frozen=True)
class RunOptions:
    """Knobs of paper and live runs that tests turn (an accelerated simulator clock, a feed that
    fails on purpose); the defaults suit a real venue."""

    reconcile_every_s: float = 300.0
    equity_every_s: float = 60.0
    watchdog_s: float | None = None
    ping_interval_s: float = 20.0
    stream_check_s: float = 0.5
    drain_s: float = 10.0
    #: Builds the market-data feed (BybitFeed's signature); tests pass a faulty subclass.
    feed_factory: Any = None


def is_mainnet(cfg: Config) -> bool:
    return not cfg.exchange.testnet and not cfg.exchange.rest_url


def credentials(cfg: Config, confirm_live: bool) -> tuple[str, str]:
    """Keys from the environment; mainnet only with explicit confirmation."""
    if is_mainnet(cfg) and not confirm_live:
        raise ConfigError("refusing to trade on Bybit mainnet without --confirm-live "
                          "(exchange.testnet=false means real money)")
    sec = Secrets()
    key = sec.api_key.get_secret_value() if sec.api_key else ""
    secret = sec.api_secret.get_secret_value() if sec.api_secret else ""
    if not key or not secret:
        raise ConfigError("live trading needs API keys: set BYBIT_API_KEY and BYBIT_API_SECRET "
                          "(environment or .env)")
    return key, secret


def venue_name(cfg: Config) -> str:
    ex = cfg.exchange
    return ex.rest_url or ("Bybit testnet" if ex.testnet else "Bybit MAINNET")


def check_markets(cfg: Config, checkpoint: str | None) -> None:
    """What a venue run of several markets needs: one category (one public stream) and each
    market's own checkpoint in the config (``--checkpoint`` names one model)."""
    cats = {m.category for m in cfg.markets}
    if len(cats) > 1:
        raise ConfigError(f"paper and live runs trade markets of one category over one stream; this config mixes "
                          f"{' and '.join(sorted(cats))}: run them as two bots")
    if checkpoint and len(cfg.markets) > 1:
        raise ConfigError("--checkpoint names one market's model; set strategy.checkpoint on each market instead")


def make_feed(cfg: Config, opts: RunOptions, on_event: Any) -> BybitFeed:
    """One public stream for every market of the run (they share a category: check_markets)."""
    ex = cfg.exchange
    make = opts.feed_factory or BybitFeed
    feed: BybitFeed = make([(m.symbol, m.timeframe) for m in cfg.markets], cfg.markets[0].category,
                           rest_url=ex.rest_url, ws_url=ex.ws_url, testnet=ex.testnet, timeout_s=ex.timeout_s,
                           ping_interval_s=opts.ping_interval_s, on_event=on_event)
    return feed


def make_broker(cfg: Config, key: str, secret: str, opts: RunOptions) -> BybitAccount:
    """The Bybit account (REST client, one private stream, the wallet): the caller adds one leg
    per market (``account.leg(symbol, category)``), then ``connect``s it, and closes it at the end."""
    ex = cfg.exchange
    http = BybitHttp(key, secret, testnet=ex.testnet, rest_url=ex.rest_url, recv_window=ex.recv_window,
                     timeout_s=ex.timeout_s, category=cfg.markets[0].category)
    stream = PrivateStream(key, secret, url=private_url(ex.ws_url, ex.testnet), testnet=ex.testnet,
                           on_message=lambda _m: None, on_reconnect=_noop, check_every_s=opts.stream_check_s,
                           ping_interval_s=int(max(opts.ping_interval_s, 1)))
    return BybitAccount(http, stream=stream)


async def connect(account: BybitAccount, cfg: Config) -> None:
    """Every leg's instrument rules, a signed call, the books and the private stream; errors name
    the venue."""
    try:
        await account.load()
    except ExchangeError as exc:
        raise type(exc)(f"{venue_name(cfg)}: {exc}", code=exc.code) from None
    for leg in account.legs.values():
        log.info("live_venue_ready", venue=venue_name(cfg), symbol=leg.symbol, position=str(leg.qty),
                 tick=str(leg.instrument.tick_size), lot=str(leg.instrument.qty_step))


def start_positions(account: BybitAccount, cfg: Config) -> list[Decimal]:
    """Each market's venue position as the run begins (reconciliation starts from these)."""
    return [account.legs[m.symbol].qty for m in cfg.markets]


def live_start(cfg: Config, account: BybitAccount, histories: list[list[Candle]], now: int,
               payload: dict[str, Any]) -> tuple[Config, dict[str, Any]]:
    """A new live run's wallet is the account's: its equity (cash and every market's position at
    its last close) becomes the run's initial cash, and what the start payload records lets a
    resume check the venue against the journal."""
    account.since_floor = now  # fills before this are the account's history, not this run's
    equity_d = account.cash
    for m, history in zip(cfg.markets, histories, strict=True):
        mark = Decimal(repr(history[-1].close)) if history else Decimal(0)
        equity_d += account.legs[m.symbol].qty * mark
    equity = float(equity_d)
    if equity <= 0:
        raise ExchangeError(f"{venue_name(cfg)}: the account holds no USDT equity to trade with")
    cfg = cfg.model_copy(update={"broker": cfg.broker.model_copy(update={"initial_cash": equity})})
    return cfg, {**payload, "testnet": cfg.exchange.testnet, "start_equity": equity, "venue_start_ms": now}


async def wait_for(feed: BybitFeed, first: int, tf: int) -> int:
    """Sleep until, by the venue's clock, the bar before ``first`` has closed. The venue's clock
    rate is measured between polls (a simulator may run faster than real time)."""
    loop = asyncio.get_running_loop()
    prev: tuple[float, int] | None = None
    while True:
        now = await feed.server_time()
        wall = loop.time()
        if now >= first:
            return now
        rate = 1.0
        if prev is not None and wall > prev[0] and now > prev[1]:
            rate = (now - prev[1]) / ((wall - prev[0]) * 1000.0)
        prev = (wall, now)
        log.info("live_waiting_for_start", first_bar=first, server_time=now)
        await asyncio.sleep(min(max((first - now) / rate / 1000.0 / 2, 0.005), 5.0) if rate != 1.0 else 0.05)


async def _noop() -> None:
    return None
