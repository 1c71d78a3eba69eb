"""gru_sizer benchmarks: per-candle decision time, training time per epoch, and an
out-of-sample backtest comparison after fees. Each section prints a table.

    python bench/gru_sizer_bench.py latency [--checkpoint CK] [--bars 2000] [--backend onnx|torch]
    python bench/gru_sizer_bench.py train [--data FILE] [--samples 8000]
    python bench/gru_sizer_bench.py compare --checkpoint CK [--dsc CK] --data FILE --from 2024-04-19

``latency`` and ``train`` run on 1 torch thread; without a checkpoint ``latency`` uses
untrained weights of the default architecture (the time does not depend on the weights);
``--backend`` is the decision's stage 1 (``strategy.params.backend``: ONNX Runtime, the default,
or float64 torch).
``compare`` runs the real engine (simulated broker: next-open fills, fees per side) for
gru_sizer, dsc at fixed size (if a checkpoint is given), always-full exposure, and reports
buy-and-hold from the same data.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bot import app as core

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bot.bars import Bars  # noqa: E402
from bot.candles import CandleData  # noqa: E402
from bot.domain import Decision, timeframe_ms  # noqa: E402
from bot.feeds.replay import load_candles  # noqa: E402
from bot.timeutil import parse_date  # noqa: E402

console = Console()


def _load(path: Path, start: str | None = None) -> CandleData:
    d = load_candles(path, symbol="BTCUSDT", timeframe="1h", bar_ms=timeframe_ms("1h"))
    if start:
        t = parse_date(start)
        d = d.slice(int(np.searchsorted(d.time, t)), len(d))
    return d


def _untrained_family(data: CandleData) -> tuple[Any, ...]:
    from models.features import FEATURE_NAMES, N_FEATURES, Normalizer, compute_features
    from models.gru_config import GRUSizerConfig
    from models.price_encoder import PriceEncoder
    from models.sizer import PositionSizer

    cfg = GRUSizerConfig()
    torch.manual_seed(0)
    enc = PriceEncoder(cfg.encoder_config(N_FEATURES)).eval()
    sizer = PositionSizer(cfg.sizer_config(cfg.encoder.feature_dim, 0.001)).eval()
    norm = Normalizer.fit(compute_features(data))

    class _Meta:
        model_id = "gru_sizer-untrained"
        hparams = {"regime_window": cfg.regime_window}
        extra: dict[str, Any] = {}
        feature_names = list(FEATURE_NAMES)

    return enc, sizer, norm, np.full(cfg.horizon, 0.01), _Meta()


def latency(args: argparse.Namespace) -> None:
    from strategies.base import StrategyContext
    from strategies.gru_sizer import GRUSizerParams, GRUSizerStrategy

    torch.set_num_threads(1)
    data = _load(Path(args.data))
    data = data.slice(len(data) - args.bars, len(data))
    ctx = StrategyContext("BTCUSDT", "1h", False, 0.001, args.checkpoint)
    params = GRUSizerParams(batch_precompute=False, backend=args.backend)
    family = None if args.checkpoint else _untrained_family(data)
    s = GRUSizerStrategy(params, ctx, family)
    bars = Bars.preloaded("BTCUSDT", "1h", data.time, data.open, data.high, data.low, data.close, data.volume)
    for _ in range(len(data) // 3):  # a restart after a third of the bars: time the state rebuild
        bars.advance()
    t0 = time.perf_counter()
    s.on_start(bars)
    restart = time.perf_counter() - t0
    times, cpu, full = [], [], []
    while bars.advance():
        t, c = time.perf_counter(), time.thread_time()
        d = s.on_bar(bars)  # what an order waits for
        if d is not None:
            times.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
            d.completed()  # the deferred attribution, run by the engine once the order has left
            full.append(time.perf_counter() - t)
    ms = np.asarray(times) * 1000
    cpu_ms = np.asarray(cpu) * 1000
    full_ms = np.asarray(full) * 1000
    attr_ms = _attribution_ms(s, data)
    s2 = GRUSizerStrategy(params.model_copy(update={"batch_precompute": True}), ctx, family)
    t0 = time.perf_counter()
    s2.precompute(data)
    pre = time.perf_counter() - t0
    tab = Table(title=f"gru_sizer per-candle decision (1 thread, {len(ms)} candles, {s.model_id}, "
                      f"stage 1 on {args.backend})")
    for c in ("p50 ms", "p90 ms", "p99 ms", "mean ms", "CPU p50 ms", "+ deferred attribution p50 ms",
              "p99 ms", "on_start (rebuild) s", "batch precompute us/bar", "attribution alone CPU p50 ms"):
        tab.add_column(c, justify="right")
    tab.add_row(*(f"{np.percentile(ms, q):.3f}" for q in (50, 90, 99)), f"{ms.mean():.3f}",
                f"{np.percentile(cpu_ms, 50):.3f}", f"{np.percentile(full_ms, 50):.3f}",
                f"{np.percentile(full_ms, 99):.3f}", f"{restart:.3f}", f"{pre / len(data) * 1e6:.0f}",
                f"{np.percentile(attr_ms, 50):.3f}")
    console.print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
                  "(wall times include waiting for a core; CPU time does not)")
    console.print(tab)


def _attribution_ms(s: Any, data: CandleData, n: int = 200) -> np.ndarray:
    """CPU time of the per-decision attribution alone (gradient x input of the expected level)."""
    from models.features import compute_features, make_windows
    from models.gru_explain import grad_x_input

    z = s.norm.transform(compute_features(data))
    ends = np.arange(len(data) - n, len(data))
    x = torch.from_numpy(make_windows(z, ends, s.window, layout="seq")).to(torch.float64)
    h, prev = s.sizer.init_state(1, torch.float64)
    out = []
    for i in range(n):
        t = time.thread_time()
        grad_x_input(s.encoder, s.sizer, x[i: i + 1], h, prev)
        out.append(time.thread_time() - t)
    return np.asarray(out) * 1000


def train_epochs(args: argparse.Namespace) -> None:
    from models.gru_config import GRUSizerConfig
    from models.gru_data import prepare
    from models.gru_training import train_stage1, train_stage2

    data = _load(Path(args.data))
    cfg = GRUSizerConfig.model_validate({
        "train": {"epochs": 1, "patience": 1, "threads": 1, "max_train_samples": args.samples,
                  "label_smoothing": 0.0, "class_weights": False},
        "train2": {"epochs": 1, "threads": 1}})
    prep = prepare(data, cfg, timeframe_ms(data.timeframe))
    t0 = time.perf_counter()
    enc, res = train_stage1(prep, cfg)
    s1 = time.perf_counter() - t0
    n1 = min(args.samples or 10**9, prep.split.train.size)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    _, rep = train_stage2(enc, prep, cfg, 0.001)
    s2 = time.perf_counter() - t0
    tab = Table(title=f"gru_sizer training time per epoch (1 thread, {Path(args.data).name})")
    for c in ("stage", "samples / sequences", "s per epoch", "ms per sample"):
        tab.add_column(c, justify="right")
    tab.add_row("1 encoder (fwd+bwd+val)", str(n1), f"{s1:.1f}", f"{s1 / n1 * 1000:.2f}")
    n2 = rep["sequences_per_epoch"]
    tab.add_row(f"2 sizer (T={cfg.sizer.steps}, incl. encoding)", str(n2), f"{s2:.1f}", f"{s2 / n2 * 1000:.2f}")
    console.print(tab)


class _AlwaysFull:
    """Target 1.0 on every bar (the always-full-exposure baseline through the real engine)."""

    @staticmethod
    def make() -> Any:
        from strategies.base import Strategy, StrategyContext, StrategyParams

        class AlwaysFull(Strategy):
            name = "always_full"

            def on_bar(self, bars: Bars) -> Decision | None:
                return Decision(bars.symbol, bars.last_time(), 1.0, explanation={"kind": "always_full"})

        return AlwaysFull(StrategyParams(), StrategyContext("BTCUSDT", "1h", False, 0.001))


def compare(args: argparse.Namespace) -> None:
    from bot.config import Config
    from storage import queries
    from storage.db import open_database
    from strategies import create_strategy
    from strategies.base import StrategyContext

    torch.set_num_threads(1)
    full = _load(Path(args.data))
    start = int(np.searchsorted(full.time, parse_date(args.date_from)))
    history = max(0, start - 400)  # features and windows need history before the first traded bar
    data = full.slice(history, len(full))
    hist = start - history
    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite:///{tmp / 'cmp.db'}"
    db = open_database(url)
    rows = []
    runs: list[tuple[str, Any, dict[str, Any]]] = []
    ctx = StrategyContext("BTCUSDT", "1h", False, 0.001, args.checkpoint)
    runs.append(("gru_sizer", create_strategy("gru_sizer", {}, ctx), {"name": "gru_sizer"}))
    if args.dsc:
        dctx = StrategyContext("BTCUSDT", "1h", False, 0.001, args.dsc)
        runs.append(("dsc (fixed size)", create_strategy("dsc", {}, dctx), {"name": "dsc"}))
    runs.append(("always full", _AlwaysFull.make(), {"name": "sma"}))
    for label, strat, scfg in runs:
        cfg = Config.model_validate({"strategy": scfg, "storage": {"url": url}})
        t0 = time.perf_counter()
        s = core.backtest(cfg, data, strat, db, show_progress=False, history=hist)
        fills = queries.fills(db, s["run_id"])
        notional = sum(float(f["qty"]) * float(f["price"]) for f in fills)
        years = s["candles"] / (365 * 24)
        eq = float(np.mean([s["initial_equity"], s["final_equity"]]))
        rows.append((label, s["total_return"], s["sharpe"], s["sortino"], s["max_drawdown"],
                     notional / eq / years, s["fees"], time.perf_counter() - t0))
        bh = s["buy_and_hold_return"]
    tab = Table(title=f"out of sample after fees: {Path(args.data).name} from {args.date_from} "
                      f"({len(data) - hist} bars, fee 0.1%/side, next-open fills)")
    for c in ("strategy", "total return", "Sharpe", "Sortino", "max DD", "turnover x/yr", "fees", "run s"):
        tab.add_column(c, justify="right")
    for r in rows:
        tab.add_row(r[0], f"{r[1] * 100:.1f}%", f"{r[2]:.2f}", f"{r[3]:.2f}", f"{r[4] * 100:.1f}%",
                    f"{r[5]:.1f}", f"{r[6]:.0f}", f"{r[7]:.1f}")
    tab.add_row("buy & hold (price)", f"{bh * 100:.1f}%", "", "", "", "", "", "")
    console.print(tab)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("section", choices=("latency", "train", "compare"))
    ap.add_argument("--checkpoint")
    ap.add_argument("--dsc", help="dsc checkpoint for the fixed-size signal comparison")
    ap.add_argument("--data", default=str(DATA / "bybit_BTCUSDT_1h.csv.gz"))
    ap.add_argument("--from", dest="date_from", default="2024-04-19")
    ap.add_argument("--bars", type=int, default=2000)
    ap.add_argument("--samples", type=int, default=8000)
    ap.add_argument("--backend", choices=("onnx", "torch"), default="onnx", help="latency: the decision's stage 1")
    args = ap.parse_args()
    {"latency": latency, "train": train_epochs, "compare": compare}[args.section](args)


if __name__ == "__main__":
    main()
