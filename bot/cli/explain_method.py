"""``bot journal explain ID --method M``: the decision's attribution recomputed with another method.

Rebuilds the run's strategy from its journaled config (its checkpoint included), loads the run's
candles (its data file, or ``--data``) up to the decision bar, and asks the strategy's
``explain_with(bars, method)`` for an attribution in the contract's shape (docs/explanations.md).
A strategy without ``explain_with`` (sma, older versions) is one clear line and exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bot.app.parts import build_strategy
from bot.bars import Bars
from bot.cli import explain_png
from bot.config import Config
from bot.domain import timeframe_ms
from bot.errors import BotError, ConfigError
from bot.feeds.replay import load_candles
from strategies.spec import one_line


def _config(run: dict[str, Any]) -> Config:
    raw = run.get("config")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"run {run.get('id')} journaled no config: its strategy cannot be rebuilt for --method")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise ConfigError(f"run {run.get('id')}: its journaled config does not rebuild ({where}: "
                          f"{first.get('msg')}), so --method cannot recompute") from None


def recompute(info: dict[str, Any], method: str, data: str | None) -> dict[str, Any]:
    """The contract attribution of ``method`` for the decision of ``info`` (ConfigError if impossible)."""
    d, run = info["decision"], info["run"]
    if not run:
        raise ConfigError(f"decision {d['id']} has no run in the journal: --method needs its config")
    cfg = _config(run)
    market = next((m for m in cfg.markets if m.symbol == d.get("symbol")), None)
    if market is None:
        raise ConfigError(f"run {run['id']} does not trade {d.get('symbol')}: cannot rebuild its strategy")
    strategy = build_strategy(cfg, market=market)
    explain_with = getattr(strategy, "explain_with", None)
    if not callable(explain_with):
        raise ConfigError(f"strategy {market.strategy.name} cannot recompute its attribution "
                          f"(it has no explain_with); only the stored one can be shown")
    path = data or explain_png.data_file(run, d.get("symbol"))
    if not path or not Path(path).is_file():
        raise ConfigError(f"the run's candle file {path or '(none: a live feed)'} is not here: pass --data FILE")
    bar_ms = timeframe_ms(market.timeframe)
    t = int(d["bar_time"])
    try:
        c = load_candles(path, symbol=market.symbol, timeframe=market.timeframe, bar_ms=bar_ms, end_ms=t + bar_ms)
    except BotError as exc:
        raise ConfigError(str(exc)) from None
    if not len(c.time) or int(c.time[-1]) != t:
        raise ConfigError(f"{Path(path).name} holds no candle at the decision bar {t}: pass --data FILE")
    bars = Bars.preloaded(market.symbol, market.timeframe, c.time, c.open, c.high, c.low, c.close, c.volume)
    while bars.advance():
        pass
    try:
        out = explain_with(bars, method)
    except BotError:
        raise
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"--method {method}: {one_line(exc)}") from None
    attribution = out.get("attribution") if isinstance(out, dict) and "attribution" in out else out
    if not isinstance(attribution, dict):
        raise ConfigError(f"strategy {market.strategy.name}: explain_with returned no attribution for {method!r}")
    return attribution
