"""The one causal feature pipeline shared by training, backtests and live trading.

Every feature at bar t uses bars [0, t] only. Two implementations compute the same numbers:

- :func:`compute_features` works on whole arrays (training, batched backtests);
- :class:`IncrementalFeatures` is updated once per new candle (live, bar-by-bar backtests) in
  O(1) per bar; its output equals the batch output to ~1e-12 (``tests/test_models_features.py``).

Features are scale-free (ratios, returns) so a model trained on one market can be evaluated on
another. The EMA-based ones (RSI, MACD) start from the first bar they are given; rows before
:data:`FEATURE_WARMUP` are NaN and never used.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bot.candles import OHLCV
from bot.errors import ModelError

#: Fixed order of the feature columns; stored in every checkpoint and checked on load.
FEATURE_NAMES: tuple[str, ...] = (
    "ret_1",            # close_t / close_{t-1} - 1
    "log_ret_1",        # log(close_t / close_{t-1})
    "log_ret_4",        # log(close_t / close_{t-4})
    "log_ret_24",       # log(close_t / close_{t-24})
    "volatility_24",    # population std of log_ret_1 over the last 24 bars
    "volume_ratio_24",  # volume_t / mean volume of the last 24 bars (incl. t)
    "rsi_14",           # Wilder RSI(14) / 100
    "macd",             # (EMA12 - EMA26) / close
    "macd_signal",      # EMA9 of macd
    "hl_range",         # (high - low) / close
    "vwap_dist_24",     # close / rolling 24-bar VWAP of the typical price - 1
    "close_pos",        # (close - low) / (high - low); 0.5 on a flat bar
    "sma_dist_48",      # close / SMA48 - 1
    "hour_sin",         # time of day of the bar's open, UTC
    "hour_cos",
)
N_FEATURES = len(FEATURE_NAMES)
#: Rows before this index are NaN (longest look-back plus EMA settling time).
FEATURE_WARMUP = 64

_VOL_N, _VOLU_N, _VWAP_N, _SMA_N, _RSI_N = 24, 24, 24, 48, 14
_A12, _A26, _A9 = 2.0 / 13.0, 2.0 / 27.0, 2.0 / 10.0
_HOUR_MS = 3_600_000
_TAU = 2.0 * math.pi


def _ema(x: np.ndarray, alpha: float) -> np.ndarray:
    # The same recursion as IncrementalFeatures (seeded with the first value), so both agree.
    out = np.empty_like(x)
    e = float(x[0])
    out[0] = e
    for i in range(1, x.shape[0]):
        e = e + alpha * (float(x[i]) - e)
        out[i] = e
    return out


def _rolling_mean(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(x.shape[0], np.nan)
    if x.shape[0] >= n:
        out[n - 1:] = sliding_window_view(x, n).mean(axis=1)
    return out


def compute_features(data: OHLCV) -> np.ndarray:
    """Batch path: features for every bar of ``data`` as float64 [T, N_FEATURES]; causal."""
    t = np.asarray(data.time, dtype=np.int64)
    o, h, lo, c, v = (np.asarray(a, dtype=np.float64) for a in
                     (data.open, data.high, data.low, data.close, data.volume))
    n = c.shape[0]
    out = np.full((n, N_FEATURES), np.nan)
    if n == 0:
        return out
    with np.errstate(all="ignore"):  # bad candles become NaN/inf features, reported by callers
        prev = np.concatenate(([np.nan], c[:-1]))
        lr = np.log(c / prev)
        out[:, 0] = c / prev - 1.0
        out[:, 1] = lr
        for col, k in ((2, 4), (3, 24)):
            if n > k:
                out[k:, col] = np.log(c[k:] / c[:-k])
        if n > _VOL_N:
            out[_VOL_N:, 4] = sliding_window_view(lr[1:], _VOL_N).std(axis=1)
        mv = _rolling_mean(v, _VOLU_N)
        out[:, 5] = np.where(mv > 0, v / mv, 1.0)
        # Wilder RSI: smoothed mean gain / loss seeded with the first change.
        d = np.diff(c)
        if n > 1:
            ag = _ema(np.maximum(d, 0.0), 1.0 / _RSI_N)
            al = _ema(np.maximum(-d, 0.0), 1.0 / _RSI_N)
            rsi = np.where(al > 0, 1.0 - 1.0 / (1.0 + ag / np.where(al > 0, al, 1.0)),
                           np.where(ag > 0, 1.0, 0.5))
            out[1:, 6] = rsi
        macd = (_ema(c, _A12) - _ema(c, _A26)) / c
        out[:, 7] = macd
        out[:, 8] = _ema(macd, _A9)
        out[:, 9] = (h - lo) / c
        tp = (h + lo + c) / 3.0
        pv = _rolling_mean(tp * v, _VWAP_N)
        sv = _rolling_mean(v, _VWAP_N)
        vwap = np.where(sv > 0, pv / np.where(sv > 0, sv, 1.0), c)
        out[:, 10] = c / vwap - 1.0
        rng = h - lo
        out[:, 11] = np.where(rng > 0, (c - lo) / np.where(rng > 0, rng, 1.0), 0.5)
        out[:, 12] = c / _rolling_mean(c, _SMA_N) - 1.0
        ang = _TAU * ((t // _HOUR_MS) % 24) / 24.0
        out[:, 13] = np.sin(ang)
        out[:, 14] = np.cos(ang)
    out[: min(FEATURE_WARMUP, n)] = np.nan
    return out


class IncrementalFeatures:
    """Live path: :meth:`update` with each new closed candle returns that bar's feature row.

    O(1) work per bar (small ring buffers, running EMAs); never revisits the history. The row
    is NaN for the first :data:`FEATURE_WARMUP` bars, exactly like :func:`compute_features`.
    """

    __slots__ = ("n", "_c", "_lr", "_v", "_pv", "_ema12", "_ema26", "_sig", "_ag", "_al")

    def __init__(self) -> None:
        self.n = 0
        self._c: deque[float] = deque(maxlen=_SMA_N)
        self._lr: deque[float] = deque(maxlen=_VOL_N)
        self._v: deque[float] = deque(maxlen=_VOLU_N)
        self._pv: deque[float] = deque(maxlen=_VWAP_N)
        self._ema12 = self._ema26 = self._sig = self._ag = self._al = 0.0

    def update(self, time: int, open_: float, high: float, low: float, close: float,
               volume: float) -> np.ndarray:
        """Add bar ``self.n`` and return its features (float64 [N_FEATURES])."""
        c = float(close)
        h, lo, v = float(high), float(low), float(volume)
        cs = self._c
        row = np.full(N_FEATURES, np.nan)
        first = self.n == 0
        prev = cs[-1] if cs else math.nan
        if first:
            self._ema12 = self._ema26 = c
            macd = 0.0
            self._sig = macd
        else:
            d = c - prev
            if self.n == 1:
                self._ag, self._al = max(d, 0.0), max(-d, 0.0)
            else:
                self._ag += (max(d, 0.0) - self._ag) / _RSI_N
                self._al += (max(-d, 0.0) - self._al) / _RSI_N
            self._ema12 += _A12 * (c - self._ema12)
            self._ema26 += _A26 * (c - self._ema26)
            macd = (self._ema12 - self._ema26) / c
            self._sig += _A9 * (macd - self._sig)
        if not first:
            self._lr.append(math.log(c / prev) if prev > 0 and c > 0 else math.nan)
        cs.append(c)
        self._v.append(v)
        self._pv.append((h + lo + c) / 3.0 * v)
        self.n += 1
        if self.n <= FEATURE_WARMUP:
            return row
        row[0] = c / prev - 1.0
        row[1] = self._lr[-1]
        row[2] = math.log(c / cs[-5])
        row[3] = math.log(c / cs[-25])
        lrs = self._lr
        m = sum(lrs) / _VOL_N
        row[4] = math.sqrt(sum((x - m) * (x - m) for x in lrs) / _VOL_N)
        mv = sum(self._v) / _VOLU_N
        row[5] = v / mv if mv > 0 else 1.0
        ag, al = self._ag, self._al
        row[6] = (1.0 - 1.0 / (1.0 + ag / al)) if al > 0 else (1.0 if ag > 0 else 0.5)
        row[7] = macd
        row[8] = self._sig
        row[9] = (h - lo) / c
        sv = mv  # same 24-bar volume window as the VWAP
        vwap = (sum(self._pv) / _VWAP_N) / sv if sv > 0 else c
        row[10] = c / vwap - 1.0
        rng = h - lo
        row[11] = (c - lo) / rng if rng > 0 else 0.5
        row[12] = c / (sum(cs) / _SMA_N) - 1.0
        ang = _TAU * ((int(time) // _HOUR_MS) % 24) / 24.0
        row[13] = math.sin(ang)
        row[14] = math.cos(ang)
        return row

    def update_many(self, data: OHLCV, start: int = 0, stop: int | None = None) -> np.ndarray | None:
        """Feed bars [start, stop) of ``data``; return the last row (None if nothing was fed)."""
        stop = len(data.close) if stop is None else stop
        row = None
        t, o, h, lo, c, v = data.time, data.open, data.high, data.low, data.close, data.volume
        for i in range(start, stop):
            row = self.update(int(t[i]), float(o[i]), float(h[i]), float(lo[i]), float(c[i]), float(v[i]))
        return row


@dataclass(frozen=True, slots=True)
class Normalizer:
    """Per-feature z-score fitted on the training split only; clipped to +/- ``clip``."""

    mean: np.ndarray
    std: np.ndarray
    clip: float = 10.0

    @classmethod
    def fit(cls, rows: np.ndarray, clip: float = 10.0) -> Normalizer:
        """Fit on feature rows [N, F] (NaN rows ignored)."""
        rows = rows[np.all(np.isfinite(rows), axis=1)]
        if rows.shape[0] < 2:
            raise ModelError("too little data to fit the feature normalisation (need 2+ complete rows)")
        mean = rows.mean(axis=0)
        std = rows.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        return cls(mean.astype(np.float64), std.astype(np.float64), float(clip))

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """[..., F] float64 -> normalised float32 (NaN stays NaN)."""
        z = (rows - self.mean) / self.std
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    @property
    def extra_bars(self) -> int:
        """Bars needed beyond the feature warm-up: none (see models.normalize for the rolling one)."""
        return 0

    def stepper(self) -> Any:
        """Bar-by-bar path: raw row -> normalised row (stateless for the fitted z-score)."""
        return self.transform

    def to_dict(self) -> dict[str, Any]:
        return {"mean": [float(x) for x in self.mean], "std": [float(x) for x in self.std],
                "clip": self.clip}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        try:
            return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64),
                       float(d.get("clip", 10.0)))
        except (KeyError, TypeError, ValueError):
            raise ModelError("checkpoint normalisation statistics are malformed") from None


Layout = Literal["conv", "seq"]


def check_finite(feats: np.ndarray, times: np.ndarray, start: int = FEATURE_WARMUP) -> None:
    """Raise one clear ModelError naming the first non-finite feature at or after row ``start``."""
    bad = ~np.isfinite(feats[start:])
    if bad.any():
        row, col = np.argwhere(bad)[0]
        from datetime import UTC, datetime

        when = datetime.fromtimestamp(int(times[start + row]) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
        raise ModelError(f"feature {FEATURE_NAMES[col]} is NaN/inf at bar {when} UTC (bad candle in the data)")


def first_window_end(window: int) -> int:
    """Index of the first bar whose window holds only valid (post-warm-up) feature rows."""
    return FEATURE_WARMUP + window - 1


def make_windows(feats: np.ndarray, ends: np.ndarray, window: int, layout: Layout = "conv") -> np.ndarray:
    """Stack windows ending at each index of ``ends`` (inclusive).

    ``layout="conv"`` -> [batch, features, window] (Conv1d); ``"seq"`` -> [batch, window, features]
    (transformers, GRUs). ``feats`` is [T, F] (normalised); windows are copies, float32.
    """
    ends = np.asarray(ends, dtype=np.int64)
    if ends.size and (ends.min() < window - 1 or ends.max() >= feats.shape[0]):
        raise ModelError(f"window of {window} bars does not fit the {feats.shape[0]} bars available")
    view = sliding_window_view(feats, window, axis=0)  # [T-W+1, F, W]
    win = view[ends - (window - 1)]
    if layout == "seq":
        win = win.transpose(0, 2, 1)
    return np.ascontiguousarray(win, dtype=np.float32)


class RowWindow:
    """The newest ``n`` rows appended, oldest first, as one contiguous array: each row is written
    twice (at p and p + n) so the window is always a slice, never a stack of the rows. Rows are
    stored as ``dtype`` (default: the first row's)."""

    __slots__ = ("n", "_dtype", "_buf", "_pos", "_k")

    def __init__(self, n: int, dtype: Any = None) -> None:
        self.n = n
        self._dtype = dtype
        self._buf: np.ndarray | None = None
        self._pos = 0
        self._k = 0

    def append(self, row: np.ndarray) -> None:
        if self._buf is None:
            self._buf = np.empty((2 * self.n, row.shape[0]), dtype=self._dtype or row.dtype)
        p = self._pos
        self._buf[p] = row
        self._buf[p + self.n] = row
        self._pos = (p + 1) % self.n
        self._k = min(self._k + 1, self.n)

    def __len__(self) -> int:
        return self._k

    def array(self) -> np.ndarray:
        """The window (a view: copy it to keep it); all ``n`` rows once ``len == n``."""
        assert self._buf is not None
        if self._k < self.n:
            return self._buf[: self._k]
        return self._buf[self._pos: self._pos + self.n]


class FeatureWindow:
    """Incremental features + normaliser + a ring of the last ``window`` rows, for strategies.

    ``normalizer`` is a :class:`Normalizer` or a ``models.normalize.RollingNormalizer`` (its
    ``stepper()`` turns each raw row into a normalised one, or None while it warms up).

    :meth:`update` takes one candle and returns the current normalised window in the requested
    layout ([F, W] for ``conv``, [W, F] for ``seq``; a view, copy it to keep it), or None until
    ``window`` valid rows exist. A non-finite feature after warm-up raises :class:`ModelError`.
    ``watch`` (a :class:`models.drift.DriftWatch`) is shown every valid raw row.
    """

    def __init__(self, normalizer: Any, window: int, layout: Layout = "conv", watch: Any = None) -> None:
        if normalizer.mean.shape[0] != N_FEATURES:
            raise ModelError(f"normaliser has {normalizer.mean.shape[0]} features, pipeline has {N_FEATURES}")
        self.features = IncrementalFeatures()
        self.normalizer = normalizer
        self._step = normalizer.stepper()
        self.window = window
        self.layout = layout
        self._rows = RowWindow(window, np.float32)  # one contiguous slice: no copy or roll per bar
        self.last_raw: np.ndarray | None = None
        #: Sees every valid feature row (a :class:`models.drift.DriftWatch`), or None.
        self.watch = watch

    @property
    def ready(self) -> bool:
        return len(self._rows) >= self.window

    def update(self, time: int, open_: float, high: float, low: float, close: float,
               volume: float) -> np.ndarray | None:
        raw = self.features.update(time, open_, high, low, close, volume)
        self.last_raw = raw
        if self.features.n <= FEATURE_WARMUP:
            return None
        if not np.all(np.isfinite(raw)):
            bad = FEATURE_NAMES[int(np.flatnonzero(~np.isfinite(raw))[0])]
            raise ModelError(f"feature {bad} is NaN/inf at bar time {int(time)} (bad candle: "
                             f"close={close}, volume={volume})")
        if self.watch is not None:
            self.watch.update(int(time), raw)
        z = self._step(raw)
        if z is None:  # a rolling normaliser still filling its trailing rows
            return None
        self._rows.append(z)
        if len(self._rows) < self.window:
            return None
        block = self._rows.array()
        return block.T if self.layout == "conv" else block
