"""The volatility regime of explanations (models/vol_regime.py): causal, fitted on training bars
only, pinned class shares on a synthetic series, and the readers of old and new journals."""

from __future__ import annotations

import numpy as np

from bot.regime_view import regime_label, regime_text
from models import vol_regime
from models.vol_regime import HIGH, LOW, NORMAL, VolRegime, fit, realised_vol, regime_entry


def _series(sigmas: list[float], block: int, seed: int = 0) -> np.ndarray:
    """Closes whose log returns have volatility sigmas[k] on block k (each ``block`` bars)."""
    rng = np.random.default_rng(seed)
    r = np.concatenate([rng.normal(0.0, s, block) for s in sigmas])
    return 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(r)]))


def test_feature_and_label_at_t_never_see_bars_after_t() -> None:
    close = _series([0.01, 0.03, 0.005, 0.02], 300, seed=1)
    vr = fit(close, 599)
    full_v, full_c = realised_vol(close), vr.codes(close)
    rng = np.random.default_rng(2)
    for t in (24, 25, 300, 599, 600, 900, len(close) - 2):
        changed = close.copy()
        changed[t + 1:] *= np.exp(rng.normal(0, 0.2, changed.size - t - 1))  # rewrite the future
        assert realised_vol(changed)[t] == full_v[t]
        assert vr.codes(changed)[t] == full_c[t]
        assert regime_entry(vr, changed[: t + 1]) == regime_entry(vr, close[: t + 1])
        # the bar-by-bar reading (newest 25 closes) is the batch code of bar t
        assert vr.explain(close[t - 24: t + 1])["label"] == vol_regime.LABELS[full_c[t]]
    assert (full_c[:24] == -1).all() and (full_c[24:] >= 0).all()


def test_edges_come_from_training_bars_only() -> None:
    close = _series([0.01, 0.02, 0.04], 400, seed=3)
    vr = fit(close, 499)
    changed = close.copy()
    changed[500:] = changed[499] * np.exp(np.cumsum(np.full(changed.size - 500, 0.05)))
    assert fit(changed, 499) == vr
    assert vr.fit_bars == 500 - 24


def test_class_shares_on_a_synthetic_series() -> None:
    # Training: calm, normal and wild 600-bar blocks -> each tercile holds a third of its bars.
    close = _series([0.004, 0.012, 0.036] * 2, 600, seed=4)
    fit_end = 1799
    vr = fit(close, fit_end)
    codes = vr.codes(close)
    train = codes[24: fit_end + 1]
    for k in (LOW, NORMAL, HIGH):
        assert abs((train == k).mean() - 1 / 3) < 0.01
    # Held out: the same three blocks again -> each class on about a third (the edges sit between
    # the blocks' vol levels, so only the ~24 bars after each change of block can be off).
    held = codes[fit_end + 1:]
    shares = [(held == k).mean() for k in (LOW, NORMAL, HIGH)]
    assert all(abs(s - 1 / 3) < 0.05 for s in shares), shares
    # Inside each block, past the 24-bar window, one class only: calm -> low, wild -> high.
    for b, k in ((3, LOW), (4, NORMAL), (5, HIGH)):
        inside = codes[b * 600 + 25: (b + 1) * 600]
        assert (inside == k).mean() > 0.9  # 24-return sample vol is noisy (about 14 %)


def test_explanation_entry_shape_and_absence() -> None:
    close = _series([0.01], 200, seed=5)
    vr = fit(close, 150)
    e = regime_entry(vr, close)
    assert set(e["regime"]) == {"label", "basis"}
    third = {"low": "bottom", "normal": "middle", "high": "top"}[e["regime"]["label"]]
    assert e["regime"]["basis"] == f"24-bar realised vol in the {third} third of the training bars"
    assert regime_entry(None, close) == {}  # a checkpoint trained before the label existed
    assert regime_entry(vr, close[:24]) == {}  # fewer than 25 closes: no label
    assert VolRegime.from_dict(vr.to_dict()) == vr and VolRegime.from_dict(None) is None


def test_readers_take_the_new_dict_and_old_strings() -> None:
    new = {"regime": {"label": "high", "basis": "24-bar realised vol in the top third of the training bars"}}
    assert regime_label(new) == "high"
    assert regime_text(new) == "high volatility (24-bar realised vol in the top third of the training bars)"
    assert regime_label({"regime": "mixed"}) == regime_text({"regime": "mixed"}) == "mixed"  # old journals
    assert regime_label({}) is None and regime_text(None) is None
