"""Jobs on a process pool and on Ray (bot/jobs.py): the same results as the serial run in the
same order, a job whose worker dies is retried once and reported, one that dies twice is named in
the error. One local Ray with 2 workers for the whole file (its start-up is slow). Needs the Ray
extra (pip install -e '.[dev,ray]', as .ci/run does): without it the tests fail, never skip."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.errors import ConfigError
from bot.jobs import Jobs, JobsFailed
from tests.conftest import CliResult


def square_or_die(x: int, marker: str | None) -> int:
    """x * x; the first call given ``marker`` kills its worker process (no exception: a death)."""
    if marker is not None and not os.path.exists(marker):
        Path(marker).write_text("died once")
        os._exit(3)
    return x * x


def always_die(x: int) -> int:
    os._exit(4)


def refuse(x: int) -> int:
    raise ConfigError(f"bad input {x}")


@pytest.fixture(scope="module")
def ray_jobs() -> Iterator[Jobs]:
    with Jobs(workers=2, ray="auto") as jobs:
        yield jobs


@pytest.mark.parametrize("where", ["pool", "ray"])
def test_a_dead_worker_is_retried_once_and_reported(where: str, ray_jobs: Jobs, tmp_path: Path) -> None:
    marker = str(tmp_path / "died")
    work = [(i, marker if i == 2 else None) for i in range(5)]
    names = [f"job {i}" for i in range(5)]
    seen: list[int] = []
    if where == "ray":
        ray_jobs.retried.clear()
        out = ray_jobs.map(square_or_die, work, names, on_result=seen.append)
        retried = ray_jobs.retried
    else:
        with Jobs(workers=2) as pool:
            out = pool.map(square_or_die, work, names, on_result=seen.append)
            retried = pool.retried
    assert out == seen == [0, 1, 4, 9, 16]  # in submission order, nothing dropped
    assert Path(marker).read_text() == "died once"
    assert any(r.startswith("job 2: retried once after ") for r in retried)


@pytest.mark.parametrize("where", ["serial", "pool", "ray"])
def test_a_job_that_dies_twice_is_named_and_a_bad_input_is_not_retried(where: str, ray_jobs: Jobs) -> None:
    def run(fn: Callable[..., Any], work: list[tuple[Any, ...]]) -> list[Any]:
        if where == "ray":
            return ray_jobs.map(fn, work, ["only"])
        with Jobs(workers=1 if where == "serial" else 2) as jobs:
            return jobs.map(fn, work, ["only"])

    if where != "serial":  # a death in this process would end the test run
        with pytest.raises(JobsFailed, match=r"1 job\(s\) failed twice: only: "):
            run(always_die, [(1,)])
    with pytest.raises(ConfigError, match="bad input 7"):
        run(refuse, [(7,)])


def _blocks(res: CliResult) -> dict[str, Any]:
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for b in out["blocks"]:
        b.pop("run_id")  # a new run in the journal each time
    return out


def test_walkforward_on_ray_and_on_a_pool_gives_the_serial_folds(ray_jobs: Jobs, bot_cli: Callable[..., CliResult],
                                                                 btc_1h: Path, tmp_path: Path) -> None:
    common = ["walkforward", "--strategy", "sma", "--data", str(btc_1h), "--from", "2025-03-01", "--to", "2025-09-01",
              "--folds", "3", "--db", f"sqlite:///{tmp_path / 'j.db'}", "--json"]
    serial = _blocks(bot_cli(*common, cwd=tmp_path))
    on_ray = _blocks(bot_cli(*common, "--ray", "auto", "--workers", "2", cwd=tmp_path))
    pooled = _blocks(bot_cli(*common, "--workers", "2", cwd=tmp_path))
    assert serial["engine"] == "serial" and on_ray["engine"] == "ray (auto)"
    assert pooled["engine"] == "process pool (2 workers)"
    assert len(serial["blocks"]) == 9  # 3 folds x (sma, buy_hold, vol_only)
    for other in (on_ray, pooled):
        assert other["retried"] == []
        assert _same(other["blocks"], serial["blocks"]) and _same(other["stitched"], serial["stitched"])


def _same(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-12 relative: the runs' trades, fees and ids are exact, but the in-process
    run's float metrics have differed from the worker processes' in the last digits (~1e-14; the
    cause is not found yet: README, "Past one machine")."""
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-12, abs=1e-15)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


FLOAT_METRICS = ("total_return", "sharpe", "max_drawdown")


def test_sweep_on_ray_and_on_a_pool_gives_the_serial_points(ray_jobs: Jobs, bot_cli: Callable[..., CliResult],
                                                            btc_1h: Path, data_dir: Path, tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text("fast: [5, 10]\nslow: [10, 40]\n")
    common = ["sweep", "--strategy", "sma", "--data", str(btc_1h), "--data",
              f"ETHUSDT={data_dir / 'bybit_ETHUSDT_1h.csv.gz'}", "--grid", str(grid), "--from", "2025-06-01",
              "--to", "2025-08-01", "--db", f"sqlite:///{tmp_path / 'j.db'}", "--json"]
    runs = []
    for extra in ([], ["--ray", "auto"], ["--workers", "2"]):
        res = bot_cli(*common, *extra, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        points = json.loads(res.stdout)["points"]
        assert [(p["symbol"], p["params"]["fast"], p["params"]["slow"]) for p in points] == \
            [(s, f, w) for s in ("BTCUSDT", "ETHUSDT") for f in (5, 10) for w in (10, 40)]
        assert [p["invalid"] for p in points].count("fast must be smaller than slow") == 2  # 10/10 on each market
        runs.append([{k: v for k, v in p.items() if k != "run_id"} for p in points])
        assert all(p["run_id"] for p in points if not p["invalid"])
    # Trades, fees and the grid are exact; the float metrics of the in-process run may differ from
    # the workers' fresh processes in the last digits (seen once, ~3e-14 relative; fresh processes
    # with any hash seed agree bit for bit): compared to 1e-12.
    exact = [[{k: v for k, v in p.items() if k not in FLOAT_METRICS} for p in r] for r in runs]
    assert exact[0] == exact[1] == exact[2]
    for r in runs[1:]:
        for a, b in zip(runs[0], r, strict=True):
            assert all(a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-15) for k in FLOAT_METRICS if a.get(k) is not None)
    bad = tmp_path / "bad.yaml"
    bad.write_text("fast: 5\n")
    res = bot_cli(*[str(bad) if a == str(grid) else a for a in common], cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"error: --grid {bad}: fast: expected a non-empty list of values, got 5"]


def test_optimize_asks_the_same_trials_on_ray_as_on_a_pool(ray_jobs: Jobs, bot_cli: Callable[..., CliResult],
                                                           btc_1h: Path, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("fast: {low: 3, high: 30}\nslow: {low: 40, high: 120, step: 10}\n")
    out = []
    for i, extra in enumerate((["--ray", "auto"], [])):
        res = bot_cli("optimize", "--strategy", "sma", "--data", str(btc_1h), "--from", "2025-04-01", "--to",
                      "2025-10-01", "--space", str(space), "--folds", "2", "--trials", "4", "--workers", "2",
                      "--metric", "return", "--db", f"sqlite:///{tmp_path / f'j{i}.db'}", "--json", *extra,
                      cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        got = json.loads(res.stdout)
        assert got["trials"] == 4 and got["retried"] == []
        out.append((got["best"], got["holdout_best"], got["default"], got["states"]))
    assert out[0] == out[1]  # the same batches of two trials, the same scores
