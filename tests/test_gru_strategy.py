"""gru_sizer strategy: checkpoint family, batch == bar-by-bar, exact restarts, explanations."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bot import app as core
from bot.bars import Bars
from bot.candles import CandleData
from bot.config import Config
from bot.domain import timeframe_ms
from bot.errors import ConfigError, ModelError
from bot.feeds.replay import load_candles
from models.checkpoint import card_path, load_checkpoint, save_checkpoint
from models.gru_config import parse_config
from models.gru_explain import METHODS
from models.gru_training import load_family, train, train_family
from models.training import TrainRequest, state_fingerprint
from storage import queries
from storage.db import open_database
from strategies.base import StrategyContext
from strategies.gru_sizer import GRUSizerParams, GRUSizerStrategy
from tests.helpers import drive
from tests.test_gap_guards import drop_bars, oracle_ok

torch.set_num_threads(1)
PARAMS: dict[str, Any] = {
    "window": 16, "horizon": 3, "regime_window": 24,
    "encoder": {"d_model": 16, "n_layers": 1, "n_heads": 2, "kv_lora_rank": 4, "qk_nope_dim": 4,
                "qk_rope_dim": 4, "v_head_dim": 4, "ffn_hidden": 16, "feature_dim": 6},
    "sizer": {"hidden": 8, "steps": 6},
    "train": {"epochs": 1, "batch_size": 128},
    "train2": {"epochs": 2, "batch_size": 32, "accum_steps": 2, "amp": True},
}
N_BARS = 1300


@pytest.fixture(scope="module")
def data(data_dir: Path) -> CandleData:
    d = load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h",
                     bar_ms=timeframe_ms("1h"))
    return d.slice(len(d) - N_BARS, len(d))


def _req(data: CandleData, out: Path, params: dict[str, Any] = PARAMS) -> TrainRequest:
    return TrainRequest(data=data, params=params, symbol="BTCUSDT", timeframe="1h", fee_rate=0.001,
                        long_only=False, out=out, progress=False)


@pytest.fixture(scope="module")
def checkpoint(data: CandleData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gru") / "gru_sizer.pt"
    return train(_req(data.slice(0, 1000), out))


def _ctx(ck: Path | None) -> StrategyContext:
    return StrategyContext("BTCUSDT", "1h", long_only=False, fee_rate=0.001, checkpoint=str(ck) if ck else None)


def _drive(strategy: GRUSizerStrategy, data: CandleData, precompute: bool) -> list[Any]:
    return [d for _, d in drive(strategy, data, precompute)]


def test_checkpoint_family_holds_both_stages_with_card(checkpoint: Path) -> None:
    ck = load_checkpoint(checkpoint, kind="gru_sizer")
    assert ck.meta.modules == ["stage1", "stage2"]
    card = json.loads(card_path(checkpoint).read_text())
    m = card["metrics"]
    assert {"price_head_test", "sizer_test", "buy_and_hold_test", "half_exposure_test", "volatility_only_test",
            "sizer_skill_test"} <= set(m)
    assert m["price_head_test"]["mae_random_walk"] > 0
    assert 0 <= m["price_head_test"]["directional_auc"] <= 1 and "AUC" in m["price_head_test"]["verdict"][0]
    skill = m["sizer_skill_test"]  # rank correlation of the position with the next-bar return, vs baselines
    assert {"spearman", "sharpe_minus_buy_and_hold_ci", "sharpe_minus_volatility_only_ci"} <= set(skill)
    assert len(skill["verdict"]) == 3 and "volatility-only sizer" in skill["verdict"][2]
    assert ck.meta.labels["vol_baseline"]["sigma_ref"] == m["volatility_only_test"]["sigma_ref"] > 0
    assert sum(m["sizer_test"]["level_hist"]) > 0
    s2 = ck.meta.extra["stage2"]
    assert s2["amp_used"] is False  # AMP asked for, but there is no GPU here
    assert 1 <= s2["epochs_run"] <= 2 and ck.meta.train_config["stage2"]["accum_steps"] == 2


def test_stage2_retrain_keeps_stage1_weights(checkpoint: Path, data: CandleData, tmp_path: Path) -> None:
    out = tmp_path / "copy.pt"
    shutil.copy(checkpoint, out)
    params = {**PARAMS, "stage": 2, "train2": {**PARAMS["train2"], "seed": 11}}
    train(_req(data.slice(0, 1000), out, params))
    old, new = load_checkpoint(checkpoint), load_checkpoint(out)
    for k, v in old.states["stage1"].items():
        assert torch.equal(v, new.states["stage1"][k])
    assert any(not torch.equal(v, new.states["stage2"][k]) for k, v in old.states["stage2"].items())
    assert new.meta.extra["stage1"]["reused_from"] == str(out)
    # Fitted: the sizer's fit (validation + 1 bar) widened to the reused encoder's (validation + horizon).
    assert new.meta.fitted["end"] == old.meta.fitted["end"] > new.meta.train_range["val_bars"][1]
    assert new.meta.fitted["start"] == old.meta.fitted["start"] and new.meta.fitted["bars"] is None
    assert new.meta.fitted["base"]["end"] == old.meta.fitted["end"]


def test_stage1_only_checkpoint_is_refused_clearly(data: CandleData, tmp_path: Path) -> None:
    out = tmp_path / "s1.pt"
    train(_req(data.slice(0, 1000), out, {**PARAMS, "stage": 1}))
    with pytest.raises(ModelError, match="stage 1 only"):
        GRUSizerStrategy.from_config(PARAMS, _ctx(out))


def test_training_leaves_the_frozen_encoder_untouched(data: CandleData, tmp_path: Path) -> None:
    """Stage 2 on top of a given encoder: not one stage-1 weight moves, no gradient is kept."""
    cfg = parse_config(PARAMS)
    enc, _, prep, _ = train_family(data.slice(0, 1000), cfg.model_copy(update={"stage": 1}),
                                   _req(data, tmp_path / "x.pt"))
    before = state_fingerprint(enc)
    from models.gru_training import train_stage2

    train_stage2(enc, prep, cfg, 0.001)
    assert state_fingerprint(enc) == before
    assert all(p.grad is None and not p.requires_grad for p in enc.parameters())


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_batch_path_equals_bar_by_bar(checkpoint: Path, data: CandleData, backend: str) -> None:
    params = {**PARAMS, "backend": backend}
    batch = _drive(GRUSizerStrategy.from_config(params, _ctx(checkpoint)), data, precompute=True)
    single = _drive(GRUSizerStrategy.from_config(params, _ctx(checkpoint)), data, precompute=False)
    assert len(batch) == len(single) == N_BARS
    n = 0
    for a, b in zip(batch, single, strict=True):
        assert (a is None) == (b is None)
        if a is None:
            continue
        n += 1
        assert a.target == b.target
        ea, eb = a.explanation, b.explanation
        assert ea["level"] == eb["level"] and ea["regime"] == eb["regime"]
        np.testing.assert_allclose(ea["level_probs"], eb["level_probs"], atol=1e-9)
        np.testing.assert_allclose(ea["predicted_closes"], eb["predicted_closes"], rtol=1e-9)
        aa, ab = ea["attribution"], eb["attribution"]
        assert ea["rule"] == eb["rule"] and set(aa) == set(ab) and aa["method"] == ab["method"]
        np.testing.assert_allclose(aa["steps"], ab["steps"], rtol=2e-3, atol=1e-12)  # both rounded to 4 digits
        np.testing.assert_allclose(list(aa["features"].values()), list(ab["features"].values()), rtol=2e-3,
                                   atol=1e-12)
    assert n == N_BARS - (64 + 16 - 1)  # every bar after feature warm-up + one window decides
    assert len({d.explanation["level"] for d in single if d is not None}) >= 1


def test_onnx_stage1_equals_torch(checkpoint: Path, data: CandleData) -> None:
    """The default stage 1 (ONNX Runtime body in float32, float64 heads) equals the float64 torch
    encoder: the same levels on real bars, the predicted path within float32 rounding, and the
    attribution to its 4 stored digits (float64 torch on both); its export is kept beside the checkpoint."""
    part = data.slice(0, 700)
    a = _drive(GRUSizerStrategy.from_config({**PARAMS, "backend": "torch"}, _ctx(checkpoint)), part, precompute=False)
    b = _drive(GRUSizerStrategy.from_config(PARAMS, _ctx(checkpoint)), part, precompute=False)
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None]
    assert len(pairs) > 600 and all(y is not None for _, y in pairs)
    worst = 0.0
    for x, y in pairs:
        assert x.explanation["level"] == y.explanation["level"] and x.target == y.target
        np.testing.assert_allclose(x.explanation["level_probs"], y.explanation["level_probs"], atol=1e-5)
        worst = max(worst, float(np.max(np.abs(np.subtract(x.explanation["predicted_path"],
                                                           y.explanation["predicted_path"])))))
        aa, ab = x.explanation["attribution"], y.explanation["attribution"]  # from GRU states 1e-7 apart
        np.testing.assert_allclose(aa["steps"], ab["steps"], rtol=2e-3, atol=1e-6)
        np.testing.assert_allclose(list(aa["features"].values()), list(ab["features"].values()), rtol=2e-3, atol=1e-6)
    assert 0 < worst < 1e-5  # float32 rounding, not the same numbers by accident
    assert checkpoint.with_name(checkpoint.stem + ".encoder.onnx").exists()
    with pytest.raises(ConfigError, match="backend"):
        GRUSizerStrategy.from_config({**PARAMS, "backend": "tvm"}, _ctx(checkpoint))


def test_explanation_follows_the_contract(checkpoint: Path, data: CandleData) -> None:
    s = GRUSizerStrategy.from_config({**PARAMS, "max_exposure": 0.5}, _ctx(checkpoint))
    d = [x for x in _drive(s, data.slice(0, 300), precompute=False) if x is not None][-1]
    e = d.explanation
    json.dumps(e, allow_nan=False)
    assert e["kind"] == "gru_sizer" and 0 <= e["level"] <= 10
    assert len(e["level_probs"]) == 11 and sum(e["level_probs"]) == pytest.approx(1.0)
    assert len(e["predicted_path"]) == len(e["predicted_closes"]) == 3
    assert e["regime"]["label"] in ("low", "normal", "high")  # volatility regime (models/vol_regime.py)
    assert e["regime"]["basis"].endswith("of the training bars")
    assert d.target == pytest.approx(e["level"] / 10 * 0.5)
    assert d.confidence == pytest.approx(max(e["level_probs"]))
    assert d.model_id == load_checkpoint(checkpoint).meta.model_id


@pytest.mark.parametrize("batch", [False, True])
def test_restart_decides_exactly_as_an_uninterrupted_run(checkpoint: Path, data: CandleData,
                                                         sqlite_url: str, batch: bool) -> None:
    params = {**PARAMS, "batch_precompute": batch}
    cfg = Config.model_validate({"strategy": {"name": "gru_sizer", "params": params},
                                 "storage": {"url": sqlite_url}})
    db = open_database(sqlite_url)
    ctx = _ctx(checkpoint)
    part = data.slice(600, N_BARS)  # starts mid-history: features and state build from bar 0 of it
    history, k = 100, 137            # stop on a bar that is not a GRU reset bar
    full = core.backtest(cfg, part, GRUSizerStrategy.from_config(params, ctx), db, show_progress=False,
                        history=history)
    first = core.backtest(cfg, part, GRUSizerStrategy.from_config(params, ctx), db, show_progress=False,
                         history=history, stop_after=k)
    resumed = core.backtest(cfg, part, GRUSizerStrategy.from_config(params, ctx), db, show_progress=False,
                           history=history + k)

    def rows(run: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(r["bar_time"], r["target"], (r["explanation"] or {}).get("level"),
                 tuple((r["explanation"] or {}).get("level_probs") or ()))
                for r in queries.decisions(db, run["run_id"])]

    whole, parts = rows(full), rows(first) + rows(resumed)
    assert len(whole) > 400 and [r[:3] for r in parts] == [r[:3] for r in whole]
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_allclose(a[3], b[3], atol=1e-12)


def test_for_backtest_trains_on_the_past_and_trades_the_unseen_part(data: CandleData, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no checkpoints/ here
    cfg = Config.model_validate({"strategy": {"name": "gru_sizer", "params": PARAMS}})
    md, notes = core.backtest_market(cfg, data.slice(0, 1000))
    strat, first = md.strategy, md.history
    assert 700 < first < 1000 and notes[0].startswith("trained checkpoints/backtest/gru_sizer_BTCUSDT_1h_")
    assert "out of sample" in notes[-1]
    assert strat.fitted.end == int(data.time[first - 1])  # trading starts right after the fitted range
    assert isinstance(strat, GRUSizerStrategy) and strat.model_id.startswith("gru_sizer-")
    # Kept apart from `bot train`'s checkpoint, and reused by the identical backtest.
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["backtest"]
    again, notes2 = core.backtest_market(cfg, data.slice(0, 1000))
    assert notes2[0].startswith("reusing checkpoints/backtest/gru_sizer_BTCUSDT_1h_")
    assert again.strategy.model_id == strat.model_id and again.history == first


def test_checkpoint_save_load_roundtrip_refuses_foreign_kind(checkpoint: Path, tmp_path: Path) -> None:
    ck = load_checkpoint(checkpoint)
    ck.meta.kind = "dsc"
    other = tmp_path / "other.pt"
    mods = {name: torch.nn.Linear(1, 1) for name in ck.states}
    save_checkpoint(other, mods, ck.meta)
    with pytest.raises(ModelError, match="not 'gru_sizer'"):
        GRUSizerStrategy.from_config(PARAMS, _ctx(other))


def test_journaled_decision_has_the_contract_shape(checkpoint: Path, data: CandleData, sqlite_url: str) -> None:
    params = {**PARAMS, "max_exposure": 0.5}
    cfg = Config.model_validate({"strategy": {"name": "gru_sizer", "params": params},
                                 "storage": {"url": sqlite_url}})
    db = open_database(sqlite_url)
    run = core.backtest(cfg, data.slice(0, 300), GRUSizerStrategy.from_config(params, _ctx(checkpoint)), db,
                        show_progress=False)
    rows = [r for r in queries.decisions(db, run["run_id"]) if r["explanation"]]
    assert len(rows) > 100
    meta = load_checkpoint(checkpoint).meta
    chosen = meta.extra["explanation"]
    assert chosen["method"] in METHODS and sorted(chosen["ranking"]) == sorted(METHODS)
    assert card_path(checkpoint).exists() and f"deletion_val: {chosen['method']}" in meta.metrics
    for r in rows:
        e = r["explanation"]
        a = e["attribution"]
        assert set(a) == {"method", "toward", "target", "steps", "bar_ms", "features", "faithfulness"}
        assert a["method"] == chosen["method"] and a["target"] == "expected level" and a["bar_ms"] == 3_600_000
        assert a["toward"] == ("larger position" if a["method"] == "signed_grad_x_input" else None)
        assert len(a["steps"]) == PARAMS["window"] and list(a["features"]) == meta.feature_names
        # Stored quantised (storage/explain_codec.py, tested there): finite floats come back.
        assert all(isinstance(v, float) and math.isfinite(v) for v in a["steps"])
        f = a["faithfulness"]
        assert set(f) == {"k", "windows", "older_top_k_drop", "older_random_k_drop", "newest_drop", "rank"}
        assert f["rank"] == 1 and f["windows"] > 0
        level = e["level"]
        assert e["rule"] == {"level": level, "max_exposure": 0.5,
                             "text": f"level {level} of 10 -> {level * 5:.3g} % of equity"}
    assert any(abs(v) > 0 for r in rows for v in r["explanation"]["attribution"]["steps"])


def test_explain_with_any_method_and_old_checkpoints(checkpoint: Path, data: CandleData) -> None:
    enc, siz, norm, scale, meta = load_family(checkpoint)
    meta.extra.pop("explanation")  # a checkpoint written before the deletion test
    s = GRUSizerStrategy(GRUSizerParams.model_validate(PARAMS), _ctx(checkpoint), (enc, siz, norm, scale, meta))
    decisions = _drive(s, data.slice(0, 260), precompute=False)
    last = decisions[-1].explanation["attribution"]
    assert last["method"] == "signed_grad_x_input" and last["faithfulness"] is None
    bars = Bars.preloaded("BTCUSDT", "1h", *(getattr(data.slice(0, 260), k)
                                             for k in ("time", "open", "high", "low", "close", "volume")))
    while bars.advance():
        pass
    again = s.explain_with(bars, "signed_grad_x_input")
    assert again == last  # rebuilt from the bars: the same attribution as the run's own decision
    unsigned = s.explain_with(bars, "abs_grad_x_input")
    assert unsigned["toward"] is None and all(v >= 0 for v in unsigned["steps"])
    np.testing.assert_allclose(unsigned["steps"], np.abs(unsigned["steps"]))
    with pytest.raises(ModelError, match="unknown attribution method"):
        s.explain_with(bars, "rollout")


def test_evaluate_reports_the_sizer_skill_and_its_baselines(checkpoint: Path, data: CandleData) -> None:
    from models.gru_training import evaluate
    from models.training import EvalRequest

    out = evaluate(EvalRequest(checkpoint=checkpoint, data=data, symbol="BTCUSDT", timeframe="1h", fee_rate=0.001,
                               long_only=False))
    m = out["metrics"]
    assert {"sizer", "buy_and_hold", "half_exposure", "volatility_only", "sizer_skill"} <= set(m)
    pos_spread = m["sizer"]["level_hist"]
    skill = m["sizer_skill"]
    if sum(1 for c in pos_spread if c) > 1:  # more than one level held: the rank correlation is defined
        lo, hi = skill["spearman_ci"]
        assert lo <= skill["spearman"] <= hi
    else:
        assert skill["spearman"] is None and "holds one level" in skill["verdict"][0]
    assert m["volatility_only"]["mean_exposure"] <= 1.0
    assert m["price_head"]["directional_windows"] > 0


def test_evaluate_scores_the_sizer_skill_on_bars_whose_window_and_next_bar_span_no_gap(
        checkpoint: Path, data: CandleData) -> None:
    from models.features import first_window_end
    from models.gru_training import evaluate
    from models.training import EvalRequest

    gapped = drop_bars(data, 1100, 1105)  # 5 bars missing after bar 1099
    # the checkpoint's own training file: every bar scored (its fitted bars allowed and labelled)
    out = evaluate(EvalRequest(checkpoint=checkpoint, data=gapped, symbol="BTCUSDT", timeframe="1h",
                               fee_rate=0.001, long_only=False, allow_in_sample=True))
    assert out["sample"] == "in-sample"
    w = PARAMS["window"]
    bars = np.arange(first_window_end(w), len(gapped) - 1)
    ok = oracle_ok(gapped.time, bars, w, 1)
    m = out["metrics"]
    assert m["sizer_skill"]["bars"] == int(ok.sum()) == bars.size - (first_window_end(w) + 1)
    assert sum(m["sizer"]["level_hist"]) == bars.size  # the backtest still runs over every bar, flat there
    assert any("windows left out: their window or label spans a gap" in n for n in out["notes"])


def test_stage2_learns_on_bars_the_encoder_was_not_fitted_on(checkpoint: Path, data: CandleData) -> None:
    """Issue 13: stage 1 fits the head of the training part; the sizer trains on the rest, whose
    next-bar returns no stage-1 target has read (the last stage-1 window's horizon ends before)."""
    cfg = parse_config(PARAMS)
    from models.gru_data import prepare

    prep = prepare(data.slice(0, 1000), cfg, timeframe_ms("1h"))
    s1_last = int(prep.ends[prep.stage1_train[-1]])
    lo, hi = prep.bars("stage2")
    assert s1_last + cfg.horizon < lo and hi == prep.bars("train")[1]
    assert 0.2 < (hi - lo) / (hi - prep.bars("train")[0]) < 0.35  # about stage2_share of the part
    assert prep.stage1_train.size < prep.split.train.size
    tr = load_checkpoint(checkpoint).meta.train_range
    assert tr["stage2_bars"] == [int(prep.time[lo]), int(prep.time[hi])]
    both = prepare(data.slice(0, 1000), parse_config({**PARAMS, "stage2_share": 0}), timeframe_ms("1h"))
    assert both.bars("stage2") == both.bars("train") and both.stage1_train.size == both.split.train.size


def test_the_held_position_carries_across_gru_restarts(checkpoint: Path, data: CandleData) -> None:
    """At every clock-aligned restart the hidden state is zero and the previous position fed to
    the step is the level the sizer held on the bar before (it trades from there)."""
    from models.features import compute_features
    from models.gru_data import encode_bars
    from models.gru_explain import states_before
    from models.sizer import RESTART, restarts

    encoder, sizer, norm, _scale, _meta = load_family(checkpoint)
    part = data.slice(0, 700)
    bars = np.arange(64 + 16, len(part))
    feats, _ = encode_bars(encoder, norm.transform(compute_features(part)), bars)
    hs, ps = states_before(sizer, feats, part.time[bars], timeframe_ms("1h"))
    levels = np.round(np.concatenate((ps[1:], [0.0])) * 10)  # the level each step chose
    codes = restarts(part.time[bars], timeframe_ms("1h"), sizer.cfg.steps, np.ones(bars.shape[0], dtype=bool))
    at = np.flatnonzero(codes == RESTART)
    assert at.size > 50
    assert np.all(np.abs(hs[at]).sum(axis=1) == 0.0)
    np.testing.assert_array_equal(np.round(ps[at] * 10), levels[at - 1])  # float32 tenths
    assert np.any(ps[at] > 0)  # positions were held into restarts, not reset to flat


def test_onnx_stage1_gives_a_window_the_same_bits_alone_as_in_a_batch(tmp_path: Path) -> None:
    """The encoder's body on ONNX Runtime and its pooling and heads in NumPy: bit for bit the same
    for a window alone and inside a batch, and within float32 of the float64 torch encoder."""
    from models.encoder_runtime import EncoderRuntime
    from models.price_encoder import EncoderConfig, PriceEncoder

    torch.manual_seed(2)
    enc = PriceEncoder(EncoderConfig(n_features=15, window=32, d_model=16, n_layers=2, n_heads=2, kv_lora_rank=4,
                                     qk_nope_dim=4, qk_rope_dim=4, v_head_dim=4, ffn_hidden=16, feature_dim=6,
                                     horizon=3, dropout=0.0)).eval()
    rt = EncoderRuntime(enc, "onnx", tmp_path / "m.encoder.onnx", "test")
    x = np.random.default_rng(4).standard_normal((200, 32, 15)).astype(np.float32)
    feats, paths = rt.encode(x, chunk=64)
    alone = [rt.encode(x[i:i + 1]) for i in range(len(x))]
    np.testing.assert_array_equal(feats, np.concatenate([f for f, _ in alone]))
    np.testing.assert_array_equal(paths, np.concatenate([p for _, p in alone]))
    want_f, want_p = EncoderRuntime(enc, "torch").encode(x)
    np.testing.assert_allclose(feats, want_f, atol=1e-5)
    np.testing.assert_allclose(paths, want_p, atol=1e-5)
