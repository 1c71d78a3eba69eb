"""Latency of one ``rollout`` decision with its stored attribution, on 1 CPU thread.

Cases (real BTCUSDT 1h candles, one sample at a time, after a warm-up):

- ``decision``: ``RolloutStrategy.on_bar`` bar by bar: incremental features, the transformer
  forward pass (float64, traced), regime and the eager explanation dict. What an order waits
  for (issue 17 target: p50 <= 0.5 ms for the default size).
- ``decision + deferred attribution, explain=M``: the same and ``Decision.completed()``: the
  rollout and the stored attribution M (a backward pass for the gradient methods), which the
  engine runs after the order has left. What a bot spends per candle.
- ``forward+rollout f64`` / ``f32``, ``eager`` (the batched path) or ``traced`` (the per-candle
  path, a TorchScript trace of the same graph): the model and the rollout only, on a ready window.
- ``rollout only``: :func:`models.rollout.attention_rollout` on the layer maps of one sample.

Wall-clock and CPU-time percentiles are both printed: on a busy shared machine wall-clock
includes waiting for a core, CPU time does not.

Weights are random (seeded): latency does not depend on their values.
Run: ``python bench/rollout_latency.py [--n 2000] [--sizes default,large]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.bars import Bars  # noqa: E402
from bot.feeds.replay import load_candles  # noqa: E402
from models.checkpoint import ModelMeta  # noqa: E402
from models.features import FEATURE_NAMES, FEATURE_WARMUP, Normalizer, compute_features, make_windows  # noqa: E402
from models.rollout import attention_rollout  # noqa: E402
from models.rollout_runtime import RolloutConfig, RolloutExplainer  # noqa: E402
from models.transformer import TransformerClassifier  # noqa: E402
from strategies.base import StrategyContext  # noqa: E402
from strategies.rollout import RolloutParams, RolloutStrategy  # noqa: E402

SIZES = {
    "default": {},  # window 48, d_model 32, 4 heads, 2 layers, d_ff 64
    "large": {"window": 96, "d_model": 64, "n_heads": 8, "n_layers": 4, "d_ff": 128},
}
DATA = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data")) / "bybit_BTCUSDT_1h.csv.gz"
START = 5000  # bars replayed before timing (features warm, window full)


def timed(fn: Callable[[], object], n: int, warmup: int = 50) -> np.ndarray:
    """[n, 2]: wall-clock and this thread's CPU time per call, in ms. On a shared machine the CPU
    time is what the call costs when it has a core; wall-clock adds the time it waited for one."""
    for _ in range(warmup):
        fn()
    out = np.empty((n, 2))
    for i in range(n):
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        fn()
        out[i] = (time.perf_counter_ns() - t0) / 1e6, (time.thread_time_ns() - c0) / 1e6
    return out


def _setup(over: dict[str, object], explained: bool = False) -> tuple[
        RolloutParams, TransformerClassifier, Normalizer, np.ndarray, Callable[[], object]]:
    """(params, model, normaliser, features, decide): ``decide()`` feeds the next real candle to a
    RolloutStrategy bar by bar and returns its Decision (StopIteration when the file ends), with
    its deferred attribution completed if ``explained``."""
    cfg = RolloutParams(**over)
    data = load_candles(DATA, symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
    feats = compute_features(data)
    norm = Normalizer.fit(feats[FEATURE_WARMUP:5000])
    torch.manual_seed(0)
    model = TransformerClassifier(cfg.model_config_for(len(FEATURE_NAMES))).eval()
    meta = ModelMeta(kind="rollout", hparams=model.cfg.to_dict(), feature_names=list(FEATURE_NAMES),
                     window=cfg.window, horizon=cfg.horizon, normalizer=norm.to_dict())
    strat = RolloutStrategy(cfg, StrategyContext("BTCUSDT", "1h", False, 0.001, None), (model, meta, norm))
    bars = Bars.preloaded("BTCUSDT", "1h", data.time, data.open, data.high, data.low, data.close, data.volume)
    for _ in range(START):
        bars.advance()
    strat.on_start(bars)

    def decide() -> object:
        if not bars.advance():
            raise StopIteration
        d = strat.on_bar(bars)
        return d.completed() if explained and d is not None else d
    return cfg, model, norm, feats, decide


def decision_runner(explained: bool = False, backend: str = "onnx") -> Callable[[], object]:
    """For bench/model_latency.py: one call = one candle through the default-size strategy, its
    decision on ``backend`` (onnx: float32 ONNX Runtime, the default; torch: a float64 trace)."""
    return _setup({"backend": backend}, explained)[4]


def bench_size(name: str, over: dict[str, int], n: int, methods: list[str]) -> list[tuple[str, str, np.ndarray]]:
    rows: list[tuple[str, str, np.ndarray]] = []
    for backend in ("onnx", "torch"):
        rows.append((name, f"decision on {backend} (features+forward+explanation dict: what the order waits for)",
                     timed(_setup({**over, "backend": backend})[4], n)))
    for m in methods:  # the stored attribution: rollout is one forward, the gradient methods add a backward
        decide = _setup({**over, "explain": m}, explained=True)[4]
        rows.append((name, f"decision + deferred attribution, explain={m}", timed(decide, n)))
    cfg, model, norm, feats, _ = _setup(over)
    start = START
    z = norm.transform(feats)
    x = make_windows(z, np.array([start]), cfg.window, "seq")
    for dtype, label in ((torch.float64, "f64"), (torch.float32, "f32")):
        ex = RolloutExplainer(model, RolloutConfig(**over), dtype=dtype)
        rows.append((name, f"forward+rollout {label} eager", timed(lambda ex=ex: ex.explain(x), n)))
        rows.append((name, f"forward+rollout {label} traced", timed(lambda ex=ex: ex.explain_one(x[0]), n)))
    with torch.inference_mode():
        _, maps = model.forward_explained(torch.from_numpy(x))
    rows.append((name, "rollout only", timed(lambda: attention_rollout(maps), n)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="timed calls per case")
    ap.add_argument("--sizes", default="default,large")
    ap.add_argument("--methods", default="rollout,signed_grad_x_input,grad_rollout",
                    help="stored attribution methods to time the decision with")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for size in args.sizes.split(","):
        rows += bench_size(size, SIZES[size], args.n, args.methods.split(","))
    print(f"rollout latency, 1 thread, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}, n={args.n}")
    print("| size | case | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms |\n|---|---|---:|---:|---:|---:|")
    for size, case, t in rows:
        w, c = t[:, 0], t[:, 1]
        print(f"| {size} | {case} | {np.percentile(w, 50):.3f} | {np.percentile(w, 99):.3f} | "
              f"{np.percentile(c, 50):.3f} | {np.percentile(c, 99):.3f} |")


if __name__ == "__main__":
    main()
