"""Does a model have skill? Directional AUC, rank correlation with the forward return, a
volatility-only baseline, block-bootstrap intervals, and the plain sentences ``bot evaluate``
prints. Pure NumPy (ranks, not scipy).

Accuracy alone hides the absence of skill: on held-out files it sits at the majority class, and
a balanced-accuracy gain can come from the flat class alone, which low trailing volatility
predicts as well as a model. So every classifier section also reports:

- ``directional_auc``: on the windows whose realised move is up or down (by the checkpoint's
  label rule), how often an up window scores higher than a down one on p(up) - p(down) (0.5 = a
  coin);
- ``spearman``: rank correlation of p(up) - p(down) with the forward return, over every window;
- the ``volatility_only`` baseline (:class:`VolBaseline`): flat when the trailing 24-bar
  volatility is at or below a cutoff, else the more frequent of up/down; cutoff and direction
  fitted on the training windows only;
- 95 % intervals from a circular block bootstrap whose blocks are ``window + horizon`` windows
  long (windows further apart share no bar), paired across model and baselines.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.labels import CLASSES, DOWN, FLAT, UP, trailing_sigma

VOL_WINDOW = 24
BOOT_REPS = 1000
LEVEL = 0.95
Stat = Callable[[np.ndarray], "float | None"]


class Ranks:
    """Average ranks (ties share theirs) of any multiset of the values ``x``, in O(n) per call:
    the values are sorted once, so bootstrap resamples need no sort."""

    def __init__(self, x: np.ndarray) -> None:
        uniq, self.group = np.unique(np.asarray(x, dtype=np.float64), return_inverse=True)
        self.groups = uniq.size

    def of(self, idx: np.ndarray) -> np.ndarray:
        """1-based ranks of ``x[idx]`` among themselves (repeated positions count as repeats)."""
        g = self.group[idx]
        cnt = np.bincount(g, minlength=self.groups)
        return (np.cumsum(cnt) - (cnt - 1) / 2.0)[g]


def _auc_of_ranks(r: np.ndarray, pos: np.ndarray) -> float | None:
    n1 = int(pos.sum())
    n0 = pos.size - n1
    if n1 == 0 or n0 == 0:
        return None
    return float((r[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    sa, sb = a.std(), b.std()
    if a.size < 3 or sa == 0 or sb == 0:
        return None
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))


def auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``score`` for ``positive`` (Mann-Whitney, ties count 1/2);
    None when one side is empty."""
    s = np.asarray(score)
    return _auc_of_ranks(Ranks(s).of(np.arange(s.size)), np.asarray(positive, dtype=bool))


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation (Pearson of average ranks); None when either side is constant."""
    everything = np.arange(np.asarray(a).size)
    return _pearson(Ranks(a).of(everything), Ranks(b).of(everything))


def auc_stat(score: np.ndarray, positive: np.ndarray, keep: np.ndarray) -> Stat:
    """AUC on the kept samples of a resample ``idx`` (e.g. the windows that moved)."""
    ranks, pos, keep = Ranks(score), np.asarray(positive, dtype=bool), np.asarray(keep, dtype=bool)

    def stat(idx: np.ndarray) -> float | None:
        sub = idx[keep[idx]]
        return _auc_of_ranks(ranks.of(sub), pos[sub])
    return stat


def spearman_stat(a: np.ndarray, b: np.ndarray) -> Stat:
    ra, rb = Ranks(a), Ranks(b)
    return lambda idx: _pearson(ra.of(idx), rb.of(idx))


def sharpe(r: np.ndarray, bars_per_year: float) -> float | None:
    sd = float(np.std(r, ddof=1)) if r.size > 1 else 0.0
    return float(np.mean(r) / sd * math.sqrt(bars_per_year)) if sd > 0 else None



def block_bootstrap(stats: dict[str, Stat], n: int, block: int, reps: int = BOOT_REPS,
                    seed: int = 0) -> dict[str, list[float] | None]:
    """95 % percentile intervals of each statistic over circular moving-block resamples of the
    positions 0..n-1 (the same resamples for every statistic, so differences are paired).

    A statistic that is undefined on over half the resamples gets None.
    """
    rng = np.random.default_rng(seed)
    b = max(1, min(int(block), n))
    k = -(-n // b)
    vals: dict[str, list[float]] = {name: [] for name in stats}
    offs = np.arange(b)
    for _ in range(reps):
        idx = ((rng.integers(0, n, k)[:, None] + offs) % n).ravel()[:n]
        for name, fn in stats.items():
            v = fn(idx)
            if v is not None and math.isfinite(v):
                vals[name].append(v)
    lo_q, hi_q = (1 - LEVEL) / 2, (1 + LEVEL) / 2
    return {name: ([float(x) for x in np.quantile(v, [lo_q, hi_q])] if len(v) * 2 > reps else None)
            for name, v in vals.items()}


def estimate(stats: dict[str, Stat], n: int, block: int) -> dict[str, Any]:
    """Each statistic on all ``n`` samples (``name``) and its bootstrap interval (``name_ci``)."""
    cis = block_bootstrap(stats, n, block)
    everything = np.arange(n)
    return {k: v for name, fn in stats.items() for k, v in ((name, fn(everything)), (f"{name}_ci", cis[name]))}


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(y == p)) if y.size else 0.0


def balanced_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (as :func:`models.metrics.classification_report`)."""
    support = np.bincount(y, minlength=3)
    hits = np.bincount(y[y == p], minlength=3)
    present = support > 0
    return float((hits[present] / support[present]).mean()) if present.any() else 0.0


@dataclass(frozen=True, slots=True)
class VolBaseline:
    """Predict flat when the trailing ``window``-bar volatility is at or below ``cutoff``, else
    ``direction``. Fitted on training windows: the cutoff is the training volatility's quantile
    at the training share of flat labels (so it predicts flat as often as flat happened), the
    direction the more frequent of up/down there. It knows nothing of direction by design."""

    window: int
    cutoff: float
    direction: int

    @classmethod
    def fit(cls, close: np.ndarray, ends: np.ndarray, labels: np.ndarray, window: int = VOL_WINDOW) -> VolBaseline:
        sigma = trailing_sigma(close, window)[np.asarray(ends, dtype=np.int64)]
        y = np.asarray(labels)
        ok = np.isfinite(sigma) & (y >= 0)
        flat_share = float(np.mean(y[ok] == FLAT)) if ok.any() else 0.0
        cutoff = float(np.quantile(sigma[ok], flat_share)) if ok.any() and flat_share > 0 else -1.0
        direction = UP if np.sum(y[ok] == UP) >= np.sum(y[ok] == DOWN) else DOWN
        return cls(window, cutoff, direction)

    def predict(self, close: np.ndarray, ends: np.ndarray) -> np.ndarray:
        sigma = trailing_sigma(close, self.window)[np.asarray(ends, dtype=np.int64)]
        return np.where(sigma <= self.cutoff, FLAT, self.direction).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window, "cutoff": self.cutoff, "direction": CLASSES[self.direction]}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> VolBaseline | None:
        """From ``meta.labels["vol_baseline"]``; None for a checkpoint trained before it existed."""
        if not d:
            return None
        return cls(int(d["window"]), float(d["cutoff"]), CLASSES.index(str(d["direction"])))


def _fmt_ci(ci: list[float] | None, digits: int = 3) -> str:
    return "[n/a]" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _beats(diff_ci: list[float] | None) -> bool:
    return diff_ci is not None and diff_ci[0] > 0


def classifier_skill(y: np.ndarray, score: np.ndarray, fwd: np.ndarray, pred: np.ndarray,
                     majority: int, vol_pred: np.ndarray | None, block: int, horizon: int) -> dict[str, Any]:
    """Skill numbers of a classifier section and the sentences that say whether it beats chance,
    the majority class and the volatility-only baseline.

    ``score`` = p(up) - p(down), ``fwd`` = the ``horizon``-bar forward return of each window,
    ``pred`` = the model's class (argmax), ``vol_pred`` = the volatility-only baseline's class.
    """
    y, score, fwd, pred = (np.asarray(a) for a in (y, score, fwd, pred))
    maj = np.full_like(y, majority)
    moved = (y == UP) | (y == DOWN)
    stats: dict[str, Stat] = {
        "directional_auc": auc_stat(score, y == UP, moved),
        "spearman": spearman_stat(score, fwd),
        "accuracy_minus_majority": lambda i: accuracy(y[i], pred[i]) - accuracy(y[i], maj[i]),
    }
    if vol_pred is not None:
        vp = np.asarray(vol_pred)
        stats["balanced_accuracy_minus_volatility_only"] = (
            lambda i: balanced_accuracy(y[i], pred[i]) - balanced_accuracy(y[i], vp[i]))
    out: dict[str, Any] = {"directional_windows": int(moved.sum()), **estimate(stats, y.size, block)}
    out["interval"] = f"95 % block bootstrap, {BOOT_REPS} resamples of {block}-window blocks"
    verdict = [direction_sentence(out, "up/down windows", "p(up) - p(down)", f"the {horizon}-bar forward return"),
               _beat_sentence("accuracy", accuracy(y, pred), f"the majority class '{CLASSES[majority]}'",
                              accuracy(y, maj), out["accuracy_minus_majority_ci"])]
    if vol_pred is not None:
        verdict.append(_beat_sentence("balanced accuracy", balanced_accuracy(y, pred), "the volatility-only baseline",
                                      balanced_accuracy(y, np.asarray(vol_pred)),
                                      out["balanced_accuracy_minus_volatility_only_ci"]))
    else:
        verdict.append("volatility-only baseline: n/a (the checkpoint predates it; retrain to get it)")
    out["verdict"] = verdict
    return out


def direction_sentence(s: dict[str, Any], samples: str, score: str, target: str) -> str:
    """"(no) directional skill: AUC a [lo, hi] on N <samples> (0.5 = a coin); rank correlation of
    <score> with <target> r [lo, hi]"; skill only when the AUC's interval lies above 0.5."""
    ci = s["directional_auc_ci"]
    head = ("no directional skill" if ci is None or ci[0] <= 0.5 < ci[1] else
            "directional skill" if ci[0] > 0.5 else "no directional skill (worse than a coin)")
    return (f"{head}: AUC {_fmt(s['directional_auc'])} {_fmt_ci(ci)} on {s['directional_windows']:,} {samples} "
            f"(0.5 = a coin); rank correlation of {score} with {target} {_fmt(s['spearman'])} "
            f"{_fmt_ci(s['spearman_ci'])}")


def _beat_sentence(what: str, model: float, other: str, base: float, diff_ci: list[float] | None) -> str:
    diff = model - base
    if _beats(diff_ci):
        return f"{what} {model:.3f} beats {other} ({base:.3f}) by {diff:.3f} {_fmt_ci(diff_ci)}"
    return f"{what} {model:.3f} does not beat {other} ({base:.3f}): difference {diff:+.3f} {_fmt_ci(diff_ci)}"


def inverse_vol_exposure(close: np.ndarray, bars: np.ndarray, sigma_ref: float,
                         window: int = VOL_WINDOW) -> np.ndarray:
    """The volatility-only sizer: exposure min(1, sigma_ref / sigma_t) from the trailing volatility."""
    sigma = trailing_sigma(close, window)[np.asarray(bars, dtype=np.int64)]
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = np.where(sigma > 0, np.minimum(1.0, sigma_ref / sigma), 1.0)
    return np.where(np.isfinite(pos), pos, 1.0)


def fit_sigma_ref(close: np.ndarray, lo: int, hi: int, window: int = VOL_WINDOW) -> float:
    """Median trailing volatility over the training bars [lo, hi]: the volatility-only sizer's target."""
    s = trailing_sigma(np.asarray(close, dtype=np.float64)[: hi + 1], window)[lo: hi + 1]
    s = s[np.isfinite(s)]
    return float(np.median(s)) if s.size else 0.0


BASELINE_NAMES = {"buy_and_hold": "buy and hold", "volatility_only": "the volatility-only sizer"}


def sizer_skill(pos: np.ndarray, nxt: np.ndarray, fee_rate: float, bars_per_year: float, block: int,
                baselines: dict[str, np.ndarray], keep: np.ndarray | None = None) -> dict[str, Any]:
    """A sizer's skill: rank correlation (and AUC) of its position with the next-bar return, and
    its Sharpe after fees against fixed or volatility-only exposures (paired block bootstrap).
    ``keep`` (per bar): the bars scored, e.g. those whose window and next bar span no gap."""
    p, r = np.asarray(pos, dtype=np.float64), np.asarray(nxt, dtype=np.float64)
    k = np.ones(p.size, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)

    def net(x: np.ndarray) -> np.ndarray:
        return (x * r - fee_rate * np.abs(np.diff(np.concatenate(([0.0], x)))))[k]

    # Fees are charged on the whole path once; resamples then pick kept bars of the net returns.
    rs = net(p)
    pk, rk = p[k], r[k]
    stats: dict[str, Stat] = {"spearman": spearman_stat(pk, rk), "auc_next_bar_up": auc_stat(pk, rk > 0, rk != 0)}
    for name, b in baselines.items():
        rb = net(np.asarray(b, dtype=np.float64))
        stats[f"sharpe_minus_{name}"] = (lambda i, rb=rb: None if (a := sharpe(rs[i], bars_per_year)) is None
                                         or (c := sharpe(rb[i], bars_per_year)) is None else a - c)
    out = {"bars": int(pk.size), **estimate(stats, pk.size, block)}
    out["interval"] = f"95 % block bootstrap, {BOOT_REPS} resamples of {block}-bar blocks"
    if out["spearman"] is None:
        lead = (f"no skill: the sizer holds one level ({pk[0]:.1f}) on every bar, so its position cannot rank "
                "the next-bar returns")
    else:
        ci = out["spearman_ci"]
        head = "sizing skill" if ci is not None and ci[0] > 0 else "no sizing skill"
        lead = (f"{head}: rank correlation of the position with the next-bar return {_fmt(out['spearman'])} "
                f"{_fmt_ci(ci)} (0 = none); AUC for up vs down bars {_fmt(out['auc_next_bar_up'])} "
                f"{_fmt_ci(out['auc_next_bar_up_ci'])}")
    verdict = [lead]
    for name in baselines:
        d, ci = out[f"sharpe_minus_{name}"], out[f"sharpe_minus_{name}_ci"]
        word = "beats" if _beats(ci) else "does not beat"
        verdict.append(f"Sharpe after fees {word} {BASELINE_NAMES.get(name, name)}: difference {_fmt(d, 2)} "
                       f"{_fmt_ci(ci, 2)}")
    out["verdict"] = verdict
    return out


def direction_skill(score: np.ndarray, actual: np.ndarray, block: int) -> dict[str, Any]:
    """AUC of a forecast ``score`` for actual up vs down moves (bars that moved) and its rank
    correlation with the actual values, with intervals."""
    s, a = np.asarray(score, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    moved = a != 0
    stats: dict[str, Stat] = {"directional_auc": auc_stat(s, a > 0, moved), "spearman": spearman_stat(s, a)}
    return {"directional_windows": int(moved.sum()), **estimate(stats, s.size, block),
            "interval": f"95 % block bootstrap, {BOOT_REPS} resamples of {block}-bar blocks"}
