"""``bot optimize``: an Optuna study over a strategy's parameters, scored out of sample by
walk-forward, checked on a hold-out block it never saw (bot/optimize.py)."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer
import yaml
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
from bot.cli.walkforward import _pct
from bot.funding import resolve_funding
from bot.jobs import Jobs
from bot.optimize import Optimized, Outcome, WalkPlan, run_study
from bot.search_space import load_space
from bot.units import format_metric
from storage.db import safe_url
from strategies import get_spec


def _mean(o: Outcome, key: str) -> str:
    """The seeds' curve (one seed: its interval too)."""
    if not o.stitched:
        return "-"
    if len(o.stitched) == 1:
        s = o.stitched[0]
        return _pct(s.sharpe, "sharpe") if key == "sharpe" else _pct(s.total_return)
    vals = [(s.sharpe if key == "sharpe" else s.total_return).value for s in o.stitched]
    if any(v is None for v in vals):
        return "-"
    return format_metric("sharpe" if key == "sharpe" else "total_return", sum(vals) / len(vals)) + \
        f" (mean of {len(vals)} seeds)"


def figures_table(r: Optimized) -> Table:
    t = Table(title=f"best (trial {r.best_number}) vs default parameters: walk-forward out of sample on the searched "
                    f"bars, then the hold-out block {r.holdout_range[0][:10]} .. {r.holdout_range[1][:10]} "
                    f"({r.holdout_bars:,} bars, never seen by the search); 95 % block-bootstrap intervals",
              title_justify="left")
    for c in ("params", "walk-forward return", "walk-forward sharpe", "hold-out return", "hold-out sharpe"):
        t.add_column(c, justify="left" if c == "params" else "right")
    for label, wf, hold in (("best", r.best, r.best_holdout), ("default", r.default, r.default_holdout)):
        t.add_row(label, _mean(wf, "return"), _mean(wf, "sharpe"), _mean(hold, "return"), _mean(hold, "sharpe"))
    return t


def verdict(r: Optimized, metric: str) -> str:
    """Overfitting shown: the searched score of the best trial against its score on the hold-out block."""
    b, d = r.best_holdout.value, r.default_holdout.value
    if b is None or d is None or r.best.value is None:
        return f"hold-out {metric}: not available (too few bars to annualise: try --metric return)"
    beat = "beat" if b > d else "do not beat"
    return (f"hold-out block (never searched): best {_fmt(metric, b)} vs default {_fmt(metric, d)}: the best "
            f"parameters {beat} the defaults there. Their searched {metric} {_fmt(metric, r.best.value)} was the "
            f"highest of {r.states.get('complete', 0)} completed trials: "
            f"{_fmt(metric, r.best.value - b)} of it did not hold on new bars.")


def _fmt(metric: str, v: float) -> str:
    return format_metric("sharpe" if metric == "sharpe" else "total_return", v)


def snippet(strategy: str, params: dict[str, Any]) -> str:
    return yaml.safe_dump({"strategy": {"name": strategy, "params": params}}, sort_keys=False)


def as_dict(r: Optimized) -> dict[str, Any]:
    def outcome(o: Outcome) -> dict[str, Any]:
        return {"params": o.params, "value": o.value, "stitched": [asdict(s) for s in o.stitched]}

    return {"study": r.study, "trials": r.trials, "added": r.added, "states": r.states, "best_trial": r.best_number,
            "best": outcome(r.best), "default": outcome(r.default), "holdout_best": outcome(r.best_holdout),
            "holdout_default": outcome(r.default_holdout), "holdout_bars": r.holdout_bars,
            "holdout_range": list(r.holdout_range), "retried": r.retried}


def register(app: typer.Typer) -> None:
    @app.command("optimize")
    def optimize(
        space: Path = typer.Option(..., "--space", help="YAML search space over strategy.params (README, Optimize)."),
        trials: int = typer.Option(20, "--trials", "-n", help="Trials to add to the study."),
        strategy: str | None = typer.Option(None, "--strategy", "-s", help="Strategy to tune (config's if unset)."),
        data: str | None = typer.Option(None, "--data", "-d", help="Candle file (CSV, CSV.gz, Parquet)."),
        study: str | None = typer.Option(None, "--study", help="Study name (default <strategy>_<symbol>_<tf>); "
                                         "an existing one is resumed."),
        holdout: float = typer.Option(0.2, "--holdout", help="Last fraction of the bars kept from the search."),
        metric: str = typer.Option("sharpe", "--metric", help="Objective: sharpe or return (stitched, out of sample)."),
        folds: int = typer.Option(4, "--folds", help="Walk-forward test blocks per trial."),
        seeds: int = typer.Option(1, "--seeds", help="Trainings per fold (model strategies)."),
        window: str = typer.Option("expanding", "--window", help="expanding or rolling."),
        train_fraction: float = typer.Option(0.5, "--train-fraction", help="Searched bars in the first training "
                                             "window."),
        seed: int = typer.Option(0, "--seed", help="Seed of the TPE sampler."),
        prune: bool | None = typer.Option(None, "--prune/--no-prune", help="Median pruning after each fold "
                                          "(default: for model strategies only)."),
        date_from: str | None = typer.Option(None, "--from", help="First bar (UTC date or datetime)."),
        date_to: str | None = typer.Option(None, "--to", help="Stop before this bar (UTC)."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Checkpoint folder (default optimize/<study>)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
        workers: int = WorkersOpt,
        ray: str | None = RayOpt,
        config: Path | None = ConfigOpt,
        set_: list[str] | None = SetOpt,
        db: str | None = DbOpt,
    ) -> None:
        """Search strategy parameters with Optuna on walk-forward out-of-sample scores; check on a hold-out."""
        cfg = load(config, set_, {"strategy.name": strategy} if strategy else {}, db)
        m = cfg.market
        params_space = load_space(space, get_spec(m.strategy.name).params)
        if not data:
            from bot.data_download import cached_market_file  # noqa: PLC0415 - download on demand

            data = cached_market_file(cfg)
        candles = core.load_data(cfg, data, date_from, date_to)
        warn_gaps(m.symbol, candles)
        cfg = core.with_rules(cfg, checked_rules(m, data, candles))
        name = study or f"{m.strategy.name}_{m.symbol}_{m.timeframe}"
        folder = out or Path("optimize") / name
        db_engine = core.open_journal_db(cfg.storage.url)
        say = err_console if as_json else console

        def progress(number: int, o: Outcome) -> None:
            shown = " ".join(f"{k}={v}" for k, v in _flat(o.params))
            what = o.note if o.pruned or o.value is None else f"{metric} {_fmt(metric, o.value)}"
            say.print(f"trial {number}: {shown}  {what}", highlight=False)

        plan = WalkPlan(folds, seeds, window, train_fraction, None, metric, prune)
        with Jobs(workers, ray) as jobs:
            r = run_study(cfg, candles, db_engine, params_space, trials=trials, study=name, holdout=holdout,
                          plan=plan, out_dir=folder, jobs=jobs, seed=seed,
                          funding=resolve_funding(m.funding, m.category, m.symbol, data), say=progress)
        for line in r.retried:
            err_console.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
        if as_json:
            sys.stdout.write(dumps(as_dict(r)) + "\n")
            return
        states = ", ".join(f"{v} {k}" for k, v in r.states.items())
        console.print(f"study {r.study}: {r.trials} trials ({states}), {r.added} added now; journal "
                      f"{safe_url(cfg.storage.url)}", highlight=False)
        console.print(figures_table(r))
        console.print(verdict(r, metric), highlight=False)
        console.print(f"# best parameters (trial {r.best_number}), for config.yaml:", highlight=False)
        console.print(snippet(m.strategy.name, r.best.params), highlight=False, markup=False)


def _flat(params: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in params.items():
        if isinstance(v, dict):
            out.extend(_flat(v, f"{prefix}{k}."))
        else:
            out.append((f"{prefix}{k}", v))
    return out
