"""Shared CLI plumbing: config loading from flags, output formats, the console."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from bot.config import Config, load_config
from bot.errors import ConfigError
from bot.logs import configure
from bot.timeutil import ms_to_iso

console = Console()
if not console.is_terminal:  # piped or captured: do not wrap at 80 columns
    console = Console(width=200, soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file (default: ./config.yaml if present).")
SetOpt = typer.Option(None, "--set", help="Override a config key: --set dotted.key=value (repeatable).")
DbOpt = typer.Option(None, "--db", help="Journal database URL (default: storage.url).")
FormatOpt = typer.Option("table", "--format", "-f", help="table, json or csv.")


def load(config: Path | None, sets: list[str] | None, extra: dict[str, Any] | None = None,
         db: str | None = None) -> Config:
    extra = dict(extra or {})
    if db:
        extra["storage.url"] = db
    cfg = load_config(config, sets or [], extra)
    configure(cfg.logging.level, cfg.logging.format)
    return cfg


def jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    return v


def dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj), indent=2, default=str)


def emit(rows: list[dict[str, Any]], fmt: str, columns: list[str] | None = None, title: str = "") -> None:
    if fmt not in ("table", "json", "csv"):
        raise ConfigError(f"unknown --format {fmt!r}: expected table, json or csv")
    cols = columns or (list(rows[0].keys()) if rows else [])
    if fmt == "json":
        sys.stdout.write(dumps([{c: r.get(c) for c in cols} for r in rows]) + "\n")
        return
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(c) is None else _cell(r.get(c)) for c in cols])
        sys.stdout.write(buf.getvalue())
        return
    table = Table(title=title or None, show_lines=False)
    for c in cols:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*["" if r.get(c) is None else _cell(r.get(c), c) for c in cols])
    console.print(table)
    if not rows:
        console.print("[dim](no rows)[/dim]")


def _cell(v: Any, column: str = "") -> str:
    if column.endswith("time") and isinstance(v, int) and v > 10**11:
        return ms_to_iso(v)  # tables are for people: epoch ms as UTC time
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict | list):
        return json.dumps(jsonable(v))[:200]
    return str(jsonable(v))


SUMMARY_ROWS = [
    ("run_id", "run"), ("strategy", "strategy"), ("symbol", "symbol"), ("candles", "candles"),
    ("start", "from"), ("end", "to"), ("n_trades", "trades"), ("final_equity", "final equity"),
    ("total_return", "total return"), ("buy_and_hold_return", "buy & hold"), ("cagr", "CAGR"),
    ("sharpe", "Sharpe"), ("sortino", "Sortino"), ("max_drawdown", "max drawdown"),
    ("win_rate", "win rate"), ("profit_factor", "profit factor"), ("exposure_time", "exposure"),
    ("fees", "fees"), ("elapsed_s", "elapsed s"), ("candles_per_s", "candles/s"),
]
PCT = {"total_return", "buy_and_hold_return", "cagr", "max_drawdown", "win_rate", "exposure_time"}


def print_summary(summary: dict[str, Any]) -> None:
    """The end-of-run table every mode prints (backtest, paper, live)."""
    table = Table(title=f"{summary.get('mode', 'backtest')} summary", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in SUMMARY_ROWS:
        v = summary.get(key)
        if v is None:
            text = "-"
        elif key in PCT:
            text = f"{v * 100:.2f}%"
        elif isinstance(v, float):
            text = f"{v:,.4f}" if abs(v) < 100 else f"{v:,.2f}"
        else:
            text = str(v)
        table.add_row(label, text)
    console.print(table)
    markets = summary.get("markets")
    if markets:
        print_markets(markets)


MARKET_COLUMNS = [("symbol", "market"), ("strategy", "strategy"), ("timeframe", "tf"), ("candles", "candles"),
                  ("allocation", "allocation"), ("n_trades", "trades"), ("net_pnl", "net PnL"), ("fees", "fees"),
                  ("open_position", "position"), ("exposure_time", "exposure"), ("buy_and_hold_return", "buy & hold"),
                  ("decisions", "decisions"),
                  ("orders", "orders")]


def print_markets(markets: list[dict[str, Any]]) -> None:
    """One line per market of a multi-market run (the portfolio's figures are above it)."""
    table = Table(title="markets")
    for _, label in MARKET_COLUMNS:
        table.add_column(label, justify="left" if label in ("market", "strategy", "tf") else "right")
    for m in markets:
        cells = []
        for key, _ in MARKET_COLUMNS:
            v = m.get(key)
            if v is None:
                cells.append("-")
            elif key in PCT:
                cells.append(f"{v * 100:.2f}%")
            elif isinstance(v, float):
                cells.append(f"{v:,.4f}" if abs(v) < 100 else f"{v:,.2f}")
            else:
                cells.append(str(v))
        table.add_row(*cells)
    console.print(table)
