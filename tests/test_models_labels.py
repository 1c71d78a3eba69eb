"""Labels: forward-return classes with a fee-covering flat band, class balance."""

from __future__ import annotations

import numpy as np

from models.labels import (
    DOWN,
    FLAT,
    NO_LABEL,
    UP,
    backward_labels,
    class_balance,
    class_weights,
    effective_threshold,
    make_labels,
    multi_forward_returns,
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
