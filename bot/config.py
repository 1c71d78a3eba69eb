"""Typed, frozen configuration: one pydantic model loaded from ``config.yaml``.

A run trades one or more **markets** out of one wallet. ``markets:`` lists them (symbol,
category, timeframe, instrument rules, strategy, allocation, per-market risk); the one-market
shorthand ``market:`` + ``strategy:`` is read as a one-element list. Overrides come from the
command line as ``--set dotted.key=value`` (the value is parsed as YAML, so
``--set risk.max_drawdown=0.2`` is a float; ``--set markets.1.strategy.params.fast=5`` indexes
the list) and from the environment as ``BOT_RISK__MAX_DRAWDOWN=0.2`` (:mod:`bot.env_config`):
defaults < config.yaml < environment < command line. Secrets never live here: they come from
the environment (or a ``.env`` file) through :mod:`bot.secrets`; the journal's copy of the
config (:func:`config_to_dict`) masks the password of a database URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.config_exits import ExitsConfig
from bot.config_retrain import RetrainConfig
from bot.domain import TIMEFRAME_MS
from bot.env_config import DELIMITER, EnvItem, env_items, parse_value
from bot.errors import ConfigError
from bot.redact import mask

DEFAULT_CONFIG_PATH = Path("config.yaml")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StrategyConfig(_Frozen):
    name: str = "sma"
    #: Strategy-specific parameters, validated by the strategy's own parameter model.
    params: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None
    #: Trade bars the checkpoint was fitted on (every output then says "in-sample"); default:
    #: trading starts after them (``--allow-in-sample``).
    allow_in_sample: bool = False
    #: Trade a checkpoint fitted on another symbol or timeframe (``--allow-other-market``).
    allow_other_market: bool = False


class MarketRiskConfig(_Frozen):
    """Per-market limits; a key left out takes the ``risk:`` section's value."""

    max_exposure: float | None = Field(None, gt=0, le=10)
    max_position_notional: float | None = Field(None, ge=0)
    min_order_notional: float | None = Field(None, ge=0)
    cooldown_bars: int | None = Field(None, ge=0)
    rebalance_threshold: float | None = Field(None, ge=0, lt=1)


class MarketConfig(_Frozen):
    symbol: str = "BTCUSDT"
    timeframe: str = "1h"
    category: Literal["spot", "linear"] = "linear"
    #: Instrument rules used by the simulated broker; the Bybit broker reads them from the venue.
    #: Left out: the data file's ``FILE.instrument.json`` (``bot data download`` saves it), else
    #: 0.1 / 0.001 / 0.001 / 5 (bot/app/parts.py).
    tick_size: float | None = Field(None, gt=0)
    qty_step: float | None = Field(None, gt=0)
    min_qty: float | None = Field(None, gt=0)
    min_notional: float | None = Field(None, ge=0)
    #: Refuse a backtest or replay whose tick size exceeds this fraction of the median close
    #: (0 disables): a tick that coarse moves every fill by a large share of the price.
    max_tick_fraction: float = Field(0.001, ge=0, lt=1)
    strategy: StrategyConfig = StrategyConfig()
    #: Fraction of the portfolio's equity this market's target exposure applies to. Left out:
    #: the markets without one share what the others leave, equally (one market: 1.0).
    allocation: float | None = Field(None, gt=0, le=1)
    #: Candle file for backtests and replays of this market (``--data`` wins for one market).
    data: str | None = None
    #: Funding rates for backtests and replays of a linear market (bot/funding.py): ``auto`` (the
    #: ``*_<SYMBOL>_funding_*.csv[.gz]`` beside the candle file, if any), ``none``, or a path.
    funding: str = Field("auto", min_length=1)
    #: Linear: isolated-margin leverage of the simulated broker (broker/margin.py), 1 up to the
    #: instrument's maximum (its rules file's ``max_leverage``, else 100); spot: 1.
    leverage: float = Field(1.0, ge=1, le=200)
    risk: MarketRiskConfig = MarketRiskConfig()
    #: Protective exits (stop-loss, take-profit, trailing stop) of this market's positions.
    exits: ExitsConfig = ExitsConfig()
    #: 1m candles of this market (backtests, replays): they order a bar's stop and target when
    #: the bar reached both (else the stop is assumed first).
    intrabar_data: str | None = Field(None, min_length=1)
    #: Paper and live: retrain this market's model on a schedule (bot/config_retrain.py); None: never.
    retrain: RetrainConfig | None = None

    @field_validator("timeframe")
    @classmethod
    def _known_timeframe(cls, v: str) -> str:
        if v not in TIMEFRAME_MS:
            raise ValueError(f"unknown timeframe {v!r}; expected one of {', '.join(TIMEFRAME_MS)}")
        return v

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str) -> str:
        if not v or not v.isalnum():
            raise ValueError(f"symbol must be alphanumeric like BTCUSDT, got {v!r}")
        return v.upper()


class BrokerConfig(_Frozen):
    initial_cash: float = Field(10_000.0, gt=0)
    fee_rate: float = Field(0.001, ge=0, lt=0.1)
    slippage_bps: float = Field(0.0, ge=0, lt=1000)


class RiskConfig(_Frozen):
    #: Cap on |target exposure| as a fraction of equity (1.0 = fully invested, no leverage).
    max_exposure: float = Field(1.0, gt=0, le=10)
    #: Kill switch: peak-to-trough drawdown of equity that stops trading (0 disables).
    max_drawdown: float = Field(0.0, ge=0, lt=1)
    #: Kill switch: loss since the UTC day's first equity mark (0 disables).
    max_daily_loss: float = Field(0.0, ge=0, lt=1)
    #: Kill switch: largest position notional allowed in quote currency (0 disables).
    max_position_notional: float = Field(0.0, ge=0)
    #: What a tripped kill switch does: close the position, or keep it and stop trading.
    kill_action: Literal["flatten", "freeze"] = "flatten"
    #: Orders smaller than this notional are not sent (the instrument minimum still applies).
    min_order_notional: float = Field(0.0, ge=0)
    #: Minimum number of bars between two orders (0 = none).
    cooldown_bars: int = Field(0, ge=0)
    #: Rebalances smaller than this fraction of equity are not sent (avoids churn); closing to
    #: flat and flipping sides always are.
    rebalance_threshold: float = Field(0.0, ge=0, lt=1)
    #: Portfolio cap on the sum of |position notional| over all markets, as a fraction of
    #: equity (0 disables). Kill switches above watch the portfolio's equity.
    max_gross_exposure: float = Field(0.0, ge=0, le=10)

    def for_market(self, m: MarketConfig) -> RiskConfig:
        """This section with the market's own limits applied."""
        own = {k: v for k, v in m.risk.model_dump().items() if v is not None}
        return self.model_copy(update=own) if own else self


class StorageConfig(_Frozen):
    url: str = "sqlite:///bot_journal.db"
    #: Rows buffered before a journal flush in backtests.
    batch_size: int = Field(5000, ge=1)
    #: When a new run starts, delete the runs last written more than this many days ago (never a
    #: running one; 0: keep everything). ``bot journal prune`` does the same on demand.
    retention_days: int = Field(0, ge=0)


class ExchangeConfig(_Frozen):
    name: Literal["bybit"] = "bybit"
    testnet: bool = True
    rest_url: str | None = None
    ws_url: str | None = None
    recv_window: int = Field(5000, ge=100, le=60_000)
    timeout_s: float = Field(10.0, gt=0)


class LoggingConfig(_Frozen):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class MetricsConfig(_Frozen):
    """Prometheus metrics of paper and live runs (bot/prometheus.py); a backtest has none."""

    #: Port of the HTTP endpoint; None: off, 0: any free port (logged as ``metrics_listening``).
    port: int | None = Field(None, ge=0, le=65_535)
    host: str = Field("127.0.0.1", min_length=1)

    @field_validator("port", mode="before")
    @classmethod
    def _no_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):  # YAML's yes/true would otherwise be port 1
            raise ValueError("expected a port number (0 = any free port) or null (off)")
        return v


#: What can alert (bot/alerts.py); the daily summary has its own switch.
AlertEvent = Literal["fill", "kill_switch", "order_rejected", "feed_stale", "reconcile", "run_end"]
ALERT_EVENTS: tuple[AlertEvent, ...] = ("fill", "kill_switch", "order_rejected", "feed_stale", "reconcile", "run_end")


class AlertsConfig(_Frozen):
    """Which journal rows of a paper or live run become messages, and how often. The
    notification URLs hold tokens: they come only from ``BOT_ALERT_URLS`` (:class:`bot.secrets.AlertSecrets`)."""

    events: tuple[AlertEvent, ...] = ALERT_EVENTS
    #: A message at each UTC day change of the bars: equity, the day's PnL, fills, trades.
    daily_summary: bool = True
    #: At most one message per kind in this many seconds; the rest are counted and told in the
    #: next message of that kind (or the run's end).
    min_interval_s: float = Field(60.0, ge=0)
    #: At most this many messages in any minute, all kinds together (the run's end always goes).
    max_per_minute: int = Field(10, ge=1)
    #: Messages waiting for the sending thread; one more is counted as held back, never waited for.
    queue_size: int = Field(100, ge=1, le=10_000)
    #: How long the run's end waits for the queue to be sent.
    drain_timeout_s: float = Field(10.0, gt=0, le=300)


class Config(_Frozen):
    markets: tuple[MarketConfig, ...] = (MarketConfig(),)
    broker: BrokerConfig = BrokerConfig()
    risk: RiskConfig = RiskConfig()
    storage: StorageConfig = StorageConfig()
    exchange: ExchangeConfig = ExchangeConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    alerts: AlertsConfig = AlertsConfig()

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """``market:`` + ``strategy:`` (one market) become a one-element ``markets:`` list."""
        if not isinstance(data, dict) or not ({"market", "strategy"} & data.keys()):
            return data
        if "markets" in data:
            raise ValueError("use either markets: (a list) or market:/strategy: (one market), not both")
        tree = dict(data)
        market = tree.pop("market", None) or {}
        strategy = tree.pop("strategy", None)
        if not isinstance(market, dict):
            raise ValueError("market: must be a mapping")
        if strategy is not None:
            if "strategy" in market:
                raise ValueError("strategy: is given twice (top level and under market:)")
            market = {**market, "strategy": strategy}
        tree["markets"] = [market]
        return tree

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if not self.markets:
            raise ValueError("markets: lists no market")
        seen: set[str] = set()
        for m in self.markets:
            if m.symbol in seen:
                raise ValueError(f"market {m.symbol} is listed twice")
            seen.add(m.symbol)
            exposure = self.risk.for_market(m).max_exposure
            if m.category == "spot" and m.leverage != 1:
                raise ValueError(f"{m.symbol}: spot markets trade without leverage; market.leverage must be 1, "
                                 f"got {m.leverage:g}")
            if m.category == "spot" and exposure > 1:
                raise ValueError(f"{m.symbol}: max_exposure above 1 needs leverage; spot markets allow at most 1")
            if exposure > m.leverage:
                raise ValueError(f"{m.symbol}: risk.max_exposure {exposure:g} is above the market's leverage "
                                 f"{m.leverage:g}; set market.leverage to at least {exposure:g} (linear)")
        given = sum(m.allocation for m in self.markets if m.allocation is not None)
        if given > 1 + 1e-9:
            raise ValueError(f"market allocations sum to {given:g}; they share one wallet and may sum to at most 1")
        rest = [m for m in self.markets if m.allocation is None]
        if rest:
            if given >= 1 - 1e-9:
                raise ValueError("market allocations leave nothing for the markets without one")
            share = 1.0 if not given and len(rest) == 1 else (1.0 - given) / len(rest)
            filled = tuple(m if m.allocation is not None else m.model_copy(update={"allocation": share})
                           for m in self.markets)
            object.__setattr__(self, "markets", filled)
        return self

    # -- one-market access (training, evaluation, data download: commands about one market) -----
    @property
    def market(self) -> MarketConfig:
        """The run's only market; a clear error for a multi-market config."""
        if len(self.markets) != 1:
            raise ConfigError(f"this command works on one market; the config lists {len(self.markets)} "
                              f"({', '.join(self.symbols)})")
        return self.markets[0]

    @property
    def strategy(self) -> StrategyConfig:
        return self.market.strategy

    @property
    def symbols(self) -> list[str]:
        return [m.symbol for m in self.markets]

    def with_market(self, m: MarketConfig) -> Config:
        """This config trading only ``m`` (one market's view: its context, its strategy)."""
        return self.model_copy(update={"markets": (m,)})


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=1.5"`` -> (["a", "b"], 1.5). The value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad --set {item!r}: expected dotted.key=value")
    return key.split("."), parse_value(raw)


def _apply(tree: dict[str, Any], path: list[str], value: Any, what: str | None = None) -> None:
    """Set ``path`` in the raw tree; ``what`` names the source in errors (default ``--set KEY``)."""
    what = what or f"--set {'.'.join(path)}"
    node: Any = tree
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"bad {what}: {part!r} is not an index of the list "
                                  f"(0..{len(node) - 1})")
            key: Any = int(part)
            child = node[key]
        elif isinstance(node, dict):
            key = part
            child = node.get(part)
        else:
            raise ConfigError(f"bad {what}: {path[i - 1]!r} is not a section")
        if last:
            node[key] = value
            return
        if child is None:
            child = node[key] = {}
        node = child


def _one_market_key(tree: dict[str, Any], path: list[str]) -> list[str]:
    """``market.*`` / ``strategy.*`` (and ``--strategy``) on a config with a ``markets:`` list:
    the list's only market, or one clear error when it lists several."""
    if path[0] not in ("market", "strategy") or not isinstance(tree.get("markets"), list):
        return path
    markets = tree["markets"]
    inner = path[1:] if path[0] == "market" else path
    if len(markets) != 1:
        raise ConfigError(f"{'.'.join(path)} (or --strategy) sets one market; this config lists {len(markets)} "
                          f"markets: set it on each, e.g. markets.0.{'.'.join(inner)}")
    return ["markets", "0", *inner]


def _env_path(tree: dict[str, Any], item: EnvItem) -> list[str]:
    """Where a ``BOT_...`` variable lands in the raw tree (the one-market shorthand as --set reads it)."""
    try:
        path = _one_market_key(tree, item.path)
    except ConfigError:
        n = len(tree["markets"])
        inner = item.path[1:] if item.path[0] == "market" else item.path
        raise ConfigError(f"environment variable {item.name} sets one market; this config lists {n} markets: "
                          f"set it on each, e.g. BOT_MARKETS__0__{DELIMITER.join(inner).upper()}") from None
    if path[0] == "markets" and not isinstance(tree.get("markets"), list):
        raise ConfigError(f"environment variable {item.name}: this config has no markets: list; "
                          f"for its one market use BOT_MARKET__... or BOT_STRATEGY__...")
    return path


def _apply_env(tree: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Apply every ``BOT_<SECTION>__<KEY>`` variable; return {dotted key: variable} for error messages."""
    sources: dict[str, str] = {}
    for item in env_items(environ, Config, {"market": MarketConfig, "strategy": StrategyConfig}):
        path = _env_path(tree, item)
        _apply(tree, path, item.value, f"environment variable {item.name}")
        sources[".".join(path)] = item.name
    return sources


def _overridden(sources: dict[str, str], path: list[str]) -> None:
    """A command-line value wins over the environment's: forget the variable it replaces."""
    dotted = ".".join(path)
    for key in [k for k in sources if k == dotted or k.startswith(dotted + ".")]:
        del sources[key]


def _first_error(exc: ValidationError) -> tuple[str, str]:
    """(where, what) of pydantic's first error, as one line."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return loc, msg


def _read_tree(path: str | Path | None) -> dict[str, Any]:
    """The raw mapping of ``path`` (default ``config.yaml`` if it exists; none: an empty tree)."""
    p = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if not p.exists():
        if path is not None:
            raise ConfigError(f"config file not found: {p}")
        return {}
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"config file {p} is not valid YAML{where}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {p} must be a mapping of sections")
    return loaded


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load ``path`` (default ``config.yaml`` if it exists), then apply the ``BOT_<SECTION>__<KEY>``
    variables of ``environ`` (default: the process environment), ``extra`` (command-line flags
    such as ``--db``) and the ``--set`` items, each winning over the one before."""
    tree = _read_tree(path)
    sources = _apply_env(tree, os.environ if environ is None else environ)
    for dotted, value in (extra or {}).items():
        keys = _one_market_key(tree, dotted.split("."))
        _apply(tree, keys, value)
        _overridden(sources, keys)
    for item in overrides or []:
        keys, value = parse_override(item)
        keys = _one_market_key(tree, keys)
        _apply(tree, keys, value)
        _overridden(sources, keys)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        loc, msg = _first_error(exc)
        if "markets" not in tree:  # the one-market shorthand: name keys as the user wrote them
            loc = (loc + ".").replace("markets.0.strategy.", "strategy.").replace("markets.0.", "market.")[:-1]
        source = next((v for k, v in sources.items() if loc == k or loc.startswith(k + ".")), None)
        where = f" (from {source})" if source else ""
        raise ConfigError(f"invalid configuration: {loc + ': ' if loc else ''}{msg}{where}") from None


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """JSON-ready dict of the configuration for the journal: the password of any URL in it (a
    PostgreSQL ``storage.url``) is masked. A resume takes ``storage`` from its own invocation."""
    return mask(cfg.model_dump(mode="json"))
