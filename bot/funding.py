"""Funding of perpetual (linear) markets in backtests and replays: the rates file and its rules.

A funding file is the shared data's format: header ``timestamp,funding_rate`` (settlement time in
UTC ms, the rate as a decimal: 0.0001 = 0.01 %), one row per settlement (Bybit: every 8 h).
``market.funding`` names it: ``auto`` (the default) takes ``<prefix>_<SYMBOL>_funding_*.csv[.gz]``
beside the candle file when there is one, ``none`` charges nothing, anything else is a path.
Spot markets have no funding.

The simulated broker settles each funding time T at the open of the first bar opening at or
after T, on the position held before that bar's fills: a long pays ``qty x open x rate`` (a short
receives it) when the rate is positive, and the other way round when it is negative. The payment
moves the wallet's cash, is journaled as a ``funding`` row and summed in the run's summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bot.errors import ConfigError

HEADER = ("timestamp", "funding_rate")


@dataclass(frozen=True, slots=True)
class FundingRates:
    times: np.ndarray  # int64 settlement times (ms), strictly increasing
    rates: np.ndarray  # float64
    source: str

    def __len__(self) -> int:
        return int(self.times.shape[0])


def load_funding(path: str | Path) -> FundingRates:
    """The rates of a funding file; a bad file is one ConfigError line."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"funding file not found: {p}")
    try:
        df = pd.read_csv(p)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read funding file {p}: {str(exc).splitlines()[0]}") from None
    if tuple(df.columns) != HEADER:
        raise ConfigError(f"funding file {p}: expected header {','.join(HEADER)}, got {','.join(map(str, df.columns))}")
    times = pd.to_numeric(df["timestamp"], errors="coerce").to_numpy(dtype=np.float64)
    rates = pd.to_numeric(df["funding_rate"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(times) & np.isfinite(rates))
    if bad.any():
        raise ConfigError(f"funding file {p}: row {int(np.argmax(bad)) + 2} is not a number")
    if len(times) and (np.any(np.diff(times) <= 0) or times[0] < 0):
        at = int(np.argmax(np.diff(times) <= 0)) + 3 if len(times) > 1 else 2
        raise ConfigError(f"funding file {p}: times must increase (row {at})")
    if np.any(np.abs(rates) >= 0.1):
        raise ConfigError(f"funding file {p}: row {int(np.argmax(np.abs(rates) >= 0.1)) + 2} has a rate of 10 % or "
                          "more (rates are decimals: 0.0001 = 0.01 %)")
    return FundingRates(times.astype(np.int64), rates, str(p))


def sibling_file(candles: str | Path, symbol: str) -> Path | None:
    """``<prefix>_<SYMBOL>_funding_*.csv[.gz]`` beside ``candles`` (named ``<prefix>_<SYMBOL>_...``)."""
    c = Path(candles)
    marker = f"_{symbol}_"
    if marker not in c.name:
        return None
    prefix = c.name.split(marker)[0]
    found = sorted(c.parent.glob(f"{prefix}{marker}funding_*.csv*"))
    return found[0] if found else None


def resolve_funding(setting: str, category: str, symbol: str, candles: str | Path | None) -> FundingRates | None:
    """The rates ``market.funding`` names for this market, or None (spot, ``none``, nothing found)."""
    if category != "linear" or setting == "none":
        return None
    if setting == "auto":
        path = sibling_file(candles, symbol) if candles else None
        return load_funding(path) if path is not None else None
    return load_funding(setting)
