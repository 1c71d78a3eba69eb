"""Multi-asset training and the per-asset rolling normalisation (issue 13, item 5).

- the rolling z-score of bar t reads bars up to t only (the future mutated, the past unchanged),
  and its bar-by-bar path equals the batch path (backtest == live);
- a pooled training set: windows never span two assets or a gap, one calendar cut for every
  asset, nothing fitted past it;
- provenance: every asset's fitted range and hash; the in-sample and market guards per symbol;
- the CLI: repeatable ``--data`` (file names or ``SYMBOL=FILE``), bad inputs one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bot.candles import CandleData
from bot.errors import ModelError
from bot.feeds.replay import load_candles
from models.checkpoint import read_meta
from models.classifier import prepare_assets
from models.dsc_train import DSCConfig, train_dsc
from models.features import FEATURE_WARMUP, IncrementalFeatures, Normalizer, compute_features
from models.labels import Labeling, LabelRule
from models.normalize import CALENDAR, FeatureNorm, RollingNormalizer
from models.provenance import check_market, data_hash, fitted_of, sample_range
from models.training import TrainConfig
from strategies.base import StrategyContext
from strategies.dsc import DSCParams, DSCStrategy
from tests.helpers import one_line_error
from tests.test_dsc_strategy import TINY, run_bars
from tests.test_training_leak import garbage_after

torch.set_num_threads(1)
HOUR = 3_600_000
NORM_W = 48
ROLLING = {"features": {"norm": "rolling", "norm_window": NORM_W}}
ROLLING_TINY = {**TINY, **ROLLING}
TC = TrainConfig(epochs=1, threads=1)
LABELING = Labeling(LabelRule(), 0.0, 0.001, 2)


def _load(data_dir: Path, symbol: str) -> CandleData:
    return load_candles(data_dir / f"bybit_{symbol}_1h.csv.gz", symbol=symbol, timeframe="1h", bar_ms=HOUR)


def _between(data: CandleData, start_ms: int, stop_ms: int) -> CandleData:
    t = np.asarray(data.time)
    return data.slice(int(np.searchsorted(t, start_ms)), int(np.searchsorted(t, stop_ms)))


def _drop(data: CandleData, lo: int, hi: int) -> CandleData:
    """``data`` without bars [lo, hi): a real gap in the middle."""
    keep = np.r_[0:lo, hi:len(data)]
    return CandleData(data.symbol, data.timeframe, data.time[keep], data.open[keep], data.high[keep],
                      data.low[keep], data.close[keep], data.volume[keep], data.source, data.gaps)


@pytest.fixture(scope="module")
def btc(data_dir: Path) -> CandleData:
    return _load(data_dir, "BTCUSDT")


@pytest.fixture(scope="module")
def pair(data_dir: Path, btc: CandleData) -> tuple[CandleData, CandleData]:
    """BTC and ETH over the same 1,600 hours, ETH starting 200 hours later and with a 30-bar gap."""
    eth = _load(data_dir, "ETHUSDT")
    start = int(eth.time[1000])
    b = _between(btc, start, start + 1600 * HOUR)
    e = _drop(_between(eth, start + 200 * HOUR, start + 1600 * HOUR), 700, 730)
    return b, e


def _rows_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


# -- the rolling normaliser --------------------------------------------------------------------------

def test_rolling_normaliser_at_t_ignores_later_bars(btc: CandleData) -> None:
    data = btc.slice(3000, 4000)
    feats = compute_features(data)
    fitted = Normalizer.fit(feats[FEATURE_WARMUP:600])
    rn = RollingNormalizer(NORM_W, fitted.mean, fitted.std)
    z = rn.transform(feats)
    first = FEATURE_WARMUP + NORM_W - 1  # the first row with NORM_W valid rows behind it
    assert np.isnan(z[:first]).all() and np.isfinite(z[first:]).all()
    # The definition: (x_t - mean of rows t-n+1..t) / their std; calendar columns pass through.
    t, col = 700, 4
    block = feats[t - NORM_W + 1: t + 1, col]
    assert z[t, col] == pytest.approx((feats[t, col] - block.mean()) / block.std(), rel=1e-5)
    assert np.allclose(z[first:, list(CALENDAR)], feats[first:, list(CALENDAR)], atol=1e-6)
    for cut in (first + 1, 600, 999):
        mutated = rn.transform(compute_features(garbage_after(data, cut, seed=cut)))
        assert _rows_equal(z[:cut], mutated[:cut]), f"rolling z-scores before bar {cut} changed with the future"
        assert not _rows_equal(z[cut:], mutated[cut:])  # the mutation did reach the later rows


def test_rolling_bar_by_bar_equals_batch(btc: CandleData) -> None:
    data = btc.slice(3000, 3600)
    feats = compute_features(data)
    rn = RollingNormalizer(NORM_W, np.zeros(feats.shape[1]), np.ones(feats.shape[1]))
    batch = rn.transform(feats)
    inc, step = IncrementalFeatures(), rn.stepper()
    rows = []
    for i in range(len(data)):
        raw = inc.update(int(data.time[i]), data.open[i], data.high[i], data.low[i], data.close[i], data.volume[i])
        z = step(raw) if inc.n > FEATURE_WARMUP else None
        rows.append(np.full(feats.shape[1], np.nan, dtype=np.float32) if z is None else z)
    np.testing.assert_allclose(np.stack(rows), batch, atol=1e-5, equal_nan=True)


def test_rolling_checkpoint_batch_path_equals_bar_by_bar(btc: CandleData, tmp_path: Path) -> None:
    ck = train_dsc(btc.slice(0, 1500), DSCConfig.model_validate(ROLLING_TINY), fee_rate=0.001, long_only=False,
                   symbol="BTCUSDT", timeframe="1h", out=tmp_path / "rolling.pt", progress=False)
    assert read_meta(ck).normalizer["kind"] == "rolling"

    def make() -> DSCStrategy:
        return DSCStrategy(DSCParams.model_validate({**ROLLING_TINY, "backend": "torch"}),
                           StrategyContext("BTCUSDT", "1h", False, 0.001, str(ck)))

    data = btc.slice(1500, 2300)
    slow, fast = run_bars(make(), data, precompute=False), run_bars(make(), data, precompute=True)
    assert make().warmup == FEATURE_WARMUP + 16 + NORM_W - 1
    assert slow.keys() == fast.keys() and len(slow) == len(data) - make().warmup + 1
    for t, a in slow.items():
        assert a.target == fast[t].target and a.confidence == pytest.approx(fast[t].confidence, abs=1e-5)


# -- the pooled training set -------------------------------------------------------------------------

def test_windows_never_span_two_assets_or_a_gap(pair: tuple[CandleData, CandleData]) -> None:
    b, e = pair
    window = 16
    prep = prepare_assets([("BTCUSDT", b), ("ETHUSDT", e)], LABELING, window, TC, "1h", "dsc",
                          FeatureNorm(norm="rolling", norm_window=NORM_W))
    pool = prep.pool
    need = FEATURE_WARMUP + NORM_W - 1 + window  # bars a sample's window reads, its warm-ups included
    who = pool.asset_of(np.arange(prep.ends.size))
    assert set(who.tolist()) == {0, 1}
    for i, part in enumerate(pool.parts):
        local = prep.ends[who == i] - part.offset
        t = np.asarray(part.data.time, dtype=np.int64)
        assert local.min() >= need - 1 and local.max() + LABELING.horizon < part.n
        # every bar a window (and its label) reads is in one contiguous run of this asset
        assert np.all(t[local + LABELING.horizon] - t[local - need + 1] == (need - 1 + LABELING.horizon) * HOUR)
    # The pooled windows of ETH are exactly ETH's own, normalised over ETH's rows only.
    x = prep.windows(window, "conv")
    eth_part = pool.parts[1]
    own = prep.normalizer.transform(compute_features(e))
    k = np.flatnonzero(who == 1)[::97]
    for j in k:
        end = int(prep.ends[j]) - eth_part.offset
        np.testing.assert_array_equal(x[j], own[end - window + 1: end + 1].T)
    # One calendar cut for every asset, with the embargo in calendar bars.
    times = pool.time[prep.ends]
    tr, va, te = (times[p] for p in (prep.split.train, prep.split.val, prep.split.test))
    embargo = (window + LABELING.horizon) * HOUR
    assert tr.max() + embargo <= va.min() and va.max() + embargo <= te.min()
    counts = prep.label_meta()["split_by_asset"]
    assert all(counts[s][p] > 0 for s in ("BTCUSDT", "ETHUSDT") for p in ("train", "val", "test"))
    assert prep.gap_excluded > 0  # ETH's gap cost windows


def test_pooled_training_fits_nothing_past_the_cut(pair: tuple[CandleData, CandleData]) -> None:
    b, e = pair
    norm = FeatureNorm(norm="rolling", norm_window=NORM_W)
    a = prepare_assets([("BTCUSDT", b), ("ETHUSDT", e)], LABELING, 16, TC, "1h", "dsc", norm)
    fb, fe = (p.fit_end for p in a.pool.parts)
    assert b.time[fb] == e.time[fe]  # the same calendar bar ends both fitted ranges
    mb = prepare_assets([("BTCUSDT", garbage_after(b, fb + 1)), ("ETHUSDT", garbage_after(e, fe + 1, seed=1))],
                        LABELING, 16, TC, "1h", "dsc", norm)
    assert np.array_equal(a.normalizer.mean, mb.normalizer.mean) and np.array_equal(a.normalizer.std, mb.normalizer.std)
    assert a.vol_baseline == mb.vol_baseline
    fit_pos = np.concatenate([a.train_pos, a.split.val])
    assert np.array_equal(a.ends[fit_pos], mb.ends[fit_pos]) and np.array_equal(a.y[fit_pos], mb.y[fit_pos])
    np.testing.assert_array_equal(a.windows(16, "conv")[fit_pos], mb.windows(16, "conv")[fit_pos])


# -- provenance and guards ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pooled_ckpt(pair: tuple[CandleData, CandleData], tmp_path_factory: pytest.TempPathFactory) -> Path:
    b, e = pair
    return train_dsc(b, DSCConfig.model_validate(ROLLING_TINY), fee_rate=0.001, long_only=False, symbol="BTCUSDT",
                     timeframe="1h", out=tmp_path_factory.mktemp("pooled") / "pooled.pt", progress=False,
                     more=[("ETHUSDT", e)])


def test_checkpoint_records_every_asset_and_guards_each(pooled_ckpt: Path, pair: tuple[CandleData, CandleData]
                                                        ) -> None:
    meta = read_meta(pooled_ckpt)
    assets = {a["symbol"]: a for a in meta.fitted["assets"]}
    assert list(assets) == ["BTCUSDT", "ETHUSDT"] and meta.fitted["symbol"] == "BTCUSDT"
    f = fitted_of(meta)
    for data in pair:
        a = assets[data.symbol]
        k = int(np.searchsorted(data.time, a["end"]))
        assert a["start"] == int(data.time[0]) and a["bars"] == k + 1
        assert a["data_hash"] == data_hash(data, k + 1)
        assert check_market(f, data.symbol, "1h", allow=False) is None
        s = sample_range(f, data.symbol, "1h", data.time)
        assert s.first == k + 1 and s.in_sample is None  # its own fitted range is in-sample
        allowed = sample_range(f, data.symbol, "1h", data.time, allow_in_sample=True)
        assert allowed.in_sample is not None and allowed.in_sample["bars"] == k + 1
    assert assets["BTCUSDT"]["end"] == assets["ETHUSDT"]["end"]
    with pytest.raises(ModelError, match="fitted on BTCUSDT\\+ETHUSDT 1h, the market is SOLUSDT"):
        check_market(f, "SOLUSDT", "1h", allow=False)


# -- the CLI -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(pair: tuple[CandleData, CandleData], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("multi_cli")
    out = {"dir": d}
    for data in pair:
        cols = {"timestamp": data.time, "open": data.open, "high": data.high, "low": data.low,
                "close": data.close, "volume": data.volume}
        path = d / f"bybit_{data.symbol}_1h.csv"
        pd.DataFrame(cols).to_csv(path, index=False)
        out[data.symbol] = path
        plain = d / f"{data.symbol[:3].lower()}.csv"
        pd.DataFrame(cols).to_csv(plain, index=False)
        out[f"plain_{data.symbol}"] = plain
    return out


def test_train_two_assets_then_evaluate_either(bot_cli, files: dict[str, Path]) -> None:
    sets = ["--set", "strategy.params=" + json.dumps(ROLLING_TINY)]
    r = bot_cli("train", "--strategy", "dsc", "--data", str(files["BTCUSDT"]), "--data", str(files["ETHUSDT"]),
                "--json", *sets, cwd=files["dir"])
    assert r.returncode == 0, r.stderr
    card = json.loads(r.stdout)
    ck = files["dir"] / "checkpoints" / "dsc_BTCUSDT+ETHUSDT_1h.pt"
    assert card["checkpoint"] == str(Path("checkpoints") / ck.name) and ck.exists()
    assert [a["symbol"] for a in card["fitted"]["assets"]] == ["BTCUSDT", "ETHUSDT"]
    assert set(card["metrics"]["assets"]) == {"BTCUSDT", "ETHUSDT"}
    assert card["metrics"]["test"] == card["metrics"]["assets"]["BTCUSDT"]["test"]
    # SYMBOL=FILE names the market of a file whose name does not
    r2 = bot_cli("train", "--strategy", "dsc", "--data", f"btcusdt={files['plain_BTCUSDT']}",
                 "--data", f"ETHUSDT={files['plain_ETHUSDT']}", "--out", str(files["dir"] / "named.pt"), "--json",
                 *sets, cwd=files["dir"])
    assert r2.returncode == 0, r2.stderr
    assert [a["symbol"] for a in json.loads(r2.stdout)["fitted"]["assets"]] == ["BTCUSDT", "ETHUSDT"]
    eth_end = card["fitted"]["assets"][1]["end"]
    for item in (f"ETHUSDT={files['ETHUSDT']}", f"ETHUSDT={files['plain_ETHUSDT']}"):
        r = bot_cli("evaluate", "--checkpoint", str(ck), "--data", item, "--json", cwd=files["dir"])
        assert r.returncode == 0, r.stderr
        ev = json.loads(r.stdout)
        assert ev["sample"] == "out-of-sample" and ev["metrics"]["evaluated"]["from"] > eth_end
        assert "fitted on ETHUSDT 1h" in ev["notes"][0]
        assert 0 <= ev["metrics"]["evaluated"]["skill"]["directional_auc"] <= 1
    r = bot_cli("evaluate", "--checkpoint", str(ck), "--data", f"ETHUSDT={files['ETHUSDT']}", "--json",
                "--allow-in-sample", cwd=files["dir"])
    assert r.returncode == 0 and json.loads(r.stdout)["sample"] == "in-sample"
    r = bot_cli("evaluate", "--checkpoint", str(ck), "--data", f"SOLUSDT={files['ETHUSDT']}", cwd=files["dir"])
    one_line_error(r, "fitted on BTCUSDT+ETHUSDT 1h, the market is SOLUSDT 1h")


@pytest.mark.parametrize("data, match", [
    (["plain_BTCUSDT", "plain_ETHUSDT"], "names no symbol"),
    (["BTCUSDT", "BTCUSDT=plain_BTCUSDT"], "symbol BTCUSDT is given twice"),
    (["BTCUSDT", "=plain_ETHUSDT"], "expected FILE or SYMBOL=FILE"),
    (["BTCUSDT", "BTC/USDT=plain_ETHUSDT"], "expected FILE or SYMBOL=FILE"),
    (["BTCUSDT", "ETHUSDT=missing.csv"], "missing.csv"),
])
def test_bad_data_items_are_one_line(bot_cli, files: dict[str, Path], data: list[str], match: str) -> None:
    args: list[str] = []
    for item in data:
        sym, sep, key = item.rpartition("=")
        path = files.get(key, files["dir"] / key)
        args += ["--data", f"{sym}={path}" if sep else str(path)]
    r = bot_cli("train", "--strategy", "dsc", *args, "--set", "strategy.params=" + json.dumps(ROLLING_TINY),
                cwd=files["dir"])
    one_line_error(r, match)


def test_single_market_strategies_refuse_several_files(bot_cli, files: dict[str, Path]) -> None:
    r = bot_cli("train", "--strategy", "gru_sizer", "--data", str(files["BTCUSDT"]), "--data",
                str(files["ETHUSDT"]), cwd=files["dir"])
    one_line_error(r, "strategy 'gru_sizer' trains on one market: pass one --data (several: dsc, rollout)")
    r = bot_cli("train", "--strategy", "dsc", "--data", str(files["BTCUSDT"]), "--data",
                f"XBTUSDT={files['plain_BTCUSDT']}",  # no gap, so no gap warning before the error
                "--set", "strategy.params.train.walk_forward_folds=2", cwd=files["dir"])
    one_line_error(r, "walk_forward_folds: not available with several --data files")
    r = bot_cli("train", "--strategy", "dsc", "--data", str(files["BTCUSDT"]),
                "--set", "strategy.params.features.norm=zscore", cwd=files["dir"])
    one_line_error(r, "strategy.params.features.norm")
