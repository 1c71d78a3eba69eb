"""The rollout strategy on real candles: explanation contract, batch == bar by bar, resume,
checkpoint checks, and a backtest that trains first and prints the attention section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from bot import app as core
from bot.attention import attention_section, print_attention_section
from bot.bars import Bars
from bot.candles import CandleData
from bot.errors import ConfigError, ModelError
from bot.feeds.replay import load_candles
from models.rollout_runtime import parse_config
from models.rollout_train import train_rollout
from strategies.base import StrategyContext
from strategies.rollout import RolloutStrategy

torch.set_num_threads(1)
PARAMS = {"window": 16, "d_model": 8, "n_heads": 2, "n_layers": 2, "d_ff": 16, "prob_threshold": 0.34,
          "train": {"epochs": 1, "threads": 1, "max_train_samples": 600, "seed": 3}}


@pytest.fixture(scope="module")
def data(data_dir: Path) -> CandleData:
    full = load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
    return full.slice(3000, 4400)


@pytest.fixture(scope="module")
def ckpt(data: CandleData, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("rollout") / "tiny.pt"
    return str(train_rollout(data.slice(0, 1000), parse_config(PARAMS), fee_rate=0.001, long_only=False,
                             symbol="BTCUSDT", timeframe="1h", out=out, progress=False))


def strategy(ckpt: str, long_only: bool = False, **over: object) -> RolloutStrategy:
    ctx = StrategyContext("BTCUSDT", "1h", long_only, 0.001, ckpt)
    return RolloutStrategy.from_config({**PARAMS, **over}, ctx)  # type: ignore[return-value]


def run(s: RolloutStrategy, data: CandleData, precompute: bool, start: int = 0) -> dict[int, object]:
    if precompute:
        s.precompute(data)
    bars = Bars.preloaded("BTCUSDT", "1h", data.time, data.open, data.high, data.low, data.close, data.volume)
    for _ in range(start):
        bars.advance()
    s.on_start(bars)
    out = {}
    while bars.advance():
        d = s.on_bar(bars)
        if d is not None:
            out[d.bar_time] = d.completed()  # as the engine does, before the next bar
    return out


def test_explanation_follows_the_contract(ckpt: str, data: CandleData) -> None:
    decisions = run(strategy(ckpt, explain="rollout"), data.slice(0, 200), precompute=False)
    assert len(decisions) == 200 - (64 + 16 - 1)  # one decision per bar after features + window warm-up
    for t, d in decisions.items():
        e = d.explanation
        json.dumps(e, allow_nan=False)
        assert e["kind"] == "rollout" and e["head_fusion"] == "mean"
        assert set(e["probs"]) == {"down", "flat", "up"}
        assert abs(sum(e["probs"].values()) - 1) < 1e-6  # float32 probabilities (ONNX Runtime)
        assert e["confidence"] == max(e["probs"].values()) == d.confidence
        a = e["attribution"]
        assert not {"times", "top_steps"} & set(e)
        assert a["method"] == "rollout" and a["toward"] is None and a["features"] is None
        assert len(a["steps"]) == 16 and a["bar_ms"] == 3_600_000 and d.bar_time == t
        assert abs(sum(a["steps"]) - 1) < 1e-3 and min(a["steps"]) >= 0
        assert a["faithfulness"]["rank"] in (1, 2, 3, 4) and a["faithfulness"]["k"] == 5
        assert e["regime"]["label"] in ("low", "normal", "high")  # volatility regime (models/vol_regime.py)
        assert e["regime"]["basis"].startswith("24-bar realised vol in the ")
        recent = sum(a["steps"][-4:])  # newest quarter of a 16-step window
        assert abs(recent - e["recent_share"]) < 1e-3
        assert e["signal"] == ("long" if d.target > 0 else "short" if d.target < 0 else "flat")
        assert d.model_id and d.model_id.startswith("rollout-")
    assert {d.target for d in decisions.values()} <= {-1.0, 0.0, 1.0}


@pytest.mark.parametrize(("chunk", "explain", "backend"),
                         [(2048, "rollout", "onnx"), (97, "rollout", "onnx"), (97, "signed_grad_x_input", "onnx"),
                          (2048, "abs_grad_x_input", "onnx"), (2048, "grad_rollout", "onnx"),
                          (97, "signed_grad_x_input", "torch")])
def test_batch_precompute_equals_bar_by_bar_on_real_data(ckpt: str, data: CandleData, chunk: int, explain: str,
                                                         backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("strategies.rollout.CHUNK", chunk)  # 97: many chunk boundaries
    slow = run(strategy(ckpt, explain=explain, backend=backend), data, precompute=False)
    fast = run(strategy(ckpt, explain=explain, backend=backend), data, precompute=True)
    assert slow.keys() == fast.keys() and len(slow) > 1000
    for t, a in slow.items():
        b = fast[t]
        assert a.target == b.target
        ea, eb = a.explanation, b.explanation
        if backend == "onnx":  # one float32 session: a window gives the same bits alone as in a batch
            assert ea["probs"] == eb["probs"] and a.confidence == b.confidence
        assert abs(a.confidence - b.confidence) < 1e-9
        assert ea["regime"] == eb["regime"]
        assert ea["attribution"] == eb["attribution"]  # float64 on both paths: the same 4 digits
    assert len({d.target for d in slow.values()}) > 1  # the model does trade


def test_onnx_decision_equals_torch(ckpt: str, data: CandleData) -> None:
    """The default ONNX Runtime decision (float32) equals the float64 torch one: the same targets,
    the probabilities within float32 rounding; the export is cached beside the checkpoint."""
    part = data.slice(0, 900)
    a = run(strategy(ckpt, explain="rollout", backend="torch"), part, precompute=False)
    b = run(strategy(ckpt, explain="rollout", backend="onnx"), part, precompute=False)
    assert a.keys() == b.keys() and len(a) > 800
    worst = max(abs(a[t].explanation["probs"][k] - b[t].explanation["probs"][k]) for t in a for k in ("down", "up"))
    assert 0 < worst < 1e-5
    assert all(a[t].target == b[t].target for t in a)
    assert all(a[t].explanation["attribution"] == b[t].explanation["attribution"] for t in a)  # float64 torch both
    assert Path(ckpt).with_name(Path(ckpt).stem + ".probs.onnx").exists()
    with pytest.raises(ConfigError, match="backend"):
        strategy(ckpt, backend="tensorrt")


def test_explain_with_gives_every_method_on_demand(ckpt: str, data: CandleData) -> None:
    part = data.slice(0, 150)
    bars = Bars.preloaded("BTCUSDT", "1h", part.time, part.open, part.high, part.low, part.close, part.volume)
    while bars.advance():
        pass
    auto = strategy(ckpt)
    assert auto.method == auto.meta.extra["explain"]["winner"]  # auto: the validation winner
    ranks = set()
    for method in ("signed_grad_x_input", "abs_grad_x_input", "rollout", "grad_rollout"):
        stored = run(strategy(ckpt, explain=method), part, precompute=False)[int(part.time[-1])]
        got = auto.explain_with(bars, method)
        assert got["method"] == method
        np.testing.assert_allclose(got["steps"], stored.explanation["attribution"]["steps"], rtol=1e-9)
        assert (got["features"] is None) == (method in ("rollout", "grad_rollout"))
        ranks.add(got["faithfulness"]["rank"])
    assert ranks == {1, 2, 3, 4}
    with pytest.raises(ConfigError, match="--method"):
        auto.explain_with(bars, "lime")


def test_restart_rebuilds_state_exactly(ckpt: str, data: CandleData) -> None:
    part = data.slice(0, 400)
    full = run(strategy(ckpt), part, precompute=False)
    resumed = run(strategy(ckpt), part, precompute=False, start=250)
    assert resumed and all(full[t].explanation == d.explanation for t, d in resumed.items())


def test_another_bar_history_restarts_the_features(ckpt: str, data: CandleData) -> None:
    s = strategy(ckpt)
    run(s, data.slice(0, 300), precompute=False)  # the strategy has now seen 300 bars
    other = data.slice(100, 400)  # then another history arrives in a fresh buffer, without on_start
    bars = Bars.preloaded("BTCUSDT", "1h", other.time, other.open, other.high, other.low, other.close,
                          other.volume)
    again = {}
    while bars.advance():
        d = s.on_bar(bars)
        if d is not None:
            again[d.bar_time] = d.completed()
    fresh = run(strategy(ckpt), other, precompute=False)
    assert again.keys() == fresh.keys() and all(again[t].explanation == fresh[t].explanation for t in fresh)


def test_long_only_never_shorts(ckpt: str, data: CandleData) -> None:
    decisions = run(strategy(ckpt, long_only=True), data.slice(0, 400), precompute=True)
    assert min(d.target for d in decisions.values()) == 0.0


def test_bad_params_and_mismatched_checkpoint_are_one_line_errors(ckpt: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="strategy.params.colour: unknown parameter"):
        strategy(ckpt, colour=1)
    with pytest.raises(ConfigError, match="start_layer"):
        strategy(ckpt, start_layer=2)
    with pytest.raises(ModelError, match="window of 16 bars, the strategy expects 32"):
        strategy(ckpt, window=32)
    with pytest.raises(ModelError, match="checkpoint not found"):
        strategy(str(tmp_path / "missing.pt"))


def test_backtest_trains_first_then_summarises_attention(data: CandleData, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.config import load_config
    from storage.db import open_database

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'j.db'}"
    cfg = load_config(None, [], {"strategy.name": "rollout",
                                 "strategy.params": {**PARAMS, "train_fraction": 0.7, "explain": "rollout"},
                                 "storage.url": url})
    md, notes = core.backtest_market(cfg, data)
    strat, first = md.strategy, md.history
    assert notes[0].startswith("trained checkpoints/backtest/rollout_BTCUSDT_1h_") and "out of sample" in notes[-1]
    # Trading starts after the fitted range (training + validation), before the 70 % cut.
    assert md.strategy.fitted.end == int(data.time[first - 1]) and first < int(len(data) * 0.7)
    kept = list((tmp_path / "checkpoints" / "backtest").glob("rollout_BTCUSDT_1h_*.card.json"))
    assert len(kept) == 1 and not (tmp_path / "checkpoints" / "rollout_BTCUSDT_1h.pt").exists()
    again, notes2 = core.backtest_market(cfg, data)  # the identical backtest reuses the kept model
    assert notes2[0].startswith("reusing checkpoints/backtest/rollout_BTCUSDT_1h_")
    assert again.strategy.model_id == strat.model_id and again.history == first
    db = open_database(url)
    summary = core.backtest(cfg, data, strat, db, show_progress=False, history=first)
    assert summary["candles"] == len(data) - first
    section = attention_section(db, summary["run_id"])
    assert section["window"] == 16 and section["decisions"] == len(data) - first
    assert abs(sum(section["profile_all"]) - 1) < 1e-3
    assert section["winning_trades"] + section["losing_trades"] > 0
    assert sum(section["regime_mix"].values()) == section["decisions"]
    console = Console(record=True, width=120)
    print_attention_section(console, section)
    text = console.export_text()
    assert "winning trades" in text and "regime mix" in text


def test_model_card_reports_faithfulness_and_baselines(ckpt: str) -> None:
    from models.checkpoint import read_meta

    m = read_meta(ckpt).metrics
    table = m["faithfulness_validation"]  # the deletion test of every method, on validation windows
    assert set(table) == {"signed_grad_x_input", "abs_grad_x_input", "rollout", "grad_rollout"}
    for f in table.values():
        assert f["k"] == 5 and f["windows"] > 0
        assert all(np.isfinite(f[key]) for key in ("older_top_k_drop", "older_random_k_drop", "newest_drop"))
    chosen = read_meta(ckpt).extra["explain"]
    assert chosen["split"] == "validation" and chosen["winner"] == chosen["ranking"][0]
    assert sorted(chosen["ranking"], key=lambda x: -table[x]["older_top_k_drop"]) == chosen["ranking"]
    test = m["test"]
    assert {"majority_class", "same_as_last_bar", "volatility_only"} <= set(test["baselines"])
    assert 0 <= test["skill"]["directional_auc"] <= 1 and test["skill"]["spearman_ci"] is not None
    assert len(test["verdict"]) == 3 and "AUC" in test["verdict"][0]
    assert "total_return" in test["trading_after_fees"] and "buy_and_hold" in test["trading_after_fees"]
    assert abs(sum(v for k, v in test["attention"].items() if k.startswith("regime_")) - 1) < 1e-9


@pytest.mark.parametrize("residual_weight", [0.5, 0.0])  # 0.0: no trace, eager fallback
def test_per_candle_graph_equals_the_batched_one(ckpt: str, residual_weight: float) -> None:
    from models.rollout_runtime import RolloutExplainer, load_rollout

    model, _, _ = load_rollout(ckpt)
    ex = RolloutExplainer(model, parse_config({**PARAMS, "residual_weight": residual_weight}))
    x = np.random.default_rng(0).normal(size=(6, 16, 15))
    batch = ex.explain(x)
    for i in range(6):
        one = ex.explain_one(x[i])
        np.testing.assert_allclose(one.probs[0], batch.probs[i], rtol=0, atol=1e-12)
        np.testing.assert_allclose(one.attribution[0], batch.attribution[i], rtol=0, atol=1e-12)
        assert one.regime[0] == batch.regime[i]
    from models.rollout import recent_share, regime_codes

    share = recent_share(torch.from_numpy(batch.attribution))  # the library rule gives the same regimes
    np.testing.assert_allclose(batch.share, share.numpy(), rtol=0, atol=1e-15)
    assert batch.regime.tolist() == regime_codes(share).tolist()



def test_journal_explain_recomputes_a_cli_backtest_decision_with_another_method(ckpt: str, tmp_path: Path) -> None:
    """``--checkpoint`` is journaled with the run's config, so ``journal explain --method`` can
    rebuild the model and recompute the stored decision's attribution with another method."""
    from tests.conftest import DATA_DIR  # noqa: PLC0415
    from tests.test_cli import bot  # noqa: PLC0415 - the CLI as a user runs it

    db = f"sqlite:///{tmp_path / 'j.db'}"
    sets = [x for k, v in PARAMS.items() if k != "train" for x in ("--set", f"strategy.params.{k}={v}")]
    r = bot("backtest", "--strategy", "rollout", "--checkpoint", ckpt, "--data",
            str(DATA_DIR / "bybit_BTCUSDT_1h.csv.gz"), "--from", "2024-06-01", "--to", "2024-06-10", "--db", db,
            "--json", *sets)
    assert r.returncode == 0, r.stderr
    run = json.loads(r.stdout)["run_id"]
    decisions = json.loads(bot("journal", "decisions", "--run", run, "--db", db, "--format", "json").stdout)
    did = next(d["id"] for d in decisions if (d["explanation"] or {}).get("attribution"))
    out = bot("journal", "explain", did, "--db", db, "--method", "rollout")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("attribution recomputed with --method rollout (stored: ")
    bad = bot("journal", "explain", did, "--db", db, "--method", "bogus")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --method bogus: rollout explains with")


def test_evaluate_reports_skill_and_attention(ckpt: str, data: CandleData) -> None:
    from models.rollout_train import evaluate
    from models.training import EvalRequest

    out = evaluate(EvalRequest(checkpoint=Path(ckpt), data=data, symbol="BTCUSDT", timeframe="1h", fee_rate=0.001,
                               long_only=False))
    ev = out["metrics"]["evaluated"]
    assert ev["baselines"]["volatility_only"]["cutoff"] == read_meta_labels(ckpt)["vol_baseline"]["cutoff"]
    assert ev["skill"]["directional_windows"] == sum(ev["confusion"][0]) + sum(ev["confusion"][2])
    assert "mean_recent_share" in ev["attention"] and len(ev["verdict"]) == 3


def read_meta_labels(ckpt: str) -> dict:
    from models.checkpoint import read_meta

    return read_meta(ckpt).labels


@pytest.mark.parametrize("pool", ["last", "mean"])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_onnx_decision_graph_gives_a_window_the_same_bits_alone_as_in_a_batch(pool: str, positions: str,
                                                                             tmp_path: Path) -> None:
    """Both poolings and position kinds (ONNX Runtime's mean over the window axis is not the same
    for a batch of one, so the pooling runs in NumPy): bit for bit, and within float32 of torch."""
    from models.rollout_runtime import DecisionGraph
    from models.transformer import TransformerClassifier, TransformerConfig

    torch.manual_seed(3)
    net = TransformerClassifier(TransformerConfig(n_features=15, window=24, d_model=16, n_heads=2, n_layers=2,
                                                  d_ff=32, pool=pool, positions=positions)).eval()
    graph = DecisionGraph(net, "onnx", tmp_path / "m.probs.onnx", "test")
    x = np.random.default_rng(5).standard_normal((300, 24, 15)).astype(np.float32)
    batch = graph.probs(x, chunk=128)
    alone = np.concatenate([graph.probs(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_array_equal(batch, alone)
    np.testing.assert_allclose(batch, DecisionGraph(net, "torch").probs(x), atol=1e-6)
    np.testing.assert_allclose(batch.sum(axis=1), 1.0, atol=1e-12)
