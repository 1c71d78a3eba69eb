"""The parts every mode is built from: instruments, strategies, data, simulated brokers, the journal."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
from sqlalchemy import Engine as DBEngine

from bot.app.guards import Event, guard_file
from bot.candles import CandleData
from bot.config import Config, MarketConfig
from bot.domain import Category, Instrument, timeframe_ms
from bot.errors import ConfigError
from bot.feeds.instrument_file import read_rules, rules_path
from bot.feeds.replay import load_candles
from bot.funding import FundingRates
from bot.observe import RunObserver
from bot.timeutil import parse_date
from broker.margin import DEFAULT_MAX_LEVERAGE, DEFAULT_MMR, MarginRule
from broker.simulated import SimulatedBroker, Wallet
from storage.db import open_database
from strategies import backtest_strategy, create_strategy
from strategies.base import Strategy, StrategyContext

#: The rules of a market whose config and data file set none (Bybit BTCUSDT linear's).
DEFAULT_RULES = {"tick_size": Decimal("0.1"), "qty_step": Decimal("0.001"), "min_qty": Decimal("0.001"),
                 "min_notional": Decimal("5")}


@dataclass(frozen=True, slots=True)
class InstrumentRules:
    """A market's instrument and where each rule came from: ``config``, the rules file, ``default``."""

    instrument: Instrument
    source: dict[str, str]
    #: A linear market's margin terms (leverage, the rules file's MMR or the default); spot: None.
    margin: MarginRule | None = None

    def describe(self) -> str:
        ins = self.instrument
        parts = ", ".join(f"{k.replace('_', ' ')} {getattr(ins, k)} ({self.source[k]})" for k in DEFAULT_RULES)
        return f"instrument rules: {parts}"

    @property
    def from_file(self) -> bool:
        """Some rule came from the data file's rules (the run says so)."""
        return bool(set(self.source.values()) - {"config", "default"})

    def payload(self) -> dict[str, str]:
        """The ``instrument_rules`` event journaled when the run starts."""
        ins = self.instrument
        margin = {"leverage": format(self.margin.leverage.normalize(), "f"),
                  "maintenance_margin_rate": format(self.margin.mmr.normalize(), "f")} if self.margin else {}
        return {"symbol": ins.symbol, **{k: str(getattr(ins, k)) for k in DEFAULT_RULES},
                **{f"{k}_from": v for k, v in self.source.items()}, **margin}


def instrument_rules(m: MarketConfig, data_path: str | None = None) -> InstrumentRules:
    """Each rule from the config if it sets it, else from ``data_path``'s rules file, else the default."""
    saved = read_rules(data_path, m.symbol) if data_path else None
    values, source = {}, {}
    for key, default in DEFAULT_RULES.items():
        own = getattr(m, key)
        if own is not None:
            values[key], source[key] = Decimal(repr(own)), "config"
        elif saved and key in saved:
            values[key], source[key] = saved[key], rules_path(data_path or "").name
        else:
            values[key], source[key] = default, "default"
    return InstrumentRules(Instrument(symbol=m.symbol, category=Category(m.category), **values), source,
                           margin_rule(m, saved, rules_path(data_path).name if data_path else "default"))


def margin_rule(m: MarketConfig, saved: dict[str, Decimal] | None = None, where: str = "default") -> MarginRule | None:
    """A linear market's margin terms: ``market.leverage`` (at most the instrument's maximum) and
    the maintenance margin rate of its rules file, else Bybit BTCUSDT's lowest tier (0.5 %)."""
    if m.category != "linear":
        return None
    saved = saved or {}
    top = saved.get("max_leverage", DEFAULT_MAX_LEVERAGE)
    leverage = Decimal(repr(m.leverage))
    if leverage > top:
        raise ConfigError(f"{m.symbol}: market.leverage {m.leverage:g} is above the instrument's maximum "
                          f"{top.normalize():f} ({where if 'max_leverage' in saved else 'default'})")
    return MarginRule(leverage=leverage, mmr=saved.get("maintenance_margin_rate", DEFAULT_MMR))


def with_rules(cfg: Config, rules: InstrumentRules) -> Config:
    """A one-market config whose market sets every rule of ``rules`` (for runs that rebuild
    their brokers from the config, as ``bot walkforward``'s blocks do)."""
    ins = rules.instrument
    update = {k: float(getattr(ins, k)) for k in DEFAULT_RULES}
    return cfg.with_market(cfg.market.model_copy(update=update))


def instrument_from_config(m: MarketConfig) -> Instrument:
    return instrument_rules(m).instrument


def check_tick(m: MarketConfig, rules: InstrumentRules, data: CandleData) -> None:
    """Refuse a tick size larger than ``market.max_tick_fraction`` of the data's median close."""
    tick = rules.instrument.tick_size
    median = float(np.median(data.close)) if len(data) else 0.0
    limit = m.max_tick_fraction
    if not limit or median <= 0 or float(tick) <= limit * median:
        return
    raise ConfigError(
        f"{m.symbol}: tick size {tick} ({rules.source['tick_size']}) is {float(tick) / median:.2%} of the median "
        f"close {median:.6g}, above market.max_tick_fraction {limit:g}: every fill would move by that much; "
        f"set market.tick_size (or download the venue's rules with `bot data download`), or "
        f"--set market.max_tick_fraction=0 to run anyway")


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


def backtest_market(cfg: Config, data: CandleData, checkpoint: str | None = None,
                    market: MarketConfig | None = None) -> tuple[MarketData, list[str]]:
    """A backtest's market and the lines to tell the user: model strategies may train on early
    bars first; the checkpoint guards (bot/app/guards.py) decide the first traded bar."""
    m = market or cfg.market
    strategy, first, note = backtest_strategy(m.strategy.name, m.strategy.params,
                                              strategy_context(cfg, checkpoint, m), data)
    g = guard_file(strategy, m, data.time, first)
    return (MarketData(data, strategy, g.first, events=g.events, in_sample=g.in_sample),
            [*([note] if note else []), *g.notes])


def replay_market(cfg: Config, data: CandleData, checkpoint: str | None = None,
                  market: MarketConfig | None = None) -> tuple[MarketData, list[str]]:
    """A paper replay's market: the strategy as configured, the same guards as a backtest."""
    m = market or cfg.market
    strategy = build_strategy(cfg, checkpoint, m)
    g = guard_file(strategy, m, data.time)
    return MarketData(data, strategy, g.first, events=g.events, in_sample=g.in_sample), g.notes


def load_data(cfg: Config, path: str, date_from: str | None = None, date_to: str | None = None,
              market: MarketConfig | None = None) -> CandleData:
    m = market or cfg.market
    return load_candles(
        path, symbol=m.symbol, timeframe=m.timeframe, bar_ms=timeframe_ms(m.timeframe),
        start_ms=parse_date(date_from) if date_from else None,
        end_ms=parse_date(date_to) if date_to else None,
    )


def simulated_brokers(cfg: Config, rules: list[InstrumentRules | None] | None = None) -> list[SimulatedBroker]:
    """One simulated broker per market, all over one wallet (the run's cash); ``rules`` (per
    market, e.g. from the data file's rules file) replace the config's."""
    wallet = Wallet(cfg.broker.initial_cash)
    given = rules or [None] * len(cfg.markets)
    made = [r or instrument_rules(m) for m, r in zip(cfg.markets, given, strict=True)]
    return [SimulatedBroker(r.instrument, cfg.broker.initial_cash, cfg.broker.fee_rate, cfg.broker.slippage_bps,
                            wallet=wallet, margin=r.margin) for r in made]


def open_journal_db(url: str) -> DBEngine:
    return open_database(url)


@dataclass
class MarketData:
    """One market of a backtest or replay: its candles, strategy and untraded history bars, the
    guards' events to journal and its ``in_sample`` summary entry (bot/app/guards.py)."""

    data: CandleData
    strategy: Strategy
    history: int = 0
    #: The market's instrument rules (config, the data file's rules, defaults); None: the config's.
    rules: InstrumentRules | None = None
    #: Funding rates settled on a linear market's position (bot/funding.py); None: no funding.
    funding: FundingRates | None = None
    #: 1m candles that order a bar's protective stop and target (``market.intrabar_data``).
    intrabar: CandleData | None = None
    events: list[Event] = field(default_factory=list)
    in_sample: dict[str, Any] | None = None


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
