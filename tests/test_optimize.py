"""``bot optimize`` (bot/optimize.py, bot/search_space.py): the search never sees the hold-out
block, its score is the walk-forward out-of-sample one, the study lives in the journal's database
and resumes, a seeded study asks the same trials again, and a bad space file is one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from sqlalchemy import select

from bot.candles import CandleData
from bot.config import load_config
from bot.errors import ConfigError
from bot.feeds.replay import load_candles
from bot.jobs import Jobs
from bot.optimize import WalkPlan, run_study, score, split_holdout
from bot.search_space import load_grid, load_space
from bot.walkforward import run_walkforward
from storage import queries as q
from storage import schema as s
from storage.db import open_database
from strategies import get_spec
from tests.conftest import CliResult

SPACE = "fast: {low: 3, high: 30}\nslow: {low: 10, high: 120, step: 10}\n"
PLAN = WalkPlan(folds=2, train_fraction=0.4, metric="return")


@pytest.fixture(scope="module")
def btc(data_dir: Path) -> CandleData:
    full = load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
    return full.slice(len(full) - 2500, len(full))


def _space(tmp_path: Path, text: str = SPACE, name: str = "space.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(("text", "message"), [
    ("fats: {low: 1, high: 5}", "unknown parameter 'fats' (known: allow_short, fast, slow)"),
    ("fast: {low: 0, high: 5}", "fast: 0 is out of range"),
    ("fast: {low: 9, high: 5}", "fast: low (9) must be below high (5)"),
    ("fast: {low: 1.5, high: 5}", "fast: low must be an integer, got 1.5"),
    ("fast: {low: 1, high: 5, by: 2}", "fast: unknown key 'by'"),
    ("fast: [1, 2]", "expected {low: .., high: ..} or {choices: [..]}"),
    ("allow_short: {low: 0, high: 1}", "allow_short: not a number field"),
    ("fast: {low: 1, high: 5, step: 1, log: true}", "step must be positive and cannot go with log"),
    ("- fast", "must map parameter names to ranges"),
])
def test_bad_space_files_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
                       .replace("[", r"\[").replace("]", r"\]").replace("{", r"\{").replace("}", r"\}")):
        load_space(_space(tmp_path, text), get_spec("sma").params)


def test_spaces_reach_sections_and_grids_multiply(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path, "train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
                                        "allow_short: {choices: [false, true]}\n"), get_spec("dsc").params)
    assert [(p.name, p.kind, p.log) for p in space] == [("train.lr", "float", True), ("allow_short", "categorical",
                                                                                      False)]
    with pytest.raises(ConfigError, match="'window' is not a section, so 'window.x' is unknown"):
        load_space(_space(tmp_path, "window.x: {low: 1, high: 2}\n"), get_spec("dsc").params)
    grid = load_grid(_space(tmp_path, "fast: [5, 10]\nslow: [30, 60, 90]\n"), get_spec("sma").params)
    assert grid[:2] == [{"fast": 5, "slow": 30}, {"fast": 5, "slow": 60}] and len(grid) == 6


def _trials(study: optuna.Study) -> list[tuple[int, dict[str, int], str]]:
    return [(t.number, t.params, t.state.name) for t in study.trials]


def test_study_scores_out_of_sample_never_sees_the_holdout_and_resumes(btc: CandleData, sqlite_url: str,
                                                                       tmp_path: Path) -> None:
    cfg = load_config(None, [], {"strategy.name": "sma", "storage.url": sqlite_url})
    db = open_database(sqlite_url)
    space = load_space(_space(tmp_path), get_spec("sma").params)
    searched, first = split_holdout(btc, 0.2)
    assert first == 2000 and len(searched) == 2000
    with Jobs() as jobs:
        r = run_study(cfg, btc, db, space, trials=6, study="s", holdout=0.2, plan=PLAN, out_dir=tmp_path / "o",
                      jobs=jobs, seed=7)
    study = optuna.load_study(study_name="s", storage=sqlite_url)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert r.trials == r.added == 6 and len(complete) == r.states["complete"]
    assert r.best.value == max(t.value for t in complete) == study.best_value
    for t in complete:  # reported to the pruner after each fold; its blocks are runs in the journal
        assert sorted(t.intermediate_values) == [0, 1]
        assert [q.resolve_run(db, r)["status"] for r in t.user_attrs["runs"]] == ["completed"] * 2
    for t in study.trials:
        if t.state.name == "PRUNED" and "invalid" in t.user_attrs:
            assert t.params["fast"] >= t.params["slow"]
    # The objective is the walk-forward out-of-sample score of the trial's parameters.
    again = run_walkforward(cfg.with_market(cfg.market.model_copy(update={"strategy": cfg.market.strategy.model_copy(
        update={"params": r.best.params})})), searched, db, folds=2, seeds=1, window="expanding", train_fraction=0.4,
        out_dir=tmp_path / "x", baselines=False)
    assert score(again.stitched, "return") == r.best.value
    # Every run the search made traded bars before the hold-out block; only the two hold-out runs after it.
    with db.connect() as conn:
        runs = conn.execute(select(s.runs.c.first_bar, s.runs.c.last_bar)).all()
    hold = int(btc.time[first])
    assert sum(1 for f, _ in runs if f >= hold) == 2
    assert all(last < hold for f, last in runs if f < hold)
    assert r.best_holdout.stitched[0].bars == r.default_holdout.stitched[0].bars == 500
    # Resume: the same study gets 3 more trials after the first six.
    before = _trials(study)
    with Jobs() as jobs:
        r2 = run_study(cfg, btc, db, space, trials=3, study="s", holdout=0.2, plan=PLAN, out_dir=tmp_path / "o",
                       jobs=jobs, seed=7)
    assert r2.trials == 9 and r2.added == 3
    resumed = optuna.load_study(study_name="s", storage=sqlite_url)
    assert _trials(resumed)[:6] == before and len(resumed.trials) == 9
    with pytest.raises(ConfigError, match="study 's' was made for another holdout"):
        run_study(cfg, btc, db, space, trials=1, study="s", holdout=0.3, plan=PLAN, out_dir=tmp_path / "o",
                  jobs=Jobs(), seed=7)
    # A fresh study with the same seed asks the same trials.
    with Jobs() as jobs:
        run_study(cfg, btc, db, space, trials=6, study="t", holdout=0.2, plan=PLAN, out_dir=tmp_path / "o",
                  jobs=jobs, seed=7)
    assert [x[1:] for x in _trials(optuna.load_study(study_name="t", storage=sqlite_url))] == \
        [x[1:] for x in before]


def test_the_median_pruner_stops_trials_behind_after_a_fold(btc: CandleData, sqlite_url: str,
                                                            tmp_path: Path) -> None:
    cfg = load_config(None, [], {"strategy.name": "sma", "storage.url": sqlite_url})
    space = load_space(_space(tmp_path), get_spec("sma").params)
    plan = WalkPlan(folds=3, train_fraction=0.4, metric="return", prune=True)
    with Jobs() as jobs:
        r = run_study(cfg, btc, open_database(sqlite_url), space, trials=12, study="p", holdout=0.2, plan=plan,
                      out_dir=tmp_path / "o", jobs=jobs, seed=3)
    trials = optuna.load_study(study_name="p", storage=sqlite_url).trials
    pruned = [t for t in trials if t.state.name == "PRUNED" and "invalid" not in t.user_attrs]
    assert pruned and r.states["pruned"] == len(pruned)
    for t in pruned:
        step = max(t.intermediate_values)
        assert step < 2  # stopped before its last fold
        done = [c.intermediate_values[step] for c in trials if c.state.name == "COMPLETE" and c.number < t.number]
        assert len(done) >= 5 and t.intermediate_values[step] < sorted(done)[len(done) // 2]


def test_optimize_cli_on_postgresql_prints_a_config_snippet(btc_1h: Path, pg_schema_url: Callable[[], str],
                                                            bot_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    url = pg_schema_url()
    common = ["optimize", "--strategy", "sma", "--data", str(btc_1h), "--from", "2025-05-01", "--to", "2025-10-01",
              "--space", str(_space(tmp_path)), "--folds", "2", "--db", url, "--metric", "return"]
    res = bot_cli(*common, "--trials", "3", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "study sma_BTCUSDT_1h: 3 trials" in res.stdout and "hold-out block (never searched)" in res.stdout
    snippet = res.stdout.split("for config.yaml:\n", 1)[1]
    import yaml  # noqa: PLC0415

    parsed = yaml.safe_load(snippet)
    assert parsed["strategy"]["name"] == "sma" and set(parsed["strategy"]["params"]) == {"fast", "slow"}
    res = bot_cli(*common, "--trials", "2", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["trials"] == 5 and out["added"] == 2
    study = optuna.load_study(study_name="sma_BTCUSDT_1h", storage=url)  # in the journal's own database
    assert len(study.trials) == 5 == sum(out["states"].values())
    assert out["best"]["value"] == study.best_value and out["best_trial"] == study.best_trial.number
    bad_space = str(_space(tmp_path, "slow: {low: 50, high: 10}", "bad.yaml"))
    bad = bot_cli(*[bad_space if a == str(tmp_path / "space.yaml") else a for a in common], cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: --space {tmp_path / 'bad.yaml'}: slow: low (50) must be "
                                               "below high (10)"]


def test_an_older_journal_leaves_alembic_version_to_optuna(sqlite_url: str) -> None:
    from sqlalchemy import inspect, text  # noqa: PLC0415

    from storage.db import upgrade  # noqa: PLC0415

    db = open_database(sqlite_url)
    head = upgrade(db)
    with db.begin() as conn:  # the layout of a journal made before journal_version
        conn.execute(text("ALTER TABLE journal_version RENAME TO alembic_version"))
    db.dispose()
    db = open_database(sqlite_url)
    names = set(inspect(db).get_table_names())
    assert "alembic_version" not in names and upgrade(db) == head
    optuna.create_study(study_name="x", storage=sqlite_url).optimize(lambda t: t.suggest_int("a", 0, 3), n_trials=2)
    assert len(optuna.load_study(study_name="x", storage=sqlite_url).trials) == 2
    assert upgrade(open_database(sqlite_url)) == head  # Optuna's alembic_version is not the journal's


@pytest.mark.parametrize(("args", "line"), [
    (["--holdout", "1.5"], "error: --holdout must be between 0 and 1, got 1.5"),
    (["--metric", "sortino"], "error: unknown --metric 'sortino': expected sharpe or return"),
    (["--workers", "0"], "error: --workers must be at least 1, got 0"),
    (["--trials", "-1"], "error: --trials must be 0 or more, got -1"),
    (["--trials", "0"], "error: study 'sma_BTCUSDT_1h': no trial completed yet (of 0): widen --space or add --trials"),
    (["--folds", "40"], "too few for 40 test blocks"),
])
def test_optimize_bad_flags_are_one_line(args: list[str], line: str, btc_1h: Path, tmp_path: Path,
                                         bot_cli: Callable[..., CliResult]) -> None:
    res = bot_cli("optimize", "--strategy", "sma", "--data", str(btc_1h), "--from", "2025-05-01", "--to", "2025-09-01",
                  "--space", str(_space(tmp_path)), "--db", f"sqlite:///{tmp_path / 'j.db'}", *args, cwd=tmp_path)
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and line in err[0]
