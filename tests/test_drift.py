"""Feature drift (issue 13): when the traded data's z-scores are far from the checkpoint's
training statistics, the run journals one ``feature_drift`` warning naming the worst features
(the same bar on the batched and the bar-by-bar path) and ``bot evaluate`` prints it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from bot.candles import CandleData
from bot.cli import app
from bot.feeds.replay import load_candles
from models import drift
from models.features import FEATURE_WARMUP, IncrementalFeatures, Normalizer, compute_features
from strategies.base import Strategy
from tests.helpers import drive
from tests.test_dsc_strategy import make, tiny_checkpoint

torch.set_num_threads(1)
HOUR = 3_600_000


def wilder(df: pd.DataFrame, k: float) -> pd.DataFrame:
    """Real candles with every log return and high/low excursion ``k`` times larger (a market
    ``k`` times as volatile, e.g. a small coin against BTC); opens stay the previous close."""
    o, h, lo, c = (df[x].astype(float).to_numpy() for x in ("open", "high", "low", "close"))
    lr = np.diff(np.log(c), prepend=np.log(o[0]))
    c2 = o[0] * np.exp(np.cumsum(k * lr))
    o2 = np.concatenate(([o[0]], c2[:-1]))
    top, bot = np.maximum(o, c), np.minimum(o, c)
    out = df[["timestamp", "volume"]].copy()
    out["open"], out["close"] = o2, c2
    out["high"] = np.maximum(o2, c2) * (h / top) ** k
    out["low"] = np.minimum(o2, c2) * (lo / bot) ** k
    return out[["timestamp", "open", "high", "low", "close", "volume"]]


def past_limits(w: dict) -> bool:
    return not 1 / drift.STD_RATIO <= w["z_std"] <= drift.STD_RATIO or abs(w["z_mean"]) > drift.MEAN_LIMIT


@pytest.fixture(scope="module")
def btc(data_dir: Path) -> CandleData:
    return load_candles(data_dir / "bybit_BTCUSDT_1h.csv.gz", symbol="BTCUSDT", timeframe="1h", bar_ms=HOUR)


@pytest.fixture(scope="module")
def wild_file(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    df = pd.read_csv(data_dir / "bybit_BTCUSDT_1h.csv.gz", dtype=str).iloc[1500:2600]
    path = tmp_path_factory.mktemp("wild") / "wild_x2.5.csv"
    wilder(df, 2.5).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def ckpt(btc: CandleData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(btc.slice(0, 1500), tmp_path_factory.mktemp("dsc") / "tiny.pt")


def test_running_stats_fire_once_on_wild_data_never_on_later_btc(btc: CandleData, wild_file: Path) -> None:
    feats = compute_features(btc)
    cut = int(len(btc) * 0.6)
    norm = Normalizer.fit(feats[FEATURE_WARMUP:cut])
    assert drift.scan(norm, feats[cut - FEATURE_WARMUP:]) is None  # the later 40 % of BTC: no warning
    wild = load_candles(wild_file, symbol="BTCUSDT", timeframe="1h", bar_ms=HOUR)
    hit = drift.scan(norm, compute_features(wild))
    assert hit is not None
    row, warning = hit
    assert row >= FEATURE_WARMUP + drift.MIN_ROWS - 1  # never before the statistics may be judged
    assert warning["drifting"] >= drift.MIN_FEATURES and len(warning["worst"]) == drift.WORST
    assert all(past_limits(w) for w in warning["worst"])
    assert max(w["z_std"] for w in warning["worst"]) > drift.STD_RATIO  # returns 2.5x wilder
    assert warning["text"].startswith(f"feature drift: {warning['drifting']} of 15 features are far from")
    # The bar-by-bar watch sums the same rows: it fires at the same bar, and only once.
    watch, inc = drift.DriftWatch(norm), IncrementalFeatures()
    told = []
    for i in range(len(wild)):
        raw = inc.update(int(wild.time[i]), wild.open[i], wild.high[i], wild.low[i], wild.close[i], wild.volume[i])
        if np.all(np.isfinite(raw)):
            watch.update(int(wild.time[i]), raw)
        if (w := watch.due(int(wild.time[i]))) is not None:
            told.append((i, w))
    assert [i for i, _ in told] == [row]
    assert told[0][1]["worst"] == warning["worst"]


def notices(strategy: Strategy, data: CandleData, precompute: bool) -> list[tuple[int, str, dict]]:
    """What the engine would journal: (bar time, kind, payload) after each on_bar."""
    return [(bars.last_time(), k, p) for bars, _ in drive(strategy, data, precompute)
            for k, p in strategy.take_notices()]


def test_strategy_warns_once_at_the_same_bar_on_both_paths(ckpt: Path, wild_file: Path, btc: CandleData) -> None:
    wild = load_candles(wild_file, symbol="BTCUSDT", timeframe="1h", bar_ms=HOUR)
    slow, fast = notices(make(ckpt), wild, False), notices(make(ckpt), wild, True)
    assert len(slow) == 1 and [(t, k) for t, k, _ in slow] == [(t, k) for t, k, _ in fast]
    t, kind, payload = slow[0]
    hit = drift.scan(make(ckpt).rt.normalizer, compute_features(wild))
    assert hit is not None and kind == "feature_drift" and t == int(wild.time[hit[0]])
    assert payload["worst"] == fast[0][2]["worst"]
    assert notices(make(ckpt), btc.slice(1500, 2600), True) == []  # the same bars, unscaled: quiet


def test_backtest_journals_and_evaluate_prints_the_warning(ckpt: Path, wild_file: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'j.db'}"
    runner = CliRunner()
    r = runner.invoke(app, ["backtest", "--strategy", "dsc", "--checkpoint", str(ckpt), "--data", str(wild_file),
                            "--db", db, "--json", "--set", "strategy.params.window=16"])
    assert r.exit_code == 0, r.output
    assert "feature drift:" in r.stderr
    ev = runner.invoke(app, ["journal", "events", "--run", "latest", "--db", db, "--format", "json"])
    drifts = [e for e in json.loads(ev.stdout) if e["kind"] == "feature_drift"]
    assert len(drifts) == 1 and drifts[0]["payload"]["symbol"] == "BTCUSDT"
    assert all(past_limits(w) for w in drifts[0]["payload"]["worst"])
    r = runner.invoke(app, ["evaluate", "--checkpoint", str(ckpt), "--data", str(wild_file), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["drift"]["worst"] == drifts[0]["payload"]["worst"] and "feature drift:" in r.stderr
