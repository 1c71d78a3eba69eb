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
most 60 s for about 1M bars on 2 cores.
Usage: python bench/dsc_backtest_scale.py [--bars 1000000] [--checkpoint CK]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--checkpoint", default=None)
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
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print("| bars in the file | traded bars | decisions | orders | train s | engine s | bars/s | CLI wall s | "
          "peak RSS MB | target |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    print(f"| {a.bars:,} | {s['candles']:,} | {s['decisions']:,} | {s['orders']:,} | "
          f"{'-' if train_s is None else f'{train_s:.0f}'} | {s['elapsed_s']:.1f} | {s['candles_per_s']:,.0f} | "
          f"{wall:.1f} | {rss:.0f} | <= 60 s |")


if __name__ == "__main__":
    main()
