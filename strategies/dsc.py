"""``dsc``: a depthwise-separable conv classifier says down / flat / up; the strategy follows it.

Per candle: the incremental feature pipeline is updated with the new bar only (O(1)), the
normalised window goes through the model's forward pass alone (torch or ONNX Runtime) and the
class probabilities decide; the input x gradient of p(up) - p(down) is the decision's deferred
part (``Decision.deferred``: computed from a copy of this window once the order has left). The
stored attribution is its signed or absolute form, the checkpoint's most faithful on validation
data (``explain: auto``) or the one ``explain`` names. Target: +1 (up) / -1 (down; 0 on long-only
markets or with ``allow_short: false``) / 0 (flat), when the top class's probability reaches
``prob_threshold``; otherwise flat. Explanation keys: ``docs/explanations.md`` (kind ``dsc``).

Backtests may call :meth:`precompute` to batch the model over the whole file; it yields exactly
the bar-by-bar decisions (``tests/test_dsc_strategy.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from bot.bars import Bars
from bot.candles import CandleData
from bot.domain import Decision, timeframe_ms
from bot.errors import ConfigError, ModelError
from models.checkpoint import default_checkpoint_path
from models.drift import DriftWatch
from models.dsc_runtime import DSCRuntime
from models.dsc_train import DSCConfig, train_dsc
from models.explain import (
    GRAD_METHODS,
    Attribution,
    attribution_block,
    choose,
    faithfulness_block,
    from_grad_x_input,
    rule_block,
    sig4_array,
)
from models.features import FEATURE_NAMES, FeatureWindow, compute_features, first_window_end, make_windows
from models.labels import CLASSES
from models.normalize import reach
from models.provenance import Fitted, fitted_of
from strategies.base import Strategy, StrategyContext, StrategyParams
from strategies.spec import StrategySpec
from strategies.trained import chosen_checkpoint, train_or_reuse

_SIGNALS = ("short", "flat", "long")


class DSCParams(DSCConfig, StrategyParams):
    """``strategy.params`` of dsc: see :class:`models.dsc_train.DSCConfig`."""


def _reduce(attr: np.ndarray, method: str) -> Attribution:
    """[B, F, W] x * d(p_up - p_down)/dx -> the method's per-step [B, W] and per-feature [B, F] scores."""
    return from_grad_x_input(attr.transpose(0, 2, 1), method)


class DSCStrategy(Strategy):
    name = "dsc"
    Params = DSCParams

    def __init__(self, params: DSCParams, ctx: StrategyContext) -> None:
        super().__init__(params, ctx)
        path = Path(ctx.checkpoint) if ctx.checkpoint else default_checkpoint_path("dsc", ctx.symbol, ctx.timeframe)
        if not path.exists():
            raise ModelError(f"checkpoint not found: {path} (train one with `bot train --strategy dsc "
                             f"--data FILE`, or pass --checkpoint PATH)")
        self.checkpoint_path = path
        # An explicitly set window must match the checkpoint's; otherwise the checkpoint's is used.
        expect = params.window if "window" in params.model_fields_set else None
        self.rt = DSCRuntime(path, params.backend, window=expect)
        self.window = self.rt.window
        self._short = -1.0 if (params.allow_short and not ctx.long_only) else 0.0
        self._threshold = params.prob_threshold
        self._stored = self.rt.meta.extra.get("explain")
        self.method = choose(params.explain, self._stored, GRAD_METHODS)
        self._faith = faithfulness_block(self._stored, self.method)
        self._bar_ms = timeframe_ms(ctx.timeframe)
        self.drift = DriftWatch(self.rt.normalizer)
        self._pre: dict[int, int] | None = None
        self._pre_out: tuple[np.ndarray, ...] | None = None
        self._pre_time: np.ndarray | None = None
        self._reset()

    # -- state -------------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._fw = FeatureWindow(self.rt.normalizer, self.window, "conv", watch=self.drift)
        self._fed = 0
        self._fed_time: int | None = None

    @property
    def warmup(self) -> int:
        return first_window_end(self.reach) + 1

    @property
    def reach(self) -> int:
        """The window plus a rolling normaliser's trailing rows: the bars a decision reads."""
        return reach(self.window, self.rt.normalizer)

    @property
    def model_id(self) -> str | None:
        return self.rt.model_id

    @property
    def fitted(self) -> Fitted:
        return fitted_of(self.rt.meta)

    def state_dict(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint_path), "bars_seen": self._fed, "backend": self.rt.backend}

    def on_start(self, bars: Bars) -> None:
        self._reset()
        self._catch_up(bars, bars.n)

    def _catch_up(self, bars: Bars, n: int) -> np.ndarray | None:
        """Feed bars [fed, n) to the incremental features (one bar per candle in steady state)."""
        if self._fed and (self._fed > n or int(bars.time[self._fed - 1]) != self._fed_time):
            self._reset()  # the buffer is not the history we were fed: start again from bar 0
        block = None
        t, o, h, lo, c, v = bars.time, bars.open, bars.high, bars.low, bars.close, bars.volume
        fw = self._fw
        for i in range(self._fed, n):
            block = fw.update(int(t[i]), float(o[i]), float(h[i]), float(lo[i]), float(c[i]), float(v[i]))
        if n > self._fed:
            self._fed = n
            self._fed_time = int(t[n - 1])
        return block if fw.ready else None

    # -- batched path (backtests) ---------------------------------------------------------------------
    def precompute(self, data: CandleData) -> None:
        """Probabilities and reduced attributions for every bar of ``data`` in batches.

        Uses the batch feature pipeline over bars [0, t] (causal) and the explain graph of
        :meth:`on_bar`'s deferred part (its probabilities are the forward ops ``on_bar`` decides
        with); ``on_bar`` then looks bar t up by time and defers only the lookup of its attribution.
        """
        n = len(data)
        first = first_window_end(self.reach)
        if n <= first:
            return
        feats = compute_features(data)
        self.drift.preload(data.time, feats)
        z = self.rt.normalizer.transform(feats)
        ends = np.arange(first, n)
        bad = ~np.all(np.isfinite(z[first - self.window + 1:]), axis=1)
        if bad.any():
            return  # leave it to the bar-by-bar path, which names the bad bar
        def reduced(p: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            r = _reduce(a, self.method)
            return p, sig4_array(r.steps), sig4_array(r.features)  # every window's 4 digits at once

        chunks = (make_windows(z, ends[s:s + 1024], self.window, "conv") for s in range(0, ends.size, 1024))
        parts = self.rt.explain_map(chunks, reduced)
        self._pre_out = tuple(np.concatenate([part[k] for part in parts]) for k in range(3))
        self._pre_time = np.asarray(data.time[ends], dtype=np.int64)
        self._pre = {int(t): i for i, t in enumerate(self._pre_time)}

    # -- per candle -----------------------------------------------------------------------------------
    def on_bar(self, bars: Bars) -> Decision | None:
        decision = self._on_bar(bars)
        self.tell_drift(self.drift, bars.last_time())
        return decision

    def _on_bar(self, bars: Bars) -> Decision | None:
        n = bars.n
        t_now = bars.last_time()
        flat = self.gap_flat(bars, self.reach, self._bar_ms)
        if flat is not None:
            if self._pre is None:
                self._catch_up(bars, n)  # the features keep up with the bars (and the drift watch)
            return flat
        if self._pre is not None and self._pre_out is not None:
            i = self._pre.get(t_now)
            if i is not None:
                p, st, f = (a[i] for a in self._pre_out)
                return self._decision(bars.symbol, t_now, p, partial(self._attribution, st, f, rounded=True))
        block = self._catch_up(bars, n)
        if block is None:
            return None
        x = block[None].copy()  # this bar's window: the deferred attribution never sees a later one
        return self._decision(bars.symbol, t_now, self.rt.probs(x)[0], partial(self._explain, x))

    def _explain(self, x: np.ndarray) -> dict[str, Any]:
        """The deferred part of a bar-by-bar decision: the attribution of window ``x``."""
        _, a = self.rt.explain(x)
        r = _reduce(a, self.method)
        return self._attribution(r.steps[0], r.features[0])

    def _attribution(self, steps: np.ndarray, feats: np.ndarray, rounded: bool = False) -> dict[str, Any]:
        return {"attribution": attribution_block(self.method, steps, feats, FEATURE_NAMES, self._bar_ms,
                                                 self._faith, rounded=rounded)}

    def explain_with(self, bars: Bars, method: str) -> dict[str, Any]:
        """The newest bar's attribution by ``method`` (any of models.explain.GRAD_METHODS), in the
        explanation contract's shape; the features are rebuilt from bar 0 of ``bars``."""
        if method not in GRAD_METHODS:
            raise ConfigError(f"--method {method}: dsc explains with {', '.join(GRAD_METHODS)}")
        fw = FeatureWindow(self.rt.normalizer, self.window, "conv")
        block = None
        for i in range(bars.n):
            block = fw.update(int(bars.time[i]), float(bars.open[i]), float(bars.high[i]), float(bars.low[i]),
                              float(bars.close[i]), float(bars.volume[i]))
        if block is None or not fw.ready:
            raise ModelError(f"too few bars to explain: {bars.n}, need {self.warmup}")
        _, a = self.rt.explain(block[None])
        r = _reduce(a, method)
        return attribution_block(method, r.steps[0], r.features[0], FEATURE_NAMES, self._bar_ms,
                                 faithfulness_block(self._stored, method))

    def _decision(self, symbol: str, t: int, probs: np.ndarray,
                  attribution: Callable[[], dict[str, Any]]) -> Decision:
        """The decision from the probabilities; ``attribution`` is its deferred part."""
        k = int(probs.argmax())  # the method: np.argmax's dispatch costs more than the search
        conf = float(probs[k])
        signal = "flat"
        target = 0.0
        if conf >= self._threshold and k != 1:
            if k == 2:
                signal, target = "long", 1.0
            elif self._short < 0:
                signal, target = "short", -1.0
        explanation = {
            "kind": "dsc",
            "probs": {CLASSES[j]: round(float(probs[j]), 6) for j in range(3)},
            "confidence": round(conf, 6),
            "signal": signal,
            "rule": rule_block(probs, self._threshold, signal),
            "attribution": None,  # deferred: filled in once the order has left
        }
        return Decision(symbol=symbol, bar_time=t, target=self.clamp(target), confidence=conf,
                        model_id=self.rt.model_id, explanation=explanation, deferred=attribution)

    # -- backtest construction ---------------------------------------------------------------------
    @classmethod
    def for_backtest(cls, raw: dict[str, Any], ctx: StrategyContext,
                     data: CandleData) -> tuple[Strategy, int, str | None]:
        """Use the checkpoint if there is one; otherwise train on the first ``train_fraction`` of
        ``data`` first (the caller then trades only the bars after the fitted range)."""
        try:
            params = DSCParams.model_validate(raw)
        except Exception:  # noqa: BLE001 - from_config produces the one-line message
            cls.from_config(raw, ctx)
            raise
        path = chosen_checkpoint("dsc", ctx)
        note = None
        if path is None:
            train = data.slice(0, int(len(data) * params.train_fraction))
            path, note = train_or_reuse("dsc", ctx, params.model_dump(mode="json"), train, partial(
                _fit_dsc, train, params, ctx))
        elif not path.exists():
            raise ModelError(f"checkpoint not found: {path}")
        ctx2 = StrategyContext(ctx.symbol, ctx.timeframe, ctx.long_only, ctx.fee_rate, str(path))
        return cls(params, ctx2), 0, note


def _fit_dsc(train: CandleData, params: DSCParams, ctx: StrategyContext, out: Path) -> Path:
    return train_dsc(train, params, fee_rate=ctx.fee_rate, long_only=ctx.long_only, symbol=ctx.symbol,
                     timeframe=ctx.timeframe, out=out, progress=True, console=Console(stderr=True))


SPEC = StrategySpec(
    name="dsc",
    cls=DSCStrategy,
    trainer="models.dsc_train:train",
    evaluator="models.dsc_train:evaluate",
    report="bot.report.sections:DSC",
    reasons="bot.report.reasons:dsc_reasons",
    description="depthwise-separable 1-D conv classifier",
    multi_asset=True,
)
