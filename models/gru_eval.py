"""Model-card numbers for ``gru_sizer``: price-head error against a random walk, and a fee-aware
exposure backtest of the sizer against fixed-exposure and volatility-only baselines, with the
skill numbers of :mod:`models.skill` (the sizer is not a classifier: its "signal" is its position).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from models.price_encoder import PriceEncoder
from models.sizer import PositionSizer, SizerRunner, restarts
from models.skill import direction_sentence, direction_skill, inverse_vol_exposure, sizer_skill


def price_metrics(pred: np.ndarray, actual: np.ndarray, block: int | None = None) -> dict[str, Any]:
    """Path forecast vs the random walk (which predicts no change: a zero log return).

    Errors are in log-return units averaged over the k horizons; ``skill`` = 1 - MAE/MAE_rw
    (positive means better than the random walk). ``direction_1`` = share of correct signs of
    the one-bar-ahead forecast on bars that moved. With ``block``: the directional AUC and rank
    correlation of the one-bar forecast with the realised one-bar return, with intervals.
    """
    p, a = np.asarray(pred, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    mae, mae_rw = float(np.abs(p - a).mean()), float(np.abs(a).mean())
    rmse, rmse_rw = float(np.sqrt(((p - a) ** 2).mean())), float(np.sqrt((a ** 2).mean()))
    moved = a[:, 0] != 0
    direction = float((np.sign(p[moved, 0]) == np.sign(a[moved, 0])).mean()) if moved.any() else 0.0
    return {"samples": int(a.shape[0]), "mae": mae, "mae_random_walk": mae_rw,
            "skill_mae": 1.0 - mae / mae_rw if mae_rw > 0 else 0.0,
            "rmse": rmse, "rmse_random_walk": rmse_rw,
            "skill_rmse": 1.0 - rmse / rmse_rw if rmse_rw > 0 else 0.0,
            "direction_1": direction, **(_direction(p[:, 0], a[:, 0], block) if block else {})}


def _direction(score: np.ndarray, actual: np.ndarray, block: int) -> dict[str, Any]:
    d = direction_skill(score, actual, block)
    d["verdict"] = [direction_sentence(d, "bars that moved", "the one-bar forecast", "the one-bar return")]
    return d


def sizer_sections(pos: np.ndarray, close: np.ndarray, bars: np.ndarray, fee_rate: float, bars_per_year: float,
                   block: int, sigma_ref: float | None, keep: np.ndarray, suffix: str = "") -> dict[str, Any]:
    """The sizer's skill against buy and hold and the volatility-only sizer (exposure
    min(1, sigma_ref / trailing 24-bar sigma), ``sigma_ref`` fitted on training bars; None for a
    checkpoint from before it), and that baseline's backtest. The skill scores the ``keep`` bars
    only (window and next bar in one run, :meth:`models.gaps.Runs.scored`); backtests every bar."""
    b = np.asarray(bars, dtype=np.int64)
    c = np.asarray(close, dtype=np.float64)
    base = {"buy_and_hold": np.ones_like(pos)}
    out: dict[str, Any] = {}
    if sigma_ref is not None:
        base["volatility_only"] = inverse_vol_exposure(c, b, sigma_ref)
        out[f"volatility_only{suffix}"] = {**exposure_backtest(base["volatility_only"], c, b, fee_rate, bars_per_year),
                                           "sigma_ref": sigma_ref}
    skill = sizer_skill(pos, c[b + 1] / c[b] - 1.0, fee_rate, bars_per_year, block, base, keep)
    if sigma_ref is None:
        skill["verdict"].append("volatility-only baseline: n/a (the checkpoint predates it; retrain to get it)")
    out[f"sizer_skill{suffix}"] = skill
    return out


def exposure_backtest(pos: np.ndarray, close: np.ndarray, bars: np.ndarray, fee_rate: float,
                      bars_per_year: float) -> dict[str, Any]:
    """Hold ``pos[i]`` (fraction of equity) from the close of bar ``bars[i]`` to the next close.

    Each change of exposure pays ``fee_rate`` on the notional turned over (entry from flat
    included). Bybit opens equal the previous close, so next-open fills match this closely.
    """
    p = np.asarray(pos, dtype=np.float64)
    b = np.asarray(bars, dtype=np.int64)
    c = np.asarray(close, dtype=np.float64)
    nxt = c[b + 1] / c[b] - 1.0
    turn = np.abs(np.diff(np.concatenate(([0.0], p))))
    r = p * nxt - fee_rate * turn
    eq = np.cumprod(1.0 + r)
    sd = float(r.std(ddof=1)) if r.size > 1 else 0.0
    down = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    peak = np.maximum.accumulate(np.concatenate(([1.0], eq)))
    years = r.size / bars_per_year
    return {
        "total_return": float(eq[-1] - 1.0),
        "sharpe": float(r.mean() / sd * math.sqrt(bars_per_year)) if sd > 0 else 0.0,
        "sortino": float(r.mean() / down * math.sqrt(bars_per_year)) if down > 0 else 0.0,
        "max_drawdown": float((1.0 - np.concatenate(([1.0], eq)) / peak).max()),
        "turnover_per_year": float(turn.sum() / years) if years > 0 else 0.0,
        "mean_exposure": float(p.mean()),
        "fees_paid_frac": float((fee_rate * turn).sum()),
    }


def sizer_levels(encoder: PriceEncoder, sizer: PositionSizer, z: np.ndarray, time: np.ndarray,
                 bars: np.ndarray, bar_ms: int, first_valid: int, usable: np.ndarray | None = None) -> np.ndarray:
    """Trading-time levels of consecutive ``bars``, with the same resets and argmax recurrence
    as the strategy (float32 here; the strategy uses float64). ``usable`` (per bar of the
    series) marks the windows that span no gap; elsewhere the level is 0 (flat, as the strategy)."""
    from models.gru_data import encode_bars

    steps = sizer.cfg.steps
    b = np.asarray(bars, dtype=np.int64)
    lo = max(first_valid, int(b[0]) - steps)  # warm the state up on the bars before
    run_bars = np.arange(lo, int(b[-1]) + 1)
    feats, _ = encode_bars(encoder, z, run_bars)
    ok = np.ones(run_bars.shape[0], dtype=bool) if usable is None else np.asarray(usable)[run_bars]
    codes = restarts(time[run_bars], bar_ms, steps, ok)
    runner = SizerRunner(sizer)
    levels = np.zeros(run_bars.shape[0], dtype=np.int64)
    for i in np.flatnonzero(ok):
        runner.before_step(int(codes[i]))
        levels[i], _ = runner.step(torch.from_numpy(feats[i: i + 1]))
    return levels[run_bars >= b[0]]
