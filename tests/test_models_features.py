"""The causal feature pipeline: batch == incremental, no lookahead, normaliser round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bot.errors import ModelError
from bot.feeds.replay import load_candles
from models.features import (
    FEATURE_NAMES,
    FEATURE_WARMUP,
    N_FEATURES,
    FeatureWindow,
    IncrementalFeatures,
    Normalizer,
    compute_features,
    first_window_end,
    make_windows,
)


@pytest.fixture(scope="module")
def btc(data_dir: Path):
    d = load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
    return d.slice(0, 3000)


def test_incremental_equals_batch_on_real_data(btc) -> None:
    batch = compute_features(btc)
    inc = IncrementalFeatures()
    rows = np.array([inc.update(int(btc.time[i]), btc.open[i], btc.high[i], btc.low[i], btc.close[i],
                                btc.volume[i]) for i in range(len(btc))])
    assert batch.shape == (len(btc), N_FEATURES) == rows.shape
    assert np.array_equal(np.isnan(batch), np.isnan(rows))
    assert np.all(np.isnan(batch[:FEATURE_WARMUP]))
    assert np.all(np.isfinite(batch[FEATURE_WARMUP:]))
    np.testing.assert_allclose(rows, batch, rtol=0, atol=1e-9)


def test_features_are_causal(btc) -> None:
    full = compute_features(btc)
    cut = 1500
    part = compute_features(btc.slice(0, cut))
    np.testing.assert_array_equal(np.isnan(part), np.isnan(full[:cut]))
    np.testing.assert_allclose(part, full[:cut], rtol=0, atol=1e-12)


def test_feature_names_fixed() -> None:
    assert len(set(FEATURE_NAMES)) == N_FEATURES
    for name in ("ret_1", "log_ret_1", "volatility_24", "volume_ratio_24", "rsi_14", "macd", "macd_signal",
                 "hl_range", "vwap_dist_24"):
        assert name in FEATURE_NAMES


def test_normalizer_roundtrip_and_window_layouts(btc) -> None:
    feats = compute_features(btc)
    norm = Normalizer.fit(feats[:2000])
    again = Normalizer.from_dict(norm.to_dict())
    np.testing.assert_array_equal(norm.transform(feats[100:110]), again.transform(feats[100:110]))
    z = norm.transform(feats)
    w = 16
    ends = np.arange(first_window_end(w), first_window_end(w) + 5)
    conv = make_windows(z, ends, w, "conv")
    seq = make_windows(z, ends, w, "seq")
    assert conv.shape == (5, N_FEATURES, w) and seq.shape == (5, w, N_FEATURES)
    np.testing.assert_array_equal(conv.transpose(0, 2, 1), seq)
    np.testing.assert_array_equal(conv[-1][:, -1], z[ends[-1]])
    assert np.all(np.isfinite(conv))
    # The incremental window gives the same block as the batch window at every bar.
    fw = FeatureWindow(norm, w, "conv")
    for i in range(ends[-1] + 1):
        out = fw.update(int(btc.time[i]), btc.open[i], btc.high[i], btc.low[i], btc.close[i], btc.volume[i])
        if i < ends[0]:
            assert out is None
        elif i in ends:
            np.testing.assert_array_equal(out, conv[i - ends[0]])


def test_nan_feature_is_one_clear_error(btc) -> None:
    norm = Normalizer.fit(compute_features(btc)[:2000])
    fw = FeatureWindow(norm, 8)
    for i in range(FEATURE_WARMUP + 2):
        fw.update(int(btc.time[i]), btc.open[i], btc.high[i], btc.low[i], btc.close[i], btc.volume[i])
    with pytest.raises(ModelError, match="NaN"):
        fw.update(int(btc.time[80]), float("nan"), float("nan"), float("nan"), float("nan"), 1.0)


def test_normalizer_needs_data() -> None:
    with pytest.raises(ModelError, match="too little data"):
        Normalizer.fit(np.full((5, N_FEATURES), np.nan))
