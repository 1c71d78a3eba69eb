"""Shared CLI plumbing: config loading from flags, output formats, the console."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from bot.candles import CandleData
from bot.cli.tables import Col, build_table, print_table
from bot.config import Config, load_config
from bot.domain import timeframe_ms
from bot.errors import ConfigError
from bot.logs import configure
from bot.metrics import ANNUALISED, MIN_ANNUALISE_DAYS
from bot.timeutil import iso_utc
from bot.units import format_metric

console = Console()
if not console.is_terminal:  # piped or captured: do not wrap at 80 columns (unless COLUMNS says so)
    _columns = os.environ.get("COLUMNS", "")
    console = Console(width=int(_columns) if _columns.isdigit() else 200, soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file (default: ./config.yaml if present).")
SetOpt = typer.Option(None, "--set", help="Override a config key: --set dotted.key=value (repeatable).")
DbOpt = typer.Option(None, "--db", help="Journal database URL (default: storage.url).")
AllowInSampleOpt = typer.Option(False, "--allow-in-sample",
                                help="Also score / trade bars the checkpoint was fitted on (strategy.allow_in_sample); "
                                     "every output then says in-sample. Default: start after them.")
AllowOtherMarketOpt = typer.Option(False, "--allow-other-market",
                                   help="Use a checkpoint fitted on another symbol or timeframe than the market's "
                                        "(strategy.allow_other_market). Default: refused.")
WorkersOpt = typer.Option(1, "--workers", "-w", help="Independent jobs at once: a local process pool when > 1 "
                          "(with --ray: the CPUs of the local Ray).")
RayOpt = typer.Option(None, "--ray", help="Run the jobs on Ray: auto (a local Ray started here) or a cluster "
                      "address (needs pip install -e '.[ray]').")
FormatOpt = typer.Option("table", "--format", "-f", help="table (for people), json or csv (every column in full, "
                         "times as ISO-8601 UTC, returns as fractions: 0.05 = 5 %).")


def load(config: Path | None, sets: list[str] | None, extra: dict[str, Any] | None = None,
         db: str | None = None) -> Config:
    extra = dict(extra or {})
    if db:
        extra["storage.url"] = db
    cfg = load_config(config, sets or [], extra)
    configure(cfg.logging.level, cfg.logging.format)
    return cfg


def warn(symbol: str, text: str) -> None:
    """One warning line on stderr about a market's data (gaps, instrument rules, drift)."""
    err_console.print(f"[yellow]warning:[/yellow] {symbol}: {text}", highlight=False)


def warn_gaps(symbol: str, data: CandleData) -> None:
    """``bot backtest``, ``bot run`` and ``bot evaluate`` tell the file's gaps the same way."""
    if data.gaps.found:
        warn(symbol, data.gaps.describe(timeframe_ms(data.timeframe)))


def with_allowances(cfg: Config, in_sample: bool, other_market: bool) -> Config:
    """Every market's strategy with ``--allow-in-sample`` / ``--allow-other-market`` switched on
    (a flag left out keeps the config's value)."""
    upd = {k: True for k, on in (("allow_in_sample", in_sample), ("allow_other_market", other_market)) if on}
    if not upd:
        return cfg
    markets = tuple(m.model_copy(update={"strategy": m.strategy.model_copy(update=upd)}) for m in cfg.markets)
    return cfg.model_copy(update={"markets": markets})


def jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, datetime):
        return iso_utc(v)
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    return v


def dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj), indent=2, default=str)


def emit(rows: list[dict[str, Any]], fmt: str, columns: list[Col] | None = None, title: str = "", *,
         wide: bool = False, run_id: str | None = None) -> None:
    """Rows as a table (:mod:`bot.cli.tables`), JSON or CSV. JSON and CSV carry every column in
    full, times (the ``time`` columns, epoch ms in the journal) as ISO-8601 UTC."""
    if fmt not in ("table", "json", "csv"):
        raise ConfigError(f"unknown --format {fmt!r}: expected table, json or csv")
    cols = columns or [Col(k) for k in (rows[0].keys() if rows else [])]
    if fmt == "table":
        print_table(console, build_table(rows, cols, title=title, wide=wide, run_id=run_id), wide=wide)
        if not rows:
            console.print("[dim](no rows)[/dim]")
        return
    out = [{c.key: _machine(c, r.get(c.key)) for c in cols} for r in rows]
    if fmt == "json":
        sys.stdout.write(dumps(out) + "\n")
        return
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([c.key for c in cols])
    for r in out:
        w.writerow(["" if v is None else _csv_cell(v) for v in r.values()])
    sys.stdout.write(buf.getvalue())


def with_iso(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``row`` with its epoch-ms ``keys`` as ISO-8601 UTC (what JSON output shows)."""
    return {k: iso_utc(v) if k in keys and isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in row.items()}


def _machine(col: Col, v: Any) -> Any:
    if col.kind == "time" and isinstance(v, int | datetime) and not isinstance(v, bool):
        return iso_utc(v)
    return jsonable(v)


def _csv_cell(v: Any) -> str:
    if isinstance(v, dict | list):
        return json.dumps(v, default=str)
    return str(v)


SUMMARY_ROWS = [
    ("run_id", "run"), ("strategy", "strategy"), ("symbol", "symbol"), ("candles", "candles"),
    ("start", "from"), ("end", "to"), ("n_trades", "trades"), ("final_equity", "final equity"),
    ("total_return", "total return"), ("buy_and_hold_return", "buy & hold"), ("cagr", "CAGR"),
    ("volatility", "volatility (ann.)"), ("sharpe", "Sharpe"), ("sortino", "Sortino"),
    ("max_drawdown", "max drawdown"), ("win_rate", "win rate"), ("profit_factor", "profit factor"),
    ("exposure_time", "exposure"), ("fees", "fees"), ("funding_paid", "funding paid"), ("liquidations", "liquidations"),
    ("elapsed_s", "elapsed s"),
    ("candles_per_s", "candles/s"),
]


def print_summary(summary: dict[str, Any]) -> None:
    """The end-of-run table every mode prints (backtest, paper, live), in the units of
    ``bot journal summary`` (:func:`bot.units.format_metric`)."""
    table = Table(title=f"{summary.get('mode', 'backtest')} summary", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in SUMMARY_ROWS:
        table.add_row(label, "-" if key not in summary else format_metric(key, summary[key]))
    console.print(table)
    print_na_note(summary)
    print_in_sample(summary)
    markets = summary.get("markets")
    if markets:
        print_markets(markets)


def print_in_sample(summary: dict[str, Any]) -> None:
    """Say loudly when a run traded bars its checkpoint was fitted on (``--allow-in-sample``)."""
    info = summary.get("in_sample")
    if not info:
        return
    if "markets" in info:
        what = (f"{info['bars']:,} traded bars of {', '.join(info['markets'])} lie in the ranges their "
                "checkpoints were fitted on")
    else:
        what = (f"{info['bars']:,} traded bars ({info['from']} .. {info['to']}) lie in the range the checkpoint "
                f"was fitted on ({info['fitted']})")
    console.print(f"[bold yellow]in-sample:[/bold yellow] {what}; these figures are not out of sample")


def print_na_note(summary: dict[str, Any]) -> None:
    """Say why a figure is n/a (bot.metrics: too short to annualise, no closed trade)."""
    why = []
    if summary.get("bars") and any(k in summary and summary[k] is None for k in ANNUALISED):
        why.append(f"annualised figures need {MIN_ANNUALISE_DAYS} days of bars")
    if summary.get("n_trades") == 0:
        why.append("win rate and profit factor need a closed trade")
    if why:
        console.print(f"[dim]n/a: {'; '.join(why)}[/dim]")


MARKET_COLUMNS = [Col("symbol", "market"), Col("strategy", width=20), Col("timeframe", "tf"),
                  Col("candles", "bars", "metric"), Col("allocation", "alloc", "metric"),
                  Col("n_trades", "trades", "metric"), Col("net_pnl", "net PnL", "metric"),
                  Col("fees", "fees", "metric"), Col("open_position", "position", "num"),
                  Col("exposure_time", "exposure", "metric"), Col("buy_and_hold_return", "buy & hold", "metric"),
                  Col("win_rate", "win rate", "metric", wide=True), Col("decisions", kind="metric", wide=True),
                  Col("orders", kind="metric", wide=True)]


def print_markets(markets: list[dict[str, Any]], wide: bool = False) -> None:
    """One line per market of a multi-market run (the portfolio's figures are above it)."""
    print_table(console, build_table(markets, MARKET_COLUMNS, title="markets", wide=wide), wide=wide)
