"""``bot optimize``: an Optuna study whose objective is the walk-forward out-of-sample score.

The last ``holdout`` fraction of the bars is cut off before the search starts and never shown to
it. Each trial is a walk-forward (bot/walkforward.py, no baselines) of the sampled parameters over
the remaining bars; its objective is the stitched out-of-sample Sharpe (or total return), mean
over seeds. After every fold the running score is reported to the trial, and for a model
strategy (or with ``--prune``) the median pruner stops a trial's trainings early when it is
already behind the completed trials at that fold. Sampled parameters that
the strategy refuses as a whole (fast >= slow) are told to the study as pruned, with the reason.

The study lives in the journal's own database through Optuna's RDB storage, so a second run with
the same ``--study`` adds trials to it. Trials are asked in batches of ``jobs.workers`` and run as
independent jobs (bot/jobs.py); with a seeded TPE sampler a rerun with the same workers asks the
same trials. Finally the best and the default parameters are walked forward (intervals from
bot/wf_stats.py) and traded once on the hold-out block, after training on every searched bar.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine as DBEngine

from bot.candles import CandleData
from bot.config import Config
from bot.domain import timeframe_ms
from bot.errors import ConfigError
from bot.funding import FundingRates
from bot.jobs import Jobs
from bot.search_space import Param, invalid, nested
from bot.timeutil import ms_to_iso
from bot.walkforward import Block, make_folds, run_walkforward
from bot.wf_stats import Interval, Stitched, sharpe
from storage.db import database_for
from strategies import get_spec

METRICS = ("sharpe", "return")


@dataclass(frozen=True, slots=True)
class WalkPlan:
    """How every trial walks forward over the searched bars."""

    folds: int = 4
    seeds: int = 1
    window: str = "expanding"
    train_fraction: float = 0.5
    block_bars: int | None = None
    metric: str = "sharpe"
    #: Stop a trial whose running score falls below the median of the completed trials' at the
    #: same fold. None: for model strategies only (where a fold costs a training).
    prune: bool | None = None


@dataclass(slots=True)
class Outcome:
    """One parameter set walked forward: its score, curves (one per seed) and running fold scores."""

    params: dict[str, Any]
    value: float | None
    stitched: list[Stitched]
    steps: list[float] = field(default_factory=list)
    pruned: bool = False
    note: str = ""
    #: The journal runs of its blocks (every fold x seed), in plan order.
    runs: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Optimized:
    study: str
    trials: int
    added: int
    best_number: int
    best: Outcome
    default: Outcome
    best_holdout: Outcome
    default_holdout: Outcome
    holdout_bars: int
    holdout_range: tuple[str, str]
    states: dict[str, int]
    retried: list[str]


def split_holdout(data: CandleData, holdout: float) -> tuple[CandleData, int]:
    """(the searched bars, the index of the first hold-out bar): the last ``holdout`` of the file."""
    if not 0 < holdout < 1:
        raise ConfigError(f"--holdout must be between 0 and 1, got {holdout}")
    first = int(len(data) * (1.0 - holdout))
    make_folds(len(data), 1, 1.0 - holdout, "expanding")  # the hold-out block is long enough to trade
    return data.slice(0, first), first


def score(stitched: list[Stitched], metric: str) -> float | None:
    vals = [(s.sharpe if metric == "sharpe" else s.total_return).value for s in stitched]
    return None if not vals or any(v is None for v in vals) else float(np.mean(vals))


def _running(blocks: list[Block], metric: str, bar_ms: int, initial: float) -> float | None:
    """The score of the blocks so far (mean over seeds), reported to the pruner after each fold."""
    by_seed: dict[Any, list[np.ndarray]] = {}
    for b in blocks:
        by_seed.setdefault(b.seed, []).append(b.returns)
    vals = []
    for parts in by_seed.values():
        r = np.concatenate(parts)
        vals.append(sharpe(r, bar_ms) if metric == "sharpe" else float(np.prod(1.0 + r) - 1.0))
    return None if any(v is None for v in vals) else float(np.mean(vals))


def _with_params(cfg: Config, params: dict[str, Any]) -> Config:
    m = cfg.market
    return cfg.with_market(m.model_copy(update={"strategy": m.strategy.model_copy(update={"params": params})}))


def evaluate_job(cfg: Config, data: CandleData, db: DBEngine | str, params: dict[str, Any], plan: WalkPlan,
                 out_dir: Path, funding: FundingRates | None, trial: tuple[str, str, int] | None = None) -> Outcome:
    """Walk ``params`` forward over ``data``. With ``trial`` (storage URL, study, trial number) each
    fold's running score is reported to that Optuna trial and a trial the pruner stops comes back
    ``pruned`` (never raised: a pruned trial is an answer, not a failure to retry)."""
    import optuna  # noqa: PLC0415 - the optimiser's own dependency, only in its jobs

    engine = database_for(db) if isinstance(db, str) else db
    live = None
    if trial is not None:
        url, name, number = trial
        store = storage(url)
        trial_id = store.get_trial_id_from_study_id_trial_number(store.get_study_id_from_name(name), number)
        live = optuna.trial.Trial(optuna.load_study(study_name=name, storage=store, pruner=pruner()), trial_id)
    trainable = get_spec(cfg.market.strategy.name).trainer is not None
    per_fold = plan.seeds if trainable else 1
    prune = trainable if plan.prune is None else plan.prune
    seen: list[Block] = []
    steps: list[float] = []
    bar_ms = timeframe_ms(cfg.market.timeframe)

    def on_block(b: Block) -> None:
        seen.append(b)
        if len(seen) % per_fold:
            return
        v = _running(seen, plan.metric, bar_ms, cfg.broker.initial_cash)
        if v is None or live is None:
            return
        steps.append(v)
        live.report(v, b.fold)
        if prune and live.should_prune():
            raise optuna.TrialPruned(f"pruned after fold {b.fold}")

    try:
        wf = run_walkforward(_with_params(cfg, params), data, engine, folds=plan.folds, seeds=plan.seeds,
                             window=plan.window, train_fraction=plan.train_fraction, out_dir=out_dir,
                             block_bars=plan.block_bars, on_block=on_block, funding=funding, baselines=False)
    except optuna.TrialPruned as exc:
        return Outcome(params, None, [], steps, pruned=True, note=str(exc), runs=[b.run_id for b in seen])
    value = score(wf.stitched, plan.metric)
    note = "" if value is not None else f"no {plan.metric}: too few bars to annualise"
    return Outcome(params, value, wf.stitched, steps, note=note, runs=[b.run_id for b in wf.blocks])


def storage(url: str) -> Any:
    """Optuna's RDB storage on the journal's database: its tables (studies, trials, ...) beside
    the journal's, its ``alembic_version`` its own (the journal's head is in ``journal_version``),
    so ``optuna.load_study(storage=URL)`` and optuna-dashboard open the same study."""
    import optuna  # noqa: PLC0415

    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def pruner() -> Any:
    import optuna  # noqa: PLC0415

    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)


def suggest(trial: Any, space: list[Param]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in space:
        if p.kind == "categorical":
            out[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            out[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            out[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), step=p.step, log=p.log)
    return out


def stitched_from(rows: list[dict[str, Any]]) -> list[Stitched]:
    """Stitched curves stored as a trial's user attribute, back as objects."""
    out = []
    for r in rows:
        out.append(Stitched(r["strategy"], r["seed"], r["bars"], Interval(**r["total_return"]),
                            Interval(**r["sharpe"]), r["max_drawdown"], r["block_bars"]))
    return out


def as_attr(stitched: list[Stitched]) -> list[dict[str, Any]]:
    return [asdict(s) for s in stitched]


def study_identity(cfg: Config, data: CandleData, holdout: float, plan: WalkPlan, space: list[Param]) -> dict[str, Any]:
    """What a study was made for; a resumed study must be asked the same question."""
    m = cfg.market
    return {"strategy": m.strategy.name, "symbol": m.symbol, "timeframe": m.timeframe,
            "first_bar": int(data.time[0]), "last_bar": int(data.time[-1]), "holdout": holdout,
            "plan": {k: v for k, v in asdict(plan).items() if k != "prune"}, "space": [asdict(p) for p in space],
            "base_params": dict(m.strategy.params)}


def open_study(url: str, name: str, identity: dict[str, Any], seed: int) -> Any:
    import optuna  # noqa: PLC0415

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = storage(url)
    try:
        existing = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        existing = None
    if existing is not None:
        made = {k: existing.user_attrs.get(k) for k in identity}
        differ = [k for k in identity if _jsonable(made[k]) != _jsonable(identity[k])]
        if differ:
            raise ConfigError(f"study {name!r} was made for another {differ[0]} ({made[differ[0]]!r}, now "
                              f"{identity[differ[0]]!r}): give another --study")
    # A resumed study seeds its sampler past the trials it has, so it never re-draws the same points.
    n = len(existing.trials) if existing is not None else 0
    study = optuna.create_study(storage=store, study_name=name, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed + n), pruner=pruner())
    if existing is None:
        for k, v in identity.items():
            study.set_user_attr(k, v)
    return study


def _jsonable(v: Any) -> Any:
    import json  # noqa: PLC0415

    return json.loads(json.dumps(v, default=str))


def run_study(cfg: Config, data: CandleData, db: DBEngine, space: list[Param], *, trials: int, study: str,
              holdout: float, plan: WalkPlan, out_dir: Path, jobs: Jobs, seed: int = 0,
              funding: FundingRates | None = None, say: Any = None) -> Optimized:
    """Add ``trials`` trials to the study ``study`` (made if new), then report best vs default."""
    from optuna.trial import TrialState  # noqa: PLC0415

    if trials < 0:
        raise ConfigError(f"--trials must be 0 or more, got {trials}")
    if plan.metric not in METRICS:
        raise ConfigError(f"unknown --metric {plan.metric!r}: expected {' or '.join(METRICS)}")
    searched, first = split_holdout(data, holdout)
    make_folds(len(searched), plan.folds, plan.train_fraction, plan.window)  # a bad plan fails before any trial
    url = db.url.render_as_string(hide_password=False)
    s = open_study(url, study, study_identity(cfg, data, holdout, plan, space), seed)
    model = get_spec(cfg.market.strategy.name).params
    base = dict(cfg.market.strategy.params)
    asked = 0
    while asked < trials:
        batch: list[tuple[Any, dict[str, Any]]] = []
        while len(batch) < jobs.workers and asked < trials:
            t = s.ask()
            asked += 1
            params = nested(base, suggest(t, space))
            why = invalid(model, params)
            if why is not None:
                t.set_user_attr("invalid", why)
                s.tell(t, state=TrialState.PRUNED)
                if say is not None:
                    say(t.number, Outcome(params, None, [], pruned=True, note=f"not run: {why}"))
                continue
            batch.append((t, params))
        work = [(cfg, searched, url, p, plan, out_dir / f"trial{t.number}", funding, (url, study, t.number))
                for t, p in batch]
        for (t, _), o in zip(batch, jobs.map(evaluate_job, work, [f"trial {t.number}" for t, _ in batch]),
                             strict=True):
            t.set_user_attr("stitched", as_attr(o.stitched))
            t.set_user_attr("runs", o.runs)  # bot journal runs / summary --run ID
            if o.note:
                t.set_user_attr("note", o.note)
            if o.pruned:
                s.tell(t, state=TrialState.PRUNED)
            elif o.value is None:
                s.tell(t, state=TrialState.FAIL)
            else:
                s.tell(t, o.value)
            if say is not None:
                say(t.number, o)
    done = s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise ConfigError(f"study {study!r}: no trial completed yet (of {len(s.trials)}): widen --space or "
                          "add --trials")
    best = s.best_trial
    best_params = nested(base, best.params)
    hold_plan = WalkPlan(1, plan.seeds, "expanding", 1.0 - holdout, plan.block_bars, plan.metric, prune=False)
    final = [(cfg, searched, url, base, plan, out_dir / "default", funding),
             (cfg, data, url, best_params, hold_plan, out_dir / "holdout_best", funding),
             (cfg, data, url, base, hold_plan, out_dir / "holdout_default", funding)]
    default, best_hold, default_hold = jobs.map(evaluate_job, final, ["default", "hold-out best", "hold-out default"])
    states = {st.name.lower(): sum(1 for t in s.trials if t.state == st and "invalid" not in t.user_attrs)
              for st in TrialState}
    states["invalid"] = sum(1 for t in s.trials if "invalid" in t.user_attrs)
    span = (ms_to_iso(int(data.time[first])), ms_to_iso(int(data.time[-1])))
    return Optimized(study, len(s.trials), asked, best.number,
                     Outcome(best_params, best.value, stitched_from(best.user_attrs.get("stitched", []))),
                     default, best_hold, default_hold, len(data) - first,
                     span, {k: v for k, v in states.items() if v},
                     list(jobs.retried))
