"""Composition root: the only module that knows every part; it builds each mode's parts.

Every mode is the same :class:`~bot.runner.Runner` over a different triple:

| mode | bar source | broker | clock |
|---|---|---|---|
| backtest | the file, preloaded (``PreloadedSource``) | simulated | the data's |
| paper, replay | the file, paced (``StreamSource``) | simulated | wall |
| paper | Bybit's kline stream (REST warm-up/backfill) | simulated | wall |
| live | Bybit's kline stream | Bybit (pybit) | wall |
"""

from __future__ import annotations

from bot.app.files import backtest, backtest_markets, paper_replay
from bot.app.parts import (
    InstrumentRules,
    MarketData,
    backtest_market,
    build_strategy,
    check_tick,
    instrument_from_config,
    instrument_rules,
    load_data,
    open_journal_db,
    replay_market,
    run_observers,
    simulated_brokers,
    strategy_context,
    with_rules,
)
from bot.app.venue import live, paper

__all__ = ["InstrumentRules", "MarketData", "backtest", "backtest_market", "backtest_markets",
           "build_strategy", "check_tick", "instrument_from_config", "instrument_rules", "live", "load_data",
           "open_journal_db", "paper", "paper_replay", "replay_market", "run_observers", "simulated_brokers",
           "strategy_context", "with_rules"]
