"""Skill metrics: rank AUC and Spearman against hand counts, the block bootstrap, the
volatility-only baselines, and the sentences that say when a model does not beat them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from models.card import metrics_table, verdict_lines
from models.labels import DOWN, FLAT, UP, trailing_sigma
from models.skill import (
    Ranks,
    VolBaseline,
    auc,
    block_bootstrap,
    classifier_skill,
    fit_sigma_ref,
    inverse_vol_exposure,
    sizer_skill,
    spearman,
)


def test_auc_counts_pairs_and_half_counts_ties() -> None:
    score = np.array([0.1, 0.4, 0.4, 0.8, 0.2, 0.4, 0.9])
    pos = np.array([False, True, False, True, False, True, False])
    pairs = [(a > b) + 0.5 * (a == b) for a, b in itertools.product(score[pos], score[~pos])]
    assert auc(score, pos) == pytest.approx(np.mean(pairs))
    assert auc(score, np.ones(7, dtype=bool)) is None  # no negatives: undefined


def test_spearman_is_pearson_of_average_ranks() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    b = np.array([5.0, 6.0, 7.0, 8.0, 7.0])  # ranks 1, 2, 3.5, 5, 3.5
    rb = np.array([1, 2, 3.5, 5, 3.5])
    ra = np.arange(1, 6.0)
    expected = np.corrcoef(ra, rb)[0, 1]
    assert spearman(a, b) == pytest.approx(expected)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.ones(5)) is None


def test_ranks_of_a_resample_equal_ranks_of_the_materialised_values() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 20, 200).astype(float)  # many ties
    idx = rng.integers(0, 200, 200)
    sub = x[idx]
    order = np.argsort(sub, kind="stable")
    naive = np.empty(200)
    for v in np.unique(sub):  # average of the 1-based positions each value occupies
        where = np.flatnonzero(sub[order] == v)
        naive[order[where]] = where.mean() + 1
    np.testing.assert_allclose(Ranks(x).of(idx), naive)


def test_block_bootstrap_is_reproducible_and_covers_the_estimate() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0.3, 1.0, 500)
    stats = {"mean": lambda i: float(x[i].mean())}
    a = block_bootstrap(stats, 500, block=20)
    assert a == block_bootstrap(stats, 500, block=20)
    lo, hi = a["mean"]
    assert lo < x.mean() < hi and hi - lo < 0.4
    assert block_bootstrap({"none": lambda i: None}, 500, 20)["none"] is None


def _walk(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vol = np.where(np.arange(n) % 400 < 200, 0.002, 0.02)  # quiet and wild stretches
    return 100 * np.exp(np.cumsum(rng.normal(0, vol)))


def test_vol_baseline_predicts_flat_as_often_as_training_was_flat() -> None:
    close = _walk(2000, 3)
    ends = np.arange(100, 1200)
    y = np.full(ends.size, UP)
    y[:300] = FLAT
    y[300:400] = DOWN
    vb = VolBaseline.fit(close, ends, y)
    assert vb.direction == UP and vb.window == 24
    assert np.mean(vb.predict(close, ends) == FLAT) == pytest.approx(300 / 1100, abs=0.01)
    assert VolBaseline.from_dict(vb.to_dict()) == vb
    assert VolBaseline.from_dict(None) is None
    never = VolBaseline.fit(close, ends, np.full(ends.size, DOWN))
    assert set(never.predict(close, ends).tolist()) == {DOWN}


def _skill(score: np.ndarray, y: np.ndarray, fwd: np.ndarray, pred: np.ndarray) -> dict:
    return classifier_skill(y, score, fwd, pred, majority=UP, vol_pred=np.full(y.size, FLAT), block=10, horizon=4)


def test_a_random_scorer_is_told_it_has_no_skill() -> None:
    rng = np.random.default_rng(4)
    fwd = rng.normal(0, 0.01, 3000)
    y = np.where(fwd > 0.004, UP, np.where(fwd < -0.004, DOWN, FLAT))
    s = _skill(rng.normal(size=3000), y, fwd, np.full(3000, UP))
    assert s["directional_windows"] == int(np.sum(y != FLAT))
    lo, hi = s["directional_auc_ci"]
    assert lo < 0.5 < hi
    assert s["verdict"][0].startswith("no directional skill: AUC ")
    assert "does not beat the majority class 'up'" in s["verdict"][1]


def test_a_scorer_that_sees_the_future_has_skill() -> None:
    rng = np.random.default_rng(5)
    fwd = rng.normal(0, 0.01, 3000)
    y = np.where(fwd > 0.004, UP, np.where(fwd < -0.004, DOWN, FLAT))
    s = _skill(fwd, y, fwd, y)
    assert s["directional_auc"] == 1.0 and s["spearman"] == pytest.approx(1.0)
    assert s["verdict"][0].startswith("directional skill: AUC 1.000 [1.000, 1.000]")
    assert "beats the majority class" in s["verdict"][1] and "beats the volatility-only" in s["verdict"][2]
    worse = _skill(-fwd, y, fwd, y)
    assert worse["verdict"][0].startswith("no directional skill (worse than a coin)")


def test_inverse_vol_exposure_is_capped_and_falls_with_volatility() -> None:
    close = _walk(1200, 6)
    bars = np.arange(30, 1199)
    ref = fit_sigma_ref(close, 30, 600)
    pos = inverse_vol_exposure(close, bars, ref)
    assert np.all((pos > 0) & (pos <= 1))
    sigma = trailing_sigma(close, 24)[bars]
    np.testing.assert_allclose(pos, np.minimum(1.0, ref / sigma))
    quiet, wild = (bars % 400 >= 30) & (bars % 400 < 200), bars % 400 >= 230  # past the 24-bar window
    assert pos[quiet].mean() > 0.9 and pos[wild].mean() < 0.3


def test_sizer_skill_sentences() -> None:
    rng = np.random.default_rng(7)
    nxt = rng.normal(0, 0.01, 2000)
    flat = sizer_skill(np.full(2000, 0.3), nxt, 0.001, 8760, 20, {"buy_and_hold": np.ones(2000)})
    assert flat["spearman"] is None and "holds one level (0.3) on every bar" in flat["verdict"][0]
    oracle = sizer_skill((nxt > 0).astype(float), nxt, 0.0, 8760, 20, {"buy_and_hold": np.ones(2000)})
    assert oracle["verdict"][0].startswith("sizing skill: rank correlation")
    assert oracle["verdict"][1].startswith("Sharpe after fees beats buy and hold")


def test_sizer_skill_scores_only_the_kept_bars_with_fees_from_the_whole_path() -> None:
    rng = np.random.default_rng(9)
    n = 2000
    nxt = rng.normal(0, 0.01, n)
    pos = rng.integers(0, 11, n) / 10.0
    keep = np.ones(n, dtype=bool)
    keep[500:620] = keep[1500:1510] = False  # e.g. windows across a gap
    hold = {"buy_and_hold": np.ones(n)}
    free = sizer_skill(pos, nxt, 0.0, 8760, 20, hold, keep)
    subset = sizer_skill(pos[keep], nxt[keep], 0.0, 8760, 20, {"buy_and_hold": np.ones(int(keep.sum()))})
    assert free == subset and free["bars"] == 1870
    paid = sizer_skill(pos, nxt, 0.001, 8760, 20, hold, keep)
    assert paid["spearman"] == free["spearman"]
    net = (pos * nxt - 0.001 * np.abs(np.diff(np.r_[0.0, pos])))[keep]
    hold_net = nxt[keep] - 0.001 * np.abs(np.diff(np.r_[0.0, np.ones(n)]))[keep]  # the entry fee, bar 0
    want = (net.mean() / np.std(net, ddof=1) - hold_net.mean() / np.std(hold_net, ddof=1)) * np.sqrt(8760)
    assert paid["sharpe_minus_buy_and_hold"] == pytest.approx(want)


def test_card_prints_verdicts_under_the_table_not_in_it() -> None:
    metrics = {"test": {"accuracy": 0.4, "skill": {"directional_auc": 0.5, "directional_auc_ci": [0.49, 0.51]},
                        "verdict": ["no directional skill: AUC 0.500 [0.490, 0.510]"]}}
    table = metrics_table(metrics)
    rows = list(table.columns[0].cells)
    assert "verdict" not in rows and "skill.directional_auc_ci" in rows
    assert list(table.columns[1].cells)[rows.index("skill.directional_auc_ci")] == "[0.490, 0.510]"
    assert verdict_lines(metrics) == ["test: no directional skill: AUC 0.500 [0.490, 0.510]"]


def test_a_checkpoint_without_the_baseline_says_so() -> None:
    rng = np.random.default_rng(8)
    fwd = rng.normal(0, 0.01, 500)
    y = np.where(fwd > 0.004, UP, np.where(fwd < -0.004, DOWN, FLAT))
    s = classifier_skill(y, rng.normal(size=500), fwd, y, majority=UP, vol_pred=None, block=10, horizon=4)
    assert "balanced_accuracy_minus_volatility_only" not in s
    assert s["verdict"][2].startswith("volatility-only baseline: n/a (the checkpoint predates it")
