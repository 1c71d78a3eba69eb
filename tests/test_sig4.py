"""``models.explain.sig4_array`` (a backtest's precomputed attributions rounded all at once) is
``sig4`` (the text rounding) value for value: ties, near-ties, powers of ten, the exponent's
edges, zeros of either sign, non-finite, subnormal and huge values."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.explain import sig4, sig4_array


def _same(got: np.ndarray, values: list[float]) -> None:
    want = np.array([sig4(v) for v in values])
    assert got.shape == want.shape
    both_nan = np.isnan(got) & np.isnan(want)
    assert np.all((got == want) | both_nan), [(v, g, w) for v, g, w in zip(values, got, want, strict=True)
                                              if not (g == w or (np.isnan(g) and np.isnan(w)))][:5]
    assert np.array_equal(np.signbit(got), np.signbit(want))


def test_edges() -> None:
    ties = [(k + 0.5) * 10.0**e for k in (1000, 1234, 9999) for e in range(-6, 7)]
    near = [float(np.nextafter(t, d)) for t in ties for d in (np.inf, -np.inf)]
    special = [0.0, -0.0, float("nan"), float("inf"), -float("inf"), 5e-324, 1e-320, 1.7e308, -1.7e308,
               1000.5, 10000.5, 999.95, 9.9995, 0.99995, 1e22, 1e23, 1e-22, 1e-23, 0.1, 1234.5, 12345.0]
    powers = [s * 10.0**e for e in range(-30, 31) for s in (1.0, -1.0, 9.9999, 1.00005)]
    values = ties + near + special + powers
    _same(sig4_array(np.array(values)), values)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=64))
def test_any_floats(values: list[float]) -> None:
    _same(sig4_array(np.array(values)), values)


def test_attribution_scores_of_a_batch_keep_their_shape() -> None:
    a = np.random.default_rng(3).standard_normal((50, 3, 7)) * 0.01
    got = sig4_array(a)
    assert got.shape == a.shape
    _same(got.ravel(), a.ravel().tolist())
