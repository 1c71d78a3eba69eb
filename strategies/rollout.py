"""``rollout``: a transformer classifier whose every decision carries its attention rollout.

Per closed candle: update the incremental features (O(1)), run the transformer's forward pass on
the newest window and turn the class probabilities into a target like ``dsc`` (up -> long, down
-> short or flat, weak -> flat). The attribution is the decision's deferred part
(``Decision.deferred``, from a copy of the window once the order has left): the attention maps
rolled out (Abnar & Zuidema 2020), or a gradient of the same forward pass. The stored
attribution is one of ``models.explain.TRANSFORMER_METHODS`` (signed / absolute gradient x input
of p(up) - p(down), rollout, gradient-weighted rollout): the checkpoint's most faithful on
validation data (``explain: auto``) or the one ``explain`` names; the regime is read from the
rollout's share on the newest quarter of the window.

Backtests may precompute every bar's output in batches (:meth:`precompute`); inference runs in
float64 on both paths so they make the same decisions (``tests/test_rollout_strategy.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bot.bars import Bars
from bot.candles import CandleData
from bot.domain import Decision, timeframe_ms
from bot.errors import ConfigError, ModelError
from bot.timeutil import ms_to_iso
from models.checkpoint import onnx_path
from models.drift import DriftWatch
from models.explain import TRANSFORMER_METHODS, attribution_block, choose, faithfulness_block, rule_block
from models.features import (
    FEATURE_NAMES,
    FEATURE_WARMUP,
    FeatureWindow,
    compute_features,
    first_window_end,
    make_windows,
)
from models.labels import CLASSES, DOWN, FLAT, UP
from models.normalize import AnyNormalizer, reach
from models.provenance import Fitted, fitted_of
from models.rollout_runtime import DecisionGraph, RolloutConfig, RolloutExplainer, load_rollout, parse_config
from models.transformer import TransformerClassifier
from models.vol_regime import VolRegime, regime_entry
from strategies.base import Strategy, StrategyContext, StrategyParams
from strategies.spec import StrategySpec
from strategies.trained import chosen_checkpoint, train_or_reuse

CHUNK = 2048  # windows per batched forward pass in backtests


class RolloutParams(RolloutConfig, StrategyParams):
    """``strategy.params`` of rollout (see models.rollout_runtime.RolloutConfig for every key)."""


def default_checkpoint(ctx: StrategyContext) -> Path:
    """Same rule as ``bot train``: checkpoints/rollout_<symbol>_<timeframe>.pt."""
    return Path("checkpoints") / f"rollout_{ctx.symbol}_{ctx.timeframe}.pt"


Loaded = tuple[TransformerClassifier, Any, AnyNormalizer]


class RolloutStrategy(Strategy):
    name = "rollout"
    Params = RolloutParams

    def __init__(self, params: RolloutParams, ctx: StrategyContext, loaded: Loaded | None = None,
                 checkpoint: Path | None = None) -> None:
        super().__init__(params, ctx)
        path = checkpoint or (Path(ctx.checkpoint) if ctx.checkpoint else default_checkpoint(ctx))
        if loaded is None:
            loaded = load_rollout(path, window=params.window)
        model, self.meta, self.norm = loaded
        self.window = int(self.meta.window)
        self.explainer = RolloutExplainer(model, params)
        self._model_id = self.meta.model_id  # a hash of the metadata: computed once
        # The decision's forward pass (ONNX Runtime by default); exported beside a checkpoint
        # that exists, else into a temporary folder.
        self.decider = DecisionGraph(model, params.backend, onnx_path(path, "probs") if path.exists() else None,
                                     self._model_id)
        self.vol_regime = VolRegime.from_dict(self.meta.extra.get("vol_regime"))  # None: older checkpoint
        self._short = -1.0 if (params.allow_short and not ctx.long_only) else 0.0
        self._stored = self.meta.extra.get("explain")
        self.method = choose(params.explain, self._stored, TRANSFORMER_METHODS)
        self._faith = faithfulness_block(self._stored, self.method)
        self._bar_ms = timeframe_ms(ctx.timeframe)
        self.drift = DriftWatch(self.norm)
        self._pre: dict[str, Any] | None = None
        self._reset()

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, raw: dict[str, Any], ctx: StrategyContext) -> RolloutStrategy:
        parse_config(raw)  # one clear ConfigError line for a bad key
        return cls(RolloutParams.model_validate(raw), ctx)

    @classmethod
    def for_backtest(cls, raw: dict[str, Any], ctx: StrategyContext,
                     data: CandleData) -> tuple[Strategy, int, str | None]:
        """With a checkpoint: trade it. Without one: train on the leading ``train_fraction`` first
        (the caller then trades only the bars after the fitted range)."""
        cfg = parse_config(raw)
        params = RolloutParams.model_validate(raw)
        path = chosen_checkpoint("rollout", ctx)
        note = None
        if path is None:
            from models.rollout_train import train_rollout

            train = data.slice(0, int(len(data) * cfg.train_fraction))
            path, note = train_or_reuse("rollout", ctx, cfg.model_dump(mode="json"), train, lambda out: train_rollout(
                train, cfg, fee_rate=ctx.fee_rate, long_only=ctx.long_only, symbol=ctx.symbol,
                timeframe=ctx.timeframe, out=out, progress=True))
        return cls(params, ctx, load_rollout(path, window=params.window), path), 0, note

    @property
    def warmup(self) -> int:
        return FEATURE_WARMUP + self.reach

    @property
    def reach(self) -> int:
        """The window plus a rolling normaliser's trailing rows: the bars a decision reads."""
        return reach(self.window, self.norm)

    @property
    def model_id(self) -> str | None:
        return self._model_id

    @property
    def fitted(self) -> Fitted:
        return fitted_of(self.meta)

    # -- incremental path --------------------------------------------------------------------------
    def _reset(self) -> None:
        self._fw = FeatureWindow(self.norm, self.window, "seq", watch=self.drift)
        self._fed = 0
        self._fed_time = -1
        self._block: np.ndarray | None = None

    def _catch_up(self, bars: Bars) -> np.ndarray | None:
        """Feed every bar not yet seen (normally just the newest); the current window or None."""
        t, o, h, lo, c, v = bars.time, bars.open, bars.high, bars.low, bars.close, bars.volume
        if self._fed and (self._fed > bars.n or int(t[self._fed - 1]) != self._fed_time):
            self._reset()  # not the history we were fed: start again from bar 0
        for i in range(self._fed, bars.n):
            self._fed, self._fed_time = i + 1, int(t[i])
            self._block = None
            self._block = self._fw.update(int(t[i]), float(o[i]), float(h[i]), float(lo[i]), float(c[i]),
                                          float(v[i]))
        return self._block

    def on_start(self, bars: Bars) -> None:
        """Rebuild the features from bar 0 of what has been seen (a resumed or live run)."""
        self._reset()
        if self._pre is None:
            self._catch_up(bars)

    # -- batched backtest path ---------------------------------------------------------------------
    def precompute(self, data: CandleData) -> None:
        """Batch path: features for the whole file now; model outputs in chunks of
        :data:`CHUNK` windows when a bar of the chunk is first asked for (history bars a backtest
        never trades are never run). The window of bar t holds bars [t - W + 1, t] only."""
        if not self.params.batch_precompute:
            return
        n, w = len(data), self.window
        first = first_window_end(reach(w, self.norm))
        if n <= first:
            return
        feats = compute_features(data)
        self.drift.preload(data.time, feats)
        z = self.norm.transform(feats)
        self._pre = {"index": {int(tm): i for i, tm in enumerate(data.time)}, "first": first, "n": n,
                     "close": np.asarray(data.close, dtype=np.float64), "z": z, "chunks": {}}

    def _attributions(self, x: np.ndarray, method: str) -> tuple[Any, np.ndarray, np.ndarray | None]:
        """(rollout outputs, the method's steps [B, W], features [B, F] or None) for windows x."""
        ex, out = self.explainer.attributions(x, (method,))
        return ex, out[method].steps, out[method].features

    def _precomputed(self, k: int) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray | None, float]:
        """(window ok, probs, steps, features, recent share) of window ``k`` (ends at first + k)."""
        pre = self._pre
        assert pre is not None
        c = k // CHUNK
        out = pre["chunks"].get(c)
        if out is None:
            ends = np.arange(pre["first"] + c * CHUNK, min(pre["first"] + (c + 1) * CHUNK, pre["n"]))
            x = make_windows(pre["z"], ends, self.window, "seq")
            ok = np.isfinite(x).all(axis=(1, 2))
            x = np.where(ok[:, None, None], x, 0.0)
            out = (ok, self.decider.probs(x), *self._attributions(x, self.method))
            pre["chunks"] = {c: out}  # one chunk at a time: backtests move forward
        ok, probs, ex, steps, feats = out
        j = k - c * CHUNK
        return bool(ok[j]), probs[j], steps[j], None if feats is None else feats[j], float(ex.share[j])

    # -- decisions ---------------------------------------------------------------------------------
    def on_bar(self, bars: Bars) -> Decision | None:
        decision = self._on_bar(bars)
        self.tell_drift(self.drift, bars.last_time())
        return decision

    def _on_bar(self, bars: Bars) -> Decision | None:
        t = bars.last_time()
        pre = self._pre
        flat = self.gap_flat(bars, self.reach, self._bar_ms)
        if flat is not None:
            if pre is None:
                self._catch_up(bars)  # the features keep up with the bars (and the drift watch)
            return flat
        if pre is not None:
            i = pre["index"].get(t)
            if i is not None and pre["close"][i] == bars.last_close():
                if i < pre["first"]:
                    return None
                ok, probs, steps, feats, share = self._precomputed(i - pre["first"])
                if not ok:
                    raise ModelError(f"non-finite features in the window ending {ms_to_iso(t)} (bad candle)")
                return self._decision(bars, probs, partial(self._attribution, steps, feats, share))
            self._pre = None  # the bars differ from the precomputed file: bar by bar from here on
            self._reset()
        block = self._catch_up(bars)
        if block is None:
            return None
        x = block.copy()  # this bar's window: the deferred attribution never sees a later one
        return self._decision(bars, self.decider.probs(x[None])[0], partial(self._explain, x))

    def _explain(self, x: np.ndarray) -> dict[str, Any]:
        """The deferred part of a bar-by-bar decision: the attribution of window ``x`` [W, F]."""
        if self.method == "rollout":  # the traced per-candle graph
            ex = self.explainer.explain_one(x)
            steps, feats = ex.attribution, None
        else:
            ex, steps, feats = self._attributions(x[None], self.method)
        return self._attribution(steps[0], None if feats is None else feats[0], float(ex.share[0]))

    def _attribution(self, steps: np.ndarray, feats: np.ndarray | None, share: float) -> dict[str, Any]:
        return {"attribution": attribution_block(self.method, steps, feats, FEATURE_NAMES, self._bar_ms, self._faith),
                "recent_share": round(share, 6)}

    def explain_with(self, bars: Bars, method: str) -> dict[str, Any]:
        """The newest bar's attribution by ``method`` (any of models.explain.TRANSFORMER_METHODS) in
        the explanation contract's shape; the features are rebuilt from bar 0 of ``bars``."""
        if method not in TRANSFORMER_METHODS:
            raise ConfigError(f"--method {method}: rollout explains with {', '.join(TRANSFORMER_METHODS)}")
        fw = FeatureWindow(self.norm, self.window, "seq")
        block = None
        for i in range(bars.n):
            block = fw.update(int(bars.time[i]), float(bars.open[i]), float(bars.high[i]), float(bars.low[i]),
                              float(bars.close[i]), float(bars.volume[i]))
        if block is None:
            raise ModelError(f"too few bars to explain: {bars.n}, need {self.warmup}")
        _, steps, feats = self._attributions(block[None], method)
        return attribution_block(method, steps[0], None if feats is None else feats[0], FEATURE_NAMES,
                                 self._bar_ms, faithfulness_block(self._stored, method))

    def _decision(self, bars: Bars, probs: np.ndarray, attribution: Callable[[], dict[str, Any]]) -> Decision:
        """The decision from the probabilities; ``attribution`` is its deferred part."""
        p = self.params
        top = int(probs.argmax())
        cls = top if probs[top] >= p.prob_threshold else FLAT
        target = self.clamp({UP: 1.0, DOWN: self._short, FLAT: 0.0}[cls])
        signal = "long" if target > 0 else "short" if target < 0 else "flat"
        return Decision(
            symbol=bars.symbol, bar_time=bars.last_time(), target=target, confidence=float(probs[top]),
            model_id=self.model_id,
            explanation={
                "kind": "rollout",
                "probs": {name: float(probs[j]) for j, name in enumerate(CLASSES)},
                "confidence": float(probs[top]),
                "signal": signal,
                "rule": rule_block(probs, p.prob_threshold, signal),
                "attribution": None,  # deferred, with recent_share: filled in once the order has left
                **regime_entry(self.vol_regime, bars.close),
                "recent_share": None,
                "head_fusion": p.head_fusion,
            },
            deferred=attribution,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "window": self.window, "bars_seen": self._fed}


SPEC = StrategySpec(
    name="rollout",
    cls=RolloutStrategy,
    trainer="models.rollout_train:train",
    evaluator="models.rollout_train:evaluate",
    report="bot.report.sections:ROLLOUT",
    reasons="bot.report.reasons:rollout_reasons",
    # After a CLI backtest: what the model attended to on winning vs losing trades.
    summary_section="bot.attention:print_run_attention",
    description="transformer classifier explained by attention rollout",
    multi_asset=True,
)
