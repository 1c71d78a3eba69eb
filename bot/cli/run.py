"""``bot backtest`` and ``bot run --mode backtest|paper|live``."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path

import typer
from sqlalchemy.engine import make_url

from bot import app as core
from bot.candles import CandleData
from bot.cli.common import (
    AllowInSampleOpt,
    AllowOtherMarketOpt,
    ConfigOpt,
    DbOpt,
    SetOpt,
    console,
    dumps,
    err_console,
    load,
    print_summary,
    warn_gaps,
    with_allowances,
)
from bot.config import Config, MarketConfig
from bot.domain import timeframe_ms
from bot.errors import ConfigError
from bot.feeds.replay import data_dir, load_candles
from bot.funding import resolve_funding
from storage import journal_process
from storage.db import safe_url
from strategies import get_spec

STRATEGY_HELP = ("sma, dsc, rollout, gru_sizer, an installed plugin, or path/to/file.py:ClassName "
                 "(docs/strategies.md).")
JSON_HELP = "Print the summary as one JSON object (returns, drawdown, exposure, win rate as fractions: 0.05 = 5 %)."


def market_data(cfg: Config, data_path: str | None, date_from: str | None, date_to: str | None,
                checkpoint: str | None, *, backtest: bool = True) -> list[core.MarketData]:
    """Every market's candles and strategy, validated before the journal hears of a run.

    One market: ``--data``, else its ``data:`` key, else the download cache. Several: each
    market's ``data:`` (a relative path is looked up in the working directory, then in
    ``BOT_DATA_DIR``), else its cache; ``--data`` and ``--checkpoint`` name one market's file
    and are refused.
    """
    many = len(cfg.markets) > 1
    if many and data_path:
        raise ConfigError("--data names one market's file; this config lists "
                          f"{len(cfg.markets)} markets: set data: on each market instead")
    if many and checkpoint:
        raise ConfigError("--checkpoint names one market's model; set strategy.checkpoint on each market instead")
    for m in cfg.markets:  # a bad parameter is told before any file is read or downloaded
        get_spec(m.strategy.name).cls.parse_params(m.strategy.params)
    out = []
    for m in cfg.markets:
        path = data_path or (resolve_data_path(m.data) if m.data else None)
        if not path:
            from bot.data_download import cached_market_file  # noqa: PLC0415 - download on demand

            path = cached_market_file(cfg.with_market(m), date_from)
        data = core.load_data(cfg, path, date_from, date_to, market=m)
        rules = checked_rules(m, path, data)  # before any model is trained for this file
        build = core.backtest_market if backtest else core.replay_market
        md, notes = build(cfg, data, checkpoint, market=m)
        if len(data) - md.history < md.strategy.warmup + 1:
            raise ConfigError(f"{m.symbol}: {len(data) - md.history} candles are too few: strategy "
                              f"{m.strategy.name} needs {md.strategy.warmup + 1} or more")
        for note in notes:
            err_console.print(f"{m.symbol}: {note}" if many else note, highlight=False)
        warn_gaps(m.symbol, data)
        funding = resolve_funding(m.funding, m.category, m.symbol, path)
        out.append(replace(md, rules=rules, funding=funding, intrabar=intrabar_data(m, data)))
    return out


def intrabar_data(m: MarketConfig, data: CandleData) -> CandleData | None:
    """``market.intrabar_data``: the market's 1m candles over the span of ``data``."""
    if not m.intrabar_data:
        return None
    if timeframe_ms(m.timeframe) <= 60_000:
        raise ConfigError(f"{m.symbol}: market.intrabar_data (1m candles) needs a timeframe above 1m, "
                          f"not {m.timeframe}")
    return load_candles(resolve_data_path(m.intrabar_data), symbol=m.symbol, timeframe="1m", bar_ms=60_000,
                        start_ms=int(data.time[0]), end_ms=int(data.time[-1]) + timeframe_ms(m.timeframe))


def checked_rules(m: MarketConfig, path: str, data: CandleData) -> core.InstrumentRules:
    """The market's instrument rules for the candles at ``path`` (config, else the file's saved
    rules, else defaults), refused when the tick is large against the price; told when the
    file's rules are used."""
    rules = core.instrument_rules(m, path)
    core.check_tick(m, rules, data)
    if rules.from_file:
        err_console.print(f"{m.symbol}: {rules.describe()}", highlight=False)
    return rules


def resolve_data_path(path: str) -> str:
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return str(p)
    shared = data_dir() / p
    return str(shared if shared.exists() else p)


#: Candle files this large (about 50k 1h bars gzipped) are backtested with the journal writer
#: process (bot/app/files.py): start it before they are read, so its start-up is hidden.
PRESTART_BYTES = 1_000_000


def _prestart_writer(cfg: Config, data_path: str | None) -> None:
    paths = [Path(data_path)] if data_path else [Path(m.data) for m in cfg.markets if m.data]
    if make_url(cfg.storage.url).database in (None, "", ":memory:"):
        return  # an in-memory journal is written in-process
    if sum(p.stat().st_size for p in paths if p.is_file()) >= PRESTART_BYTES:
        journal_process.prestart()


def _backtest(cfg: Config, data_path: str | None, date_from: str | None, date_to: str | None,
              checkpoint: str | None, as_json: bool, mode: str = "backtest",
              report: Path | None = None) -> None:
    _prestart_writer(cfg, data_path)
    markets = market_data(cfg, data_path, date_from, date_to, checkpoint)
    db = core.open_journal_db(cfg.storage.url)
    summary = core.backtest_markets(cfg, markets, db, mode=mode, show_progress=not as_json)
    if as_json:
        sys.stdout.write(dumps(summary) + "\n")
    else:
        print_summary(summary)
        print_funding(cfg, markets)
        console.print(f"journal: {safe_url(cfg.storage.url)}  run {summary['run_id']}")
        for m in cfg.markets:
            section = get_spec(m.strategy.name).resolve("summary_section")
            if section is not None:  # the strategy's own post-backtest section (rollout: attention)
                section(console, db, summary["run_id"])
    if report is not None:
        from bot.cli.journal_report import make_report  # noqa: PLC0415 - optional part

        res = make_report(db, summary["run_id"], report, png=True, theme="light")
        (err_console if as_json else console).print(f"report: {res.html}")


def print_funding(cfg: Config, markets: list[core.MarketData]) -> None:
    """Where each linear market's funding came from, or that none was charged."""
    for m, md in zip(cfg.markets, markets, strict=True):
        if md.funding is not None:
            console.print(f"{m.symbol}: funding settled from {md.funding.source}")
        elif m.category == "linear" and m.funding == "auto":
            console.print(f"{m.symbol}: no funding file beside the candles: no funding charged "
                          "(market.funding names one)")


def with_checkpoint(cfg: Config, checkpoint: str | None) -> Config:
    """A one-market config whose strategy names ``--checkpoint`` (as an absolute path), so that the
    run's journaled config says which model traded (``journal explain --method`` rebuilds it)."""
    if not checkpoint or len(cfg.markets) != 1:
        return cfg  # several markets: market_data refuses --checkpoint with its own line
    m = cfg.market
    path = str(Path(checkpoint).expanduser().resolve())
    return cfg.with_market(m.model_copy(update={"strategy": m.strategy.model_copy(update={"checkpoint": path})}))


def register(app: typer.Typer) -> None:
    @app.command("backtest")
    def backtest(
        strategy: str | None = typer.Option(None, "--strategy", "-s", help=STRATEGY_HELP),
        data: str | None = typer.Option(None, "--data", "-d", help="Candle file (CSV, CSV.gz, Parquet)."),
        date_from: str | None = typer.Option(None, "--from", help="First bar (UTC date or datetime)."),
        date_to: str | None = typer.Option(None, "--to", help="Stop before this bar (UTC)."),
        checkpoint: str | None = typer.Option(None, "--checkpoint", help="Model checkpoint to trade."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
        report: str | None = typer.Option(None, "--report", help="Write report.html and PNGs to this dir."),
        allow_in_sample: bool = AllowInSampleOpt,
        allow_other_market: bool = AllowOtherMarketOpt,
        config: Path | None = ConfigOpt,
        set_: list[str] | None = SetOpt,
        db: str | None = DbOpt,
    ) -> None:
        """Replay history through the live code path with simulated fills; journal and summarise."""
        extra = {"strategy.name": strategy} if strategy else {}
        cfg = with_allowances(with_checkpoint(load(config, set_, extra, db), checkpoint), allow_in_sample,
                              allow_other_market)
        _backtest(cfg, data, date_from, date_to, checkpoint, as_json, report=Path(report) if report else None)

    @app.command("run")
    def run(
        mode: str = typer.Option(..., "--mode", "-m", help="backtest, paper or live."),
        strategy: str | None = typer.Option(None, "--strategy", "-s", help=STRATEGY_HELP),
        feed: str = typer.Option("bybit", "--feed", help="paper: bybit (live prices) or replay (a file)."),
        data: str | None = typer.Option(None, "--data", "-d", help="Candle file for backtest / replay feed."),
        speed: float = typer.Option(0.0, "--speed", help="Replay pace: x real time (0 = as fast as possible)."),
        date_from: str | None = typer.Option(None, "--from", help="First bar (UTC date or datetime)."),
        date_to: str | None = typer.Option(None, "--to", help="Stop before this bar (UTC)."),
        checkpoint: str | None = typer.Option(None, "--checkpoint", help="Model checkpoint to trade."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
        resume: bool = typer.Option(False, "--resume", help="paper: continue the latest unfinished run."),
        run_id: str | None = typer.Option(None, "--run-id", help="paper: continue this run (implies --resume)."),
        confirm_live: bool = typer.Option(False, "--confirm-live",
                                          help="live: required to trade on Bybit mainnet (real money)."),
        metrics_port: int | None = typer.Option(
            None, "--metrics-port", help="paper, live: serve Prometheus metrics on this port (0 = any free one; "
            "metrics.host sets the address, default 127.0.0.1). A backtest has no observers: no metrics."),
        allow_in_sample: bool = AllowInSampleOpt,
        allow_other_market: bool = AllowOtherMarketOpt,
        config: Path | None = ConfigOpt,
        set_: list[str] | None = SetOpt,
        db: str | None = DbOpt,
    ) -> None:
        """Run the bot in a mode. The same engine and strategy code runs in all of them."""
        extra: dict[str, object] = {"strategy.name": strategy} if strategy else {}
        if metrics_port is not None:
            extra["metrics.port"] = metrics_port
        cfg = with_allowances(with_checkpoint(load(config, set_, extra, db), checkpoint), allow_in_sample,
                              allow_other_market)
        if mode == "backtest":
            _backtest(cfg, data, date_from, date_to, checkpoint, as_json)
        elif mode == "paper":
            if feed == "replay":
                _paper_replay(cfg, data, speed, date_from, date_to, checkpoint, as_json)
            elif feed == "bybit":
                from bot.cli import live_modes  # noqa: PLC0415 - optional part

                live_modes.paper_bybit(cfg, checkpoint, as_json, resume=resume, run_id=run_id,
                                       date_from=date_from, date_to=date_to)
            else:
                raise ConfigError(f"unknown --feed {feed!r}: expected bybit or replay")
        elif mode == "live":
            from bot.cli import live_modes  # noqa: PLC0415

            live_modes.live(cfg, checkpoint, as_json, confirm_live=confirm_live, resume=resume, run_id=run_id,
                            date_from=date_from, date_to=date_to)
        else:
            raise ConfigError(f"unknown --mode {mode!r}: expected backtest, paper or live")


def _paper_replay(cfg: Config, data_path: str | None, speed: float, date_from: str | None,
                  date_to: str | None, checkpoint: str | None, as_json: bool) -> None:
    if not data_path and not all(m.data for m in cfg.markets):
        raise ConfigError("--feed replay needs --data FILE (or data: on every market)")
    if speed < 0:
        raise ConfigError("--speed must be 0 (as fast as possible) or positive")
    retraining = [m.symbol for m in cfg.markets if m.retrain is not None]
    if retraining:
        raise ConfigError(f"{retraining[0]}: market.retrain retrains on the venue's closed bars on the wall clock: "
                          "run paper on Bybit (or `bot exchange-sim`), not --feed replay")
    markets = market_data(cfg, data_path, date_from, date_to, checkpoint, backtest=False)
    observers = core.run_observers(cfg)  # a bad alert URL or a busy metrics port: told before the journal opens
    db = core.open_journal_db(cfg.storage.url)
    summary = asyncio.run(core.paper_replay(cfg, markets, db, speed=speed, observers=observers))
    if as_json:
        sys.stdout.write(dumps(summary) + "\n")
    else:
        print_summary(summary)
