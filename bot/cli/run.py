"""``bot backtest`` and ``bot run --mode backtest|paper|live``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import typer

from bot import app as core
from bot.cli.common import ConfigOpt, DbOpt, SetOpt, console, dumps, err_console, load, print_summary
from bot.config import Config
from bot.domain import timeframe_ms
from bot.errors import ConfigError
from storage.db import safe_url
from strategies import get_spec

STRATEGY_HELP = ("sma, dsc, rollout, gru_sizer, an installed plugin, or path/to/file.py:ClassName "
                 "(docs/strategies.md).")


def _backtest(cfg: Config, data_path: str | None, date_from: str | None, date_to: str | None,
              checkpoint: str | None, as_json: bool, mode: str = "backtest",
              report: Path | None = None) -> None:
    if not data_path:
        from bot.data_download import cached_market_file  # noqa: PLC0415 - download on demand

        data_path = cached_market_file(cfg, date_from)
    # Validate every input before the journal hears of a run: bad input leaves nothing behind.
    data = core.load_data(cfg, data_path, date_from, date_to)
    db = core.open_journal_db(cfg.storage.url)
    strategy, history, note = core.build_backtest_strategy(cfg, data, checkpoint)
    if len(data) - history < strategy.warmup + 1:
        raise ConfigError(f"{len(data) - history} candles are too few: strategy {cfg.strategy.name} "
                          f"needs {strategy.warmup + 1} or more")
    if note:
        err_console.print(note)
    if data.gaps.count:
        err_console.print(f"[yellow]warning:[/yellow] {data.gaps.describe(timeframe_ms(cfg.market.timeframe))}")
    summary = core.backtest(cfg, data, strategy, db, mode=mode, show_progress=not as_json, history=history)
    if as_json:
        sys.stdout.write(dumps(summary) + "\n")
    else:
        print_summary(summary)
        console.print(f"journal: {safe_url(cfg.storage.url)}  run {summary['run_id']}")
        section = get_spec(cfg.strategy.name).resolve("summary_section")
        if section is not None:  # the strategy's own post-backtest section (rollout: attention)
            section(console, db, summary["run_id"])
    if report is not None:
        from bot.cli.journal_report import make_report  # noqa: PLC0415 - optional part

        res = make_report(db, summary["run_id"], report, png=True, theme="light")
        (err_console if as_json else console).print(f"report: {res.html}")


def register(app: typer.Typer) -> None:
    @app.command("backtest")
    def backtest(
        strategy: str | None = typer.Option(None, "--strategy", "-s", help=STRATEGY_HELP),
        data: str | None = typer.Option(None, "--data", "-d", help="Candle file (CSV, CSV.gz, Parquet)."),
        date_from: str | None = typer.Option(None, "--from", help="First bar (UTC date or datetime)."),
        date_to: str | None = typer.Option(None, "--to", help="Stop before this bar (UTC)."),
        checkpoint: str | None = typer.Option(None, "--checkpoint", help="Model checkpoint to trade."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
        report: str | None = typer.Option(None, "--report", help="Write report.html and PNGs to this dir."),
        config: Path | None = ConfigOpt,
        set_: list[str] | None = SetOpt,
        db: str | None = DbOpt,
    ) -> None:
        """Replay history through the live code path with simulated fills; journal and summarise."""
        extra = {"strategy.name": strategy} if strategy else {}
        cfg = load(config, set_, extra, db)
        _backtest(cfg, data, date_from, date_to, checkpoint, as_json, report=Path(report) if report else None)

    @app.command("run")
    def run(
        mode: str = typer.Option(..., "--mode", "-m", help="backtest, paper or live."),
        strategy: str | None = typer.Option(None, "--strategy", "-s", help=STRATEGY_HELP),
        feed: str = typer.Option("bybit", "--feed", help="paper: bybit (live prices) or replay (a file)."),
        data: str | None = typer.Option(None, "--data", "-d", help="Candle file for backtest / replay feed."),
        speed: float = typer.Option(0.0, "--speed", help="Replay pace: x real time (0 = as fast as possible)."),
        date_from: str | None = typer.Option(None, "--from"),
        date_to: str | None = typer.Option(None, "--to"),
        checkpoint: str | None = typer.Option(None, "--checkpoint"),
        as_json: bool = typer.Option(False, "--json"),
        resume: bool = typer.Option(False, "--resume", help="paper: continue the latest unfinished run."),
        run_id: str | None = typer.Option(None, "--run-id", help="paper: continue this run (implies --resume)."),
        confirm_live: bool = typer.Option(False, "--confirm-live",
                                          help="live: required to trade on Bybit mainnet (real money)."),
        config: Path | None = ConfigOpt,
        set_: list[str] | None = SetOpt,
        db: str | None = DbOpt,
    ) -> None:
        """Run the bot in a mode. The same engine and strategy code runs in all of them."""
        extra = {"strategy.name": strategy} if strategy else {}
        cfg = load(config, set_, extra, db)
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
    if not data_path:
        raise ConfigError("--feed replay needs --data FILE")
    if speed < 0:
        raise ConfigError("--speed must be 0 (as fast as possible) or positive")
    data = core.load_data(cfg, data_path, date_from, date_to)
    strategy = core.build_strategy(cfg, checkpoint)
    db = core.open_journal_db(cfg.storage.url)
    summary = asyncio.run(core.paper_replay(cfg, strategy=strategy, data=data, db=db, speed=speed))
    if as_json:
        sys.stdout.write(dumps(summary) + "\n")
    else:
        print_summary(summary)
