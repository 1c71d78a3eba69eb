"""Model inference latency: single-sample p50/p99 and batch throughput, torch eager vs ONNX Runtime,
plus the per-candle decision time of ``strategies/dsc.py`` (features + model: what an order waits
for) and the same with its deferred attribution completed (what a bot spends per candle).

Conditions: CPU, 1 thread (torch.set_num_threads(1), ORT intra-op 1), eval mode +
torch.inference_mode, warm-up before timing, wall-clock per call with perf_counter.

Extend it by appending to CASES (``Case(name, backend, shape, single, batch)``): ``single()`` returns
a zero-argument callable that runs one sample; ``batch(n)`` one that runs n samples (or None).
Usage: python bench/model_latency.py [--iters 1000] [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data"))
TMP = Path(tempfile.mkdtemp(prefix="bench_latency_"))

torch.set_num_threads(1)


@dataclass
class Case:
    name: str
    backend: str
    shape: str
    single: Callable[[], Callable[[], Any]]
    batch: Callable[[int], Callable[[], Any]] | None = None


# -- builders --------------------------------------------------------------------------------------
def _conv(arch: str, f: int, c: int, blocks: int, w: int, k: int = 3) -> torch.nn.Module:
    from models.dsc import build

    torch.manual_seed(0)
    return build(arch, {"n_features": f, "channels": c, "blocks": blocks, "kernel_size": k,
                        "dropout": 0.2, "n_classes": 3}).eval()


def torch_case(arch: str, f: int, c: int, blocks: int, w: int, k: int = 3) -> tuple[Callable, Callable]:
    net = _conv(arch, f, c, blocks, w, k)

    def single() -> Callable[[], Any]:
        x = torch.randn(1, f, w)

        def run() -> Any:
            with torch.inference_mode():
                return net(x)
        return run

    def batch(n: int) -> Callable[[], Any]:
        x = torch.randn(n, f, w)

        def run() -> Any:
            with torch.inference_mode():
                return net(x)
        return run
    return single, batch


def onnx_case(arch: str, f: int, c: int, blocks: int, w: int, k: int = 3,
              explain: bool = False) -> tuple[Callable, Callable]:
    from models.attribution import ExplainedConv
    from models.onnx_backend import OnnxRunner, export_onnx

    net = _conv(arch, f, c, blocks, w, k)
    module = ExplainedConv(net) if explain else net
    path = TMP / f"{arch}_{f}_{c}_{blocks}_{w}_{k}_{int(explain)}.onnx"
    export_onnx(module, torch.zeros(1, f, w), path, ["probs", "attribution"] if explain else ["logits"])
    ort = OnnxRunner(path, threads=1)

    def single() -> Callable[[], Any]:
        x = np.random.default_rng(0).normal(size=(1, f, w)).astype(np.float32)
        return lambda: ort.run(x)

    def batch(n: int) -> Callable[[], Any]:
        x = np.random.default_rng(0).normal(size=(n, f, w)).astype(np.float32)
        return lambda: ort.run(x)
    return single, batch


def _checkpoint() -> Path:
    """The trained default checkpoint if present, else a seeded random one (same cost)."""
    trained = ROOT / "checkpoints" / "dsc_BTCUSDT_1h.pt"
    if trained.exists():
        return trained
    from bot.feeds.replay import load_candles
    from models.checkpoint import ModelMeta, save_checkpoint
    from models.dsc_train import DSCConfig
    from models.features import FEATURE_NAMES, Normalizer, compute_features

    cfg = DSCConfig()
    data = load_candles(DATA / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
    net = _conv("dsc", len(FEATURE_NAMES), cfg.channels, cfg.blocks, cfg.window, cfg.kernel_size)
    meta = ModelMeta(kind="dsc", hparams=cfg.hparams(), feature_names=list(FEATURE_NAMES), window=cfg.window,
                     horizon=cfg.horizon, normalizer=Normalizer.fit(compute_features(data)[:10000]).to_dict())
    return save_checkpoint(TMP / "random_dsc.pt", net, meta)


def decision_case(backend: str, explained: bool) -> Callable[[], Callable[[], Any]]:
    """One call = one new candle through DSCStrategy.on_bar (incremental features + model), and
    the decision's deferred attribution if ``explained``."""

    def single() -> Callable[[], Any]:
        from bot.bars import Bars
        from bot.feeds.replay import load_candles
        from strategies.base import StrategyContext
        from strategies.dsc import DSCStrategy

        ck = _checkpoint()
        data = load_candles(DATA / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
        s = DSCStrategy.from_config({"backend": backend}, StrategyContext("BTCUSDT", "1h", False, 0.001, str(ck)))
        bars = Bars.preloaded("BTCUSDT", "1h", data.time, data.open, data.high, data.low, data.close, data.volume)
        for _ in range(500):
            bars.advance()
        s.on_start(bars)

        def run() -> Any:
            if not bars.advance():  # wrap around: restart the replay (rare, outside most samples)
                raise StopIteration
            d = s.on_bar(bars)
            return d.completed() if explained and d is not None else d
        return run
    return single


def _cases() -> list[Case]:
    from models.dsc_train import DSCConfig
    from models.features import N_FEATURES

    d = DSCConfig()
    default = (N_FEATURES, d.channels, d.blocks, d.window)
    ref = (10, 64, 5, 100)  # the reference: 64 channels, [1, 10, 100] input
    cases: list[Case] = []
    for label, (f, c, b, w) in (("default", default), ("ref64", ref)):
        shape = f"[1,{f},{w}] C={c} N={b}"
        for arch in ("dsc", "standard_conv"):
            s, bt = torch_case(arch, f, c, b, w)
            cases.append(Case(f"{arch} {label}", "torch eager", shape, s, bt))
            s, bt = onnx_case(arch, f, c, b, w)
            cases.append(Case(f"{arch} {label}", "onnxruntime", shape, s, bt))
        s, bt = onnx_case("dsc", f, c, b, w, explain=True)
        cases.append(Case(f"dsc+attribution {label}", "onnxruntime", shape, s, bt))
    for backend in ("torch", "onnx"):
        cases.append(Case("dsc decision/candle", backend, f"[1,{default[0]},{default[3]}]",
                          decision_case(backend, False), None))
        cases.append(Case("dsc decision+attribution/candle", backend, f"[1,{default[0]},{default[3]}] +expl",
                          decision_case(backend, True), None))
    from bench.rollout_latency import decision_runner  # the rollout transformer (issue 4)

    for backend, label in (("torch", "torch f64"), ("onnx", "onnx f32")):
        cases.append(Case("rollout decision/candle", label, f"[1,48,{default[0]}]",
                          lambda b=backend: decision_runner(backend=b), None))
        cases.append(Case("rollout decision+attribution/candle", label, f"[1,48,{default[0]}] +expl",
                          lambda b=backend: decision_runner(explained=True, backend=b), None))
    return cases


CASES: list[Case] = []  # filled lazily in main(); other benchmarks may import and extend


def timeit(fn: Callable[[], Any], iters: int, warmup: int = 100) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        try:
            fn()
        except StopIteration:
            break
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return statistics.median(ts) * 1e6, ts[min(len(ts) - 1, int(0.99 * len(ts)))] * 1e6


def throughput(fn: Callable[[], Any], n: int, reps: int = 20) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return n * reps / (time.perf_counter() - t0)


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    CASES.extend(_cases())
    table = Table(title=f"model latency (1 thread, {os.cpu_count()} CPUs visible, shared machine)")
    for col in ("case", "backend", "input", "p50 us", "p99 us", f"batch {args.batch} samples/s"):
        table.add_column(col, justify="right" if "us" in col or "/s" in col else "left")
    for case in CASES:
        if args.only and args.only not in case.name:
            continue
        p50, p99 = timeit(case.single(), args.iters)
        thr = f"{throughput(case.batch(args.batch), args.batch):,.0f}" if case.batch else "-"
        table.add_row(case.name, case.backend, case.shape, f"{p50:,.0f}", f"{p99:,.0f}", thr)
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
