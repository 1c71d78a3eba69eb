"""``bot sweep``: a parameter grid x markets, one journaled backtest each, on a pool or Ray."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from bot import app as core
from bot.cli.common import (
    ConfigOpt,
    DbOpt,
    RayOpt,
    SetOpt,
    WorkersOpt,
    console,
    dumps,
    err_console,
    load,
    warn_gaps,
)
from bot.cli.run import checked_rules
from bot.errors import ConfigError
from bot.funding import resolve_funding
from bot.jobs import Jobs
from bot.search_space import load_grid
from bot.sweep import Market, Point, run_sweep
from bot.units import format_metric
from storage.db import safe_url
from strategies import get_spec


def _market(cfg: Any, item: str, date_from: str | None, date_to: str | None) -> Market:
    """``FILE`` (the config's symbol) or ``SYMBOL=FILE``."""
    symbol, sep, path = item.partition("=")
    if not sep:
        symbol, path = cfg.market.symbol, item
    if not symbol or not path:
        raise ConfigError(f"--data {item!r}: expected FILE or SYMBOL=FILE")
    m = cfg.market.model_copy(update={"symbol": symbol.upper()})
    one = cfg.with_market(m)
    data = core.load_data(one, path, date_from, date_to)
    warn_gaps(m.symbol, data)
    one = core.with_rules(one, checked_rules(m, path, data))
    return Market(one, data, resolve_funding(m.funding, m.category, m.symbol, path))


def points_table(points: list[Point], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for c in ("market", "params", "return", "sharpe", "max dd", "trades", "run"):
        t.add_column(c, justify="right" if c in {"return", "sharpe", "max dd", "trades"} else "left")
    for p in points:
        shown = " ".join(f"{k}={v}" for k, v in p.params.items())
        if p.invalid:
            t.add_row(p.symbol, shown, "-", "-", "-", "-", f"skipped: {p.invalid}")
            continue
        f = p.figures
        t.add_row(p.symbol, shown, format_metric("total_return", f.get("total_return")),
                  format_metric("sharpe", f.get("sharpe")), format_metric("max_drawdown", f.get("max_drawdown")),
                  str(f.get("n_trades", 0)), p.run_id or "")
    return t


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep(
        grid: Path = typer.Option(..., "--grid", help="YAML grid: parameter -> list of values (README, Sweep)."),
        strategy: str | None = typer.Option(None, "--strategy", "-s", help="Strategy to sweep (config's if unset)."),
        data: list[str] = typer.Option(..., "--data", "-d", help="Candle file, or SYMBOL=FILE (repeatable: one "
                                       "market each)."),
        date_from: str | None = typer.Option(None, "--from", help="First bar (UTC date or datetime)."),
        date_to: str | None = typer.Option(None, "--to", help="Stop before this bar (UTC)."),
        as_json: bool = typer.Option(False, "--json", help="Print every point as one JSON object."),
        workers: int = WorkersOpt,
        ray: str | None = RayOpt,
        config: Path | None = ConfigOpt,
        set_: list[str] | None = SetOpt,
        db: str | None = DbOpt,
    ) -> None:
        """Backtest every point of a parameter grid on every market, as independent jobs."""
        cfg = load(config, set_, {"strategy.name": strategy} if strategy else {}, db)
        points = load_grid(grid, get_spec(cfg.market.strategy.name).params)
        markets = [_market(cfg, item, date_from, date_to) for item in data]
        core.open_journal_db(cfg.storage.url)  # migrated once here, before the workers write to it
        with Jobs(workers, ray) as jobs:
            out = run_sweep(markets, points, cfg.storage.url, jobs)
        for line in jobs.retried:
            err_console.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
        if as_json:
            rows = [{"symbol": p.symbol, "params": p.params, "run_id": p.run_id, "invalid": p.invalid, **p.figures}
                    for p in out]
            sys.stdout.write(dumps({"engine": jobs.engine, "points": rows, "retried": jobs.retried}) + "\n")
            return
        ran = sum(1 for p in out if p.run_id)
        console.print(points_table(out, f"sweep {cfg.market.strategy.name}: {len(points)} grid points x "
                                        f"{len(markets)} market(s), {ran} backtests on {jobs.engine} (in sample: "
                                        "the whole file)"))
        console.print(f"journal: {safe_url(cfg.storage.url)}", highlight=False)
