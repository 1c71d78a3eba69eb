"""The parts every mode is built from: instruments, strategies, data, simulated brokers, the journal."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Engine as DBEngine

from bot.candles import CandleData
from bot.config import Config, MarketConfig
from bot.domain import Category, Instrument, timeframe_ms
from bot.feeds.replay import load_candles
from bot.observe import RunObserver
from bot.timeutil import parse_date
from broker.simulated import SimulatedBroker, Wallet
from storage.db import open_database
from strategies import backtest_strategy, create_strategy
from strategies.base import Strategy, StrategyContext


def instrument_from_config(m: MarketConfig) -> Instrument:
    return Instrument(
        symbol=m.symbol,
        category=Category(m.category),
        tick_size=Decimal(repr(m.tick_size)),
        qty_step=Decimal(repr(m.qty_step)),
        min_qty=Decimal(repr(m.min_qty)),
        min_notional=Decimal(repr(m.min_notional)),
    )


def strategy_context(cfg: Config, checkpoint: str | None = None, market: MarketConfig | None = None) -> StrategyContext:
    m = market or cfg.market
    return StrategyContext(
        symbol=m.symbol,
        timeframe=m.timeframe,
        long_only=m.category == "spot",
        fee_rate=cfg.broker.fee_rate,
        checkpoint=checkpoint or m.strategy.checkpoint,
    )


def build_strategy(cfg: Config, checkpoint: str | None = None, market: MarketConfig | None = None) -> Strategy:
    m = market or cfg.market
    return create_strategy(m.strategy.name, m.strategy.params, strategy_context(cfg, checkpoint, m))


def build_backtest_strategy(cfg: Config, data: CandleData, checkpoint: str | None = None,
                            market: MarketConfig | None = None) -> tuple[Strategy, int, str | None]:
    """(strategy, first traded bar, note): model strategies may train on early bars first."""
    m = market or cfg.market
    return backtest_strategy(m.strategy.name, m.strategy.params, strategy_context(cfg, checkpoint, m), data)


def load_data(cfg: Config, path: str, date_from: str | None = None, date_to: str | None = None,
              market: MarketConfig | None = None) -> CandleData:
    m = market or cfg.market
    return load_candles(
        path, symbol=m.symbol, timeframe=m.timeframe, bar_ms=timeframe_ms(m.timeframe),
        start_ms=parse_date(date_from) if date_from else None,
        end_ms=parse_date(date_to) if date_to else None,
    )


def simulated_brokers(cfg: Config) -> list[SimulatedBroker]:
    """One simulated broker per market, all over one wallet (the run's cash)."""
    wallet = Wallet(cfg.broker.initial_cash)
    return [SimulatedBroker(instrument_from_config(m), cfg.broker.initial_cash, cfg.broker.fee_rate,
                            cfg.broker.slippage_bps, wallet=wallet) for m in cfg.markets]


def open_journal_db(url: str) -> DBEngine:
    return open_database(url)


@dataclass
class MarketData:
    """One market of a backtest or replay: its candles, strategy and untraded history bars."""

    data: CandleData
    strategy: Strategy
    history: int = 0


def run_observers(cfg: Config) -> list[RunObserver]:
    """What watches a paper or live run (bot/observe.py), as the config asks. Call it before
    the run is journaled: a bad ``BOT_ALERT_URLS`` entry is a ConfigError."""
    from bot.alerts import alert_observer  # noqa: PLC0415 - apprise only when alerts are set

    out: list[RunObserver] = []
    mc = cfg.metrics
    if mc.port is not None:
        from bot.prometheus import PrometheusObserver, check_port  # noqa: PLC0415 - only when asked for

        check_port(mc.host, mc.port)  # a port in use is one clear line, before the run is journaled
        out.append(PrometheusObserver(mc.host, mc.port))
    alerts = alert_observer(cfg)
    if alerts is not None:
        out.append(alerts)
    return out
