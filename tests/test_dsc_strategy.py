"""dsc strategy: batch path == bar-by-bar path on real data, ONNX == torch, explanation contract,
train-then-backtest when no checkpoint exists."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bot.bars import Bars
from bot.candles import CandleData
from bot.errors import ConfigError
from bot.feeds.replay import load_candles
from models.dsc_train import DSCConfig, train_dsc
from models.explain import sig4
from strategies.base import StrategyContext
from strategies.dsc import DSCParams, DSCStrategy

torch.set_num_threads(1)

TINY = {"window": 16, "horizon": 2, "channels": 8, "blocks": 2, "prob_threshold": 0.4,
        "train": {"epochs": 2, "batch_size": 128, "threads": 1, "patience": 2, "seed": 1}}


def tiny_checkpoint(data: CandleData, out: Path, **extra: object) -> Path:
    """A small, quickly trained dsc checkpoint (seconds), for tests."""
    cfg = DSCConfig.model_validate({**TINY, **extra})
    return train_dsc(data, cfg, fee_rate=0.001, long_only=False, symbol="BTCUSDT", timeframe="1h", out=out,
                     progress=False)


@pytest.fixture(scope="module")
def btc(data_dir: Path) -> CandleData:
    return load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)


@pytest.fixture(scope="module")
def ckpt(btc: CandleData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(btc.slice(0, 1500), tmp_path_factory.mktemp("dsc") / "tiny.pt")


def make(ckpt: Path, backend: str = "torch", long_only: bool = False, **params: object) -> DSCStrategy:
    p = DSCParams.model_validate({**TINY, "backend": backend, **params})
    return DSCStrategy(p, StrategyContext("BTCUSDT", "1h", long_only, 0.001, str(ckpt)))


def run_bars(strategy: DSCStrategy, data: CandleData, precompute: bool) -> dict[int, object]:
    """Drive the strategy like the engine does: on_start, then on_bar per revealed bar."""
    if precompute:
        strategy.precompute(data)
    bars = Bars.preloaded("BTCUSDT", "1h", data.time, data.open, data.high, data.low, data.close, data.volume)
    strategy.on_start(bars)
    out = {}
    while bars.advance():
        d = strategy.on_bar(bars)
        if d is not None:
            out[d.bar_time] = d.completed()  # as the engine does, before the next bar
    return out


@pytest.mark.parametrize("explain", ["signed_grad_x_input", "abs_grad_x_input"])
def test_batch_path_equals_bar_by_bar_on_real_data(btc: CandleData, ckpt: Path, explain: str) -> None:
    data = btc.slice(1500, 2600)  # unseen bars of another period
    slow = run_bars(make(ckpt, explain=explain), data, precompute=False)
    fast = run_bars(make(ckpt, explain=explain), data, precompute=True)
    assert slow.keys() == fast.keys() and len(slow) == len(data) - make(ckpt).warmup + 1
    assert len({d.explanation["signal"] for d in slow.values()}) >= 2  # not a constant decision
    for t, a in slow.items():
        b = fast[t]
        assert a.target == b.target and a.explanation["signal"] == b.explanation["signal"]
        assert a.confidence == pytest.approx(b.confidence, abs=1e-6)
        aa, ab = a.explanation["attribution"], b.explanation["attribution"]
        assert aa["method"] == ab["method"] == explain and aa["faithfulness"] == ab["faithfulness"]
        # float32 in both paths, batched vs one window: equal to the 4 stored digits up to rounding
        np.testing.assert_allclose(aa["steps"], ab["steps"], rtol=2e-3, atol=1e-6)
        np.testing.assert_allclose(list(aa["features"].values()), list(ab["features"].values()), rtol=2e-3, atol=1e-6)
        # the batch path rounds every window at once (sig4_array): 4 digits, as the bar path stores
        assert all(sig4(v) == v for v in [*ab["steps"], *ab["features"].values()])


def test_onnx_backend_matches_torch(btc: CandleData, ckpt: Path) -> None:
    data = btc.slice(1500, 1900)
    a = run_bars(make(ckpt, "torch"), data, precompute=False)
    b = run_bars(make(ckpt, "onnx"), data, precompute=False)
    c = run_bars(make(ckpt, "onnx"), data, precompute=True)
    assert a.keys() == b.keys() == c.keys()
    for t in a:
        pa, pb, pc = (np.array(list(x[t].explanation["probs"].values())) for x in (a, b, c))
        assert np.abs(pa - pb).max() <= 1e-5 and np.abs(pa - pc).max() <= 1e-5
        assert a[t].target == b[t].target == c[t].target


def test_explain_map_runs_chunks_side_by_side_in_order(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX chunks of a backtest's pass run on worker threads (one per core) and come back in
    order, each exactly what one explain call of that chunk gives."""
    import threading

    from models.dsc_runtime import DSCRuntime

    monkeypatch.setattr("os.cpu_count", lambda: 3)  # three workers on any machine
    rt = DSCRuntime(ckpt, "onnx")
    x = np.random.default_rng(0).standard_normal((1300, 15, rt.window)).astype(np.float32)
    chunks = [x[s:s + 97] for s in range(0, len(x), 97)]
    ran: list[str] = []
    meet = threading.Barrier(2, timeout=60)  # the first two chunks wait for each other: two workers

    def then(p: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ran.append(threading.current_thread().name)
        if len(ran) <= 2:
            meet.wait()
        return p, a

    got = rt.explain_map(iter(chunks), then)
    assert len(got) == len(chunks) and len(set(ran[:2])) == 2
    assert all(n.startswith("dsc-explain") for n in ran)
    for (p, a), c in zip(got, chunks, strict=True):
        p1, a1 = rt.explain(c)
        np.testing.assert_array_equal(p, p1)
        np.testing.assert_array_equal(a, a1)
    probs, attr = rt.explain_batched(x, batch=200)
    np.testing.assert_allclose(probs, np.concatenate([p for p, _ in got]), rtol=1e-5, atol=1e-7)
    assert attr.shape == (1300, 15, rt.window)


def test_explanation_contract(btc: CandleData, ckpt: Path) -> None:
    data = btc.slice(1500, 1700)
    s = make(ckpt)
    ds = run_bars(s, data, precompute=False)
    d = ds[int(data.time[-1])]
    e = d.explanation
    assert e["kind"] == "dsc" and not {"method", "top_features", "top_steps", "feature_scores"} & set(e)
    assert set(e["probs"]) == {"down", "flat", "up"} and math.isclose(sum(e["probs"].values()), 1.0, abs_tol=1e-5)
    assert e["confidence"] == max(e["probs"].values()) and e["signal"] in ("long", "short", "flat")
    a = e["attribution"]
    stored = s.rt.meta.extra["explain"]  # the deletion test on validation windows, at train time
    assert a["method"] == stored["winner"] == stored["ranking"][0] and stored["split"] == "validation"
    assert a["target"] == "p(up) - p(down)" and a["bar_ms"] == 3_600_000
    assert a["toward"] == ("up" if a["method"] == "signed_grad_x_input" else None)
    assert len(a["steps"]) == 16 and set(a["features"]) == set(s.rt.meta.feature_names)
    f = a["faithfulness"]
    assert f["rank"] == 1 and f["k"] == 5 and f["windows"] > 0
    assert f["older_top_k_drop"] == float(f"{stored['table'][a['method']]['older_top_k_drop']:.4g}")
    assert all(v == float(f"{v:.4g}") for v in [*a["steps"], *a["features"].values()])  # 4 digits
    assert e["rule"]["threshold"] == 0.4 and e["rule"]["text"].endswith("-> " + e["signal"])
    json.dumps(e, allow_nan=False)
    assert d.model_id == s.model_id and d.model_id.startswith("dsc-")


def test_old_checkpoint_defaults_and_explain_with(btc: CandleData, ckpt: Path, tmp_path: Path) -> None:
    from models.checkpoint import load_checkpoint, save_checkpoint
    from models.dsc import build

    old = load_checkpoint(ckpt)
    old.meta.extra.pop("explain")  # as written before the selection existed
    net = old.load_into("model", build("dsc", dict(old.meta.hparams)))
    path = save_checkpoint(tmp_path / "old.pt", net, old.meta)
    s = make(path)
    data = btc.slice(1500, 1700)
    e = run_bars(s, data, precompute=False)[int(data.time[-1])].explanation["attribution"]
    assert e["method"] == "signed_grad_x_input" and e["faithfulness"] is None
    # explain_with rebuilds the window from the bars and gives any method on demand, same numbers
    bars = Bars.preloaded("BTCUSDT", "1h", data.time, data.open, data.high, data.low, data.close, data.volume)
    while bars.advance():
        pass
    again = s.explain_with(bars, "signed_grad_x_input")
    np.testing.assert_allclose(again["steps"], e["steps"], rtol=2e-3, atol=1e-6)
    absolute = make(ckpt).explain_with(bars, "abs_grad_x_input")
    assert absolute["toward"] is None and min(absolute["steps"]) >= 0
    assert absolute["faithfulness"]["rank"] in (1, 2)
    with pytest.raises(ConfigError, match="--method rollout"):
        s.explain_with(bars, "rollout")


def test_long_only_never_shorts(btc: CandleData, ckpt: Path) -> None:
    ds = run_bars(make(ckpt, long_only=True), btc.slice(1500, 1900), precompute=True)
    assert all(d.target in (0.0, 1.0) for d in ds.values())
    ds = run_bars(make(ckpt, allow_short=False), btc.slice(1500, 1900), precompute=False)
    assert all(d.target >= 0 for d in ds.values())


def test_for_backtest_trains_on_early_part_when_no_checkpoint(btc: CandleData, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from bot import app as core
    from bot.config import load_config

    monkeypatch.chdir(tmp_path)
    data = btc.slice(0, 1400)
    cfg = load_config(None, [], {"strategy.name": "dsc", "strategy.params": {**TINY, "train_fraction": 0.7}})
    md, notes = core.backtest_market(cfg, data)
    kept = sorted((tmp_path / "checkpoints" / "backtest").glob("dsc_BTCUSDT_1h_*"))
    assert {p.name.split(".", 1)[1] for p in kept} >= {"pt", "card.json"}  # the checkpoint and its card
    assert not (tmp_path / "checkpoints" / "dsc_BTCUSDT_1h.pt").exists()  # `bot train`'s path is not touched
    fitted = md.strategy.fitted
    assert fitted is not None and fitted.end is not None
    # Trading starts right after the fitted range (training + validation bars), inside the 70 %.
    assert int(data.time[md.history - 1]) == fitted.end and md.history < int(0.7 * 1400)
    assert notes[0].startswith("trained checkpoints/backtest/dsc_BTCUSDT_1h_") and "out of sample" in notes[-1]
    # The identical backtest reuses the kept model; another training set (a later cut) trains its own.
    again, notes2 = core.backtest_market(cfg, data)
    assert notes2[0].startswith("reusing ") and again.strategy.model_id == md.strategy.model_id
    other = load_config(None, [], {"strategy.name": "dsc", "strategy.params": {**TINY, "train_fraction": 0.75}})
    md3, notes3 = core.backtest_market(other, data)
    assert notes3[0].startswith("trained ") and md3.strategy.model_id != md.strategy.model_id
    assert len(list((tmp_path / "checkpoints" / "backtest").glob("dsc_*.pt"))) == 2
    # The reusing run still skips the bars the model was fitted on.
    assert again.history == md.history and "out of sample" in notes2[-1]
    # The kept model, named as the checkpoint, trades another period (after its fitted range) from its first bar.
    pt = next(p for p in kept if p.suffix == ".pt")
    named = load_config(None, [], {"strategy.name": "dsc", "strategy.checkpoint": str(pt),
                                   "strategy.params": {**TINY, "train_fraction": 0.7}})
    md4, notes4 = core.backtest_market(named, btc.slice(2000, 2600))
    assert md4.history == 0 and notes4 == [] and md4.strategy.model_id == md.strategy.model_id


def test_window_mismatch_refused_unless_unset(ckpt: Path) -> None:
    from bot.errors import ModelError

    with pytest.raises(ModelError, match="window of 16 bars, the strategy expects 32"):
        make(ckpt, window=32)
    ctx = StrategyContext("BTCUSDT", "1h", False, 0.001, str(ckpt))
    assert DSCStrategy.from_config({}, ctx).window == 16  # not set: the checkpoint's window is used
