"""``bot walkforward``: train on the past, trade the next block, for every fold and seed, beside
the baselines (bot/walkforward.py), printed as tables or one JSON object."""

from __future__ import annotations

import sys
from dataclasses import asdict
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
from bot.funding import resolve_funding
from bot.jobs import Jobs
from bot.units import format_metric
from bot.walkforward import Block, WalkForward, run_walkforward
from bot.wf_stats import Interval, Stitched
from storage.db import safe_url


def _pct(i: Interval, key: str = "total_return") -> str:
    if i.value is None:
        return format_metric(key, None)
    v = format_metric(key, i.value)
    return v if i.low is None else f"{v} [{format_metric(key, i.low)}, {format_metric(key, i.high)}]"


def _minute(iso: str) -> str:
    return iso[:16].replace("T", " ")


def _seed(seed: int | None) -> str:
    return "-" if seed is None else str(seed)


def blocks_table(wf: WalkForward) -> Table:
    t = Table(title=f"walk-forward {wf.strategy} {wf.symbol} {wf.timeframe}: every test block ({wf.window} "
                    "training window)", title_justify="left")
    for c in ("fold", "test block", "strategy", "seed", "return", "sharpe", "max dd", "trades", "run"):
        t.add_column(c, justify="right" if c in {"return", "sharpe", "max dd", "trades"} else "left")
    for b in wf.blocks:
        s = b.summary
        t.add_row(str(b.fold), f"{_minute(b.start)} .. {_minute(b.end)}", b.strategy, _seed(b.seed),
                  format_metric("total_return", s.get("total_return")), format_metric("sharpe", s.get("sharpe")),
                  format_metric("max_drawdown", s.get("max_drawdown")), str(s.get("n_trades", 0)), b.run_id)
    return t


def stitched_table(wf: WalkForward) -> Table:
    t = Table(title="out of sample, blocks stitched (95 % block-bootstrap intervals, after fees)",
              title_justify="left")
    for c in ("strategy", "seed", "bars", "return [95 %]", "sharpe [95 %]", "max dd"):
        t.add_column(c, justify="left" if c in {"strategy", "seed"} else "right")
    for s in wf.stitched:
        t.add_row(s.strategy, _seed(s.seed), f"{s.bars:,}", _pct(s.total_return), _pct(s.sharpe, "sharpe"),
                  format_metric("max_drawdown", s.max_drawdown))
    return t


def verdict(wf: WalkForward) -> str:
    """One plain sentence: the strategy's stitched return (mean over seeds) against each baseline's."""
    own = [s for s in wf.stitched if s.strategy == wf.strategy and s.total_return.value is not None]
    others = [s for s in wf.stitched if s.strategy != wf.strategy and s.total_return.value is not None]
    if not own:
        return f"{wf.strategy}: no out-of-sample bars"
    mean = sum(s.total_return.value or 0.0 for s in own) / len(own)
    seeds = f" (mean of {len(own)} seeds)" if len(own) > 1 else ""
    vs = ", ".join(f"{s.strategy} {format_metric('total_return', s.total_return.value)}" for s in others)
    beaten = [s.strategy for s in others if mean > (s.total_return.value or 0.0)]
    missed = [s.strategy for s in others if s.strategy not in beaten]
    tail = ("beats every baseline on return" if not missed else
            f"does not beat {', '.join(missed)}" + (f"; beats {', '.join(beaten)} on return" if beaten else ""))
    idle = "" if any(b.summary.get("n_trades") or b.summary.get("orders") for b in wf.blocks
                     if b.strategy == wf.strategy) else " It never traded."
    return (f"{wf.strategy}: out of sample {format_metric('total_return', mean)}{seeds} against {vs}: "
            f"{tail}.{idle}{_sharpe_sentence(own, [s for s in others if s.strategy in beaten])}")


def _sharpe_sentence(own: list[Stitched], beaten: list[Stitched]) -> str:
    """Whether a win on return shows in the Sharpe intervals: a baseline whose 95 % Sharpe
    interval overlaps a seed's is not shown to be worse."""
    def overlaps(a: Interval, b: Interval) -> bool:
        if None in (a.low, a.high, b.low, b.high):
            return True
        return bool(a.low <= b.high and b.low <= a.high)  # type: ignore[operator]

    vals = [s.sharpe.value for s in own if s.sharpe.value is not None]
    if not vals:
        return ""
    same = [b.strategy for b in beaten if any(overlaps(s.sharpe, b.sharpe) for s in own)]
    text = f" Sharpe {sum(vals) / len(vals):.2f}"
    if same:
        text += (f", but its 95 % Sharpe interval overlaps {', '.join(same)}'s: no demonstrated edge over "
                 f"{'it' if len(same) == 1 else 'them'}")
    return text + "."


def as_dict(wf: WalkForward) -> dict[str, Any]:
    def block(b: Block) -> dict[str, Any]:
        d = {k: v for k, v in asdict(b).items() if k not in {"returns", "summary"}}
        return {**d, **{k: b.summary.get(k) for k in ("total_return", "sharpe", "max_drawdown", "n_trades",
                                                          "fees", "bars")}}

    def stitched(s: Stitched) -> dict[str, Any]:
        return asdict(s)

    return {"strategy": wf.strategy, "symbol": wf.symbol, "timeframe": wf.timeframe, "window": wf.window,
            "folds": [asdict(f) for f in wf.folds], "blocks": [block(b) for b in wf.blocks],
            "stitched": [stitched(s) for s in wf.stitched], "verdict": verdict(wf)}


def register(app: typer.Typer) -> None:
    @app.command("walkforward")
    def walkforward(
        strategy: str | None = typer.Option(None, "--strategy", "-s", help="Strategy to evaluate (config's if unset)."),
        data: str | None = typer.Option(None, "--data", "-d", help="Candle file (CSV, CSV.gz, Parquet)."),
        folds: int = typer.Option(4, "--folds", help="Test blocks after the first training window."),
        seeds: int = typer.Option(1, "--seeds", help="Trainings per fold, seeds moved on by 0..N-1."),
        window: str = typer.Option("expanding", "--window", help="expanding (all past bars) or rolling."),
        train_fraction: float = typer.Option(0.5, "--train-fraction", help="Bars in the first training window."),
        block_bars: int | None = typer.Option(None, "--block-bars", min=1,
                                              help="Bootstrap block length in bars (default: one week)."),
        date_from: str | None = typer.Option(None, "--from", help="First bar (UTC date or datetime)."),
        date_to: str | None = typer.Option(None, "--to", help="Stop before this bar (UTC)."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Checkpoint folder (default "
                                        "walkforward/<strategy>_<symbol>_<tf>)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
        workers: int = WorkersOpt,
        ray: str | None = RayOpt,
        config: Path | None = ConfigOpt,
        set_: list[str] | None = SetOpt,
        db: str | None = DbOpt,
    ) -> None:
        """Walk-forward: train on the past, trade the next block out of sample, stitch, beside baselines."""
        cfg = load(config, set_, {"strategy.name": strategy} if strategy else {}, db)
        m = cfg.market
        if not data:
            from bot.data_download import cached_market_file  # noqa: PLC0415 - download on demand

            data = cached_market_file(cfg)
        candles = core.load_data(cfg, data, date_from, date_to)
        warn_gaps(m.symbol, candles)
        cfg = core.with_rules(cfg, checked_rules(m, data, candles))  # every block's broker trades them
        folder = out or Path("walkforward") / f"{m.strategy.name}_{m.symbol}_{m.timeframe}"
        db_engine = core.open_journal_db(cfg.storage.url)
        say = err_console if as_json else console

        def progress(b: Block) -> None:
            seed = f" seed {b.seed}" if b.seed is not None else ""
            say.print(f"fold {b.fold}{seed} {b.strategy}: {b.start[:10]} .. {b.end[:10]} "
                      f"{format_metric('total_return', b.summary.get('total_return'))}  run {b.run_id}")

        with Jobs(workers, ray) as jobs:
            wf = run_walkforward(cfg, candles, db_engine, folds=folds, seeds=seeds, window=window,
                                 train_fraction=train_fraction, out_dir=folder, block_bars=block_bars,
                                 on_block=progress, funding=resolve_funding(m.funding, m.category, m.symbol, data),
                                 jobs=jobs)
        for line in jobs.retried:
            err_console.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
        if as_json:
            sys.stdout.write(dumps({**as_dict(wf), "engine": jobs.engine, "retried": jobs.retried}) + "\n")
            return
        console.print(blocks_table(wf))
        console.print(stitched_table(wf))
        console.print(verdict(wf))
        kept = f"; checkpoints: {folder}" if any(b.checkpoint for b in wf.blocks) else ""
        console.print(f"journal: {safe_url(cfg.storage.url)}{kept}")
