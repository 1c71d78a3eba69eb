"""``gru_sizer``: how much to hold (0..10 tenths of the allowed exposure), from a frozen price
encoder and a GRU sizer with a persistent hidden state.

Per closed candle: update the incremental features, run the encoder on the newest window, step
the GRU once (argmax level), label the volatility regime; the attribution (a backward pass
through both stages at the state before the step) is the decision's deferred part
(``Decision.deferred``), run once the order has left. The GRU's hidden state restarts on
clock-aligned bars (every ``steps`` bars, see :func:`models.sizer.is_reset_bar`), as in training;
the position it holds carries across the restart, so the first step after one trades from it
and pays for the change. :meth:`on_start` rebuilds the state by replaying the bars it is given
(a resumed run is given its bars from the first warm-up bar), and a restarted bot decides
exactly as one that never stopped. Inference runs in float64 so the batched backtest path
(:meth:`precompute`) and the bar-by-bar path make the same decisions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bot.bars import Bars
from bot.candles import CandleData
from bot.domain import Decision, timeframe_ms
from bot.errors import ModelError
from bot.timeutil import ms_to_iso
from models.checkpoint import onnx_path
from models.drift import DriftWatch
from models.encoder_runtime import EncoderRuntime
from models.features import FEATURE_WARMUP, IncrementalFeatures, Normalizer, RowWindow, compute_features, make_windows
from models.gaps import Runs, window_gap
from models.gru_config import GRUSizerConfig, parse_config
from models.gru_explain import METHODS, attribution_block, by_method, grad_x_input, reduce, stored_choice
from models.price_encoder import PriceEncoder
from models.provenance import Fitted, fitted_of
from models.sizer import FLAT, RESTART, PositionSizer, SizerRunner, is_reset_bar, restarts
from models.vol_regime import VolRegime, regime_entry
from strategies.base import Strategy, StrategyContext, StrategyParams
from strategies.spec import StrategySpec
from strategies.trained import chosen_checkpoint, train_or_reuse

Attr = tuple[np.ndarray, np.ndarray]  # one bar's attribution: (per step [W], per feature [F])
#: What one bar's attribution is computed from: its window [1, W, F] and the GRU state (h, prev)
#: the step started from.
Before = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class GRUSizerParams(GRUSizerConfig, StrategyParams):
    """``strategy.params`` of gru_sizer (see models.gru_config for every key)."""


def default_checkpoint(ctx: StrategyContext) -> Path:
    """Same rule as ``bot train``: checkpoints/gru_sizer_<symbol>_<timeframe>.pt."""
    return Path("checkpoints") / f"gru_sizer_{ctx.symbol}_{ctx.timeframe}.pt"


class GRUSizerStrategy(Strategy):
    name = "gru_sizer"
    Params = GRUSizerParams

    def __init__(self, params: GRUSizerParams, ctx: StrategyContext,
                 family: tuple[PriceEncoder, PositionSizer, Normalizer, np.ndarray, Any] | None = None) -> None:
        super().__init__(params, ctx)
        if family is None:
            from models.gru_training import load_family

            family = load_family(ctx.checkpoint or default_checkpoint(ctx))
        encoder, sizer, norm, scale, meta = family
        # float64 copies: the batch and bar-by-bar paths then agree far below any decision boundary.
        self.encoder = PriceEncoder(encoder.cfg).double().eval()
        self.encoder.load_state_dict(encoder.state_dict())
        self.encoder.requires_grad_(False)
        self.sizer = PositionSizer(sizer.cfg).double().eval()
        self.sizer.load_state_dict(sizer.state_dict())
        self.norm = norm
        self.scale = np.asarray(scale, dtype=np.float64)
        self.meta = meta
        self.window = encoder.cfg.window
        self.steps = sizer.cfg.steps
        self.vol_regime = VolRegime.from_dict(meta.extra.get("vol_regime"))  # None: older checkpoint
        self.bar_ms = timeframe_ms(ctx.timeframe)
        self.method, self.faithfulness = stored_choice(meta.extra)
        self.drift = DriftWatch(norm)
        self._model_id = meta.model_id  # a hash of the metadata: computed once
        # Stage 1 for decisions (ONNX Runtime by default), exported beside the checkpoint when
        # there is one; self.encoder (float64 torch) is the attribution's.
        ck = Path(ctx.checkpoint) if ctx.checkpoint else None
        self.stage1 = EncoderRuntime(encoder, params.backend,
                                     onnx_path(ck, "encoder") if ck is not None and ck.exists() else None,
                                     self._model_id)
        self._pre: dict[str, Any] | None = None
        self._reset()

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, raw: dict[str, Any], ctx: StrategyContext) -> GRUSizerStrategy:
        parse_config(raw)  # one clear ConfigError line for a bad key
        return cls(GRUSizerParams.model_validate(raw), ctx)

    @classmethod
    def for_backtest(cls, raw: dict[str, Any], ctx: StrategyContext,
                     data: CandleData) -> tuple[Strategy, int, str | None]:
        """Trade a checkpoint; without one, train on ``data`` first (stage 1 train/validation, stage 2
        on the same parts; the caller then trades only the bars after the fitted range)."""
        cfg = parse_config(raw)
        params = GRUSizerParams.model_validate(raw)
        path = chosen_checkpoint("gru_sizer", ctx)
        note = None
        if path is None:  # trains on the whole file: its train/validation parts, then trades the rest
            path, note = train_or_reuse("gru_sizer", ctx, cfg.model_dump(mode="json"), data,
                                        partial(_fit_gru, data, dict(raw), ctx))
        return cls(params, replace(ctx, checkpoint=str(path))), 0, note

    @property
    def warmup(self) -> int:
        return FEATURE_WARMUP + self.window

    @property
    def model_id(self) -> str | None:
        return self._model_id

    @property
    def fitted(self) -> Fitted:
        return fitted_of(self.meta)

    # -- incremental state -------------------------------------------------------------------------
    def _reset(self) -> None:
        self._feats = IncrementalFeatures()
        self._rows = RowWindow(self.window)
        self._runner = SizerRunner(self.sizer)
        self._started = False

    def _push(self, t: int, o: float, h: float, lo: float, c: float, v: float) -> bool:
        """Add one candle to the features; True when a full window of valid rows exists."""
        raw = self._feats.update(t, o, h, lo, c, v)
        if self._feats.n <= FEATURE_WARMUP:
            return False
        if not np.all(np.isfinite(raw)):
            raise ModelError(f"non-finite feature at bar {ms_to_iso(t)}; check the candles")
        self.drift.update(t, raw)
        self._rows.append(self.norm.transform(raw))
        return len(self._rows) == self.window

    def _window(self) -> torch.Tensor:
        return torch.from_numpy(self._rows.array().astype(np.float64)).unsqueeze(0)  # a copy: the step keeps it

    def _step(self, t: int) -> tuple[int, np.ndarray, np.ndarray, Before]:
        """Encoder + one GRU step for the bar just pushed, forward only: (level, probs, scaled
        path, what the attribution of this step is computed from)."""
        x = self._window()
        feat, path = self.stage1.encode(x.numpy())
        if not self._started:  # the first step, or the first after a gap (flat through it)
            self._runner.before_step(FLAT)
            self._started = True
        elif is_reset_bar(t, self.bar_ms, self.steps):
            self._runner.before_step(RESTART)  # the held position carries
        before = (x, self._runner.h, self._runner.prev)  # the step replaces the state, never mutates it
        level, probs = self._runner.step(feat)
        return level, probs, path[0] * self.scale, before

    def _attribution(self, before: Before, method: str) -> Attr:
        """``method``'s attribution (per step, per feature) of a step, at the state before it."""
        x, h, prev = before
        signed, _ = grad_x_input(self.encoder, self.sizer, x, h, prev)
        return reduce(by_method(signed[0], method))

    def _explain(self, before: Before) -> dict[str, Any]:
        """The deferred part of a bar-by-bar decision."""
        return self._attribution_entry(self._attribution(before, self.method))

    def _attribution_entry(self, attr: Attr) -> dict[str, Any]:
        return {"attribution": self._block(attr, self.method)}

    def on_start(self, bars: Bars) -> None:
        """Rebuild features and the GRU state by replaying ``bars`` from bar 0: exactly the
        never-stopped state. Every step since the first window counts, because the position held
        at a restart carries into the next sequence (a resumed run gets the bars from its first
        warm-up bar, so this is the run's own chain)."""
        self._reset()
        n = bars.n
        if n == 0:
            return
        t = bars.time
        o, h, lo, c, v = bars.open, bars.high, bars.low, bars.close, bars.volume
        for i in range(n):
            ready = self._push(int(t[i]), float(o[i]), float(h[i]), float(lo[i]), float(c[i]), float(v[i]))
            if ready:
                if window_gap(t[: i + 1], self.bar_ms, self.window) is None:
                    self._step(int(t[i]))
                else:
                    self._started = False  # no step on a window across a gap; restart after it

    # -- batched backtest path ---------------------------------------------------------------------
    def precompute(self, data: CandleData) -> None:
        if not self.params.batch_precompute:
            return
        n = len(data)
        first_valid = FEATURE_WARMUP + self.window - 1
        if n <= first_valid:
            return
        feats = compute_features(data)
        self.drift.preload(data.time, feats)
        z = self.norm.transform(feats)
        bars = np.arange(first_valid, n)
        enc, paths = self._encode_bars(z, bars)
        runner = SizerRunner(self.sizer)
        levels = np.zeros(n, dtype=np.int64)
        probs = np.zeros((n, 11))
        close = np.asarray(data.close, dtype=np.float64)
        hs, ps = np.zeros((bars.shape[0], self.sizer.cfg.hidden)), np.zeros(bars.shape[0])
        usable = Runs.of(data, self.bar_ms).windows_ok(bars, self.window)  # else on_bar says "gap"
        codes = restarts(data.time[bars], self.bar_ms, self.steps, usable)
        for k in np.flatnonzero(usable):
            b = bars[k]
            runner.before_step(int(codes[k]))
            hs[k], ps[k] = runner.h[0].numpy(), float(runner.prev[0])  # the state this bar starts from
            levels[b], p = runner.step(enc[k: k + 1])
            probs[b] = p
        full_paths = np.zeros((n, paths.shape[1]))
        full_paths[bars] = paths * self.scale
        self._pre = {"index": {int(tm): i for i, tm in enumerate(data.time)}, "first": first_valid,
                     "close": close, "level": levels, "probs": probs, "path": full_paths,
                     "attr": self._batch_attribution(z, bars, hs, ps, n)}

    def _encode_bars(self, z: np.ndarray, bars: np.ndarray, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1 of the windows ending at ``bars``, in chunks: (features [N, d], path [N, k])."""
        parts = [self.stage1.encode(make_windows(z, bars[s:s + chunk], self.window, layout="seq"))
                 for s in range(0, bars.shape[0], chunk)]
        if not parts:
            return self.stage1.encode(np.zeros((0, self.window, z.shape[1]), dtype=np.float32))
        return np.concatenate([f for f, _ in parts]), np.concatenate([p for _, p in parts])

    def _batch_attribution(self, z: np.ndarray, bars: np.ndarray, hs: np.ndarray, ps: np.ndarray,
                           n: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored method's attribution of every bar (per step [n, W], per feature [n, F]),
        batched, from the states the trading recurrence started each bar with."""
        steps, feats = np.zeros((n, self.window)), np.zeros((n, z.shape[1]))
        for s in range(0, bars.shape[0], 256):
            sl = slice(s, s + 256)
            x = torch.from_numpy(make_windows(z, bars[sl], self.window, layout="seq")).to(torch.float64)
            signed, _ = grad_x_input(self.encoder, self.sizer, x, torch.from_numpy(hs[sl]),
                                     torch.from_numpy(ps[sl]))
            steps[bars[sl]], feats[bars[sl]] = reduce(by_method(signed, self.method))
        return steps, feats

    # -- decisions ---------------------------------------------------------------------------------
    def on_bar(self, bars: Bars) -> Decision | None:
        decision = self._on_bar(bars)
        self.tell_drift(self.drift, bars.last_time())
        return decision

    def _on_bar(self, bars: Bars) -> Decision | None:
        t, o, h, lo, c, v = bars.last()
        pre = self._pre
        flat = self.gap_flat(bars, self.window, self.bar_ms, level=0)
        if flat is not None:
            if pre is None:
                self._push(t, o, h, lo, c, v)  # the features keep up; the GRU restarts after the gap
                self._started = False
            return flat
        if pre is not None:
            i = pre["index"].get(t)
            if i is not None and pre["close"][i] == c:
                if i < pre["first"]:
                    return None
                attr = (pre["attr"][0][i], pre["attr"][1][i])
                return self._decision(bars, t, c, int(pre["level"][i]), pre["probs"][i], pre["path"][i],
                                      partial(self._attribution_entry, attr))
            self._pre = None  # data differs from the precomputed file: fall back for good
            self.on_start(_prefix(bars))
        if not self._push(t, o, h, lo, c, v):
            return None
        level, probs, path, before = self._step(t)
        return self._decision(bars, t, c, level, probs, path, partial(self._explain, before))

    def _decision(self, bars: Bars, t: int, close: float, level: int, probs: np.ndarray,
                  path: np.ndarray, attribution: Callable[[], dict[str, Any]]) -> Decision:
        """The decision from the level; ``attribution`` is its deferred part."""
        ret = [math.expm1(float(x)) for x in path]
        target = self.clamp(level / 10.0 * self.params.max_exposure)
        return Decision(
            symbol=bars.symbol, bar_time=t, target=target,
            confidence=float(probs[level]), model_id=self.model_id,
            explanation={"kind": "gru_sizer", "level": level,
                         "level_probs": [float(p) for p in probs],
                         "predicted_path": ret,
                         "predicted_closes": [close * (1.0 + r) for r in ret],
                         **regime_entry(self.vol_regime, bars.close),
                         "rule": sizing_rule(level, self.params.max_exposure, target),
                         "attribution": None},  # deferred: filled in once the order has left
            deferred=attribution,
        )

    def _block(self, attr: Attr, method: str) -> dict[str, Any]:
        return attribution_block(attr[0], attr[1], method, self.meta.feature_names, self.bar_ms,
                                 self.faithfulness.get(method))

    def explain_with(self, bars: Bars, method: str) -> dict[str, Any]:
        """The attribution of ``method`` for the last bar of ``bars``, in the contract's shape.

        Rebuilds the state from ``bars`` (as a restart does), so afterwards the strategy stands
        exactly where it would after deciding that bar.
        """
        if method not in METHODS:
            raise ModelError(f"unknown attribution method {method!r} for gru_sizer; known: {', '.join(METHODS)}")
        self.on_start(_prefix(bars))
        t, o, h, lo, c, v = bars.last()
        if not self._push(t, o, h, lo, c, v):
            raise ModelError(f"too few bars to explain: a decision needs {self.warmup}")
        _level, _probs, _path, before = self._step(t)
        return self._block(self._attribution(before, method), method)

    def state_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "steps": self.steps,
                "gru_steps_since_reset": self._runner.steps}


def sizing_rule(level: int, max_exposure: float, target: float) -> dict[str, Any]:
    """The rule that turned the level into a target, in words: level / 10 x max_exposure."""
    share = level / 10.0 * max_exposure
    text = f"level {level} of 10 -> {share * 100:.3g} % of equity"
    if abs(target - share) > 1e-12:
        text += f" (capped to {target * 100:.3g} %)"
    return {"level": level, "max_exposure": max_exposure, "text": text}


def _prefix(bars: Bars) -> Bars:
    """Bars [0, n-1): what was seen before the current bar (used when falling back mid-run)."""
    b = Bars.preloaded(bars.symbol, bars.timeframe, bars.time[:-1], bars.open[:-1], bars.high[:-1],
                       bars.low[:-1], bars.close[:-1], bars.volume[:-1])
    while b.advance():
        pass
    return b


def _fit_gru(data: CandleData, raw: dict[str, Any], ctx: StrategyContext, out: Path) -> Path:
    """Both stages (whatever ``stage`` says: a backtest has no earlier encoder to keep)."""
    from models.gru_training import train
    from models.training import TrainRequest

    return train(TrainRequest(data=data, params={**raw, "stage": 0}, symbol=ctx.symbol, timeframe=ctx.timeframe,
                              fee_rate=ctx.fee_rate, long_only=ctx.long_only, out=out, progress=True))


SPEC = StrategySpec(
    name="gru_sizer",
    cls=GRUSizerStrategy,
    trainer="models.gru_training:train",
    evaluator="models.gru_training:evaluate",
    report="bot.report.sections:GRU_SIZER",
    reasons="bot.report.reasons:gru_sizer_reasons",
    description="price encoder + GRU position sizer (levels 0..10)",
)
