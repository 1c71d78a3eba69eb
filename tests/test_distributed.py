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
        diff = _differences(other["blocks"], serial["blocks"]) + _differences(other["stitched"], serial["stitched"])
        assert diff == [], f"{other['engine']} differs from serial: {diff[:20]}"


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where ``a`` and ``b`` differ ("path: a != b"): counts, names and dates exact, floats to
    1e-9 relative. Float metrics of one block have differed between processes in the last digits
    (~1e-14 here; on the CI machine once beyond 1e-12, on a metric near zero, where a last-digit
    change in a sum is a large relative one); the cause is not found yet (README, "Past one
    machine")."""
    if isinstance(a, float) and isinstance(b, float):
        return [] if a == pytest.approx(b, rel=1e-9, abs=1e-12) else [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]
