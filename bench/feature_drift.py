"""When does the feature-drift warning fire? (models/drift.py, issue 13)

A normaliser fitted on the first 60 % of Bybit BTCUSDT 1h (as a checkpoint's training split
would be) against other files: the later 40 % of the same market, other markets and exchanges,
another timeframe, and the BTC candles made 2.5x wilder (a small coin's volatility; the shared
data has no SOL) or 2.5x quieter. Prints the bar at which the warning fires, if it does, with the
running z-score statistics of the worst feature there (or at the end of the file).

    python bench/feature_drift.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bot.candles import CandleData, find_gaps  # noqa: E402
from bot.domain import timeframe_ms  # noqa: E402
from bot.feeds.replay import load_candles  # noqa: E402
from models import drift  # noqa: E402
from models.features import FEATURE_NAMES, FEATURE_WARMUP, Normalizer, compute_features  # noqa: E402

DATA = Path(os.environ.get("BOT_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def load(name: str) -> CandleData:
    sym, tf = name.split("_")[1], name.split("_")[2].split(".")[0]
    return load_candles(DATA / name, symbol=sym, timeframe=tf, bar_ms=timeframe_ms(tf))


def rescaled(d: CandleData, k: float) -> CandleData:
    """Every log return and high/low excursion ``k`` times larger; opens stay the previous close."""
    lr = np.diff(np.log(d.close), prepend=np.log(d.open[0]))
    c = d.open[0] * np.exp(np.cumsum(k * lr))
    o = np.concatenate(([d.open[0]], c[:-1]))
    h = np.maximum(o, c) * (d.high / np.maximum(d.open, d.close)) ** k
    lo = np.minimum(o, c) * (d.low / np.minimum(d.open, d.close)) ** k
    return CandleData(d.symbol, d.timeframe, d.time, o, h, lo, c, d.volume, d.source, find_gaps(d.time, 3_600_000))


def running(norm: Normalizer, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.clip((feats[FEATURE_WARMUP:] - norm.mean) / norm.std, -norm.clip, norm.clip)
    return z.mean(axis=0), z.std(axis=0)


def main() -> None:
    btc = load("bybit_BTCUSDT_1h.csv.gz")
    cut = int(len(btc) * 0.6)
    feats = compute_features(btc)
    norm = Normalizer.fit(feats[FEATURE_WARMUP:cut])
    cases = [
        ("Bybit BTCUSDT 1h, the later 40 %", btc.slice(cut - FEATURE_WARMUP, len(btc))),
        ("Bybit ETHUSDT 1h", load("bybit_ETHUSDT_1h.csv.gz")),
        ("Binance BTCUSDT 1h 2020-2024", load("binanceusdm_BTCUSDT_1h.csv.gz")),
        ("Binance ETHUSDT 1h 2020-2024", load("binanceusdm_ETHUSDT_1h.csv.gz")),
        ("Bybit BTCUSDT 1m", load("bybit_BTCUSDT_1m.csv.gz")),
        ("the later 40 %, 2.5x wilder", rescaled(btc.slice(cut - FEATURE_WARMUP, len(btc)), 2.5)),
        ("the later 40 %, 2.5x quieter", rescaled(btc.slice(cut - FEATURE_WARMUP, len(btc)), 0.4)),
    ]
    table = Table(title=f"feature drift against a Bybit BTCUSDT 1h normaliser (first {cut} bars); rule: "
                        f">= {drift.MIN_FEATURES} features with running z std outside "
                        f"[{1 / drift.STD_RATIO:g}, {drift.STD_RATIO:g}] or |mean| > {drift.MEAN_LIMIT:g}, "
                        f"after {drift.MIN_ROWS} bars")
    for col in ("data", "bars", "warning at bar", "drifting", "worst feature (z std, mean)"):
        table.add_column(col, justify="left" if col in ("data", "worst feature (z std, mean)") else "right")
    for name, data in cases:
        f = compute_features(data)
        hit = drift.scan(norm, f)
        if hit is not None:
            row, w = hit
            worst = w["worst"][0]
            table.add_row(name, f"{len(data):,}", f"{row - FEATURE_WARMUP + 1:,}", str(w["drifting"]),
                          f"{worst['feature']} ({worst['z_std']:.2f}, {worst['z_mean']:+.2f})")
        else:
            mean, std = running(norm, f)
            i = int(np.argmax(np.abs(np.log(std))))
            table.add_row(name, f"{len(data):,}", "none", "0",
                          f"{FEATURE_NAMES[i]} ({std[i]:.2f}, {mean[i]:+.2f}) at the end")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
