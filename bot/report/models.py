"""What each strategy's report section shows (the ``view`` of a :class:`bot.report.section.ReportSection`),
computed once from the explanation contract (docs/explanations.md) and drawn by both the HTML and
the PNG back ends.

Every function tolerates decisions whose explanation is missing or malformed (errors, kill
switches, a strategy from an older version): such rows are skipped, never fatal.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bot.explanation import attribution_of
from bot.regime_view import regime_label
from bot.report.analysis import bucket_rows
from bot.report.data import ReportData, close_after, to_dt

#: Attribution heatmaps average consecutive decisions into at most this many columns.
MAX_HEATMAP_COLUMNS = 400
CALIBRATION_BINS = 10


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _with(d: ReportData, key: str) -> list[dict[str, Any]]:
    return [r for r in d.decisions if key in r["explanation"]]


# -- rollout ------------------------------------------------------------------------------------
@dataclass(slots=True)
class RolloutView:
    lags: np.ndarray            # window step relative to the decision bar (0 = the decision bar)
    all_mean: np.ndarray        # over every decision: the baseline winners and losers differ from
    n_all: int
    win_mean: np.ndarray | None
    loss_mean: np.ndarray | None
    n_win: int
    n_loss: int
    heat: np.ndarray            # [columns, window] mean attribution per time bucket
    heat_dt: pd.DatetimeIndex   # first decision time of each bucket
    regimes: Counter[str]

    @property
    def diff(self) -> np.ndarray | None:
        """Winners' mean attribution minus losers' (None unless both exist)."""
        if self.win_mean is None or self.loss_mean is None:
            return None
        return self.win_mean - self.loss_mean


def _attribution(expl: dict[str, Any], window: int) -> np.ndarray | None:
    """The decision's window attribution (contract ``attribution.steps`` or an old list) of that length."""
    a = attribution_of(expl)
    if a is None or len(a.steps) != window:
        return None
    return np.asarray(a.steps, dtype=np.float64)


def rollout_view(d: ReportData) -> RolloutView | None:
    rows = [r for r in d.decisions if (a := attribution_of(r["explanation"])) is not None and a.steps]
    if not rows:
        return None
    window = Counter(len(attribution_of(r["explanation"]).steps) for r in rows).most_common(1)[0][0]  # type: ignore[union-attr]
    pairs = [(r, _attribution(r["explanation"], window)) for r in rows]
    pairs = [(r, a) for r, a in pairs if a is not None]
    if not pairs:
        return None
    wins: list[np.ndarray] = []
    losses: list[np.ndarray] = []
    for t in d.trades.itertuples(index=False):
        entry = d.decision_by_id.get(t.entry_decision_id) if t.entry_decision_id else None
        a = _attribution(entry["explanation"], window) if entry else None
        if a is None or t.net_pnl == 0:
            continue
        (wins if t.net_pnl > 0 else losses).append(a)
    matrix = np.stack([a for _, a in pairs])
    heat, starts = bucket_rows(matrix, MAX_HEATMAP_COLUMNS)
    times = np.asarray([r["bar_time"] for r, _ in pairs], dtype=np.int64)
    return RolloutView(
        lags=np.arange(-window + 1, 1),
        all_mean=matrix.mean(axis=0), n_all=len(matrix),
        win_mean=np.mean(wins, axis=0) if wins else None,
        loss_mean=np.mean(losses, axis=0) if losses else None,
        n_win=len(wins), n_loss=len(losses),
        heat=heat, heat_dt=to_dt(times[starts]),
        regimes=Counter(regime_label(r["explanation"]) for r, _ in pairs if regime_label(r["explanation"])),
    )


# -- dsc ----------------------------------------------------------------------------------------
@dataclass(slots=True)
class CalibrationCurve:
    label: str                  # "up" or "down"
    predicted: np.ndarray       # mean predicted probability per non-empty bin
    realised: np.ndarray        # realised frequency of that direction on the next bar
    count: np.ndarray
    brier: float


@dataclass(slots=True)
class DSCView:
    confidence: dict[str, np.ndarray]   # signal -> confidences
    curves: list[CalibrationCurve]
    n_scored: int                       # decisions with a known next bar


def _probs(expl: dict[str, Any]) -> tuple[float, float, float] | None:
    p = expl.get("probs")
    if not isinstance(p, dict):
        return None
    vals = (_num(p.get("down")), _num(p.get("flat")), _num(p.get("up")))
    return None if any(v is None for v in vals) else vals  # type: ignore[return-value]


def calibration(pred: np.ndarray, hit: np.ndarray, label: str, bins: int = CALIBRATION_BINS) -> CalibrationCurve:
    """Reliability curve: bin predicted probabilities, compare with the realised frequency.

    Bins hold equal numbers of decisions (quantiles of the predictions), so a model whose
    probabilities all sit in a narrow band still gets a curve rather than one point.
    """
    if not len(pred):
        return CalibrationCurve(label, np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), 0.0)
    edges = np.unique(np.quantile(pred, np.linspace(0, 1, bins + 1)))
    which = np.searchsorted(edges[1:-1], pred, side="right")
    mp, rf, cnt = [], [], []
    for b in range(len(edges) - 1 if len(edges) > 1 else 1):
        m = which == b
        if m.any():
            mp.append(float(pred[m].mean()))
            rf.append(float(hit[m].mean()))
            cnt.append(int(m.sum()))
    brier = float(np.mean((pred - hit) ** 2)) if len(pred) else 0.0
    return CalibrationCurve(label, np.asarray(mp), np.asarray(rf), np.asarray(cnt, dtype=np.int64), brier)


def dsc_view(d: ReportData) -> DSCView | None:
    rows = [(r, _probs(r["explanation"])) for r in _with(d, "probs")]
    rows = [(r, p) for r, p in rows if p is not None]
    if not rows:
        return None
    conf: dict[str, list[float]] = {}
    for r, p in rows:
        c = _num(r["explanation"].get("confidence"))
        c = max(p) if c is None else c
        conf.setdefault(str(r["explanation"].get("signal") or "n/a"), []).append(c)
    times = np.asarray([r["bar_time"] for r, _ in rows], dtype=np.int64)
    now, nxt = close_after(d.equity, times)
    ok = np.isfinite(now) & np.isfinite(nxt)
    probs = np.asarray([p for _, p in rows], dtype=np.float64)[ok]
    move = (nxt - now)[ok]
    curves = [calibration(probs[:, 2], (move > 0).astype(np.float64), "up"),
              calibration(probs[:, 0], (move < 0).astype(np.float64), "down")] if ok.any() else []
    return DSCView({k: np.asarray(v) for k, v in conf.items()}, curves, int(ok.sum()))


# -- gru_sizer ----------------------------------------------------------------------------------
@dataclass(slots=True)
class SizerView:
    dt: pd.DatetimeIndex
    level: np.ndarray
    regime: list[str]


def sizer_view(d: ReportData) -> SizerView | None:
    pts = [(r["bar_time"], _num(r["explanation"].get("level")), regime_label(r["explanation"]) or "")
           for r in _with(d, "level")]
    pts = [p for p in pts if p[1] is not None]
    if not pts:
        return None
    return SizerView(to_dt(np.asarray([p[0] for p in pts], dtype=np.int64)),
                     np.asarray([p[1] for p in pts], dtype=np.float64), [p[2] for p in pts])


# -- sma ----------------------------------------------------------------------------------------
@dataclass(slots=True)
class SMAView:
    fast_n: int | None
    slow_n: int | None
    fast: np.ndarray            # over the journaled closes (NaN during warm-up); empty if unknown
    slow: np.ndarray
    cross_dt: pd.DatetimeIndex  # decisions: where the strategy saw a crossover
    cross_fast: np.ndarray
    cross_slow: np.ndarray


def _sma_params(d: ReportData) -> tuple[int | None, int | None]:
    """Window lengths from the run's journaled config, falling back to the strategy's defaults."""
    params = d.market.params if d.market else ((d.run.get("config") or {}).get("strategy") or {}).get("params") or {}
    try:
        from strategies.sma import SMAParams

        p = SMAParams.model_validate(params)
        return p.fast, p.slow
    except Exception:  # noqa: BLE001 - unusable params: show the journaled values only
        return None, None


def sma_view(d: ReportData) -> SMAView | None:
    pts = [(r["bar_time"], _num(r["explanation"].get("fast_sma")), _num(r["explanation"].get("slow_sma")))
           for r in _with(d, "fast_sma")]
    pts = [p for p in pts if p[1] is not None and p[2] is not None]
    fast_n, slow_n = _sma_params(d)
    px = d.equity["price"]
    if fast_n and slow_n and len(px):
        fast = px.rolling(fast_n).mean().to_numpy()
        slow = px.rolling(slow_n).mean().to_numpy()
    else:
        fast = slow = np.zeros(0)
    if not pts and not len(fast):
        return None
    return SMAView(fast_n, slow_n, fast, slow, to_dt(np.asarray([p[0] for p in pts], dtype=np.int64)),
                   np.asarray([p[1] for p in pts]), np.asarray([p[2] for p in pts]))


# -- generic: any strategy without a section of its own -------------------------------------------
@dataclass(slots=True)
class GenericView:
    exposure: np.ndarray        # over the journaled bars: position value / equity (NaN where equity <= 0)
    dt: pd.DatetimeIndex        # decisions with a target, oldest first
    target: np.ndarray
    confidence: np.ndarray      # NaN where a decision carries none


def generic_view(d: ReportData) -> GenericView | None:
    """Where each decision wanted to be, where the run actually was, and how sure it was."""
    pts = [(r["bar_time"], _num(r.get("target")), _num(r.get("confidence"))) for r in d.decisions]
    pts = [p for p in pts if p[1] is not None]
    if not pts:
        return None
    eq = d.equity
    equity = eq["equity"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        exposure = np.where(equity > 0, eq["position"].to_numpy() * eq["price"].to_numpy() / equity, np.nan)
    return GenericView(exposure, to_dt(np.asarray([p[0] for p in pts], dtype=np.int64)),
                       np.asarray([p[1] for p in pts], dtype=np.float64),
                       np.asarray([np.nan if p[2] is None else p[2] for p in pts], dtype=np.float64))
