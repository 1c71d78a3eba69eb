"""Scheduled retraining (``market.retrain``): a paper run of dsc on the local Bybit simulator
retrains on its closed bars, swaps the model between two bars and journals the swap; every later
decision carries the new model id, the new checkpoint was fitted only on bars the run had closed,
and a resumed run trades the swapped-in model. A retraining that fails is journaled and the old
model keeps trading. Config: only model strategies accept ``retrain``; bad values are one line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine as DBEngine
from typer.testing import CliRunner

from bot import app as core
from bot.candles import CandleData
from bot.cli import app
from bot.config import load_config
from bot.errors import ConfigError
from bot.feeds.replay import load_candles
from bot.live import RunOptions
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimConfig, SimServer
from models.checkpoint import load_checkpoint
from models.provenance import fitted_of
from storage import queries as q
from tests.test_dsc_strategy import TINY, tiny_checkpoint

A_INDEX = 2000  # the first traded bar: after the checkpoint's fitted range (bars 0..1499)
PARAMS = {**TINY, "backend": "torch"}


@pytest.fixture(scope="module")
def ckpt(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    btc = load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
    return tiny_checkpoint(btc.slice(0, 1500), tmp_path_factory.mktemp("retrain") / "tiny.pt")


def _cfg(sim: SimServer, url: str, ckpt: Path, tmp: Path, retrain: str):  # type: ignore[no-untyped-def]
    return load_config(None, [f"exchange.rest_url={sim.rest_url}", f"exchange.ws_url={sim.ws_url}",
                              f"storage.url={url}", "logging.level=error", "strategy.name=dsc",
                              f"strategy.checkpoint={ckpt}", f"market.retrain={retrain}"],
                       {"strategy.params": PARAMS, "market.retrain.out_dir": str(tmp / "retrained")})


async def _until(db_url: str, run: asyncio.Task[Any], ok: Callable[[DBEngine, str], bool],
                 timeout: float = 50.0) -> str:
    """Wait until ``ok(db, run_id)`` holds for the paper run in the journal (a deadline for the
    condition, not a timing), then stop the run with SIGTERM; its run id."""
    db = core.open_journal_db(db_url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        assert not run.done(), f"the run ended first: {run.exception() or run.result()}"
        runs = q.list_runs(db) if loop.time() < deadline else []
        assert loop.time() < deadline, "the condition never held"
        if runs and ok(db, runs[0]["id"]):
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the run's signal handler
            summary = await run
            return str(summary["run_id"])
        await asyncio.sleep(0.05)


def _swaps(db: DBEngine, run_id: str) -> list[dict[str, Any]]:
    return [e for e in q.events(db, run_id) if e["kind"] == "model_swap"]


def _decided_after_swap(n: int) -> Callable[[DBEngine, str], bool]:
    def ok(db: DBEngine, run_id: str) -> bool:
        swaps = _swaps(db, run_id)
        return bool(swaps) and sum(d["bar_time"] > swaps[0]["time"] for d in q.decisions(db, run_id)) >= n
    return ok


def _start(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(coro)


async def test_paper_run_retrains_swaps_between_bars_and_resumes_on_the_new_model(
        btc_1h: Path, ckpt: Path, tmp_path: Path) -> None:
    probe = load_candles(btc_1h, symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
    a = int(probe.time[A_INDEX])
    url = f"sqlite:///{tmp_path / 'retrain.db'}"
    # A window longer than the run's buffer: the bars before the run come from the venue.
    retrain = "{every: 1s, window_bars: 400, min_bars: 300}"
    async with SimServer(SimConfig(data=[str(btc_1h)], bar_ms=150.0, start=a)) as sim:
        cfg = _cfg(sim, url, ckpt, tmp_path, retrain)
        opts = RunOptions(equity_every_s=3600.0, reconcile_every_s=3600.0)
        run_id = await _until(url, _start(core.paper(cfg, date_from=ms_to_iso(a), options=opts)),
                              _decided_after_swap(3))
        db = core.open_journal_db(url)
        assert q.resolve_run(db, run_id)["status"] == "stopped"
        swaps = _swaps(db, run_id)
        first = swaps[0]
        p = first["payload"]
        old_id = load_checkpoint(ckpt).meta.model_id
        assert p["old_model_id"] == old_id and p["new_model_id"] != old_id
        # Trained on the 400 closed bars ending at the last bar the run had processed when the job began.
        assert p["last_bar"] == p["asked_at_bar"] <= first["time"] and p["bars"] == 400
        assert p["first_bar"] == p["last_bar"] - 399 * 3_600_000 and p["first_bar"] < a
        fitted = fitted_of(load_checkpoint(Path(p["checkpoint"])).meta)
        assert fitted.symbol == "BTCUSDT" and fitted.end is not None and fitted.end <= p["last_bar"]
        # Swapped between two bars: every decision up to the swap's bar is the old model's, every one after it the new.
        decisions = q.decisions(db, run_id)
        for d in decisions:
            if d["bar_time"] <= first["time"]:
                assert d["model_id"] == old_id, d["id"]
        for s, nxt in zip(swaps, [*swaps[1:], None], strict=True):
            later = [d for d in decisions
                     if d["bar_time"] > s["time"] and (nxt is None or d["bar_time"] <= nxt["time"])]
            assert later and {d["model_id"] for d in later} == {s["payload"]["new_model_id"]}
        # The bars the run processed while the model trained (told in the event) were decided by the old model.
        assert p["bars_during_training"] == (first["time"] - p["asked_at_bar"]) // 3_600_000
        latest = swaps[-1]["payload"]["new_model_id"]
        stopped_at = q.resolve_run(db, run_id)["last_bar"]

        # A resume trades the latest swapped-in model, not the configured checkpoint.
        resumed = _start(core.paper(cfg, run_id=run_id, options=opts))

        def resumed_and_decided(db: DBEngine, rid: str) -> bool:
            return sum(d["bar_time"] > stopped_at for d in q.decisions(db, rid)) >= 2

        await _until(url, resumed, resumed_and_decided)
    kinds = [e["kind"] for e in q.events(db, run_id)]
    assert "paper_resume" in kinds and "resume_mismatch" not in kinds  # the replay compared the new model's bars only
    after = [d for d in q.decisions(db, run_id) if d["bar_time"] > stopped_at]
    swaps_after = [s for s in _swaps(db, run_id) if s["time"] > stopped_at]
    upto = swaps_after[0]["time"] if swaps_after else None
    first_after = [d for d in after if upto is None or d["bar_time"] <= upto]
    assert first_after and {d["model_id"] for d in first_after} == {latest}
    # The user sees the swaps: ``bot journal events --kind model_swap``.
    out = CliRunner().invoke(app, ["journal", "events", "--run", run_id, "--db", url, "--kind", "model_swap",
                                   "--format", "json"])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.stdout)
    assert shown and {e["kind"] for e in shown} == {"model_swap"} and len(shown) == len(_swaps(db, run_id))
    assert shown[0]["payload"]["new_model_id"] == p["new_model_id"]


async def test_failed_retraining_is_journaled_and_the_old_model_keeps_trading(
        btc_1h: Path, ckpt: Path, tmp_path: Path) -> None:
    probe = load_candles(btc_1h, symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
    a = int(probe.time[A_INDEX])
    url = f"sqlite:///{tmp_path / 'fail.db'}"
    # ``expanding`` trains on the run's own bars: its short warm-up is far fewer than min_bars.
    retrain = "{every: 0.3s, window_bars: expanding, min_bars: 5000}"

    def failed_then_decided(db: DBEngine, run_id: str) -> bool:
        fails = [e for e in q.events(db, run_id) if e["kind"] == "model_swap_failed"]
        return bool(fails) and sum(d["bar_time"] > fails[0]["time"] for d in q.decisions(db, run_id)) >= 2

    async with SimServer(SimConfig(data=[str(btc_1h)], bar_ms=100.0, start=a)) as sim:
        cfg = _cfg(sim, url, ckpt, tmp_path, retrain)
        run_id = await _until(url, _start(core.paper(cfg, date_from=ms_to_iso(a))), failed_then_decided)
    db = core.open_journal_db(url)
    fail = next(e for e in q.events(db, run_id) if e["kind"] == "model_swap_failed")
    old_id = load_checkpoint(ckpt).meta.model_id
    assert fail["payload"]["model_id"] == old_id
    assert fail["payload"]["reason"].startswith("DataError: too few bars to retrain:")
    assert "min_bars is 5000" in fail["payload"]["reason"]
    assert not _swaps(db, run_id)
    assert {d["model_id"] for d in q.decisions(db, run_id)} == {old_id}  # before and after the failure
    assert q.resolve_run(db, run_id)["status"] == "stopped"


@pytest.mark.parametrize(("value", "message"), [
    ("{every: 2x}", "market.retrain.every: expected a duration such as 7d, 12h, 30m or 90s, got '2x'"),
    ("{every: 0s}", "market.retrain.every: must be a positive duration, got '0s'"),
    ("{every: 7d, window_bars: 1}", "market.retrain.window_bars: expected a number of bars (at least 2)"),
    ("{every: 7d, window_bars: 100, min_bars: 200}", "market.retrain: min_bars 200 is more than window_bars 100"),
    ("{window_bars: 100}", "market.retrain.every: Field required"),
    ("{every: 7d, often: true}", "market.retrain.often: unknown key"),
])
def test_bad_retrain_config_is_one_line(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"market.retrain={value}"])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_retrain_accepts_durations_and_expanding() -> None:
    rc = load_config(None, ["market.retrain={every: 7d, window_bars: expanding, min_bars: 1000}"]).market.retrain
    assert rc is not None and rc.every_s == 7 * 86400 and rc.window_bars == "expanding"
    assert load_config(None, ["market.retrain={every: 90m}"]).market.retrain.every_s == 5400  # type: ignore[union-attr]


async def test_retrain_on_a_strategy_without_a_trainer_is_refused(tmp_path: Path) -> None:
    cfg = load_config(None, [f"storage.url=sqlite:///{tmp_path / 'j.db'}", "exchange.rest_url=http://127.0.0.1:9",
                             "strategy.name=sma", "market.retrain={every: 1d}"])
    with pytest.raises(ConfigError, match=r"^BTCUSDT: market.retrain needs a model strategy with a trainer "
                                          r"\(dsc, rollout, gru_sizer\); strategy 'sma' has none$"):
        await core.paper(cfg)


def test_candle_data_of_venue_bars_drops_filler_and_reports_gaps() -> None:
    from bot.domain import Candle
    from bot.retrain import candle_data

    h = 3_600_000
    bars = [Candle("BTCUSDT", "1h", i * h, 10.0, 11.0, 9.0, 10.5, 1.0) for i in range(5)]
    bars[2] = Candle("BTCUSDT", "1h", 2 * h, 10.0, 10.0, 10.0, 10.0, 0.0)  # zero-volume flat filler
    data: CandleData = candle_data("BTCUSDT", "1h", bars, "test")
    assert data.time.tolist() == [0, h, 3 * h, 4 * h] and data.gaps.found
