"""A dsc backtest over about a million 1m bars, batched inference and explanations included.

The shared Bybit BTCUSDT 1m file holds 43,200 bars (30 days). It is tiled to N bars on the 1m grid
as ``bench/backtest_throughput.py`` tiles the 1h file: copies alternate between the real path,
rescaled to join, and its mirror in log space, kept on the 0.1 tick. A dsc model is trained on the
real file first (``bot train``, default settings, or ``--checkpoint``). Then the real
``bot backtest`` runs over the tiles with the journal on (a SQLite file). Its first copy is the
fitted range, which the in-sample guard skips. The later copies are the same price moves at later
times: this measures speed, not skill.

Printed: training time, the backtest's traded bars, engine seconds and bars/s (from opening the
run to the last journal row: the batched forward and attribution pass over every window, every
decision and its explanation journaled), CLI wall time and peak RSS. Issue 17's target is at
most 60 s for about 1M bars on 2 cores. Then the batched pass alone (``DSCRuntime.explain_map``
over ``--pass-windows`` real windows of the file, chunks of 1,024), in microseconds a window:
its chunks side by side on every core, and one after another.
Usage: python bench/dsc_backtest_scale.py [--bars 1000000] [--checkpoint CK] [--pass-windows 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backtest_throughput import DATA, on_tick, tiled  # noqa: E402

SRC = DATA / "bybit_BTCUSDT_1m.csv.gz"


def bot(args: list[str], cwd: Path) -> tuple[dict, float, float]:
    """Run ``bot ARGS --json``: (its JSON, wall seconds, peak RSS MB of it and its children)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bot", *args, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=cwd)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bot {args[0]} failed: {err.decode().strip()[-2000:]}")
    import resource  # noqa: PLC0415

    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return json.loads(out), wall, rss


def explain_pass(data: Path, ck: str, n: int) -> tuple[float, float]:
    """Microseconds a window of the batched explain pass over ``n`` windows of ``data``: (chunks side
    by side on every core, one chunk at a time)."""
    from bot.feeds.replay import load_candles
    from models.dsc_runtime import DSCRuntime
    from models.features import compute_features, first_window_end, make_windows
    from models.normalize import reach

    rt = DSCRuntime(ck, "onnx")
    candles = load_candles(data, symbol="BTCUSDT", timeframe="1m", bar_ms=60_000)
    first = first_window_end(reach(rt.window, rt.normalizer))
    z = rt.normalizer.transform(compute_features(candles.slice(0, min(len(candles), first + n + 1))))
    ends = np.arange(first, first + n)
    chunks = [make_windows(z, ends[s:s + 1024], rt.window, "conv") for s in range(0, n, 1024)]
    times = []
    for runs in (rt.explain_map, lambda cs, then: [then(*rt.explain(c)) for c in cs]):
        runs(chunks[:2], lambda p, a: None)  # warm
        t0 = time.perf_counter()
        runs(chunks, lambda p, a: None)
        times.append((time.perf_counter() - t0) / n * 1e6)
    return times[0], times[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--pass-windows", type=int, default=100_000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = on_tick(tiled(a.bars, tmp / f"tiled_1m_{a.bars}.csv.gz", timeframe="1m"), tmp / "tick_1m.csv.gz")
        ck, train_s = a.checkpoint, None
        if ck is None:
            ck = str(tmp / "dsc_1m.pt")
            _, train_s, _ = bot(["train", "--strategy", "dsc", "--data", str(SRC), "--set", "market.timeframe=1m",
                                 "--out", ck], tmp)
        s, wall, rss = bot(["backtest", "--strategy", "dsc", "--data", str(data), "--set", "market.timeframe=1m",
                            "--set", f"strategy.checkpoint={ck}", "--db", f"sqlite:///{tmp / 'dsc.db'}"], tmp)
        side, serial = explain_pass(data, ck, a.pass_windows)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print("| bars in the file | traded bars | decisions | orders | train s | engine s | bars/s | CLI wall s | "
          "peak RSS MB | target |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    print(f"| {a.bars:,} | {s['candles']:,} | {s['decisions']:,} | {s['orders']:,} | "
          f"{'-' if train_s is None else f'{train_s:.0f}'} | {s['elapsed_s']:.1f} | {s['candles_per_s']:,.0f} | "
          f"{wall:.1f} | {rss:.0f} | <= 60 s |")
    print(f"\nbatched explain pass alone ({a.pass_windows:,} windows, chunks of 1,024, ONNX Runtime): "
          f"{side:.1f} us a window with its chunks side by side on {os.cpu_count()} cores, "
          f"{serial:.1f} us one chunk at a time")


if __name__ == "__main__":
    main()
