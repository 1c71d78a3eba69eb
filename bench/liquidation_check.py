"""The per-bar cost of the liquidation check in the simulated broker (broker/margin.py).

A linear position is watched for its liquidation price at every bar it is open, so the fill
engine sees every bar (before leverage it saw only bars with an order or a funding time due).
Times ``SimulatedBroker.on_bar`` over the real Bybit BTCUSDT 1h bars (shared/data), flat and
holding a 1x and a 10x long that never reaches its liquidation price, and prints a table:
microseconds per bar (the fastest of ``--repeat`` passes, default 5).
Usage: python bench/liquidation_check.py [--repeat K]
"""

from __future__ import annotations

import os
import sys
import time
from decimal import Decimal
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data"))

from bot.domain import Category, Instrument, OrderRequest, Side  # noqa: E402
from broker.margin import MarginRule  # noqa: E402
from broker.simulated import SimulatedBroker  # noqa: E402

INS = Instrument("BTCUSDT", Category.LINEAR, Decimal("0.1"), Decimal("0.001"), Decimal("0.001"), Decimal("5"))


def per_bar(bars: list[tuple[int, float, float, float, float]], leverage: int | None, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        b = SimulatedBroker(INS, 1e9, 0.0, 0.0, margin=MarginRule(leverage=Decimal(leverage or 1)))
        if leverage is not None:  # a long far from its liquidation price (the lowest low is far above it)
            b.submit(OrderRequest("L", "BTCUSDT", Side.BUY, Decimal("0.01")), 0)
            b.on_bar(*bars[0])
        on_bar, pending = b.on_bar, b.pending
        t0 = time.perf_counter()
        for bar in bars:
            if pending():  # as Engine.fill asks
                on_bar(*bar)
        best = min(best, time.perf_counter() - t0)
        if leverage is not None and b.qty <= 0:
            raise SystemExit(f"the {leverage}x long was liquidated: the timing would not be of a held position")
    return best / len(bars) * 1e6


def main() -> None:
    args = sys.argv[1:]
    repeat = int(args[args.index("--repeat") + 1]) if "--repeat" in args else 5
    df = pd.read_csv(DATA / "bybit_BTCUSDT_1h.csv.gz")
    bars = list(zip(df.timestamp.astype(int), df.open, df.high, df.low, df.close, strict=True))[1:]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {len(bars):,} bars, fastest of {repeat}")
    print("| position | us per bar |")
    print("|---|---:|")
    for name, lev in (("flat (no order, no funding)", None), ("long 1x", 1), ("long 10x", 10)):
        print(f"| {name} | {per_bar(bars, lev, repeat):.3f} |")


if __name__ == "__main__":
    main()
