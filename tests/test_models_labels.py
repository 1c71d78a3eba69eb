"""Labels: forward-return classes with a fee-covering or volatility-scaled flat band, class balance."""

from __future__ import annotations

import numpy as np
import pytest

from bot.errors import ModelError
from models.labels import (
    DOWN,
    FLAT,
    NO_LABEL,
    UP,
    Labeling,
    LabelRule,
    backward_labels,
    class_balance,
    class_weights,
    effective_threshold,
    make_labels,
    multi_forward_returns,
    trailing_sigma,
)


def test_threshold_covers_round_trip_fee() -> None:
    assert effective_threshold(0.0, 0.001) == 0.002
    assert effective_threshold(0.005, 0.001) == 0.005


def test_forward_return_classes() -> None:
    close = np.array([100.0, 101.0, 100.9, 99.0, 99.1, 99.15])
    lab = make_labels(close, horizon=1, threshold=0.0, fee_rate=0.001)  # band +/- 0.2%
    assert lab.tolist() == [UP, FLAT, DOWN, FLAT, FLAT, NO_LABEL]
    lab2 = make_labels(close, horizon=2, threshold=0.0, fee_rate=0.0)
    assert lab2.tolist()[:4] == [UP, DOWN, DOWN, UP] and lab2.tolist()[4:] == [NO_LABEL, NO_LABEL]
    back = backward_labels(close, horizon=1, threshold=0.0, fee_rate=0.001)
    assert back.tolist() == [NO_LABEL, UP, FLAT, DOWN, FLAT, FLAT]


def test_balance_and_weights() -> None:
    lab = np.array([0, 1, 1, 1, 2, 2, -1])
    bal = class_balance(lab)
    assert bal["total"] == 6 and bal["counts"] == {"down": 1, "flat": 3, "up": 2}
    w = class_weights(lab)
    assert w[0] > w[2] > w[1] and abs(w.mean() - 1.0) < 1e-12


def test_multi_forward_returns() -> None:
    close = np.exp(np.array([0.0, 0.1, 0.3, 0.6]))
    r = multi_forward_returns(close, 2)
    np.testing.assert_allclose(r[0], [0.1, 0.3])
    np.testing.assert_allclose(r[2, 0], 0.3)
    assert np.isnan(r[2, 1]) and np.all(np.isnan(r[3]))


def test_trailing_sigma_reads_the_window_up_to_t_only() -> None:
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 60)))
    s = trailing_sigma(close, 5)
    assert np.all(np.isnan(s[:5]))
    lr = np.log(close[1:] / close[:-1])
    for t in (5, 17, 59):
        assert s[t] == pytest.approx(lr[t - 5: t].std())  # log returns ending at close t
    changed = close.copy()
    changed[31:] *= rng.uniform(0.5, 2.0, 29)
    np.testing.assert_array_equal(trailing_sigma(changed, 5)[:31], s[:31])


def test_vol_labels_scale_the_band_with_trailing_sigma() -> None:
    rng = np.random.default_rng(4)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    rule = LabelRule(mode="vol", k=0.5, window=24)
    lab = make_labels(close, 4, threshold=0.0, fee_rate=0.001, rule=rule)
    band = 0.5 * trailing_sigma(close, 24) * 2.0  # k x sigma x sqrt(4)
    fwd = close[4:] / close[:-4] - 1
    t = np.arange(24, 396)
    expected = np.where(fwd[t] > band[t], UP, np.where(fwd[t] < -band[t], DOWN, FLAT))
    np.testing.assert_array_equal(lab[t], expected)
    assert np.all(lab[:24] == NO_LABEL) and np.all(lab[-4:] == NO_LABEL)
    # no fee floor: on a quiet walk the fee-covering band says "flat" everywhere, the vol rule does not
    quiet = 100 * np.exp(np.cumsum(rng.normal(0, 0.0002, 400)))
    assert set(make_labels(quiet, 4, 0.0, 0.001)[24:396].tolist()) == {FLAT}
    assert set(make_labels(quiet, 4, 0.0, 0.001, rule)[24:396].tolist()) == {DOWN, FLAT, UP}


def test_labeling_round_trips_through_the_checkpoint_meta() -> None:
    rng = np.random.default_rng(5)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    for rule in (LabelRule(), LabelRule(mode="vol", k=0.8, window=12)):
        lab = Labeling(rule, 0.003, 0.001, 3)
        back = Labeling.from_meta(lab.to_meta(), 3, fee_rate=0.0055)
        np.testing.assert_array_equal(back.labels(close), lab.labels(close))
        np.testing.assert_array_equal(back.backward(close), lab.backward(close))
    assert Labeling.from_meta({}, 3, 0.001).threshold == 0.002  # a checkpoint from before the option
    with pytest.raises(ModelError, match="label rule"):
        Labeling.from_meta({"mode": "vol", "k": "x"}, 3, 0.001)
